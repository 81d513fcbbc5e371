"""Per-pixel CLIP image embeddings, two ways, and LERF's relevancy score for phrase queries.

- `langsplat_features`: LangSplat. One CLIP embedding per mask (the mask's square-padded crop,
  black outside the mask), painted into the mask's pixels; one map per granularity level.
- `lerf_features`: LERF. Square crops sliding over the image at several scales, one embedding per
  crop centre, bilinearly interpolated per pixel; one map per scale.
- `relevancy`: LERF's score of a query against canonical negatives, a pure function that works on
  a dense map (h, w, E) as on N Gaussian features (N, E).

Images are (H, W, 3) RGB, float in [0, 1] or uint8. Maps live on a grid of `stride`-pixel cells
(cell (i, j) covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s), h = ceil(H / s)), are L2-normalised
per cell (cosine is meant) and are zero where no mask covers a cell. With `cache_dir`, the CLIP
embeddings and the mask layout of an image are stored as safetensors and reused; maps are rebuilt
from them (cheap, deterministic), so the files stay small.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .clip import ClipModel
from .features import TwoDError

CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
"""LERF's negative phrases for `relevancy` (encode them with `ClipModel.encode_text`)."""
SAM_LEVELS: tuple[str, ...] = ("small", "medium", "large")
"""Level names of `langsplat_features` with SAM masks: terciles of mask area."""
BACKGROUND = 0.0
"""Fill outside the mask and in the square padding (LangSplat: black); LERF pads with it too."""
CACHE_FORMAT = "omnivision.clip_dense/1"
"""Part of every cache key: bump it when what the cache holds or how maps are built changes."""


@dataclass
class DenseClipFeatures:
    """L per-cell CLIP embedding maps of one image (levels: granularities or scales).

    Cell (i, j) covers image pixels [i*stride, (i+1)*stride) x [j*stride, (j+1)*stride), so
    h = ceil(H / stride), w = ceil(W / stride). Each cell is L2-normalised, or zero where no
    embedding covers it (LangSplat outside every mask of that level).
    """

    maps: Float[Tensor, "L h w E"]
    image_size: tuple[int, int]
    """The original (H, W)."""
    levels: list[str]
    """One name per map, e.g. ["small", "medium", "large"] or ["scale_0.10", ...]."""
    stride: int = 1
    """Pixels per map cell along each side."""

    @property
    def dim(self) -> int:
        return self.maps.shape[-1]

    def level(self, name: str) -> Float[Tensor, "h w E"]:
        """The map of one level by name."""
        if name not in self.levels:
            raise TwoDError(f"no level {name!r}; levels are {', '.join(self.levels)}")
        return self.maps[self.levels.index(name)]

    def upsampled(self, size: tuple[int, int] | None = None) -> Float[Tensor, "L H W E"]:
        """Maps at pixel resolution `size` (default the image size): bilinear between cell
        centres (edge cells extended), then renormalised; zero where the nearest cell is zero
        (uncovered), so coverage is not grown by the interpolation. Memory: L*H*W*E floats, so
        query the low-res maps with `relevancy` and upsample the scores where you can."""
        H, W = self.image_size
        out_h, out_w = size or self.image_size
        L, h, w, E = self.maps.shape
        # Target pixel centres in image pixels, then in cell units (cell centres at i + 0.5), then
        # grid_sample's normalised coordinates (align_corners=False: -1 and 1 are the grid edges).
        ys = (torch.arange(out_h, dtype=torch.float32) + 0.5) * (H / out_h) / self.stride
        xs = (torch.arange(out_w, dtype=torch.float32) + 0.5) * (W / out_w) / self.stride
        gy, gx = 2 * ys / h - 1, 2 * xs / w - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        out = self.maps.new_empty(L, out_h, out_w, E, dtype=torch.float32)
        for i in range(L):  # one level at a time bounds the temporaries
            level = self.maps[i].float()
            covered = (level.abs().amax(dim=-1, keepdim=True) > 0).float()
            sampled = F.grid_sample(
                torch.cat([level, covered], dim=-1).permute(2, 0, 1)[None],
                grid.to(level.device), mode="bilinear", padding_mode="border", align_corners=False,
            )[0].permute(1, 2, 0)  # fmt: skip
            keep = sampled[..., E:] >= 0.5
            out[i] = F.normalize(sampled[..., :E], dim=-1) * keep
        return out


