"""Open-vocabulary semantic segmentation (dinov3.seg style): every pixel gets one of K class names.

```
class names ─ prompt templates ─ text encoder ─ mean, L2 ─ (bridge → DINO space) ─ texts (K, D)
image ─ views: the whole image (short side `whole`) + overlapping `crop` squares every `stride`
  each view ─ score_view → (K, h, w) cosine of patches with texts   [+ global term: its CLS]
  → crops averaged where they overlap, then averaged with the whole view   (local-global)
  → coarse scores (K, h, w) ─ guided upsampling (joint bilateral, guide = image)  [early]
  → (K, H, W) ─ mean inside each region (SAM 2 automatic masks)               [late]
  → argmax → class ids (H, W)
```
The core is pure functions on tensors; the model calls sit behind `ViewScorer` (patch features
and a text matrix: `FeatureScorer`; dense CLIP: `ClipScorer`). Scores of overlapping views are
averaged: cosine with a unit text is linear in the L2-normalised features, so this equals
averaging the normalised features. The per-pixel stages run `class_chunk` classes at a time
with a running argmax, so memory is O(class_chunk * H * W) beyond the coarse (K, h, w) scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .colour import ColourTextureExtractor
from .errors import TwoDError
from .features import FeatureExtractor

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a {} in the scene.",
    "there is a {} in the scene.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a cropped photo of the {}.",
)
"""Prompt templates (a short list after CLIP's ImageNet and segmentation prompt ensembles)."""


@dataclass(frozen=True)
class SegmentConfig:
    """The switches and sizes of `segment_image` (defaults: everything on)."""

    global_weight: float = 0.3
    """Weight of the global term (the view's CLS token against each class), 0 = off:
    scores = (1 - w) * patch cosine + w * CLS cosine."""
    guided: bool = True
    """Early refinement: joint bilateral upsampling of the scores (guide = the image); else bilinear."""
    sigma_spatial: float = 0.8
    """Spatial sigma of the guided upsampling, in patches."""
    sigma_range: float = 0.12
    """Colour sigma of the guided upsampling (RGB in [0, 1])."""
    local_global: bool = True
    """Overlapping crops plus the resized whole image; else the whole image only."""
    crop: int = 384
    """Side of the square crops, image pixels (also the short side each crop is seen at)."""
    stride: int = 256
    """Step between crops, image pixels."""
    whole: int = 640
    """Short side the whole image is seen at."""
    class_chunk: int = 32
    """Classes per pass of the per-pixel stages (bounds their memory)."""


class ViewScorer(Protocol):
    """One view (a crop or the whole image) -> class scores on its patch grid."""

    has_global: bool
    """Whether the scorer has a global (whole-view) term for `global_weight`."""

    def __call__(
        self, view: Float[Tensor, "H W 3"], short_side: int, global_weight: float
    ) -> Float[Tensor, "K h w"]: ...


@dataclass
class Segmentation:
    labels: Int[Tensor, "H W"]
    """Class ids 0..K-1 per pixel (int64)."""
    coarse: Float[Tensor, "K h w"]
    """Scores after the local-global ensemble, before upsampling."""
    views: int
    """How many views were scored (crops + the whole image)."""
    notes: list[str] = field(default_factory=list)
    """What was switched off and why (e.g. no CLS token for the global term)."""


# ---------------------------------------------------------------------------------------------
# Text side


def check_classes(names: Sequence[str], source: str) -> tuple[str, ...]:
    """Stripped class names; an empty list, an empty name or a repeated name is a TwoDError
    naming `source` (the flag or file)."""
    stripped = [n.strip() for n in names]
    if not stripped or not any(stripped):
        raise TwoDError(f"{source}: empty class list (want names, e.g. --classes 'chair,table')")
    seen: dict[str, int] = {}
    for k, name in enumerate(stripped, start=1):
        if not name:
            raise TwoDError(f"{source}: class {k} is empty")
        if name in seen:
            raise TwoDError(f"{source}: duplicate class {name!r} (entries {seen[name]} and {k})")
        seen[name] = k
    return tuple(stripped)


def prompt_texts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Each class through each template, class-major: [t0(c0), t1(c0), ..., t0(c1), ...]."""
    if not templates or any("{}" not in t for t in templates):
        raise TwoDError(f"prompt templates must each hold '{{}}', got {list(templates)}")
    return [t.format(c) for c in classes for t in templates]


def class_embeddings(
    encode: Callable[[list[str]], Float[Tensor, "Q E"]],
    classes: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> Float[Tensor, "K E"]:
    """One unit vector per class: the L2-normalised embeddings of its prompts, averaged, then
    L2-normalised again (CLIP's prompt ensembling)."""
    texts = prompt_texts(classes, templates)
    embeddings = F.normalize(encode(texts).float(), dim=-1)
    per_class = embeddings.reshape(len(classes), len(templates), -1).mean(1)
    return F.normalize(per_class, dim=-1)


# ---------------------------------------------------------------------------------------------
# Scores of one view


def patch_scores(
    patches: Float[Tensor, "h w D"], texts: Float[Tensor, "K D"]
) -> Float[Tensor, "K h w"]:
    """Cosine of every patch with every (unit) class text."""
    return torch.einsum(
        "hwd,kd->khw", F.normalize(patches.float(), dim=-1), F.normalize(texts.float(), dim=-1)
    )


def global_local(
    local: Float[Tensor, "K h w"], global_: Float[Tensor, "K"], weight: float
) -> Float[Tensor, "K h w"]:
    """(1 - weight) * local + weight * global: the view-level score of each class (its CLS
    cosine) added to every patch, so a class the view as a whole does not show loses ties."""
    return (1 - weight) * local + weight * global_.float()[:, None, None]


def with_short_side(extractor: FeatureExtractor, short_side: int) -> FeatureExtractor:
    """The same extractor (the same model object) seeing images at another short side."""
    if extractor.short_side == short_side:
        return extractor
    if dataclasses.is_dataclass(extractor):
        return dataclasses.replace(extractor, short_side=short_side)  # type: ignore[type-var]
    raise TwoDError(f"{extractor.name}: cannot change the short side of this extractor")


class FeatureScorer:
    """Patch features (DINOv3, DINOv2, colour) against class texts in their space."""

    def __init__(self, extractor: FeatureExtractor, texts: Float[Tensor, "K D"]) -> None:
        if texts.shape[-1] != extractor.dim:
            raise TwoDError(
                f"class texts are {texts.shape[-1]}-d, {extractor.name}'s features {extractor.dim}-d"
            )
        self.extractor, self.texts = extractor, F.normalize(texts.float().cpu(), dim=-1)
        self.has_global = not isinstance(extractor, ColourTextureExtractor)  # no CLS token

    def __call__(
        self, view: Float[Tensor, "H W 3"], short_side: int, global_weight: float
    ) -> Float[Tensor, "K h w"]:
        features = with_short_side(self.extractor, short_side).extract([view])
        local = patch_scores(features.patches[0], self.texts)
        if global_weight > 0 and features.cls is not None:
            cls = F.normalize(features.cls[0].float(), dim=-1)
            local = global_local(local, self.texts @ cls, global_weight)
        return local


class ClipScorer:
    """Dense CLIP features (LERF-style multi-scale crops; the best scale per cell) against class
    texts in CLIP space; the global term is the whole view's CLIP embedding."""

    has_global = True

    def __init__(self, clip, texts: Float[Tensor, "K E"], batch_size: int = 32) -> None:
        self.clip, self.texts = clip, F.normalize(texts.float().cpu(), dim=-1)
        self.batch_size = batch_size

    def __call__(
        self, view: Float[Tensor, "H W 3"], short_side: int, global_weight: float
    ) -> Float[Tensor, "K h w"]:
        from .clip_dense import lerf_features, text_dots

        dense = lerf_features(self.clip, view, batch_size=self.batch_size, stride=16)
        L, h, w, E = dense.maps.shape
        dots, _ = text_dots(dense.maps.reshape(-1, E), self.texts)  # maps are unit (or zero)
        local = dots.reshape(L, h, w, -1).amax(0).permute(2, 0, 1).contiguous()
        if global_weight > 0:
            whole = self.clip.encode_crops(view.permute(2, 0, 1)[None].float())[0]
            local = global_local(local, self.texts @ whole, global_weight)
        return local


# ---------------------------------------------------------------------------------------------
# Local-global inference


def crop_windows(size: tuple[int, int], crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows (y0, x0, y1, x1) of side `crop` every `stride` pixels covering an (H, W) image,
    the last row/column shifted back inside (mmseg's slide inference); a side shorter than the
    crop is taken whole."""
    if crop <= 0 or stride <= 0:
        raise TwoDError(f"crop and stride must be positive, got {crop} and {stride}")
    H, W = size

    def starts(n: int) -> list[int]:
        if n <= crop:
            return [0]
        steps = math.ceil((n - crop) / stride)
        return sorted({min(i * stride, n - crop) for i in range(steps + 1)})

    return [(y, x, min(y + crop, H), min(x + crop, W)) for y in starts(H) for x in starts(W)]


def _resize(scores: Float[Tensor, "K h w"], size: tuple[int, int]) -> Float[Tensor, "K H W"]:
    if tuple(scores.shape[1:]) == tuple(size):
        return scores
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


def local_global_scores(
    image: Float[Tensor, "H W 3"], score_view: ViewScorer, config: SegmentConfig
) -> tuple[Float[Tensor, "K h w"], int]:
    """Coarse scores of the image and the number of views scored.

    Whole image only (`local_global` off, or an image within one crop): its scores at short side
    `whole`. Else each crop is scored at short side `crop` and pasted on a canvas whose cells are
    the crops' patches (in image pixels), summed with a count where crops overlap and divided;
    the whole image's scores, resized to the canvas, are averaged in with equal weight. Memory:
    the canvas (K, H / cell, W / cell) and one view at a time."""
    H, W = image.shape[:2]
    whole = score_view(image, config.whole, config.global_weight)
    windows = crop_windows((H, W), config.crop, config.stride)
    if not config.local_global or len(windows) == 1:
        return whole, 1
    canvas: Tensor | None = None
    count: Tensor | None = None
    cell = 1.0
    for y0, x0, y1, x1 in windows:
        scores = score_view(image[y0:y1, x0:x1], config.crop, config.global_weight)
        if canvas is None:
            cell = (y1 - y0) / scores.shape[1]  # image pixels per crop patch
            shape = (math.ceil(H / cell), math.ceil(W / cell))
            canvas = scores.new_zeros(scores.shape[0], *shape)
            count = scores.new_zeros(1, *shape)
        assert count is not None
        r0, c0 = math.floor(y0 / cell), math.floor(x0 / cell)  # every cell a crop touches
        r1 = min(math.ceil(y1 / cell), canvas.shape[1])
        c1 = min(math.ceil(x1 / cell), canvas.shape[2])
        canvas[:, r0:r1, c0:c1] += _resize(scores, (r1 - r0, c1 - c0))
        count[:, r0:r1, c0:c1] += 1
    assert canvas is not None and count is not None
    crops = canvas / count.clamp_min(1)
    return (crops + _resize(whole, tuple(crops.shape[1:]))) / 2, len(windows) + 1  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Refinements (pure) and the per-pixel pass


@dataclass
class GuidedWeights:
    """Joint bilateral weights of one image, computed once and applied to any number of score
    channels: for each of the 3x3 neighbour cells n, its row and column per pixel and its
    normalised weight per pixel (spatial closeness x colour closeness to the cell's mean)."""

    rows: list[Int[Tensor, "H"]]
    cols: list[Int[Tensor, "W"]]
    weights: Float[Tensor, "9 H W"]

    def apply(self, scores: Float[Tensor, "K h w"]) -> Float[Tensor, "K H W"]:
        out = scores.new_zeros(scores.shape[0], *self.weights.shape[1:])
        for n, (iy, ix) in enumerate(zip(self.rows, self.cols, strict=True)):
            out.addcmul_(self.weights[n], scores[:, iy[:, None], ix[None, :]])
        return out


def guided_weights(
    grid: tuple[int, int],
    guide: Float[Tensor, "H W 3"],
    sigma_spatial: float = 0.8,
    sigma_range: float = 0.12,
) -> GuidedWeights:
    """The weights `features.joint_bilateral_upsample` uses (its slow twin for many channels:
    it recomputes them per call), for an (h, w) grid and a guide image at the output size."""
    h, w = grid
    H, W = guide.shape[:2]
    guide = guide.float()
    cell_colour = F.adaptive_avg_pool2d(guide.permute(2, 0, 1)[None], (h, w))[0].permute(1, 2, 0)
    v = (torch.arange(H, dtype=torch.float32) + 0.5) * h / H - 0.5  # pixel centres in cells
    u = (torch.arange(W, dtype=torch.float32) + 0.5) * w / W - 0.5
    cy, cx = v.round().long(), u.round().long()
    rows, cols, weights = [], [], []
    for dy in (-1, 0, 1):
        iy = (cy + dy).clamp(0, h - 1)
        for dx in (-1, 0, 1):
            ix = (cx + dx).clamp(0, w - 1)
            dist2 = (v - iy)[:, None] ** 2 + (u - ix)[None, :] ** 2
            spatial = torch.exp(-dist2 / (2 * sigma_spatial**2))
            diff = guide - cell_colour[iy[:, None], ix[None, :]]
            similar = torch.exp(-(diff * diff).sum(-1) / (2 * sigma_range**2))
            rows.append(iy)
            cols.append(ix)
            weights.append(spatial * similar + 1e-8)
    stacked = torch.stack(weights)
    return GuidedWeights(rows, cols, stacked / stacked.sum(0, keepdim=True))


def upsample_scores(
    scores: Float[Tensor, "K h w"],
    size: tuple[int, int],
    guide: Float[Tensor, "H W 3"] | GuidedWeights | None = None,
    sigma_spatial: float = 0.8,
    sigma_range: float = 0.12,
) -> Float[Tensor, "K H W"]:
    """Scores at pixel resolution: joint bilateral (each pixel averages the 3x3 cells around it,
    weighted by distance and by how close its colour is to each cell's mean colour, so score
    edges snap to image edges) with a `guide` image at `size` (or its precomputed
    `GuidedWeights`), else bilinear."""
    if guide is None:
        return _resize(scores.float(), size)
    if isinstance(guide, torch.Tensor):
        if tuple(guide.shape[:2]) != tuple(size):
            raise TwoDError(f"guide is {tuple(guide.shape[:2])}, the output {tuple(size)}")
        guide = guided_weights(tuple(scores.shape[1:]), guide, sigma_spatial, sigma_range)  # type: ignore[arg-type]
    return guide.apply(scores.float())


def region_owner(regions: Bool[Tensor, "M H W"]) -> Int[Tensor, "H W"]:
    """The region each pixel belongs to: the smallest region holding it (SAM's automatic masks
    nest: parts inside wholes), -1 where none does."""
    M, H, W = regions.shape
    owner = torch.full((H, W), -1, dtype=torch.long)
    if M == 0:
        return owner
    areas = regions.flatten(1).sum(1)
    for m in torch.argsort(areas, descending=True, stable=True).tolist():
        owner[regions[m]] = m  # smaller regions painted last win
    return owner


def region_average(
    scores: Float[Tensor, "K H W"], owner: Int[Tensor, "H W"]
) -> Float[Tensor, "K H W"]:
    """Every pixel of a region takes the region's mean score per class; pixels in no region
    (owner -1) keep theirs."""
    K = scores.shape[0]
    flat, ids = scores.reshape(K, -1), owner.reshape(-1)
    inside = ids >= 0
    if not bool(inside.any()):
        return scores
    regions = int(ids.max()) + 1
    sums = flat.new_zeros(K, regions).index_add_(1, ids[inside], flat[:, inside])
    counts = torch.bincount(ids[inside], minlength=regions).clamp_min(1).to(flat.dtype)
    out = flat.clone()
    out[:, inside] = (sums / counts)[:, ids[inside]]
    return out.reshape(scores.shape)


def region_average_reference(
    scores: Float[Tensor, "K H W"], owner: Int[Tensor, "H W"]
) -> Float[Tensor, "K H W"]:
    """The slow twin of `region_average`: one boolean mask per region."""
    out = scores.clone()
    for m in owner.unique().tolist():
        if m >= 0:
            mask = owner == m
            out[:, mask] = scores[:, mask].mean(1, keepdim=True)
    return out


def pixel_labels(
    coarse: Float[Tensor, "K h w"],
    image: Float[Tensor, "H W 3"],
    config: SegmentConfig,
    owner: Int[Tensor, "H W"] | None = None,
) -> Int[Tensor, "H W"]:
    """argmax over classes of the upsampled (guided or bilinear) and region-averaged scores,
    `class_chunk` classes at a time (a running max; ties go to the lower id)."""
    H, W = image.shape[:2]
    best = torch.full((H, W), -torch.inf)
    labels = torch.zeros((H, W), dtype=torch.long)
    guide = _guide(coarse, image, config)  # once per image, applied to every chunk of classes
    step = max(1, config.class_chunk)
    for k0 in range(0, coarse.shape[0], step):
        chunk = _refined(coarse[k0 : k0 + step], (H, W), guide, owner)
        value, index = chunk.max(0)
        better = value > best
        best = torch.where(better, value, best)
        labels = torch.where(better, index + k0, labels)
    return labels


def pixel_scores(
    coarse: Float[Tensor, "K h w"],
    image: Float[Tensor, "H W 3"],
    config: SegmentConfig,
    owner: Int[Tensor, "H W"] | None = None,
) -> Float[Tensor, "K H W"]:
    """The per-pixel scores whose argmax `pixel_labels` takes (upsampled, guided or bilinear,
    and region-averaged), all classes at once: K * H * W floats. For callers that need the
    scores themselves (lifting class probabilities to 3D)."""
    return _refined(coarse, image.shape[:2], _guide(coarse, image, config), owner)


def _guide(coarse: Tensor, image: Tensor, config: SegmentConfig):
    """The joint-bilateral weights of the image when `config.guided`, else None (bilinear)."""
    if not config.guided:
        return None
    grid = (coarse.shape[1], coarse.shape[2])
    return guided_weights(grid, image, config.sigma_spatial, config.sigma_range)


def _refined(coarse: Tensor, size, guide, owner: Tensor | None) -> Tensor:
    """Scores upsampled to `size` (guided by `guide`, or bilinear) and averaged in regions."""
    scores = upsample_scores(coarse, (int(size[0]), int(size[1])), guide)
    return region_average(scores, owner) if owner is not None else scores


def segment_image(
    image: Float[Tensor, "H W 3"],
    score_view: ViewScorer,
    config: SegmentConfig = SegmentConfig(),
    regions: Bool[Tensor, "M H W"] | None = None,
) -> Segmentation:
    """Class ids per pixel of one (H, W, 3) image in [0, 1]: local-global scores, the global
    term where the scorer has one, guided upsampling, region averaging when `regions` (boolean
    masks, e.g. SAM 2's automatic masks) are given."""
    notes = []
    if config.global_weight > 0 and not score_view.has_global:
        notes.append("these features have no CLS token: the global term is skipped")
    if regions is not None and tuple(regions.shape[1:]) != tuple(image.shape[:2]):
        raise TwoDError(
            f"regions are {tuple(regions.shape[1:])}, the image {tuple(image.shape[:2])}"
        )
    coarse, views = local_global_scores(image, score_view, config)
    owner = region_owner(regions.bool()) if regions is not None else None
    return Segmentation(pixel_labels(coarse, image, config, owner), coarse, views, notes)


def class_fractions(labels: Int[Tensor, "H W"], classes: Sequence[str]) -> dict[str, float]:
    """Fraction of the pixels given each class (all classes, in class order; they sum to 1)."""
    counts = torch.bincount(labels.reshape(-1), minlength=len(classes)).double()
    total = max(float(counts.sum()), 1.0)
    return {name: float(counts[k]) / total for k, name in enumerate(classes)}
