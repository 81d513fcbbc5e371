"""Image files at the edge: float tensors -> PNG (written atomically), depth colour maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import atomic_path


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) floats in [0, 1] -> uint8."""
    arr = (
        image.detach().cpu().float().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image)
    )
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp)
    return path


def colorize(
    values: torch.Tensor, valid: torch.Tensor | None = None, cmap: str = "turbo"
) -> np.ndarray:
    """Map a (H, W) scalar image to RGB uint8 with a matplotlib colour map, normalised over `valid`."""
    from matplotlib import colormaps

    v = values.detach().cpu().float()
    mask = torch.ones_like(v, dtype=torch.bool) if valid is None else valid.cpu()
    if bool(mask.any()):
        lo, hi = float(v[mask].min()), float(v[mask].max())
    else:
        lo, hi = 0.0, 1.0
    norm = ((v - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy()
    rgb = colormaps[cmap](norm)[..., :3]
    rgb[~mask.numpy()] = 0.0
    return to_uint8(rgb)


def read_image(path: str | Path) -> torch.Tensor:
    """(H, W, 3) float32 in [0, 1]."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
