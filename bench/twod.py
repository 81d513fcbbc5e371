"""Benchmark the 2D backbones at their real sizes, with random weights, against the colour backend.

    python bench/twod.py            # all cases, a markdown table on stdout
    python bench/twod.py --quick    # DINOv3-S and SAM 2.1 tiny at short side 448 only

Models are built at the real checkpoints' architecture with random weights: the same layers,
shapes and FLOPs, so the timings are real, and nothing is downloaded. Their parameter counts are
checked against the published ones (DINOv3 ViT-S/16 21.6M, ViT-B/16 85.7M; SAM 2.1 hiera tiny
38.9M, base+ 80.8M) and shown in the table.

- DINOv3 ViT-S/16 and ViT-B/16: transformers' `DINOv3ViTConfig` (4 register tokens, layerscale,
  RoPE, the other fields at their defaults) in our `DinoExtractor`, timed on `.extract([image])`
  of the real photo tests/data/images/truck.jpg (1800x1200) at short side 448 and 896; the
  extractor resizes it to that short side (multiples of 16).
- SAM 2.1 hiera tiny and base+: sam2's own configs, random init, saved as `{"model": state_dict}`
  in a temporary folder and loaded with `load_sam2`, the path a real checkpoint takes. Timed on
  `set_image` (the image encoder: the bulk) plus one box `predict`, on truck.jpg resized to short
  side 448 or 896 beforehand. SAM resizes every image to 1024x1024 internally, so the encoder
  costs the same at both sizes; only the mask upsampling to the image size differs. The "input"
  column gives what the model sees.

s/image is the best of 2 calls after a warm-up; peak MB is what one call adds to the process
(activations and temporaries, not the weights, which are about 4 MB per million parameters in
fp32), both from `_measure`. The reference is the weight-free `ColourTextureExtractor` (stride 8)
on the same image at the same short side, measured in the same process: the ratio columns are
backbone / colour. On CUDA the backbones run on the GPU and the colour reference on the CPU.
All cases (2 CPU cores) take about 10 minutes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.twod.colour import ColourTextureExtractor  # noqa: E402
from omnivision.twod.features import prepare_batch  # noqa: E402
from omnivision.twod.io import read_image  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to fetch

TRUCK = Path(__file__).resolve().parents[1] / "tests" / "data" / "images" / "truck.jpg"
TRUCK_BOX = (75.0, 275.0, 1725.0, 850.0)  # xyxy pixels on the 1800x1200 photo: the truck
SAM_INPUT = 1024
# DINOv3 (hidden, heads, mlp, published params in M); 12 layers, patch 16, 4 registers.
DINOV3 = {"vits16": (384, 6, 1536, 21.6), "vitb16": (768, 12, 3072, 85.7)}
# SAM 2.1 (sam2 package config, published params in M).
SAM21 = {
    "hiera-t": ("configs/sam2.1/sam2.1_hiera_t.yaml", 38.9),
    "hiera-b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", 80.8),
}
# name: (family, size, short side)
CASES = {
    "dinov3-vits16@448": ("dinov3", "vits16", 448),
    "dinov3-vits16@896": ("dinov3", "vits16", 896),
    "dinov3-vitb16@448": ("dinov3", "vitb16", 448),
    "dinov3-vitb16@896": ("dinov3", "vitb16", 896),
    "sam2.1-hiera-t@448": ("sam2.1", "hiera-t", 448),
    "sam2.1-hiera-t@896": ("sam2.1", "hiera-t", 896),
    "sam2.1-hiera-b+@448": ("sam2.1", "hiera-b+", 448),
    "sam2.1-hiera-b+@896": ("sam2.1", "hiera-b+", 896),
}
QUICK = ("dinov3-vits16@448", "sam2.1-hiera-t@448")


def param_millions(model: torch.nn.Module, expected: float, name: str) -> float:
    """Parameters in millions, checked against the published count (within 2%)."""
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    if abs(millions - expected) > 0.02 * expected:
        raise SystemExit(f"{name}: {millions:.1f}M parameters, the real model has {expected}M")
    return millions


def build_dino(size: str, short_side: int, device: str):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from omnivision.twod.dino import DinoExtractor

    hidden, heads, mlp, expected = DINOV3[size]
    config = DINOv3ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=12,
        num_attention_heads=heads,
        intermediate_size=mlp,
        patch_size=16,
        num_register_tokens=4,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = DINOv3ViTModel(config).eval()
    params = param_millions(model, expected, f"dinov3-{size}")
    extractor = DinoExtractor(
        model=model,
        name=f"dinov3-{size}-random",
        dim=hidden,
        stride=16,
        num_registers=4,
        short_side=short_side,
        device=device,
    )
    return extractor, params


def build_sam(size: str, device: str):
    from hydra.utils import instantiate

    from omnivision.twod.sam import _sam2_config, load_sam2

    config, expected = SAM21[size]
    torch.manual_seed(0)
    model = instantiate(_sam2_config(config).model, _recursive_=True)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"sam2.1_{size}_random.pt"
        torch.save({"model": model.state_dict()}, checkpoint)
        del model
        sam = load_sam2(checkpoint, config=config, device=device)
    return sam, param_millions(sam.model, expected, f"sam2.1-{size}")


def run_case(case: str, device: str, mode: str) -> dict:
    family, size, short_side = CASES[case]
    if not TRUCK.is_file():
        raise SystemExit(f"skipped: {TRUCK} not found (it ships in tests/data)")
    photo = read_image(TRUCK)  # (H, W, 3) in [0, 1]
    if family == "dinov3":
        extractor, params = build_dino(size, short_side, device)
        image = photo
        h, w = prepare_batch([photo], short_side, 16, (0, 0, 0), (1, 1, 1))[1]
        seen = f"{h}x{w}"

        def model_call() -> object:
            return extractor.extract([image])

    else:
        sam, params = build_sam(size, device)
        resized = prepare_batch([photo], short_side, 1, (0, 0, 0), (1, 1, 1))[0]
        image = resized[0].permute(1, 2, 0).clamp(0, 1).contiguous()  # antialias overshoot
        h, w = image.shape[:2]
        scale = short_side / min(photo.shape[:2])
        box = [c * scale for c in TRUCK_BOX]
        seen = f"{SAM_INPUT}x{SAM_INPUT} (from {h}x{w})"

        def model_call() -> object:
            sam.set_image(image)
            return sam.predict(box=box)

    colour = ColourTextureExtractor(short_side=short_side)
    row: dict = {"case": case, "params_m": f"{params:.1f}", "input": seen, "device": device}
    unit, fmt = ("s", "{:.3f}") if mode == "time" else ("peak_mb", "{:.0f}")
    model_value = measure(model_call, mode, 2, device)
    colour_value = measure(lambda: colour.extract([image]), mode, 2, "cpu")
    row[f"model_{unit}"] = fmt.format(model_value)
    row[f"colour_{unit}"] = fmt.format(colour_value)
    if mode == "time":
        row["time_ratio"] = f"{model_value / colour_value:.0f}x"
    else:
        row["mem_ratio"] = f"{model_value / max(colour_value, 1e-3):.1f}"
    return row


def main() -> None:
    args = bench_parser(__doc__, CASES, "only DINOv3-S and SAM tiny at 448").parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.mode)))
        return
    if not TRUCK.is_file():
        print(f"skipped: {TRUCK} not found (it ships in tests/data)", file=sys.stderr)
        return
    cases = QUICK if args.quick else CASES
    rows = run_cases(Path(__file__), cases, args.device, ["--device", args.device])
    columns = [
        ("case", "case"),
        ("params (M)", "params_m"),
        ("input", "input"),
        ("s/image", "model_s"),
        ("peak MB", "model_peak_mb"),
        ("colour ref s", "colour_s"),
        ("colour ref peak MB", "colour_peak_mb"),
        ("time / colour", "time_ratio"),
        ("peak mem / colour", "mem_ratio"),
    ]
    if any("error" in row for row in rows):
        columns.append(("error", "error"))
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
