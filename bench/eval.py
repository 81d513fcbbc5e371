"""Benchmark eval/: seconds per frame of the LERF-OVS protocols, and the synthetic benchmark.

    python bench/eval.py             # the protocol cases at N = 1M, 986x728, D = 512
    python bench/eval.py --quick     # N = 50k, 320x240 (a smoke test)
    python bench/eval.py --case synthetic-e2e   # the whole synthetic benchmark once (minutes)

Scene: bench/query.py's random cloud of N Gaussians (SH degree 3), one orbit camera at the
LERF-OVS frame size (986 x 728, figurines) or 320 x 240 with --quick; N x D random lifted features
(D = 512, as CLIP ViT-B/16), built before any timer starts. One label frame with Q = 5 categories
(random boxes, their polygons the boxes' corners), the text space a stub returning fixed random
unit vectors, so only the per-frame work is timed.

- lerf-2d-features: `evaluate_lerf` with the `features` path only (render the D-dim features,
  relevancy per pixel, box-smoothed argmax, LangSplat's mask, IoU) for one frame.
- lerf-2d-scalar: the `scalar` path only (per-Gaussian relevancy, rendered as Q channels).
- lerf-3d: the 3D protocol only (per-Gaussian relevancy, Otsu cut, selections rendered).
  Reference for all three: the ordinary RGB render of the same frame (what any protocol pays).
- synthetic-e2e: `omnivision eval synthetic` in a fresh folder (train the tiny CLIP and bridge,
  lift three feature sets, score every path, seg3d, report), measured once. Reference: the same
  run's model training (`make_synthetic` alone, in another fresh folder).

Seconds are one call after a warm-up (a 1M frame costs minutes on CPU; synthetic-e2e: one call); peak MB is what one
call adds to the process (`_measure`), each case in fresh interpreters. ratio = ours / reference.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402
from _scenes import random_scene  # noqa: E402

from omnivision.eval.lerf import LerfConfig, Level, evaluate_lerf  # noqa: E402
from omnivision.eval.lerf_labels import CategoryLabel, LabelFrame  # noqa: E402
from omnivision.scenes.cameras import orbit_cameras  # noqa: E402
from omnivision.scenes.render import RenderConfig, render  # noqa: E402

CASES = {
    "lerf-2d-features": "2D protocol, rendered features -> relevancy",
    "lerf-2d-scalar": "2D protocol, per-Gaussian relevancy rendered",
    "lerf-3d": "3D protocol, selection rendered",
    "synthetic-e2e": "omnivision eval synthetic, fresh folder",
}
FULL = (1_000_000, 986, 728)
QUICK = (50_000, 320, 240)
CATEGORIES = 5


def frame(width: int, height: int) -> LabelFrame:
    rng = np.random.default_rng(0)
    out = LabelFrame(Path("frame_00001.json"), "frame_00001.jpg", width, height)
    for k in range(CATEGORIES):
        w, h = rng.uniform(0.1, 0.3) * width, rng.uniform(0.1, 0.3) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        box = (x0, y0, x0 + w, y0 + h)
        corners = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
        out.categories[f"thing {k}"] = CategoryLabel([box], [corners])
    return out


def build_case(case: str, n: int, width: int, height: int, dim: int):
    scene = random_scene(n)
    cameras = orbit_cameras((0.0, 0.0, 0.0), 2.5, 1, 20.0, width, height, 60.0)
    cameras.names = ["frame_00001.jpg"]
    g = torch.Generator().manual_seed(0)
    levels = [Level("random", F.normalize(torch.randn(n, dim, generator=g), dim=-1).half())]
    texts = F.normalize(torch.randn(CATEGORIES + 4, dim, generator=g), dim=-1)

    def text(phrases):
        return texts[: len(phrases)]

    paths = {"lerf-2d-features": ("features",), "lerf-2d-scalar": ("scalar",), "lerf-3d": ()}
    config = LerfConfig(paths=paths[case], protocol_3d=case == "lerf-3d")  # type: ignore[arg-type]
    labels = [frame(width, height)]

    def ours():
        return evaluate_lerf(scene, cameras, levels, text, labels, config, keep_maps=False)

    def reference():
        return render(scene, cameras, config=RenderConfig())

    return ours, reference


def run_case(case: str, quick: bool, dim: int, mode: str) -> dict:
    n, width, height = QUICK if quick else FULL
    row: dict = {"case": case, "what": CASES[case]}
    unit, scale = ("s", 1.0) if mode == "time" else ("peak_mb", 1.0)
    if case == "synthetic-e2e":
        from omnivision.eval.synthetic import make_synthetic, run_synthetic

        def timed(fn) -> float:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                fn(Path(tmp) / "bench")
                return time.perf_counter() - start

        if mode == "time":
            ours, ref = timed(run_synthetic), timed(make_synthetic)
        else:
            ours = measure(lambda: timed(run_synthetic), "memory")
            ref = measure(lambda: timed(make_synthetic), "memory")
        row.update(gaussians="29,298 (demo)", frame="320x240", D="-")
    else:
        fn, reference = build_case(case, n, width, height, dim)
        ours, ref = measure(fn, mode, repeats=1), measure(reference, mode, repeats=1)
        row.update(gaussians=f"{n:,}", frame=f"{width}x{height}", D=dim)
    row[f"ours_{unit}"] = f"{scale * ours:.2f}" if mode == "time" else f"{ours:.0f}"
    row[f"ref_{unit}"] = f"{scale * ref:.2f}" if mode == "time" else f"{ref:.0f}"
    key = "time_ratio" if mode == "time" else "mem_ratio"
    row[key] = f"{ours / max(ref, 1e-9):.1f}x"
    return row


def main() -> None:
    parser = bench_parser(__doc__, CASES, "N = 50k at 320x240 instead of 1M at 986x728")
    parser.add_argument("--dim", type=int, default=512, help="lifted feature dim D")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.quick, args.dim, args.mode)))
        return
    extra = ["--dim", str(args.dim), "--threads", str(args.threads)]
    extra += ["--quick"] if args.quick else []
    cases = [c for c in CASES if c != "synthetic-e2e"]
    rows = run_cases(Path(__file__), cases, args.device, extra)
    columns = [
        ("case", "case"),
        ("what", "what"),
        ("Gaussians", "gaussians"),
        ("frame", "frame"),
        ("D", "D"),
        ("s / frame", "ours_s"),
        ("peak MB", "ours_peak_mb"),
        ("RGB render s", "ref_s"),
        ("RGB render peak MB", "ref_peak_mb"),
        ("time / render", "time_ratio"),
        ("peak mem / render", "mem_ratio"),
    ]
    if any("error" in row for row in rows):
        columns.append(("error", "error"))
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
