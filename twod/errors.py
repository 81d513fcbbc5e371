"""`TwoDError`: the one error type of twod (no heavy imports, so the readers can raise it)."""

from __future__ import annotations


class TwoDError(ValueError):
    """Bad input or a missing model: one line naming the file/model and what to do; exit code 2."""

    exit_code = 2
