"""Benchmark dense CLIP features (LangSplat, LERF) and phrase queries at ViT-B/16's real size.

    python bench/language.py            # all cases, a markdown table on stdout
    python bench/language.py --quick    # the light cases: a smoke test (a few minutes on 2 cores)
    python bench/language.py --threads 1    # on shared cores, one thread is often faster

The model is OpenCLIP ViT-B-16 built with random weights (`open_clip.create_model("ViT-B-16",
pretrained=None)`, 149.6M parameters, checked) in a `ClipModel` with the OpenAI normalisation:
the same layers, shapes and FLOPs as the real checkpoints, so the timings are real, and nothing is
downloaded. Every case uses the real photo tests/data/images/truck.jpg (1800x1200) resized to
short side 480 (720x480).

- langsplat-3xN: `langsplat_features` with a fixed set of masks, so the bench does not depend on
  SAM: 3 levels of N square boxes (sides 0.15, 0.3, 0.5 of the short side) on a grid over the
  image; every box owns cells, so 3N crops are embedded. Maps at stride 4: (3, 120, 180, 512).
- lerf-*: `lerf_features`, the default scales (0.1, 0.2, 0.35, 0.5) with stride_fraction 0.5
  (932 crops), or one scale (0.5) for a cheap row. Maps at stride 8.
- phrase-map / phrase-1M: one phrase query as `phrase` runs it: `encode_text` of the phrase and
  the 4 canonical negatives, then `relevancy` over a dense map of LangSplat's shape (3, 120, 180,
  512), or over 1M random Gaussian features of dim 512 (the 3D cost; 2 GB of features, built
  before the timer starts). "of which relevancy" times `relevancy` alone, on text encoded once:
  the part that grows with the scene.

The "crops" column counts the crops the model embedded per call. s/image is the best of
`repeats` calls after a warm-up (2; 1 with --quick); peak MB is what one call adds to the process
(activations, crops, maps; not the weights, about 600 MB), both from `_measure`. The reference is
embedding the whole image once (one crop, the image squashed to 224x224), measured in the same
process: the ratio columns are case / reference (for the dense methods, about the number of
crops). On CUDA the model runs on the GPU. On 2 shared CPU cores with --threads 1, ViT-B/16
embeds about 2 crops a second, so all cases take roughly 40 minutes (LERF's 932 crops, 4 calls
each for time and memory, dominate); the quick cases about 3 minutes. LangSplat's peak memory is
mostly its output: 3 x 120 x 180 x 512 floats are 133 MB.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.twod.clip import ClipModel  # noqa: E402
from omnivision.twod.clip_dense import (  # noqa: E402
    CANONICAL_NEGATIVES,
    langsplat_features,
    lerf_features,
    relevancy,
)
from omnivision.twod.features import prepare_batch  # noqa: E402
from omnivision.twod.io import read_image  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to fetch

TRUCK = Path(__file__).resolve().parents[1] / "tests" / "data" / "images" / "truck.jpg"
SHORT_SIDE = 480
VIT_B_16_PARAMS_M = 149.6  # OpenCLIP ViT-B-16: image tower 86.2M + text tower 63.4M
BOX_SIDES = (0.15, 0.3, 0.5)  # per LangSplat level, fraction of the short side
PHRASE = "a red pickup truck"
# name: (kind, settings)
CASES = {
    "langsplat-3x2": ("langsplat", {"boxes": 2}),
    "langsplat-3x8": ("langsplat", {"boxes": 8}),
    "langsplat-3x32": ("langsplat", {"boxes": 32}),
    "lerf-0.5-stride1.0": ("lerf", {"scales": (0.5,), "stride_fraction": 1.0}),
    "lerf-0.5": ("lerf", {"scales": (0.5,), "stride_fraction": 0.5}),
    "lerf-default": ("lerf", {"scales": (0.1, 0.2, 0.35, 0.5), "stride_fraction": 0.5}),
    "phrase-map": ("phrase", {"features": "map"}),
    "phrase-1M": ("phrase", {"features": "gaussians"}),
}
QUICK = ("langsplat-3x2", "lerf-0.5-stride1.0", "phrase-map", "phrase-1M")


def build_clip(device: str) -> ClipModel:
    """ViT-B-16 with random weights, wrapped as `load_clip` wraps a loaded model."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval()
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    if abs(millions - VIT_B_16_PARAMS_M) > 0.02 * VIT_B_16_PARAMS_M:
        raise SystemExit(f"ViT-B-16: {millions:.1f}M parameters, the real model has 149.6M")
    return ClipModel(
        model=model,
        tokenizer=open_clip.get_tokenizer("ViT-B-16"),
        name="ViT-B-16-random",
        embed_dim=int(model.text_projection.shape[1]),  # type: ignore[union-attr]
        image_size=224,
        mean=OPENAI_DATASET_MEAN,  # type: ignore[arg-type]
        std=OPENAI_DATASET_STD,  # type: ignore[arg-type]
        device=device,
    )


