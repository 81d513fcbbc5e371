"""Timing and peak-memory helpers shared by the benchmarks.

Peak memory is the peak resident set size (RSS) of this process while the measured call runs,
minus the RSS just before it: what the call itself adds (tensors, temporaries), sampled every 2 ms
from /proc (run_isolated fixes glibc's mmap threshold so freed memory leaves RSS). On CUDA, torch's own peak allocator counter is used instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(
    fn: Callable[[], object], mode: str = "time", repeats: int = 2, device: str = "cpu"
) -> float:
    """mode="time": best-of-`repeats` wall seconds after one warm-up call.
    mode="memory": peak MB added during one call (run it under `run_isolated`, which fixes
    glibc's mmap threshold so RSS follows live memory; that slows allocation, hence two modes)."""
    if mode == "time":
        fn()  # warm-up: lazy imports, allocator growth
        best = float("inf")
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    start_rss = _rss_bytes()
    stop = threading.Event()
    samples = [start_rss]

    def sample() -> None:
        while not stop.is_set():
            samples.append(_rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    stop.set()
    thread.join()
    return (max(samples) - start_rss) / 2**20


def run_isolated(script: Path, case: str, extra: list[str] | None = None) -> dict:
    """Run one case twice in fresh interpreters: once for time (default allocator), once for
    peak memory (glibc returns freed large blocks at once, so sampled RSS follows live memory)."""
    row: dict = {}
    for mode, env in (
        ("time", dict(os.environ)),
        ("memory", {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}),
    ):
        out = subprocess.run(
            [sys.executable, str(script), "--case", case, "--mode", mode, *(extra or [])],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            return {"case": case, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        row.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return row


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for _, key in columns) + " |")
    return "\n".join(lines)


def bench_parser(
    doc: str | None, cases, quick_help: str, device: bool = True
) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: --case (one case in this process, JSON out), --mode,
    --quick, and --device (default cuda when available)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--case", choices=sorted(cases), help="run one case in this process (JSON out)"
    )
    parser.add_argument("--mode", choices=("time", "memory"), default="time")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if device:
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def run_cases(
    script: Path, cases, device: str = "cpu", extra: list[str] | None = None
) -> list[dict]:
    """Every case through `run_isolated`, with a header and one JSON line per case on stderr."""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}",
        file=sys.stderr,
    )
    rows = []
    for case in cases:
        row = run_isolated(script, case, extra)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows
