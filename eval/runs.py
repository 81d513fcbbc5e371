"""Run folders (eval/DESIGN.md): metrics.json + per_query.csv (+ anything else a benchmark adds),
built under a temporary name beside the target and renamed into place, so a failed run leaves
nothing behind and a finished one replaces the previous run whole."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omnivision.twod.io import replace_folder

__all__ = ["replace_folder", "write_run"]


def write_run(
    out: Path,
    metrics: dict[str, Any],
    per_query: Sequence[dict[str, Any]],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a run folder at `out` atomically; `extra(tmp_folder)` adds benchmark-specific files."""

    def build(tmp: Path) -> None:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
        with open(tmp / "per_query.csv", "w", newline="") as f:
            columns = list(per_query[0]) if per_query else ["query"]
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(per_query)
        if extra is not None:
            extra(tmp)

    return replace_folder(out, build)