def relevancy(
    embeddings: Float[Tensor, "... E"],
    query: Float[Tensor, "E"],
    negatives: Float[Tensor, "K E"],
    tau: float = 10.0,
) -> Float[Tensor, "..."]:
    """LERF relevancy: min over negatives j of softmax(tau * [cos(phi, q), cos(phi, n_j)])[0].

    In [0, 1]; 0.5 where phi is as close to the query as to its closest negative, so a query equal
    to a negative scores at most 0.5. Works on any leading shape: (h, w, E) maps, (N, E)
    Gaussians. Zero embeddings (uncovered cells) have cosine 0 with everything and score 0.5.
    Uses min_j softmax(...)[0] = sigmoid(tau * (cos(phi, q) - max_j cos(phi, n_j))), and never
    normalises a copy of `embeddings` (norms are taken apart), so 1M x 512 features fit.
    """
    E = embeddings.shape[-1]
    texts = relevancy_texts(query, negatives, E, tau)
    dots, norms = text_dots(embeddings.reshape(-1, E), texts)
    margin = dots[:, 0] - dots[:, 1:].amax(dim=1)  # sigmoid(tau * (cos_q - max_j cos_j))
    scores = torch.sigmoid(margin.mul_(tau).div_(norms.clamp_min_(1e-12)))
    return scores.reshape(embeddings.shape[:-1])


def relevancy_texts(
    query: Float[Tensor, "E"], negatives: Float[Tensor, "K E"], dim: int, tau: float
) -> Float[Tensor, "1+K E"]:
    """The unit (1 + K, E) fp32 texts of a `relevancy` call: [query, *negatives], checked."""
    negatives = negatives.reshape(1, -1) if negatives.ndim == 1 else negatives
    query = query[0] if query.ndim == 2 and query.shape[0] == 1 else query
    if query.shape != (dim,) or negatives.ndim != 2 or negatives.shape[1] != dim:
        raise TwoDError(
            f"relevancy needs embeddings (..., E), query (E,) and negatives (K, E) of one E, got "
            f"E = {dim}, {tuple(query.shape)}, {tuple(negatives.shape)}"
        )
    if negatives.shape[0] == 0:
        raise TwoDError("relevancy needs at least one negative, e.g. CANONICAL_NEGATIVES")
    if tau <= 0:
        raise TwoDError(f"tau must be positive, got {tau:g}")
    return F.normalize(torch.cat([query[None], negatives]).float(), dim=-1)


def text_dots(
    flat: Float[Tensor, "N E"], texts: Float[Tensor, "T E"], chunk: int = 4096
) -> tuple[Float[Tensor, "N T"], Float[Tensor, "N"]]:
    """(flat @ texts.T, |flat| per row) in fp32, reading `flat` (any float dtype) once.

    On CPU in cache-sized row blocks: each block is copied into a reused fp32 buffer (never a full
    `.float()` copy of fp16 / bf16 features) and its dots and norm taken while it is in cache.
    Memory beyond the (N, T) output: one block."""
    n, E = flat.shape
    texts = texts.float()
    if flat.device.type != "cpu":
        dots = (flat @ texts.to(flat.device, flat.dtype).T).float()
        return dots, torch.linalg.vector_norm(flat, dim=-1).float()
    dots, norms = torch.empty(n, len(texts)), torch.empty(n)
    texts_t = texts.contiguous().T  # MKL is faster with the (E, T) view than a contiguous copy
    block = torch.empty(chunk, E) if flat.dtype != torch.float32 else None
    for start in range(0, n, chunk):
        rows = flat[start : start + chunk]
        k = rows.shape[0]
        if block is not None:
            rows = block[:k].copy_(rows)
        torch.mm(rows, texts_t, out=dots[start : start + k])
        torch.linalg.vector_norm(rows, dim=1, out=norms[start : start + k])
    return dots, norms


