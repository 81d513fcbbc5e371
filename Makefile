# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint browser bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: these versions come as local wheels on our machines (another version downloads GBs)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# sam2 builds against the installed torch; no CUDA extension needed
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	$(BIN)/pip install -q -e '.[dev,dist]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/omnivision demo --out demo_out

# pyright cannot follow setuptools' package-dir mapping of an editable install: give it a
# symlinked view of the installed layout (omnivision/scenes -> scenes/, ...).
PYRIGHT_VIEW := $(VENV)/pyright-view/omnivision

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(PYRIGHT_VIEW) && mkdir -p $(PYRIGHT_VIEW)
	for f in omnivision/*.py; do ln -s "$$PWD/$$f" $(PYRIGHT_VIEW)/; done
	for p in scenes lift query viewer twod eval; do ln -s "$$PWD/$$p" $(PYRIGHT_VIEW)/$$p; done
	$(BIN)/pyright

# The browser test drives Debian's chromium through playwright (never `playwright install`);
# without root or apt it skips with a reason.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
	   (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)); } || \
	  echo "chromium not installed: the browser test will skip"

# Two pytest-xdist workers, one torch thread each (tests/conftest.py); the tests that share the
# trained synthetic benchmark stay together in one worker (--dist loadgroup). Lint (one core,
# mostly pyright) runs beside them and prints its report after the tests; either failing fails
# the target.
test: $(STAMP) browser
	@echo "lint (ruff, ruff format, pyright) runs beside pytest; its report follows the tests"
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & lint=$$!; \
	HF_HUB_OFFLINE=1 $(BIN)/pytest -n 2 --dist loadgroup; tests=$$?; \
	wait $$lint; linted=$$?; echo "---- lint ----"; cat $(VENV)/lint.log; \
	[ $$linted -eq 0 ] || echo "lint FAILED (report above)"; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

bench: $(STAMP)
	$(BIN)/python bench/render.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
