"""`load_extractor(name)`: one entry point for every feature backend."""

from __future__ import annotations

from .colour import ColourTextureExtractor
from .dino import DTYPES, Precision
from .features import FeatureExtractor, TwoDError

WEIGHT_FREE = ("colour",)
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")


def load_extractor(
    name: str = "colour",
    short_side: int = 448,
    device: str | None = None,
    precision: Precision = "fp32",
    flag: str = "--backbone",
) -> FeatureExtractor:
    """`colour` (weight-free demo backend), a DINOv3/DINOv2 short name (`dinov3-vitb16`,
    `dinov2-small`), a hub id, or a local folder saved with `save_pretrained`.

    `precision` is the DINO weights' and activations' dtype (fp32, bf16, fp16; features come
    back float32; the colour backend always computes in float32). `flag` is the calling
    command's option that picks the backbone (`--backbone`, lift's `--features`): the hint of a
    missing-weights error names it."""
    if precision not in DTYPES:
        raise TwoDError(f"precision {precision!r}: want one of {', '.join(PRECISIONS)}")
    if name in WEIGHT_FREE:
        return ColourTextureExtractor(short_side=short_side)
    from .dino import load_dino

    return load_dino(name, short_side=short_side, device=device, precision=precision, flag=flag)
