"""Benchmark graph diffusion (`omnivision-lift --diffuse`), stage by stage, beside the path it
replaced (issue 15), kept below as the reference.

    python bench/diffusion.py            # 1M Gaussians, D = 3, 16, 64: markdown table on stdout
    python bench/diffusion.py --quick    # 138k Gaussians, D = 16 (~1 min on 2 cores)

Gaussians: the demo tabletop's surfaces sampled finely enough for 138k or 1M Gaussians (as
bench/lift.py builds them). Features, built before any timer: D = 3 the Gaussians' colours;
D = 16 a one-hot of the object id (a mask lift) with 10% of the labels replaced at random;
D = 64 random (a PCA'd DINO map). 5% of the Gaussians are unseen (zero features): those
nearest N/1000 random seeds, patches of ~50 that fill from their rims inward in a few steps.

The stages are what `lift.pipeline.finish` runs with `--diffuse` at LiftConfig's defaults
(knn 16, diffusion_iterations 10, restart 0.5):
  knn         knn_graph(means, 16)
  fill        fill_unseen(features, seen, graph)
  weights     edge_weights(graph, features)   (Gaussian kernel on the normalised features)
  adjacency   adjacency(graph, weights)       (symmetrised, row-normalised sparse matrix)
  iterations  diffuse(features, matrix, 10, restart=0.5)

ours: `lift.diffusion` (cKDTree queried in its leaf order; edge dot products by torch's sampled
sparse-dense product; the symmetric CSR built by scipy's linear-time transpose + merge, int32
indices; fused addmm iterations into two fp32 buffers). reference: the code before issue 15,
verbatim below (cKDTree in input order; an (N, K, D) gather per chunk; a torch COO of 2·N·K
entries, coalesced (sorted), normalised and converted to CSR; out-of-place iterations). Both
run in the same process, ours first, each stage once (a 2k-Gaussian warm-up first loads the
libraries): at 1M one reference call takes ~20 s, so no best-of. "max abs diff" compares the
diffused features, "within 1e-4" is the share of Gaussians whose features agree to 1e-4 (with
one-hot features the kernel's σ falls to its 1e-6 floor and edges between features equal to fp32
rounding may go either way in either implementation). Peak MB: RSS above the RSS before the first stage, sampled every 2 ms (in a
second interpreter with glibc's mmap threshold fixed, see `_measure.run_isolated`); "total" is
the largest. On 2 cores shared with other work, wall times move with the load: read the ratio of
the same run, and the CPU seconds (all threads of the process, `time.process_time`), which the
load moves much less; on 2 idle cores the wall time is at most about the CPU time.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import _rss_bytes, bench_parser, markdown_table, run_cases  # noqa: E402

from omnivision.lift import diffusion  # noqa: E402
from omnivision.scenes.demo import build_demo_gaussians  # noqa: E402

SIZES = {"synth138k": 138_000, "synth1M": 1_000_000}
CASES = {"synth1M-D3": ("synth1M", 3), "synth1M-D16": ("synth1M", 16)}
CASES.update({"synth1M-D64": ("synth1M", 64), "synth138k-D16": ("synth138k", 16)})
FULL = ("synth1M-D3", "synth1M-D16", "synth1M-D64")
QUICK = ("synth138k-D16",)
STAGES = ("knn", "fill", "weights", "adjacency", "iterations")
KNN, ITERATIONS, RESTART = 16, 10, 0.5  # LiftConfig's knn, diffusion_iterations; finish()'s restart


# -- the reference: lift/diffusion.py before issue 15 (scipy path), verbatim -------------------
def reference_knn_graph(points: torch.Tensor, k: int = 16) -> diffusion.KnnGraph:
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]

    k = min(k, points.shape[0] - 1)
    pts = points.detach().cpu().double().numpy()
    dist, idx = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    return diffusion.KnnGraph(
        torch.from_numpy(idx[:, 1:].astype(np.int64)), torch.from_numpy(dist[:, 1:]).float()
    )


def reference_edge_weights(graph: diffusion.KnnGraph, features: torch.Tensor) -> torch.Tensor:
    n, k = graph.indices.shape
    f = F.normalize(features.float(), dim=-1)
    dist = torch.empty(n, k)
    for start in range(0, n, 1 << 16):  # (chunk, K, D) at a time, not (N, K, D)
        rows = slice(start, start + (1 << 16))
        dist[rows] = (f[rows, None, :] - f[graph.indices[rows]]).norm(dim=-1)
    sigma = dist.median().clamp_min(1e-6)
    return torch.exp(-(dist**2) / (2 * sigma**2))


def reference_adjacency(graph: diffusion.KnnGraph, weights: torch.Tensor) -> torch.Tensor:
    n, k = graph.indices.shape
    rows = torch.arange(n).repeat_interleave(k)
    cols = graph.indices.reshape(-1)
    vals = weights.reshape(-1).float()
    coo = torch.sparse_coo_tensor(
        torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
        torch.cat([vals, vals]) / 2,
        (n, n),
        check_invariants=False,
    ).coalesce()
    degree = torch.sparse.sum(coo, dim=1).to_dense().clamp_min(1e-12)
    idx = coo.indices()
    coo = torch.sparse_coo_tensor(
        idx, coo.values() / degree[idx[0]], (n, n), check_invariants=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


def reference_diffuse(values: torch.Tensor, matrix: torch.Tensor, iterations: int, restart: float):
    g0 = values.float()
    g = g0
    for _ in range(iterations):
        g = matrix @ g
        g = (1 - restart) * g + restart * g0
    return g


def reference_fill_unseen(values, seen, graph, max_iterations: int = 50):
    out = values.clone().float()
    known = seen.clone()
    for _ in range(max_iterations):
        if bool(known.all()):
            break
        nb_known = known[graph.indices].float()
        count = nb_known.sum(1)
        update = ~known & (count > 0)
        if not bool(update.any()):
            break
        rows = torch.nonzero(update).squeeze(1)
        nb = graph.indices[rows]
        out[rows] = (out[nb] * nb_known[rows, :, None]).sum(1) / count[rows, None]
        known = known | update
    return out, int((~known).sum())


# -- the case --------------------------------------------------------------------------------
def build(size: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres, lifted features (zero where unseen) and the seen mask of a demo-like scene."""
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]

    scene = build_demo_gaussians(spacing=0.0055 * math.sqrt(29_298 / size), seed=seed)
    n = len(scene)
    g = torch.Generator().manual_seed(seed)
    if dim == 3:
        features = scene.rgb_dc
    elif dim == 16:
        ids = scene.extras["object_id"].long()
        flip = torch.rand(n, generator=g) < 0.1
        ids = torch.where(flip, torch.randint(0, dim, (n,), generator=g), ids)
        features = F.one_hot(ids, dim).float()
    else:
        features = torch.randn(n, dim, generator=g)
    means = scene.means
    seeds = means[torch.randperm(n, generator=g)[: n // 1000]].double().numpy()
    gap, _ = cKDTree(seeds).query(means.double().numpy())
    seen = torch.from_numpy(gap > np.quantile(gap, 0.05))
    return means, torch.where(seen[:, None], features, 0.0), seen


def pipeline(impl: str, means, features, seen) -> list[tuple[str, Callable[[dict], None]]]:
    """The five stages as closures over one state dict, in the order `finish` runs them."""
    d = diffusion
    knn = d.knn_graph if impl == "ours" else reference_knn_graph
    fill = d.fill_unseen if impl == "ours" else reference_fill_unseen
    weights = d.edge_weights if impl == "ours" else reference_edge_weights
    adjacency = d.adjacency if impl == "ours" else reference_adjacency
    iterate = d.diffuse if impl == "ours" else reference_diffuse
    return [
        ("knn", lambda s: s.update(graph=knn(means, KNN))),
        ("fill", lambda s: s.update(filled=fill(features, seen, s["graph"])[0])),
        ("weights", lambda s: s.update(weights=weights(s["graph"], s["filled"]))),
        ("adjacency", lambda s: s.update(matrix=adjacency(s["graph"], s.pop("weights")))),
        (
            "iterations",
            lambda s: s.update(out=iterate(s["filled"], s["matrix"], ITERATIONS, RESTART)),
        ),
    ]


def run_stages(stages, mode: str) -> tuple[dict[str, float], dict]:
    """Each stage once, in order. time: wall and CPU (all threads) seconds per stage, keys
    `stage` and `stage_cpu`; memory: peak RSS above the RSS before the first stage, MB."""
    state: dict = {}
    result: dict[str, float] = {}
    if mode == "time":
        for name, stage in stages:
            t0, c0 = time.perf_counter(), time.process_time()
            stage(state)
            result[name] = time.perf_counter() - t0
            result[f"{name}_cpu"] = time.process_time() - c0
        return result, state
    base = _rss_bytes()
    current = [stages[0][0]]
    peaks: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks[current[0]] = max(peaks.get(current[0], base), _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for name, stage in stages:
        current[0] = name
        stage(state)
        peaks[name] = max(peaks.get(name, base), _rss_bytes())
    stop.set()
    thread.join()
    return {name: (peaks[name] - base) / 2**20 for name, _ in stages}, state


def run_case(case: str, mode: str) -> dict:
    scene_name, dim = CASES[case]
    means, features, seen = build(SIZES[scene_name], dim)
    small = build(2_000, dim)
    unit = "s" if mode == "time" else "mb"
    row: dict = {"case": case, "gaussians": len(means), "unseen": int((~seen).sum())}
    outputs = {}
    for impl in ("ours", "reference"):
        run_stages(pipeline(impl, *small), "time")  # warm-up: lazy imports, thread pools
        measured, state = run_stages(pipeline(impl, means, features, seen), mode)
        for name, value in measured.items():
            row[f"{impl}_{name}_{unit}"] = value
        if mode == "time":
            row[f"{impl}_total_s"] = sum(measured[name] for name in STAGES)
            row[f"{impl}_total_cpu_s"] = sum(measured[f"{name}_cpu"] for name in STAGES)
        else:
            row[f"{impl}_total_mb"] = max(measured.values())
        if mode == "time":
            outputs[impl] = state["out"]
        del state
    if mode == "time":
        gap = (outputs["ours"] - outputs["reference"]).abs().amax(1)
        row["max_abs_diff"] = float(gap.max())
        row["agree"] = float((gap <= 1e-4).float().mean())
    return row


def table(rows: list[dict]) -> str:
    """One line per case and stage: ours, reference, their ratio, in time and peak memory."""
    lines = []
    for row in rows:
        if "error" in row:
            lines.append({"case": row["case"], "stage": f"error: {row['error']}"})
            continue
        for stage in (*STAGES, "total"):
            line = {"case": row["case"], "gaussians": row["gaussians"], "stage": stage}
            for unit in ("s", "cpu_s", "mb"):
                ours, ref = row.get(f"ours_{stage}_{unit}"), row.get(f"reference_{stage}_{unit}")
                if ours is None or ref is None:
                    continue
                fmt = "{:.0f}" if unit == "mb" else "{:.2f}"
                line[f"ours_{unit}"] = fmt.format(ours)
                line[f"ref_{unit}"] = fmt.format(ref)
                line[f"ratio_{unit}"] = f"{ours / max(ref, 1e-9):.2f}"
            if stage == "total":
                line["diff"] = f"{row.get('max_abs_diff', float('nan')):.1e}"
                line["agree"] = f"{100 * row.get('agree', float('nan')):.3f}%"
            lines.append(line)
    return markdown_table(
        lines,
        [
            ("case", "case"),
            ("Gaussians", "gaussians"),
            ("stage", "stage"),
            ("ours s", "ours_s"),
            ("reference s", "ref_s"),
            ("ours/ref time", "ratio_s"),
            ("ours CPU s", "ours_cpu_s"),
            ("reference CPU s", "ref_cpu_s"),
            ("ours/ref CPU", "ratio_cpu_s"),
            ("ours peak MB", "ours_mb"),
            ("reference peak MB", "ref_mb"),
            ("ours/ref mem", "ratio_mb"),
            ("max abs diff", "diff"),
            ("Gaussians within 1e-4", "agree"),
        ],
    )


def main() -> None:
    args = bench_parser(__doc__, CASES, "138k Gaussians, D = 16", device=False).parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.mode)))
        return
    print(table(run_cases(Path(__file__), QUICK if args.quick else FULL)))


if __name__ == "__main__":
    main()
