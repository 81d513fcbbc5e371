"""Patch features: one protocol, several backends (DINOv3, DINOv2, a weight-free demo backend).

Images are float tensors (H, W, 3) in [0, 1] (RGB). `prepare_batch` resizes to a short side,
keeps the aspect ratio and crops to a multiple of the patch size; `PatchFeatures` remembers the
geometry so features can be mapped back to original pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .errors import TwoDError


@dataclass
class PatchFeatures:
    """Features of B images on an (h, w) patch grid.

    `patches` are raw backbone outputs (use `normalized()` where cosine similarity is meant).
    `input_size` is the (H, W) the backbone saw; `image_size` the original (H, W) of the images,
    all equal inside one batch. Patch (i, j) covers input pixels [i*stride, (i+1)*stride).
    """

    patches: Float[Tensor, "B h w D"]
    stride: int
    input_size: tuple[int, int]
    image_size: tuple[int, int]
    cls: Float[Tensor, "B D"] | None = None
    registers: Float[Tensor, "B R D"] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return self.patches.shape[1], self.patches.shape[2]

    @property
    def dim(self) -> int:
        return self.patches.shape[-1]

    def normalized(self) -> Float[Tensor, "B h w D"]:
        return F.normalize(self.patches.float(), dim=-1)

    def pixel_to_patch(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the patch under original-image pixel (x, y)."""
        h, w = self.grid
        col = int(x / self.image_size[1] * w)
        row = int(y / self.image_size[0] * h)
        return min(max(row, 0), h - 1), min(max(col, 0), w - 1)

    def __getitem__(self, index: int) -> PatchFeatures:
        return PatchFeatures(
            self.patches[index : index + 1],
            self.stride,
            self.input_size,
            self.image_size,
            None if self.cls is None else self.cls[index : index + 1],
            None if self.registers is None else self.registers[index : index + 1],
        )


class FeatureExtractor(Protocol):
    """What every backend provides. `extract` takes images of one size."""

    name: str
    dim: int
    stride: int
    short_side: int

    def extract(self, images: Sequence[Tensor]) -> PatchFeatures: ...


def input_size_for(image_size: tuple[int, int], short_side: int, stride: int) -> tuple[int, int]:
    """(H, W) with the short side near `short_side`, aspect kept, both multiples of `stride`."""
    h, w = image_size
    scale = short_side / min(h, w)
    return max(stride, round(h * scale / stride) * stride), max(
        stride, round(w * scale / stride) * stride
    )


def prepare_batch(
    images: Sequence[Tensor],
    short_side: int,
    stride: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[Float[Tensor, "B 3 H W"], tuple[int, int], tuple[int, int]]:
    """Resize (antialiased bilinear) and normalise same-size (H, W, 3) images for a backbone."""
    if not images:
        raise TwoDError("no images to extract features from")
    sizes = {tuple(im.shape[:2]) for im in images}
    if len(sizes) != 1:
        raise TwoDError(f"images in one batch must share a size, got {sorted(sizes)}")
    image_size: tuple[int, int] = sizes.pop()  # type: ignore[assignment]
    size = input_size_for(image_size, short_side, stride)
    batch = torch.stack([im.float() for im in images]).permute(0, 3, 1, 2)
    batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean, dtype=batch.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - m) / s, size, image_size


def batches_by_size(images: Sequence[Tensor], batch_size: int) -> Iterator[list[int]]:
    """Indices of images grouped into batches of one size, in input order within a size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape[:2]), []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


def extract_all(
    extractor: FeatureExtractor,
    images: Sequence[Tensor],
    batch_size: int = 4,
    progress: bool = False,
) -> list[PatchFeatures]:
    """Features of many images (any sizes), one `PatchFeatures` (B=1) per image, in order."""
    from tqdm import tqdm

    out: list[PatchFeatures | None] = [None] * len(images)
    with tqdm(
        total=len(images), desc=f"{extractor.name} features", unit="img", disable=not progress
    ) as bar:
        for idx in batches_by_size(images, batch_size):
            feats = extractor.extract([images[i] for i in idx])
            for k, i in enumerate(idx):
                out[i] = feats[k]
            bar.update(len(idx))
    return [f for f in out if f is not None]


def upsample(
    features: PatchFeatures,
    size: tuple[int, int] | None = None,
    guide: Tensor | None = None,
    sigma_spatial: float = 0.8,
    sigma_range: float = 0.12,
) -> Float[Tensor, "B H W D"]:
    """Patch features at pixel resolution `size` (default: the original image size), channels last.

    Bilinear by default. With `guide` (B, H, W, 3) images in [0, 1] at `size`: joint bilateral
    upsampling, each pixel averaging the 3x3 patches around it weighted by distance (in patches)
    and by how close the pixel's colour is to the patch's mean colour, so feature edges follow
    image edges.
    """
    size = size or features.image_size
    if guide is None:
        x = features.patches.float().permute(0, 3, 1, 2)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    return joint_bilateral_upsample(
        features.patches.float(), guide.float(), sigma_spatial, sigma_range
    )


def joint_bilateral_upsample(
    patches: Float[Tensor, "B h w D"],
    guide: Float[Tensor, "B H W 3"],
    sigma_spatial: float,
    sigma_range: float,
) -> Float[Tensor, "B H W D"]:
    b, h, w, d = patches.shape
    H, W = guide.shape[1:3]
    patch_colour = F.adaptive_avg_pool2d(guide.permute(0, 3, 1, 2), (h, w)).permute(0, 2, 3, 1)
    # Pixel centres in patch units.
    v = (torch.arange(H, dtype=torch.float32) + 0.5) * h / H - 0.5
    u = (torch.arange(W, dtype=torch.float32) + 0.5) * w / W - 0.5
    cy, cx = v.round().long(), u.round().long()
    out = patches.new_zeros(b, H, W, d)
    total = patches.new_zeros(b, H, W, 1)
    batch = torch.arange(b)[:, None, None]
    for dy in (-1, 0, 1):
        iy = (cy + dy).clamp(0, h - 1)
        for dx in (-1, 0, 1):
            ix = (cx + dx).clamp(0, w - 1)
            dist2 = (v - iy)[:, None] ** 2 + (u - ix)[None, :] ** 2
            spatial = torch.exp(-dist2 / (2 * sigma_spatial**2))[None, :, :, None]
            diff = guide - patch_colour[batch, iy[:, None], ix[None, :]]
            similar = torch.exp(-(diff * diff).sum(-1, keepdim=True) / (2 * sigma_range**2))
            weight = spatial * similar + 1e-8
            out += weight * patches[batch, iy[:, None], ix[None, :]]
            total += weight
    return out / total


def hub_unavailable(repo_id: str, filename: str = "config.json") -> bool:
    """True when `repo_id` is neither in the local Hugging Face cache nor reachable, so a load
    would only fail after the hub client's retries; callers then raise their one-line advice."""
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return False
    if constants.HF_HUB_OFFLINE:
        return True
    import socket

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443)
    except OSError:
        return True
    return False
