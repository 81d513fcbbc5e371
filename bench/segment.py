"""Benchmark `omnivision segment`'s 2D pipeline at real size, random weights: s/image with each
refinement on and off.

    python bench/segment.py            # 960x540, SAM 2 on 16x16 points
    python bench/segment.py --quick    # 640x360, SAM 2 on 8x8 points

One image (tests/data/bedroom/00000.jpg, 960x540; `--quick`: resized to 640x360), K = 150 class
texts (ADE20K-150's count; random unit vectors: the text side runs once per run, not per image),
`twod.segment` with `SegmentConfig()` defaults (crops 384 px every 256 px plus the whole image at
short side 640, global weight 0.3, guided upsampling, 32 classes per pass).
- backbones: DINOv3 ViT-S/16 and ViT-B/16 with random weights at the real architecture (built as
  bench/track.py does: transformers `DINOv3ViTConfig`, 12 layers, patch 16, 4 registers,
  parameter counts checked against the published 21.6M / 85.7M), saved with `save_pretrained`
  and loaded with `load_extractor(folder)`, as real weights are.
- regions: SAM 2.1 hiera-t (random weights, `{"model": state_dict}` + its config, built as
  bench/track.py does) automatic masks, its quality thresholds at 0 so the random model yields
  masks to average over (with real weights fewer pass).
- Each stage is timed on its own (`_measure.measure`: best of `--repeats` after a warm-up): the
  scores (local-global: every crop and the whole image; or the whole image only; global term on
  or off), the per-pixel pass (guided or bilinear upsampling, with or without region averaging),
  SAM 2's automatic masks. A setting's s/image is the sum of its stages (the stages run one
  after another on one image, nothing is shared between them). The per-pixel pass and SAM 2 do
  not depend on the backbone (same grid: patch 16) and are timed once. Random weights: the
  labels mean nothing; speed does not depend on the weights' values.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure  # noqa: E402
from track import DINOV3, dino_folder, load_average, param_millions, sam_checkpoint  # noqa: E402

from omnivision.twod.extractors import load_extractor  # noqa: E402
from omnivision.twod.segment import (  # noqa: E402
    FeatureScorer,
    SegmentConfig,
    local_global_scores,
    pixel_labels,
    region_owner,
)

IMAGE = Path(__file__).resolve().parents[1] / "tests" / "data" / "bedroom" / "00000.jpg"
CLASSES = 150
BACKBONES = ("dinov3-vits16", "dinov3-vitb16")
SETTINGS = {  # setting: (scores stage, pixel stage, SAM 2 masks)
    "all on": ("local-global", "guided + regions", True),
    "no global": ("local-global, no global", "guided + regions", True),
    "no guided": ("local-global", "bilinear + regions", True),
    "no regions": ("local-global", "guided", False),
    "no local-global": ("whole", "guided + regions", True),
    "all off": ("whole, no global", "bilinear", False),
}


def load_image(quick: bool) -> torch.Tensor:
    with Image.open(IMAGE) as im:
        im = im.convert("RGB")
        if quick:
            im = im.resize((640, 360), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


def main() -> None:
    parser = bench_parser(__doc__, {}, "640x360 image, SAM 2 on 8x8 points")
    parser.set_defaults(device="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per stage (1)")
    args = parser.parse_args()
    start = time.perf_counter()
    print("$ python " + shlex.join(sys.argv))
    torch.set_num_threads(args.threads)
    points = 8 if args.quick else 16
    image = load_image(args.quick)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), device {args.device}"
    )
    print(f"at the start: {load_average()}")

    def timed(fn) -> float:
        return measure(fn, "time", repeats=args.repeats, device=args.device)

    config = SegmentConfig()
    stages: dict[str, dict[str, float]] = {}
    params: dict[str, float] = {}
    coarse = None
    with tempfile.TemporaryDirectory() as workdir:
        for backbone in BACKBONES:
            extractor = load_extractor(
                str(dino_folder(Path(workdir), backbone)), config.whole, args.device
            )
            params[backbone] = param_millions(extractor.model, DINOV3[backbone][2], backbone)  # type: ignore[attr-defined]
            torch.manual_seed(0)
            texts = torch.nn.functional.normalize(torch.randn(CLASSES, extractor.dim), dim=-1)
            scorer = FeatureScorer(extractor, texts)
            row = stages.setdefault(backbone, {})
            for name, cfg in (
                ("local-global", config),
                ("local-global, no global", replace(config, global_weight=0.0)),
                ("whole", replace(config, local_global=False)),
                ("whole, no global", replace(config, local_global=False, global_weight=0.0)),
            ):
                row[name] = timed(lambda c=cfg, s=scorer: local_global_scores(image, s, c))
                print(f"{backbone} {name}: {row[name]:.2f} s", file=sys.stderr)
            if coarse is None:
                coarse = local_global_scores(image, scorer, config)[0]
        from omnivision.twod.sam import load_sam2

        checkpoint, sam_config = sam_checkpoint(Path(workdir))
        sam = load_sam2(checkpoint, config=sam_config, device=args.device)
        masks = sam.generate(
            image, points_per_side=points, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
        shared = {
            "SAM 2 masks": timed(
                lambda: sam.generate(
                    image, points_per_side=points, pred_iou_thresh=0.0, stability_score_thresh=0.0
                )
            )
        }
    assert coarse is not None
    owner_of = lambda: region_owner(masks.masks.bool())  # noqa: E731
    for name, cfg, regions in (
        ("guided", config, False),
        ("bilinear", replace(config, guided=False), False),
        ("guided + regions", config, True),
        ("bilinear + regions", replace(config, guided=False), True),
    ):
        shared[name] = timed(
            lambda cfg=cfg, regions=regions: pixel_labels(
                coarse, image, cfg, owner_of() if regions else None
            )
        )
        print(f"{name}: {shared[name]:.2f} s", file=sys.stderr)
    size = f"{image.shape[1]}x{image.shape[0]}"
    print(f"\nStages, {size}, {CLASSES} classes (s, best of {args.repeats} after a warm-up):\n")
    stage_rows = [
        {"stage": f"scores: {name}", "backbone": b, "seconds": f"{t:.2f}"}
        for b in BACKBONES for name, t in stages[b].items()
    ] + [{"stage": name, "backbone": "any", "seconds": f"{t:.2f}"} for name, t in shared.items()]  # fmt: skip
    print(
        markdown_table(stage_rows, [("stage", "stage"), ("backbone", "backbone"), ("s", "seconds")])
    )
    print(f"\n{len(masks)} SAM 2 masks on {points}x{points} points (random weights, thresholds 0).")
    print(f"\nSeconds per image, {size}, {CLASSES} classes, {args.device} (sum of the stages):\n")
    rows = []
    for setting, (scores, pixels, use_sam) in SETTINGS.items():
        row = {"setting": setting}
        for b in BACKBONES:
            total = stages[b][scores] + shared[pixels] + (shared["SAM 2 masks"] if use_sam else 0)
            row[b] = f"{total:.2f}"
        rows.append(row)
    columns = [("setting", "setting")] + [(f"{b} ({params[b]:.1f}M) s/image", b) for b in BACKBONES]
    print(markdown_table(rows, columns))
    print(f"\nwall {time.perf_counter() - start:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
