"""Localize by example: a reference (clicks or a box on a reference image) -> a pooled, normalised
patch vector -> cosine heatmap over a target -> threshold -> clean-up -> components -> boxes -> masks.

All steps are pure functions on tensors; SAM 2 refinement is optional (pass a predictor with a
`predict_boxes(image, boxes)` method, see `sam.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from .features import PatchFeatures, TwoDError, joint_bilateral_upsample


@dataclass(frozen=True)
class LocalizeConfig:
    threshold: float | None = None
    """Cosine similarity above which a pixel matches; None = Otsu's threshold on the heatmap."""
    morph_radius: int = 2
    """Radius (pixels of the original image, scaled by the patch stride) of the opening/closing."""
    min_area: float = 0.0005
    """Smallest component kept, as a fraction of the image area."""
    top_k: int = 20
    nms_iou: float = 0.5


@dataclass
class Detections:
    """Instances found in one image. Boxes are xyxy pixels; masks bool[H, W]; heatmap is the
    cosine similarity to the reference at pixel resolution."""

    boxes: Float[Tensor, "K 4"]
    scores: Float[Tensor, "K"]
    masks: Bool[Tensor, "K H W"]
    heatmap: Float[Tensor, "H W"]
    threshold: float
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.boxes.shape[0]


class BoxPrompter(Protocol):
    def predict_boxes(self, image: Tensor, boxes: Tensor) -> Tensor: ...


def reference_vector(
    features: PatchFeatures,
    clicks: Sequence[tuple[float, float]] = (),
    box: tuple[float, float, float, float] | None = None,
) -> Float[Tensor, "D"]:
    """Mean of the L2-normalised patch features under the clicks, or with centres inside the box
    (the centre patch if the box is smaller than a patch); returned L2-normalised."""
    grid = features.normalized()[0]
    h, w = features.grid
    H, W = features.image_size
    if box is not None:
        x0, y0, x1, y1 = box
        cols = (torch.arange(w) + 0.5) * W / w
        rows = (torch.arange(h) + 0.5) * H / h
        inside = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]
        if not bool(inside.any()):
            r, c = features.pixel_to_patch((x0 + x1) / 2, (y0 + y1) / 2)
            inside[r, c] = True
        vectors = grid[inside]
    elif clicks:
        vectors = torch.stack([grid[features.pixel_to_patch(x, y)] for x, y in clicks])
    else:
        raise TwoDError("a reference needs clicks or a box")
    return F.normalize(vectors.mean(0), dim=0)


def similarity_map(features: PatchFeatures, reference: Float[Tensor, "D"]) -> Float[Tensor, "h w"]:
    """Cosine similarity of every patch of the first image to the reference vector."""
    return features.normalized()[0] @ F.normalize(reference.float(), dim=0)


