"""A weight-free feature backend: colour and texture statistics per patch.

A demo backend, so that the whole pipeline (localize, lift, query) runs offline on the demo scene
without model weights. It is no substitute for DINO: it knows colour and local texture, nothing of
objects or parts.

Per patch, and again (at half weight) over its 3x3-patch neighbourhood:
- a soft hue histogram (12 bins of 30°) weighted by chroma, so red and orange are different words,
- a lightness histogram (3 bins) weighted by the lack of chroma, for greys, black and white,
- gradient energy in 4 orientation bins (Sobel on lightness): texture.
Vectors are non-negative; cosine similarity compares their composition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .features import PatchFeatures, prepare_batch

HUE_BINS = 12
LIGHT_BINS = 3
ORIENT_BINS = 4


def colour_words(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, HUE_BINS + LIGHT_BINS, H, W) soft colour histogram weights."""
    r, g, b = rgb.unbind(1)
    cmax, cmin = rgb.max(1).values, rgb.min(1).values
    chroma = cmax - cmin
    # Hue angle from the opponent axes (equivalent to HSV hue up to a smooth warp).
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) % (2 * math.pi)
    centres = torch.arange(HUE_BINS, dtype=rgb.dtype) * (2 * math.pi / HUE_BINS)
    delta = (
        torch.remainder(hue[:, None] - centres[None, :, None, None] + math.pi, 2 * math.pi)
        - math.pi
    )
    width = 2 * math.pi / HUE_BINS
    hue_w = torch.where(delta.abs() < width, torch.cos(delta / width * math.pi / 2) ** 2, 0.0)
    hue_w = hue_w / hue_w.sum(1, keepdim=True).clamp_min(1e-8)
    saturation = (chroma / 0.35).clamp(0, 1)
    lightness = (r + g + b) / 3
    light_centres = torch.tensor([0.15, 0.5, 0.85], dtype=rgb.dtype)
    light_w = torch.exp(
        -((lightness[:, None] - light_centres[None, :, None, None]) ** 2) / (2 * 0.15**2)
    )
    light_w = light_w / light_w.sum(1, keepdim=True)
    return torch.cat([hue_w * saturation[:, None], light_w * (1 - saturation[:, None])], dim=1)


def texture_words(rgb: Tensor) -> Tensor:
    """(B, ORIENT_BINS, H, W) gradient energy per orientation bin (sign-free)."""
    light = rgb.mean(1, keepdim=True)
    sobel_x = (
        torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=rgb.dtype).view(1, 1, 3, 3) / 8
    )
    padded = F.pad(light, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, sobel_x), F.conv2d(padded, sobel_x.transpose(2, 3))
    angle = torch.atan2(gy, gx) % math.pi
    magnitude = (gx * gx + gy * gy).sqrt()[:, 0]
    bins = [
        magnitude * torch.cos(angle[:, 0] - k * math.pi / ORIENT_BINS).clamp_min(0) ** 4
        for k in range(ORIENT_BINS)
    ]
    return torch.stack(bins, 1)


@dataclass
class ColourTextureExtractor:
    """Weight-free `FeatureExtractor` (name `colour`)."""

    stride: int = 8
    short_side: int = 448
    name: str = "colour"
    dim: int = 2 * (HUE_BINS + LIGHT_BINS + ORIENT_BINS)
    texture_weight: float = 2.0

    @torch.inference_mode()
    def extract(self, images: Sequence[Tensor]) -> PatchFeatures:
        rgb, input_size, image_size = prepare_batch(
            images, self.short_side, self.stride, (0, 0, 0), (1, 1, 1)
        )
        rgb = rgb.clamp(0, 1)
        words = torch.cat([colour_words(rgb), self.texture_weight * texture_words(rgb)], dim=1)
        fine = F.avg_pool2d(words, self.stride)
        coarse = F.avg_pool2d(fine, 3, stride=1, padding=1, count_include_pad=False)
        feats = torch.cat([fine, 0.5 * coarse], dim=1)
        return PatchFeatures(
            feats.permute(0, 2, 3, 1).contiguous(), self.stride, input_size, image_size
        )
