"""Timing and peak-memory helpers shared by the benchmarks.

Peak memory is the peak resident set size (RSS) of this process while the measured call runs,
minus the RSS just before it: what the call itself adds (tensors, temporaries), sampled every 2 ms
from /proc (run_isolated fixes glibc's mmap threshold so freed memory leaves RSS). On CUDA, torch's own peak allocator counter is used instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@dataclass
class Measurement:
    seconds: float
    peak_mb: float


def measure(fn: Callable[[], object], repeats: int = 1, device: str = "cpu") -> Measurement:
    """Best-of-`repeats` wall time and the peak memory added by one call (after one warm-up)."""
    fn()  # warm-up: lazy imports, allocator growth
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    best = float("inf")
    peak = 0
    for _ in range(repeats):
        start_rss = _rss_bytes()
        stop = threading.Event()
        samples = [start_rss]

        def sample(samples=samples, stop=stop):
            while not stop.is_set():
                samples.append(_rss_bytes())
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        stop.set()
        thread.join()
        peak = max(peak, max(samples) - start_rss)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base  # type: ignore[possibly-undefined]
    return Measurement(best, peak / 2**20)


def run_isolated(script: Path, case: str, extra: list[str] | None = None) -> dict:
    """Run one benchmark case in a fresh interpreter so peak memory is not shared across cases."""
    # A fixed mmap threshold makes glibc return large freed blocks to the OS at once, so RSS
    # follows live memory and the sampled peak is the call's real peak.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, str(script), "--case", case, *(extra or [])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"case": case, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for _, key in columns) + " |")
    return "\n".join(lines)