def otsu_threshold(values: Tensor, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising between-class variance of the values' histogram."""
    v = values.flatten().float()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-8:
        return hi
    hist = torch.histc(v, bins=bins, min=lo, max=hi).double()
    centres = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    centres = (centres[:-1] + centres[1:]) / 2
    w0 = torch.cumsum(hist, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(hist * centres, 0)
    mu0 = m0 / w0.clamp_min(1e-12)
    mu1 = (m0[-1] - m0) / w1.clamp_min(1e-12)
    between = (w0 * w1 * (mu0 - mu1) ** 2)[:-1]
    # Between-class variance is flat across an empty gap between modes: cut in its middle.
    best = torch.nonzero(between >= between.max() * (1 - 1e-9)).flatten().double().mean()
    return float(centres[int(best.round())] + (centres[1] - centres[0]) / 2)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def clean_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening then closing with a disk: removes specks, fills pinholes."""
    from scipy import ndimage

    if radius <= 0:
        return mask
    structure = _disk(radius)
    opened = ndimage.binary_opening(mask, structure=structure)
    return ndimage.binary_closing(opened, structure=structure)


def components_to_detections(
    heatmap: Float[Tensor, "H W"], binary: np.ndarray, config: LocalizeConfig, threshold: float
) -> Detections:
    """Connected components -> boxes scored by their mean heat, filtered by area, NMS, top-k."""
    from scipy import ndimage
    from torchvision.ops import nms

    labelled: Any = ndimage.label(binary)
    labels, count = labelled
    H, W = binary.shape
    boxes, scores, masks = [], [], []
    # areas and heat sums of all components in one pass each (specks are many, and dropped)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    heat_sums = np.bincount(labels.ravel(), heatmap.numpy().ravel(), minlength=count + 1)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[k] < config.min_area * H * W:
            continue
        ys, xs = sl
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
        scores.append(float(heat_sums[k] / areas[k]))
        masks.append(torch.from_numpy(labels == k))
    if not boxes:
        return Detections(
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, H, W, dtype=torch.bool),
            heatmap,
            threshold,
        )
    box_t = torch.tensor(boxes, dtype=torch.float32)
    score_t = torch.tensor(scores, dtype=torch.float32)
    keep = nms(box_t, score_t, config.nms_iou)[: config.top_k]
    return Detections(box_t[keep], score_t[keep], torch.stack(masks)[keep], heatmap, threshold)


def localize(
    reference: Float[Tensor, "D"],
    target: PatchFeatures,
    config: LocalizeConfig | None = None,
    image: Tensor | None = None,
    sam: BoxPrompter | None = None,
) -> Detections:
    """Find the regions of `target` (first image) that look like the reference vector.

    With the target `image` (H, W, 3) the heatmap is upsampled edge-aware; with `sam` too, each
    box is refined into a SAM 2 mask.
    """
    config = config or LocalizeConfig()
    heatmap = heatmaps(reference[None], target, image)[0]
    radius = morph_radius_pixels(target, config)
    return detect_in_heatmap(heatmap, config, radius, image, sam)


def heatmaps(
    references: Float[Tensor, "Q D"], target: PatchFeatures, image: Tensor | None = None
) -> Float[Tensor, "Q H W"]:
    """Cosine similarity of the first target image's patches to each reference, at the image's
    resolution: edge-aware with the target `image` (H, W, 3) (joint bilateral upsampling, one
    pass for all Q), else bilinear."""
    coarse = target.normalized()[0] @ F.normalize(references.float(), dim=-1).T  # (h, w, Q)
    if image is not None:  # edge-aware: the heatmap's borders follow the image's
        fine = joint_bilateral_upsample(coarse[None], image[None].float(), 0.8, 0.12)[0]
        return fine.permute(2, 0, 1)
    grid = coarse.permute(2, 0, 1)[None]
    return F.interpolate(grid, size=target.image_size, mode="bilinear")[0]


def morph_radius_pixels(target: PatchFeatures, config: LocalizeConfig) -> int:
    """`config.morph_radius` (in patch strides / 4) in pixels of the target's original image."""
    scale = max(target.image_size) / max(target.input_size)
    return max(0, round(config.morph_radius * target.stride * scale / 4))


def detect_in_heatmap(
    heatmap: Float[Tensor, "H W"],
    config: LocalizeConfig,
    radius: int,
    image: Tensor | None = None,
    sam: BoxPrompter | None = None,
    default_threshold: Callable[[Tensor], float] = otsu_threshold,
) -> Detections:
    """Instances in a pixel heatmap: threshold (`default_threshold` unless the config gives one)
    -> opening/closing with a disk of `radius` pixels -> components -> boxes (NMS, top-k) ->
    SAM 2 masks from the boxes when `sam` is given (needs the `image`)."""
    threshold = default_threshold(heatmap) if config.threshold is None else config.threshold
    binary = clean_mask((heatmap > threshold).numpy(), radius)
    detections = components_to_detections(heatmap, binary, config, threshold)
    if sam is not None and len(detections):
        if image is None:
            raise TwoDError("SAM refinement needs the image")
        detections.masks = sam.predict_boxes(image, detections.boxes).bool()
    return detections
