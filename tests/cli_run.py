"""Run a command line in the test process, as a fresh interpreter would run it, without paying for
one: each new interpreter imports torch again, which made the CLI tests spend most of their time
starting up.

`run_main(main, args)` returns what `subprocess.run(..., capture_output=True, text=True)` would:
the exit status (`main`'s return value or SystemExit's code), stdout and stderr. What a fresh
process prints to stderr besides our own lines is kept: Python's default warning filters and a
root logger without handlers (so a library's `logging.error()` configures logging and prints, as
open_clip's does). Global state the commands touch (torch threads, the working directory,
environment variables) is put back afterwards. Tests that check the console scripts themselves
(`python -m omnivision.cli`, exit status of the process) start a real process: `omnivision_process`,
`lift_process`."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """What Python's own `warnings.showwarning` does (pytest records warnings instead)."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def run_main(
    main: Callable[[list[str]], int | None], args: Sequence[str], cwd: Path | str | None = None
) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    threads, environ, here = torch.get_num_threads(), dict(os.environ), os.getcwd()
    try:
        root.handlers, root.level = [], logging.WARNING
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()  # Python's defaults (no -W, no dev mode)
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
                warnings.simplefilter("ignore", category)
            warnings.simplefilter("ignore", ResourceWarning)
            warnings.showwarning = show_warning
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's errors and --help
                code = exit_.code
                if code is not None and not isinstance(code, int):
                    print(code, file=err)
                    code = 1
    finally:
        os.chdir(here)
        root.handlers, root.level = handlers, level
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(list(args), int(code or 0), out.getvalue(), err.getvalue())


def run_process(argv: Sequence[str], cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """`python ARGV...` as its own process (for tests of the console scripts themselves)."""
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def omnivision_process(*args: str, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """`omnivision ARGS...` as its own process."""
    return run_process(["-m", "omnivision.cli", *args], cwd)


def lift_process(*args: str) -> subprocess.CompletedProcess:
    """`omnivision-lift ARGS...` as its own process."""
    code = "import sys; from omnivision.cli import lift_main; sys.exit(lift_main(sys.argv[1:]))"
    return run_process(["-c", code, *args])


def omnivision(*args: str, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """`omnivision ARGS...` (omnivision.cli.main) in this process."""
    from omnivision.cli import main

    return run_main(main, args, cwd)


def omnivision_lift(*args: str) -> subprocess.CompletedProcess:
    """`omnivision-lift ARGS...` (omnivision.cli.lift_main) in this process."""
    from omnivision.cli import lift_main

    return run_main(lift_main, args)
