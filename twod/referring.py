"""Referring localisation: a phrase heatmap -> its peak region or instances, and the metrics eval/
reports (mask IoU, mIoU, pointing accuracy).

Pure functions on tensors. Masks are bool[H, W] (one image) or a batch (N, H, W) / a sequence of
per-item masks of different sizes; boxes are xyxy pixels; points are (x, y) pixels, the pixel
(x, y) covering [x, x+1) x [y, y+1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from . import localize
from .features import TwoDError
from .localize import (
    BoxPrompter,
    Detections,
    LocalizeConfig,
    otsu_threshold,
)


def _as_bool(mask: Any) -> Tensor:
    return (torch.from_numpy(np.asarray(mask)) if not isinstance(mask, Tensor) else mask).bool()


def _items(masks: Any) -> list[Tensor]:
    if isinstance(masks, Tensor | np.ndarray):
        arr = _as_bool(masks)
        return list(arr) if arr.ndim == 3 else [arr]
    return [_as_bool(m) for m in masks]


def mask_iou(pred_masks: Any, gt_masks: Any) -> Float[Tensor, "N"]:
    """IoU of each predicted mask with its ground truth (N pairs, sizes may differ between pairs);
    1.0 where both are empty."""
    preds, gts = _items(pred_masks), _items(gt_masks)
    if len(preds) != len(gts):
        raise TwoDError(f"{len(preds)} predicted masks for {len(gts)} ground-truth masks")
    out = []
    for pred, gt in zip(preds, gts, strict=True):
        if pred.shape != gt.shape:
            raise TwoDError(
                f"mask shapes differ: predicted {tuple(pred.shape)}, truth {tuple(gt.shape)}"
            )
        union = int((pred | gt).sum())
        out.append(1.0 if union == 0 else int((pred & gt).sum()) / union)
    return torch.tensor(out, dtype=torch.float64)


def referring_miou(pred_masks: Any, gt_masks: Any) -> float:
    """Mean over pairs of the IoU of the predicted mask with the referred region's mask."""
    ious = mask_iou(pred_masks, gt_masks)
    return float(ious.mean()) if len(ious) else float("nan")


def overall_iou(pred_masks: Any, gt_masks: Any) -> float:
    """Cumulative intersection over cumulative union (RefCOCO's oIoU): large objects weigh more."""
    preds, gts = _items(pred_masks), _items(gt_masks)
    inter = sum(int((p & g).sum()) for p, g in zip(preds, gts, strict=True))
    union = sum(int((p | g).sum()) for p, g in zip(preds, gts, strict=True))
    return inter / union if union else float("nan")


def pointing_hits(points: Any, targets: Any, tolerance: float = 0.0) -> Bool[Tensor, "N"]:
    """Whether each point (x, y) falls on its target: a box xyxy (x0 <= x <= x1, y0 <= y <= y1)
    or a mask (the pixel under the point), within `tolerance` pixels (the pointing game uses 15).

    `targets`: boxes (N, 4), masks (N, H, W), or a sequence mixing (4,) boxes and (H, W) masks.
    """
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64)).reshape(-1, 2)
    if isinstance(targets, Tensor | np.ndarray):
        arr = torch.as_tensor(np.asarray(targets))
        items = list(arr) if arr.ndim in (2, 3) else [arr]
    else:
        items = [torch.as_tensor(np.asarray(t)) for t in targets]
    if len(items) != len(pts):
        raise TwoDError(f"{len(pts)} points for {len(items)} targets")
    hits = []
    for (x, y), target in zip(pts.tolist(), items, strict=True):
        if target.ndim == 1:
            if target.numel() != 4:
                raise TwoDError(f"a box target needs 4 numbers (xyxy), got {target.tolist()}")
            x0, y0, x1, y1 = target.tolist()
            t = tolerance
            hits.append(x0 - t <= x <= x1 + t and y0 - t <= y <= y1 + t)
            continue
        mask = target.bool()
        H, W = mask.shape
        r = int(np.ceil(tolerance))
        col, row = int(np.floor(x)), int(np.floor(y))
        ys = torch.arange(row - r, row + r + 1)
        xs = torch.arange(col - r, col + r + 1)
        near = (ys[:, None] - row) ** 2 + (xs[None, :] - col) ** 2 <= tolerance**2
        valid = ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :] & near
        window = mask[ys.clamp(0, H - 1)][:, xs.clamp(0, W - 1)]
        hits.append(bool((window & valid).any()))
    return torch.tensor(hits, dtype=torch.bool)


def pointing_accuracy(points: Any, targets: Any, tolerance: float = 0.0) -> float:
    """Fraction of points that fall on their target (see `pointing_hits`)."""
    hits = pointing_hits(points, targets, tolerance)
    return float(hits.double().mean()) if len(hits) else float("nan")


def phrase_threshold(heatmap: Tensor) -> float:
    """Otsu's cut over the values above the median. A phrase names a minority of the image, so
    the median is background; leaving it and everything below out keeps a third, low mode (what
    is clearly *not* the phrase) from taking Otsu's cut between itself and the background."""
    values = heatmap.flatten().float()
    upper = values[values > values.median()]
    return otsu_threshold(upper if upper.numel() >= 2 else values)


def peak_component(
    heatmap: Float[Tensor, "H W"], threshold: float | None = None
) -> Bool[Tensor, "H W"]:
    """The connected region above `threshold` (default `phrase_threshold`) that holds the
    heatmap's maximum: the one region a referring phrase names."""
    from scipy import ndimage

    threshold = phrase_threshold(heatmap) if threshold is None else threshold
    above = (heatmap >= threshold).numpy()
    row, col = np.unravel_index(int(torch.argmax(heatmap)), tuple(heatmap.shape))
    above[row, col] = True
    labels, _ = ndimage.label(above)  # type: ignore[misc]
    return torch.from_numpy(labels == labels[row, col])


def mask_box(mask: Bool[Tensor, "H W"]) -> Float[Tensor, "4"]:
    """The xyxy box (exclusive max) around a non-empty mask."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        raise TwoDError("an empty mask has no box")
    return torch.tensor(
        [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1],
        dtype=torch.float32,
    )


def detect_in_heatmap(
    heatmap: Float[Tensor, "H W"],
    config: LocalizeConfig,
    radius: int,
    image: Tensor | None = None,
    sam: BoxPrompter | None = None,
) -> Detections:
    """`localize.detect_in_heatmap` with `phrase_threshold` as the default threshold."""
    return localize.detect_in_heatmap(heatmap, config, radius, image, sam, phrase_threshold)


def morph_radius(config: LocalizeConfig, image_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """Opening/closing radius in pixels for a heatmap from an (h, w) grid, as `localize` picks it
    (the config's radius in quarter cells)."""
    cell = max(image_size[0] / grid[0], image_size[1] / grid[1])
    return max(0, round(config.morph_radius * cell / 4))