# ---------------------------------------------------------------------------------------------
# LangSplat


def langsplat_features(
    clip: ClipModel,
    image: Tensor,
    masks: Sequence[Bool[Tensor, "M H W"]] | Mapping[str, Bool[Tensor, "M H W"]] | None = None,
    sam: Any = None,
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    stride: int = 4,
) -> DenseClipFeatures:
    """LangSplat-style maps: one level per list of masks, each mask's CLIP embedding in its cells.

    `masks`: one (M, H, W) bool tensor per level (a mapping names the levels; a sequence gives
    "level_0", "level_1", ...). Without masks, `sam` (a `Sam2`, or any object with
    `generate(image) -> Masks` and a `name`) segments the image and its masks are split by area
    into terciles: levels "small", "medium", "large" (a level can be empty when SAM finds fewer
    than 3 masks). Each mask's crop is its bounding box with the pixels outside the mask set to
    black, padded to a square (centred, black) as LangSplat does. Within a level, a cell belongs to
    the smallest mask covering at least half of it (the most specific one; LangSplat also keeps
    one mask per pixel). Masks that own no cell are not embedded. `stride` pixels per cell (1 gives
    exact per-pixel maps: L*H*W*E floats).

    `cache_dir`: the result is stored per image, keyed by the image bytes, the model (name,
    preprocessing, a fingerprint of its image weights), the method's parameters and the masks
    (their bytes; with `sam`, its `name` instead, so a hit skips SAM: give a SAM wrapper with other
    `generate` settings another name).
    """
    img = _as_image(image)
    _check_stride(stride)
    H, W = img.shape[:2]
    if masks is not None:
        names, levels = _check_masks(masks, (H, W))
        source = {"masks": _masks_digest(levels)}
    elif sam is not None:
        names, levels = list(SAM_LEVELS), None
        source = {"sam": str(getattr(sam, "name", type(sam).__qualname__))}
    else:
        raise TwoDError("langsplat_features needs masks (one (M, H, W) list per level) or a sam")
    params = {"stride": stride, "levels": names, "background": BACKGROUND, **source}
    path = _cache_path(cache_dir, "langsplat", img, clip, params)
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    cached = _load(path, {"owner": (len(names), h, w), "embeddings": None})
    if cached is None:
        if levels is None:
            found = sam.generate(img).masks
            if found.ndim != 3 or tuple(found.shape[1:]) != (H, W):
                raise TwoDError(
                    f"SAM ({source['sam']}) gave masks {tuple(found.shape)}, not (M, {H}, {W})"
                )
            if len(found) == 0 or not found.any():
                raise TwoDError(f"SAM ({source['sam']}) found no masks in the {W}x{H} image")
            levels = split_by_area(found.cpu().bool(), len(SAM_LEVELS))
        cached = _langsplat_embeddings(clip, img, levels, stride, batch_size)
        _save(path, cached)
    return DenseClipFeatures(_paint(cached["embeddings"], cached["owner"]), (H, W), names, stride)


def split_by_area(masks: Bool[Tensor, "M H W"], count: int = 3) -> list[Bool[Tensor, "m H W"]]:
    """Non-empty masks sorted by area (ascending, stable) and split into `count` near-equal
    groups: terciles for 3, smallest first."""
    areas = masks.flatten(1).sum(1)
    keep = torch.nonzero(areas > 0).flatten()
    order = keep[torch.argsort(areas[keep], stable=True)]
    return [masks[torch.from_numpy(part)] for part in np.array_split(order.numpy(), count)]


