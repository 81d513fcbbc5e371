"""Benchmark the torch renderer (and gsplat on CUDA) against the dense reference.

    python bench/render.py            # all cases, a markdown table on stdout
    python bench/render.py --quick    # small cases only

Scenes: the real donut (45,624 Gaussians, tests/data) and synthetic scenes of 200k and 1M
Gaussians laid on the demo tabletop's surfaces (the demo builder at a finer spacing), so that
depth complexity is like a trained scene rather than a random cloud. The dense reference (every
Gaussian x every pixel) is timed only where it finishes in reasonable time; its ratio column says
how much faster the tile renderer is in the same run. "16-px tiles" times the same render with
`RenderConfig(tile_size=16)`, gsplat's tile and the torch compositor's default before 2026-12
(now 8: with fewer Gaussians per tile, a depth slice pads less and tiles stop sooner).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.scenes.cameras import orbit_around_points, orbit_cameras  # noqa: E402
from omnivision.scenes.demo import build_demo_gaussians  # noqa: E402
from omnivision.scenes.io_ply import read_ply  # noqa: E402
from omnivision.scenes.reference import render_dense_reference  # noqa: E402
from omnivision.scenes.render import RenderConfig, render  # noqa: E402

DONUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "donut" / "fused.ply"
# (name, scene, resolution, run the dense reference?)
CASES = {
    "demo29k@128": ("demo", 128, True),
    "donut45k@128": ("donut", 128, True),
    "donut45k@512": ("donut", 512, False),
    "donut45k@1024": ("donut", 1024, False),
    "synth200k@512": ("synth200k", 512, False),
    "synth1M@512": ("synth1M", 512, False),
    "synth1M@1024": ("synth1M", 1024, False),
}
QUICK = ("demo29k@128", "donut45k@512")


def build(scene_name: str, size: int):
    if scene_name == "donut":
        if not DONUT.is_file():
            raise SystemExit(f"{DONUT} not found (it ships in tests/data)")
        scene = read_ply(DONUT)
        return scene, orbit_around_points(scene.means, 1, size, size)
    target = {"demo": 29_000, "synth200k": 200_000, "synth1M": 1_000_000}[scene_name]
    spacing = 0.0055 * math.sqrt(29_298 / target)
    scene = build_demo_gaussians(spacing=spacing)
    return scene, orbit_cameras((0.0, 0.0, 0.04), 1.25, 1, 35.0, size, size, 60.0)


def run_case(case: str, device: str, mode: str) -> dict:
    scene_name, size, with_reference = CASES[case]
    scene, cameras = build(scene_name, size)
    row: dict = {
        "case": case,
        "gaussians": len(scene),
        "pixels": f"{size}x{size}",
        "device": device,
    }
    unit, fmt = ("s", "{:.3f}") if mode == "time" else ("peak_mb", "{:.0f}")
    if device == "cuda":
        scene_cuda = scene.to("cuda")
        gs = measure(
            lambda: render(scene_cuda, cameras, config=RenderConfig(backend="gsplat")),
            mode,
            5,
            device,
        )
        tt = measure(
            lambda: render(scene_cuda, cameras, config=RenderConfig(backend="torch")),
            mode,
            1,
            device,
        )
        row.update({f"torch_{unit}": fmt.format(tt), f"gsplat_{unit}": fmt.format(gs)})
        if mode == "time":
            row["ratio"] = f"{tt / gs:.0f}x"
        return row
    fast = measure(lambda: render(scene, cameras, config=RenderConfig(backend="torch")), mode)
    row[f"torch_{unit}"] = fmt.format(fast)
    tiles16 = measure(
        lambda: render(scene, cameras, config=RenderConfig(backend="torch", tile_size=16)), mode
    )
    row[f"tiles16_{unit}"] = fmt.format(tiles16)
    if mode == "time":
        row["tiles16_ratio"] = f"{tiles16 / fast:.1f}x"
    if with_reference:
        ref = measure(lambda: render_dense_reference(scene, cameras), mode, 1)
        row[f"reference_{unit}"] = fmt.format(ref)
        key = "speedup" if mode == "time" else "mem_ratio"
        row[key] = f"{ref / fast:.0f}x" if mode == "time" else f"{fast / max(ref, 1e-3):.1f}"
    else:
        row.update({f"reference_{unit}": "-", "speedup": "-", "mem_ratio": "-"})
    return row


def main() -> None:
    args = bench_parser(__doc__, CASES, "only the small cases").parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.mode)))
        return
    cases = QUICK if args.quick else CASES
    rows = run_cases(Path(__file__), cases, args.device, ["--device", args.device])
    columns = [
        ("case", "case"),
        ("Gaussians", "gaussians"),
        ("image", "pixels"),
        ("torch s", "torch_s"),
        ("torch peak MB", "torch_peak_mb"),
        ("16-px tiles s", "tiles16_s"),
        ("16-px tiles peak MB", "tiles16_peak_mb"),
        ("16-px tiles / ours", "tiles16_ratio"),
        ("dense ref s", "reference_s"),
        ("dense ref peak MB", "reference_peak_mb"),
        ("speed-up vs ref", "speedup"),
        ("peak mem / ref", "mem_ratio"),
    ]
    if args.device == "cuda":
        columns = [c for c in columns[:5]] + [
            ("gsplat s", "gsplat_s"),
            ("gsplat peak MB", "gsplat_peak_mb"),
            ("torch time / gsplat", "ratio"),
        ]
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
