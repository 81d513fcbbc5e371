"""The one-way import rule: scenes and twod import nothing of ours; lift uses them; query uses
those; eval and viewer sit on top; nothing imports viewer or eval."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "scenes": set(),
    "twod": set(),
    "lift": {"scenes", "twod"},
    "query": {"scenes", "twod", "lift"},
    "eval": {"scenes", "twod", "lift", "query"},
    "viewer": {"scenes", "twod", "lift", "query"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "omnivision" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_packages_import_only_downwards():
    violations = []
    for package, allowed in ALLOWED.items():
        for path in (REPO / package).rglob("*.py"):
            bad = imported_packages(path) - allowed - {package}
            if bad:
                violations.append(f"{path.relative_to(REPO)} imports omnivision.{sorted(bad)}")
    assert not violations, violations


def test_nothing_imports_viewer_or_eval():
    """The package never does; benchmarks may only use their own package (bench/viewer.py,
    bench/eval.py, bench/eval_track.py: the first word of the name)."""
    for path in list((REPO / "omnivision").rglob("*.py")) + list((REPO / "bench").rglob("*.py")):
        own = {path.stem.split("_")[0]} if path.parent.name == "bench" else set()
        assert not imported_packages(path) & ({"viewer", "eval"} - own), path


def test_importing_scenes_does_not_load_heavy_libraries():
    import subprocess
    import sys

    code = "import sys, omnivision.scenes; print(sorted(m for m in ('gsplat','transformers','sam2','open_clip','viser','pycolmap') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