def _check_masks(masks: Any, hw: tuple[int, int]) -> tuple[list[str], list[Tensor]]:
    if isinstance(masks, Mapping):
        names, lists = [str(k) for k in masks], list(masks.values())
    else:
        lists = list(masks)
        names = [f"level_{i}" for i in range(len(lists))]
    if not lists:
        raise TwoDError("masks is empty: pass one (M, H, W) bool tensor per level")
    levels = []
    for name, level in zip(names, lists, strict=True):
        m = torch.as_tensor(level).detach().cpu()
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or tuple(m.shape[1:]) != hw:
            raise TwoDError(
                f"masks of level {name!r} must be (M, {hw[0]}, {hw[1]}) like the image, got "
                f"{tuple(m.shape)}"
            )
        if m.is_floating_point():
            raise TwoDError(f"masks of level {name!r} must be bool, got {m.dtype} (threshold them)")
        levels.append(m.bool())
    if not any(m.any() for m in levels):
        raise TwoDError("every mask is empty: nothing to embed")
    return names, levels


def _langsplat_embeddings(
    clip: ClipModel, img: Tensor, levels: list[Tensor], stride: int, batch_size: int
) -> dict[str, Tensor]:
    """The compact result: embeddings (U, E) of the masks that own a cell, owner (L, h, w) int32
    indices into them (-1: no mask)."""
    owners, used = [], []
    for level in levels:
        owner = _owner_map(level, stride)
        ids = torch.unique(owner[owner >= 0])  # sorted: deterministic embedding order
        remap = torch.full((len(level) + 1,), -1, dtype=torch.long)
        remap[ids] = torch.arange(len(used), len(used) + len(ids))
        owners.append(remap[owner])  # owner -1 indexes remap[-1] = -1
        used.extend(level[i] for i in ids.tolist())
    image_chw = img.permute(2, 0, 1)
    chunks = []
    for start in range(0, len(used), batch_size):
        crops = [
            _mask_crop(image_chw, m, clip.image_size) for m in used[start : start + batch_size]
        ]
        chunks.append(clip.encode_crops(torch.stack(crops), batch_size=batch_size).float().cpu())
    dim = chunks[0].shape[1] if chunks else clip.embed_dim
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, dim)
    return {"embeddings": embeddings.contiguous(), "owner": torch.stack(owners).int().contiguous()}


def _owner_map(masks: Bool[Tensor, "M H W"], stride: int) -> Int[Tensor, "h w"]:
    """Index of the smallest mask covering at least half of each cell; -1 where none does."""
    H, W = masks.shape[1:]
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    owner = torch.full((h, w), -1, dtype=torch.long)
    areas = masks.flatten(1).sum(1)
    order = torch.argsort(-areas, stable=True)  # largest first, so smaller masks paint over
    valid = _cell_fraction(torch.ones(1, H, W), stride)[0]
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        covered = _cell_fraction(masks[idx].float(), stride) >= 0.5 * valid
        for k, i in enumerate(idx.tolist()):
            owner[covered[k]] = i
    return owner


def _cell_fraction(x: Float[Tensor, "B H W"], stride: int) -> Float[Tensor, "B h w"]:
    """Mean of x over each stride x stride cell (cells past the image edge padded with zeros)."""
    if stride == 1:
        return x
    H, W = x.shape[1:]
    pad = (0, -W % stride, 0, -H % stride)
    return F.avg_pool2d(F.pad(x[:, None], pad), stride)[:, 0]


