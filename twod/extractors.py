"""`load_extractor(name)`: one entry point for every feature backend."""

from __future__ import annotations

from .colour import ColourTextureExtractor
from .features import FeatureExtractor

WEIGHT_FREE = ("colour",)


def load_extractor(
    name: str = "colour", short_side: int = 448, device: str | None = None, precision: str = "fp32"
) -> FeatureExtractor:
    """`colour` (weight-free demo backend), a DINOv3/DINOv2 short name (`dinov3-vitb16`,
    `dinov2-small`), a hub id, or a local folder saved with `save_pretrained`."""
    if name in WEIGHT_FREE:
        return ColourTextureExtractor(short_side=short_side)
    from .dino import load_dino

    return load_dino(name, short_side=short_side, device=device, precision=precision)  # type: ignore[arg-type]