def box_masks(hw: tuple[int, int], count: int) -> list[torch.Tensor]:
    """3 levels of `count` square boxes (as masks) centred on a grid over the image."""
    H, W = hw
    cols = math.ceil(math.sqrt(count * W / H))
    rows = math.ceil(count / cols)
    levels = []
    for fraction in BOX_SIDES:
        half = fraction * min(H, W) / 2
        masks = torch.zeros(count, H, W, dtype=torch.bool)
        for k in range(count):
            cy, cx = (k // cols + 0.5) * H / rows, (k % cols + 0.5) * W / cols
            y0, y1 = max(0, round(cy - half)), min(H, round(cy + half))
            x0, x1 = max(0, round(cx - half)), min(W, round(cx + half))
            masks[k, y0:y1, x0:x1] = True
        levels.append(masks)
    return levels


def run_case(case: str, device: str, mode: str, repeats: int = 2) -> dict:
    kind, settings = CASES[case]
    if not TRUCK.is_file():
        raise SystemExit(f"skipped: {TRUCK} not found (it ships in tests/data)")
    photo = read_image(TRUCK)
    resized = prepare_batch([photo], SHORT_SIDE, 1, (0, 0, 0), (1, 1, 1))[0]
    image = resized[0].permute(1, 2, 0).clamp(0, 1).contiguous()  # antialias overshoot
    H, W = image.shape[:2]
    clip = build_clip(device)
    crops = {"count": 0}
    encode = clip.encode_crops

    def counting(batch: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        crops["count"] += batch.shape[0]
        return encode(batch, batch_size)

    clip.encode_crops = counting  # type: ignore[method-assign]
    row: dict = {"case": case, "image": f"{W}x{H}", "device": device}
    if kind == "langsplat":
        masks = box_masks((H, W), settings["boxes"])

        def case_call() -> object:
            return langsplat_features(clip, image, masks, stride=4)

        row["output"] = "maps (3, 120, 180, 512)"
    elif kind == "lerf":

        def case_call() -> object:
            return lerf_features(clip, image, settings["scales"], settings["stride_fraction"])

        row["output"] = f"maps ({len(settings['scales'])}, 60, 90, 512)"
    else:
        g = torch.Generator(device=device).manual_seed(0)
        if settings["features"] == "map":
            shape = (3, math.ceil(H / 4), math.ceil(W / 4), 512)
            features = torch.nn.functional.normalize(
                torch.randn(shape, generator=g, device=device), dim=-1
            )
        else:
            features = torch.randn(1_000_000, 512, generator=g, device=device)
        row["output"] = f"scores {tuple(features.shape[:-1])}"

        def case_call() -> object:
            texts = clip.encode_text([PHRASE, *CANONICAL_NEGATIVES]).to(device)
            return relevancy(features, texts[0], texts[1:])

    whole = image.permute(2, 0, 1)[None]
    unit, fmt = ("s", "{:.3f}") if mode == "time" else ("peak_mb", "{:.0f}")
    calls = 1 + repeats if mode == "time" else 1
    case_value = measure(case_call, mode, repeats, device)
    row["crops"] = crops["count"] // calls
    if kind == "phrase":  # the part that grows with the scene: relevancy on encoded text
        texts = clip.encode_text([PHRASE, *CANONICAL_NEGATIVES]).to(device)
        scores_value = measure(
            lambda: relevancy(features, texts[0], texts[1:]), mode, repeats, device
        )
        row[f"relevancy_{unit}"] = fmt.format(scores_value)
    ref_value = measure(lambda: clip.encode_crops(whole), mode, repeats, device)
    row[f"case_{unit}"] = fmt.format(case_value)
    row[f"ref_{unit}"] = fmt.format(ref_value)
    if mode == "time":
        row["time_ratio"] = f"{case_value / ref_value:.1f}x"
    else:
        row["mem_ratio"] = f"{case_value / max(ref_value, 1e-3):.1f}"
    return row


def main() -> None:
    parser = bench_parser(__doc__, CASES, "only the light cases, 1 repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.mode, args.repeats)))
        return
    if not TRUCK.is_file():
        print(f"skipped: {TRUCK} not found (it ships in tests/data)", file=sys.stderr)
        return
    repeats = 1 if args.quick else args.repeats
    extra = ["--device", args.device, "--repeats", str(repeats)]
    extra += ["--threads", str(args.threads)] if args.threads else []
    rows = run_cases(Path(__file__), QUICK if args.quick else CASES, args.device, extra)
    columns = [
        ("case", "case"),
        ("image", "image"),
        ("output", "output"),
        ("crops", "crops"),
        ("s/image (or query)", "case_s"),
        ("peak MB", "case_peak_mb"),
        ("of which relevancy s", "relevancy_s"),
        ("relevancy peak MB", "relevancy_peak_mb"),
        ("whole-image ref s", "ref_s"),
        ("ref peak MB", "ref_peak_mb"),
        ("time / ref", "time_ratio"),
        ("peak mem / ref", "mem_ratio"),
    ]
    if any("error" in row for row in rows):
        columns.append(("error", "error"))
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