def _mask_crop(image_chw: Float[Tensor, "3 H W"], mask: Bool[Tensor, "H W"], side: int) -> Tensor:
    """LangSplat's crop: the mask's bounding box, BACKGROUND outside the mask, centred in a
    BACKGROUND square, resized to `side` x `side` exactly as `ClipModel.prepare` resizes (bicubic,
    antialiased), so that `prepare`'s own resize is then the identity."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    region = torch.where(mask[y0:y1, x0:x1], image_chw[:, y0:y1, x0:x1], BACKGROUND)
    bh, bw = y1 - y0, x1 - x0
    size = max(bh, bw)
    square = image_chw.new_full((3, size, size), BACKGROUND)
    top, left = (size - bh) // 2, (size - bw) // 2
    square[:, top : top + bh, left : left + bw] = region
    return F.interpolate(square[None], size=(side, side), mode="bicubic", antialias=True)[0]


def _paint(embeddings: Float[Tensor, "U E"], owner: Int[Tensor, "L h w"]) -> Tensor:
    table = torch.cat([embeddings.new_zeros(1, embeddings.shape[1]), embeddings])
    return table[owner.long() + 1]


# ---------------------------------------------------------------------------------------------
# LERF


@dataclass(frozen=True)
class _Windows:
    """Square windows of side `side`, centres every `step` pixels; window (r, c) covers pixels
    [r*step - side//2, +side) x [c*step - side//2, +side), its centre at continuous coordinate
    r*step + offset (pixel p spans [p, p+1)). Enough windows that centres reach the last pixel."""

    side: int
    step: int
    rows: int
    cols: int

    @property
    def offset(self) -> float:
        return self.side / 2 - self.side // 2

    @classmethod
    def for_scale(cls, hw: tuple[int, int], scale: float, stride_fraction: float) -> _Windows:
        side = max(1, round(scale * min(hw)))
        step = max(1, round(stride_fraction * side))
        offset = side / 2 - side // 2
        rows, cols = (max(1, math.ceil((n - 0.5 - offset) / step) + 1) for n in hw)
        return cls(side, step, rows, cols)


def lerf_features(
    clip: ClipModel,
    image: Tensor,
    scales: Sequence[float] = (0.1, 0.2, 0.35, 0.5),
    stride_fraction: float = 0.5,
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    stride: int = 8,
) -> DenseClipFeatures:
    """LERF-style maps: for each scale, square crops of side scale * short side, every
    stride_fraction * side pixels, the image zero-padded (black) where a crop passes its edge (as
    LERF's unfold); one CLIP embedding per crop centre, bilinear between centres per map cell of
    `stride` pixels (the first and last centres sit on the first and last pixels), renormalised.
    One level per scale, named "scale_0.10" etc. Crops are built and embedded `batch_size` at a
    time. `cache_dir` as in `langsplat_features` (keyed by image, model, scales, stride_fraction).
    """
    img = _as_image(image)
    _check_stride(stride)
    scales = [float(s) for s in scales]
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise TwoDError(f"scales must be fractions of the short side in (0, 1], got {scales}")
    if not 0 < stride_fraction <= 1:
        raise TwoDError(f"stride_fraction must be in (0, 1], got {stride_fraction:g}")
    H, W = img.shape[:2]
    windows = [_Windows.for_scale((H, W), s, stride_fraction) for s in scales]
    params = {"stride": stride, "scales": scales, "stride_fraction": stride_fraction}
    path = _cache_path(cache_dir, "lerf", img, clip, params)
    cached = _load(path, {f"grid_{i}": (win.rows, win.cols) for i, win in enumerate(windows)})
    if cached is None:
        cached = {
            f"grid_{i}": _window_embeddings(clip, img, win, batch_size)
            for i, win in enumerate(windows)
        }
        _save(path, cached)
    maps = torch.stack(
        [_interpolate(cached[f"grid_{i}"], win, (H, W), stride) for i, win in enumerate(windows)]
    )
    return DenseClipFeatures(maps, (H, W), [f"scale_{s:.2f}" for s in scales], stride)


def _window_embeddings(
    clip: ClipModel, img: Tensor, win: _Windows, batch_size: int
) -> Float[Tensor, "r c E"]:
    H, W = img.shape[:2]
    before = win.side // 2
    after_h = max(0, (win.rows - 1) * win.step - before + win.side - H)
    after_w = max(0, (win.cols - 1) * win.step - before + win.side - W)
    padded = F.pad(img.permute(2, 0, 1), (before, after_w, before, after_h), value=BACKGROUND)
    starts = [(r * win.step, c * win.step) for r in range(win.rows) for c in range(win.cols)]
    chunks = []
    for first in range(0, len(starts), batch_size):
        crops = torch.stack(
            [
                padded[:, y : y + win.side, x : x + win.side]
                for y, x in starts[first : first + batch_size]
            ]
        )
        chunks.append(clip.encode_crops(crops, batch_size=batch_size).float().cpu())
    return torch.cat(chunks).reshape(win.rows, win.cols, -1).contiguous()


def _interpolate(
    grid: Float[Tensor, "r c E"], win: _Windows, hw: tuple[int, int], stride: int
) -> Float[Tensor, "h w E"]:
    h, w = math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)
    rows = _linear_weights(h, stride, win, grid.shape[0])
    cols = _linear_weights(w, stride, win, grid.shape[1])
    return F.normalize(torch.einsum("hr,rce,wc->hwe", rows, grid, cols), dim=-1)


def _linear_weights(cells: int, stride: int, win: _Windows, points: int) -> Float[Tensor, "n p"]:
    """(cells, points) weights of linear interpolation from window centres to cell centres,
    clamped to the first and last centre."""
    centres = (torch.arange(cells, dtype=torch.float64) + 0.5) * stride
    t = ((centres - win.offset) / win.step).clamp(0, points - 1)
    lower = t.floor().long().clamp(max=points - 1)
    upper = (lower + 1).clamp(max=points - 1)
    frac = t - lower
    weights = torch.zeros(cells, points, dtype=torch.float64)
    weights[torch.arange(cells), lower] += 1 - frac
    weights[torch.arange(cells), upper] += frac
    return weights.float()


# ---------------------------------------------------------------------------------------------
# Inputs and the cache


def _as_image(image: Any) -> Float[Tensor, "H W 3"]:
    x = torch.as_tensor(image).detach().cpu()
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise TwoDError(f"an (H, W, 3) RGB image is needed, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return (x.float() / 255.0).contiguous()
    if not x.is_floating_point():
        raise TwoDError(f"images must be float in [0, 1] or uint8, got {x.dtype}")
    x = x.float()
    if x.min() < 0.0 or x.max() > 1.0 + 1e-3:
        raise TwoDError(f"float images must be in [0, 1], got [{x.min():g}, {x.max():g}]")
    return x.clamp(0, 1).contiguous()


def _check_stride(stride: int) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise TwoDError(f"stride must be a positive number of pixels, got {stride!r}")


def _masks_digest(levels: list[Tensor]) -> str:
    digest = hashlib.sha256()
    for m in levels:
        digest.update(repr(tuple(m.shape)).encode())
        digest.update(np.packbits(m.numpy()).tobytes())
    return digest.hexdigest()


def _model_digest(clip: ClipModel) -> str:
    """Name, input size, normalisation and the first values of every image-tower weight: two
    checkpoints of one architecture (same `name`) get different keys at little cost."""
    digest = hashlib.sha256(repr((clip.name, clip.image_size, clip.mean, clip.std)).encode())
    tower = getattr(clip.model, "visual", clip.model)
    if isinstance(tower, torch.nn.Module):
        with torch.no_grad():
            for name, p in tower.named_parameters():
                digest.update(name.encode())
                digest.update(p.detach().reshape(-1)[:256].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _cache_path(
    cache_dir: str | Path | None, method: str, img: Tensor, clip: ClipModel, params: dict
) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    digest.update(repr(tuple(img.shape)).encode())
    digest.update(img.numpy().tobytes())
    digest.update(_model_digest(clip).encode())
    digest.update(json.dumps({"method": method, **params}, sort_keys=True).encode())
    return Path(cache_dir) / f"{method}-{digest.hexdigest()[:40]}.safetensors"


def _load(path: Path | None, shapes: dict[str, tuple[int, ...] | None]) -> dict[str, Tensor] | None:
    """The cached tensors, or None when absent, unreadable or not of the expected keys and
    leading `shapes` (then the caller recomputes and rewrites the file)."""
    if path is None or not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError):
        return None
    if set(tensors) != set(shapes):
        return None
    for key, shape in shapes.items():
        if shape is not None and tuple(tensors[key].shape[: len(shape)]) != shape:
            return None
    return tensors


def _save(path: Path | None, tensors: dict[str, Tensor]) -> None:
    if path is None:
        return
    from safetensors.torch import save_file

    from .io import write_atomically

    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), {"format": CACHE_FORMAT}))
