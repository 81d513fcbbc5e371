"""Benchmark lifting: one view's aggregation (fast path vs the autograd twin) and graph diffusion.

    python bench/lift.py            # all cases, markdown table on stdout (progress JSON on stderr)
    python bench/lift.py --quick    # donut only, D = 3 and 64

Scenes: the real donut (45,624 Gaussians, tests/data) and demo-tabletop surfaces at 138k and
1M Gaussians (the demo builder at a finer spacing), one orbit view at 512x512; feature maps of
D = 3, 64, 384 channels on a 32x32 patch grid (as a DINO map), upsampled inside. The reference is
LUDVIG's autograd formulation through the same renderer; it is skipped where its N x D gradient
would not fit comfortably. Diffusion: kNN graph (k = 16), edge weights on 64-dim features,
sparse adjacency and 10 iterations of diffusion of 8 channels.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.lift.aggregate import lift_view, lift_view_autograd  # noqa: E402
from omnivision.lift.diffusion import adjacency, diffuse, edge_weights, knn_graph  # noqa: E402
from omnivision.scenes.cameras import orbit_around_points, orbit_cameras  # noqa: E402
from omnivision.scenes.demo import build_demo_gaussians  # noqa: E402
from omnivision.scenes.io_ply import read_ply  # noqa: E402

DONUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "donut" / "fused.ply"
SCENES = {"donut45k": 45_624, "synth138k": 138_000, "synth1M": 1_000_000}
CASES = {f"{s}-D{d}": (s, d) for s in SCENES for d in (3, 64, 384)}
CASES.update({f"{s}-diffusion": (s, 0) for s in SCENES})
QUICK = ("donut45k-D3", "donut45k-D64", "donut45k-diffusion")


def build(scene_name: str):
    if scene_name == "donut45k":
        if not DONUT.is_file():
            raise SystemExit(f"{DONUT} not found (it ships in tests/data)")
        scene = read_ply(DONUT)
        return scene, orbit_around_points(scene.means, 1, 512, 512)
    spacing = 0.0055 * math.sqrt(29_298 / SCENES[scene_name])
    scene = build_demo_gaussians(spacing=spacing)
    return scene, orbit_cameras((0.0, 0.0, 0.04), 1.25, 1, 35.0, 512, 512, 60.0)


def run_case(case: str, mode: str) -> dict:
    scene_name, dim = CASES[case]
    scene, cameras = build(scene_name)
    row: dict = {"case": case, "gaussians": len(scene)}
    unit, fmt = ("s", "{:.3f}") if mode == "time" else ("peak_mb", "{:.0f}")
    if dim == 0:
        feats = torch.randn(len(scene), 64)
        values = torch.rand(len(scene), 8)

        def run():
            graph = knn_graph(scene.means, 16)
            diffuse(values, adjacency(graph, edge_weights(graph, feats)), iterations=10)

        row[f"diffusion_{unit}"] = fmt.format(measure(run, mode, 1))
        return row
    feature_map = torch.randn(32, 32, dim, generator=torch.Generator().manual_seed(0))
    fast = measure(lambda: lift_view(scene, cameras, 0, feature_map), mode, 1)
    row["D"] = dim
    row[f"fast_{unit}"] = fmt.format(fast)
    if mode == "time":
        row["ms_per_dim"] = f"{1000 * fast / dim:.1f}"
    if len(scene) * dim <= 138_000 * 384:
        ref = measure(lambda: lift_view_autograd(scene, cameras, 0, feature_map), mode, 1)
        row[f"autograd_{unit}"] = fmt.format(ref)
        row["time_ratio" if mode == "time" else "mem_ratio"] = f"{ref / max(fast, 1e-9):.1f}x"
    else:
        row[f"autograd_{unit}"] = "-"
    return row


def main() -> None:
    args = bench_parser(__doc__, CASES, "donut only, D = 3 and 64", device=False).parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.mode)))
        return
    rows = run_cases(Path(__file__), QUICK if args.quick else CASES)
    lift_rows = [r for r in rows if "D" in r or "error" in r]
    print(
        markdown_table(
            lift_rows,
            [
                ("case", "case"),
                ("Gaussians", "gaussians"),
                ("D", "D"),
                ("lift s/view", "fast_s"),
                ("ms/view/dim", "ms_per_dim"),
                ("lift peak MB", "fast_peak_mb"),
                ("autograd s", "autograd_s"),
                ("autograd peak MB", "autograd_peak_mb"),
                ("autograd/fast time", "time_ratio"),
                ("autograd/fast mem", "mem_ratio"),
            ],
        )
    )
    print()
    print(
        markdown_table(
            [r for r in rows if "diffusion_s" in r],
            [
                ("case", "case"),
                ("Gaussians", "gaussians"),
                ("kNN+weights+10 its s", "diffusion_s"),
                ("peak MB", "diffusion_peak_mb"),
            ],
        )
    )


if __name__ == "__main__":
    main()
