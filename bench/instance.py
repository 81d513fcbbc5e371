"""Benchmark instance selection (query/instance.py) beside the plain threshold selection.

    python bench/instance.py             # donut 45k, synth 138k and synth 1M: markdown table
    python bench/instance.py --quick     # donut 45k only (~1 min on 2 cores)
    python bench/instance.py --cases synth138k   # some scenes only

Scenes: the real donut (45,624 Gaussians, tests/data/donut/fused.ply) and the demo tabletop's
surfaces sampled finely enough for 138k or 1M Gaussians (as bench/lift.py builds them). The query:
an exemplar-like pick on the Gaussians' own colours: the seed is the Gaussian of the orange can
nearest its centre (synth; for the donut the highest Gaussian, on the icing), and the scores are
the cosine of every Gaussian's (SH DC) colour to the seed's. On the tabletop that is the motivating
case: the wooden table is near the can's colour, so about half the scene is "like it" and the band
the graph cut runs on is that big; on the donut nearly every Gaussian is.

Per scene, in one process (built before any timer): the 16-NN graph and its colour adjacency
(`instance_adjacency`: edge weights, symmetrised CSR), built once per scene as the viewer caches
them, timed once ("graph + adjacency s"); then, each timed as the best of 2 calls after a warm-up
(`_measure.measure`):
  from_scores  `Selection.from_scores(scores)` (Otsu's cut): the reference, what a pick does today;
  component    `instance_selection(..., InstanceConfig("component"))`: the seed's connected piece
               of the Gaussians above Otsu's threshold (a breadth-first search from the seed);
  graphcut     `instance_selection(..., InstanceConfig("graphcut"))`: that piece, max-flow on it
               and 2 rings around it, then the seed's piece of the cut.
Peak MB is what one call adds to the process (RSS sampled every 2 ms, in a second interpreter with
glibc's mmap threshold fixed, see `_measure.run_isolated`). Ratios are to from_scores of the same
run: time x ref = ours / reference, peak x ref = ours / reference. On 2 cores shared with other
work, read the ratios of one run rather than absolute times.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.lift.diffusion import knn_graph  # noqa: E402
from omnivision.query.instance import (  # noqa: E402
    InstanceConfig,
    instance_adjacency,
    instance_selection,
)
from omnivision.query.selection import Selection  # noqa: E402
from omnivision.scenes.demo import build_demo_gaussians  # noqa: E402
from omnivision.scenes.gaussians import GaussianScene  # noqa: E402
from omnivision.scenes.io_ply import read_ply  # noqa: E402

DONUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "donut" / "fused.ply"
CASES = {"donut45k": 45_624, "synth138k": 138_000, "synth1M": 1_000_000}
QUICK = ("donut45k",)
CAN = 6  # the demo's orange can
METHODS = ("from_scores", "component", "graphcut")


def build(case: str) -> tuple[GaussianScene, int]:
    """The scene and the seed Gaussian."""
    if case == "donut45k":
        if not DONUT.is_file():
            raise SystemExit(f"{DONUT} not found (it ships in tests/data)")
        scene = read_ply(DONUT)
        return scene, int(torch.argmax(scene.means[:, 2]))
    scene = build_demo_gaussians(spacing=0.0055 * math.sqrt(29_298 / CASES[case]))
    can = scene.extras["object_id"] == CAN
    centre = scene.means[can].mean(0)
    distance = torch.where(can, (scene.means - centre).norm(dim=-1), torch.inf)
    return scene, int(torch.argmin(distance))


def run_case(case: str, mode: str) -> dict:
    scene, seed = build(case)
    colours = scene.rgb_dc
    scores = F.normalize(colours, dim=-1) @ F.normalize(colours[seed], dim=0)
    start = time.perf_counter()
    matrix = instance_adjacency(knn_graph(scene.means, 16), colours)
    row: dict = {"case": case, "gaussians": len(scene)}
    if mode == "time":
        row["graph_s"] = f"{time.perf_counter() - start:.2f}"
    fns = {
        "from_scores": lambda: Selection.from_scores(scores),
        "component": lambda: instance_selection(scores, seed, matrix, InstanceConfig("component")),
        "graphcut": lambda: instance_selection(scores, seed, matrix, InstanceConfig("graphcut")),
    }
    for name, fn in fns.items():
        if mode == "time":
            row[f"{name}_selected"] = fn().count
            row[f"{name}_ms"] = 1000 * measure(fn, "time", repeats=2)
        else:
            row[f"{name}_peak_mb"] = measure(fn, "memory")
    return row


def table_rows(rows: list[dict]) -> list[dict]:
    """One printed row per scene and method, with ratios to from_scores of the same run."""
    out = []
    for row in rows:
        if "error" in row:
            out.append({"case": row["case"], "method": f"error: {row['error']}"})
            continue
        ref_ms, ref_mb = row["from_scores_ms"], row["from_scores_peak_mb"]
        for name in METHODS:
            ms, mb = row[f"{name}_ms"], row[f"{name}_peak_mb"]
            # under 1 MB the RSS sampling (4 kB pages, 2 ms) cannot tell: no ratio
            mem_ratio = f"{mb / ref_mb:.1f}x" if ref_mb >= 1 else "(ref < 1 MB)"
            out.append(
                {
                    "case": row["case"] if name == METHODS[0] else "",
                    "gaussians": f"{row['gaussians']:,}" if name == METHODS[0] else "",
                    "graph_s": row["graph_s"] if name == METHODS[0] else "",
                    "method": name,
                    "selected": f"{row[f'{name}_selected']:,}",
                    "ms": f"{ms:.1f}",
                    "time_ratio": f"{ms / ref_ms:.1f}x",
                    "peak_mb": f"{mb:.1f}" if mb < 10 else f"{mb:.0f}",
                    "mem_ratio": mem_ratio,
                }
            )
    return out


def main() -> None:
    parser = bench_parser(__doc__, CASES, "donut 45k only", device=False)
    parser.add_argument("--cases", help="comma-separated scenes (default: all), e.g. synth138k")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.mode)))
        return
    cases = args.cases.split(",") if args.cases else list(QUICK if args.quick else CASES)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    # OpenMP threads sleep instead of spinning while they wait (cores shared with other jobs)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = run_cases(Path(__file__), cases)
    columns = [
        ("scene", "case"),
        ("Gaussians", "gaussians"),
        ("graph + adjacency s", "graph_s"),
        ("selection", "method"),
        ("selected", "selected"),
        ("ms", "ms"),
        ("time x ref", "time_ratio"),
        ("peak MB", "peak_mb"),
        ("peak x ref", "mem_ratio"),
    ]
    print(markdown_table(table_rows(rows), columns))


if __name__ == "__main__":
    main()
