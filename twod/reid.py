"""Re-identification: find a tracked object again by its look, after the tracker lost it.

A `PrototypeBank` keeps, per object, up to `max_prototypes` prototypes: the L2-normalised mean of
the L2-normalised patch features inside the object's mask on a confident frame (the first one
seen, kept for good, plus a FIFO of the most recent). `search` scores every patch of a frame by
its best cosine similarity to the prototypes, averaged over 3x3 patches (one stray patch does not
make a match), and returns the best place (`Match`: score, (x, y) pixel, box of the matching
region).

The decision is calibrated per object: on each confident frame the bank also records the score
`search` gives inside the object's own mask, against the prototypes of earlier frames (its
"reference", the median of the recorded scores). A lost object is re-prompted only where a match
reaches `match_ratio` x its reference (and `min_similarity`): an object that left the frame leaves
only background to match, well under that, and is not forced back. An object needs two confident
frames before it can be re-identified (one to build a prototype, one to calibrate).

Pure functions on tensors and a small state object; the loop that drives SAM 2 with them is
`track.track_with_reid`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from .features import PatchFeatures, TwoDError


@dataclass(frozen=True)
class ReidConfig:
    """When an object counts as lost or confidently seen, and when a match is trusted."""

    lost_score: float = 0.5
    """An object whose score is below this, or whose mask has fewer than `min_area` pixels, is
    lost on that frame."""
    confident_score: float = 0.8
    """Frames where the object's score is at least this (and its mask has `min_area` pixels)
    feed its prototype bank."""
    min_area: int = 16
    """Pixels a mask needs to count as the object."""
    max_prototypes: int = 8
    """Prototypes kept per object: the first plus the most recent."""
    bank_every: int = 1
    """Feed the bank at most every this many frames per object (each feed extracts features)."""
    match_ratio: float = 0.85
    """Re-prompt when the best match reaches this fraction of the object's reference (the match
    score seen inside its own mask on confident frames). Also the bar a confident frame must
    clear to join the bank, so a mask that drifted onto something else does not teach it."""
    min_similarity: float = 0.3
    """And never below this cosine similarity."""
    cooldown: int = 5
    """Frames after a prompt of an object before it may be re-prompted."""


@dataclass
class Match:
    """Where an object's prototypes match a frame best."""

    score: float
    """Best 3x3-averaged cosine similarity to the object's prototypes."""
    point: tuple[float, float]
    """(x, y) pixel (original image) at the centre of the best patch."""
    box: tuple[float, float, float, float] | None
    """xyxy pixels around the connected patches scoring >= the threshold given to `search`
    (None without a threshold)."""


def mask_coverage(mask: Bool[Tensor, "H W"], grid: tuple[int, int]) -> Float[Tensor, "h w"]:
    """The fraction of each patch that `mask` (at the image's original size) covers."""
    return F.interpolate(mask.float()[None, None], size=grid, mode="area")[0, 0]


def in_mask_patches(coverage: Float[Tensor, "h w"]) -> Bool[Tensor, "h w"]:
    """Patches at least half covered; the best covered one if none is (a small object)."""
    inside = coverage >= 0.5
    if not bool(inside.any()) and float(coverage.max()) > 0:
        inside = coverage == coverage.max()
    return inside


def prototype(features: PatchFeatures, mask: Bool[Tensor, "H W"]) -> Float[Tensor, "D"] | None:
    """L2-normalised mean of the normalised patch features inside `mask`; None for an empty mask."""
    inside = in_mask_patches(mask_coverage(mask, features.grid))
    if not bool(inside.any()):
        return None
    return F.normalize(features.normalized()[0][inside].mean(0), dim=0)


def match_map(features: PatchFeatures, prototypes: Float[Tensor, "M D"]) -> Float[Tensor, "h w"]:
    """Per patch: the best cosine similarity to a prototype, averaged over its 3x3 neighbours."""
    best = (features.normalized()[0] @ prototypes.T.float()).max(-1).values
    return F.avg_pool2d(best[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]


def _region_box(
    scores: Float[Tensor, "h w"], seed: tuple[int, int], threshold: float, hw: tuple[int, int]
) -> tuple[float, float, float, float]:
    from scipy import ndimage

    found = ndimage.label((scores >= threshold).numpy(), structure=np.ones((3, 3)))
    labels = np.asarray(found[0])  # type: ignore[index]  # (labels, count)
    rows, cols = np.nonzero(labels == labels[seed])
    h, w = scores.shape
    H, W = hw
    return (
        float(cols.min() * W / w),
        float(rows.min() * H / h),
        float((cols.max() + 1) * W / w),
        float((rows.max() + 1) * H / h),
    )


def find(
    features: PatchFeatures, prototypes: Float[Tensor, "M D"], threshold: float | None = None
) -> Match:
    """The best match of `prototypes` on the frame of `features` (B = 1)."""
    scores = match_map(features, prototypes)
    h, w = scores.shape
    flat = int(scores.argmax())
    row, col = divmod(flat, w)
    H, W = features.image_size
    point = ((col + 0.5) * W / w, (row + 0.5) * H / h)
    score = float(scores[row, col])
    box = None
    if threshold is not None and score >= threshold:
        box = _region_box(scores, (row, col), threshold, (H, W))
    return Match(score, point, box)


class PrototypeBank:
    """Prototypes and calibration scores per object id (see the module docstring)."""

    def __init__(self, max_prototypes: int = 8, max_references: int = 32) -> None:
        if max_prototypes < 1:
            raise TwoDError(f"max_prototypes must be >= 1, got {max_prototypes}")
        self.max_prototypes = max_prototypes
        self._first: dict[Hashable, Tensor] = {}
        self._recent: dict[Hashable, deque[Tensor]] = {}
        self._references: dict[Hashable, deque[float]] = {}
        self._max_references = max_references

    def __contains__(self, obj: Hashable) -> bool:
        return obj in self._first

    @property
    def objects(self) -> list[Hashable]:
        return list(self._first)

    def prototypes(self, obj: Hashable) -> Float[Tensor, "M D"]:
        if obj not in self._first:
            known = ", ".join(map(str, self._first)) or "none"
            raise TwoDError(f"object {obj} has no prototypes yet (objects in the bank: {known})")
        return torch.stack([self._first[obj], *self._recent[obj]])

    def reference(self, obj: Hashable) -> float | None:
        """The median in-mask match score of `obj` on its confident frames; None until it has
        been seen on two."""
        found = self._references.get(obj)
        return float(np.median(found)) if found else None

    def threshold(self, obj: Hashable, cfg: ReidConfig) -> float | None:
        """The score a match of `obj` needs (None while it is uncalibrated)."""
        ref = self.reference(obj)
        return None if ref is None else max(cfg.min_similarity, cfg.match_ratio * ref)

    def in_mask_score(
        self, features: PatchFeatures, obj: Hashable, mask: Bool[Tensor, "H W"]
    ) -> float | None:
        """The best `match_map` score inside `mask`: what `search` finds where the object is."""
        inside = in_mask_patches(mask_coverage(mask, features.grid))
        if obj not in self or not bool(inside.any()):
            return None
        return float(match_map(features, self.prototypes(obj))[inside].max())

    def observe(
        self, features: PatchFeatures, obj: Hashable, mask: Bool[Tensor, "H W"], cfg: ReidConfig
    ) -> bool:
        """Feed a confident frame of `obj`: record its in-mask score (calibration), then add its
        prototype. A frame scoring under the object's `threshold` is refused (False): the mask is
        probably on something else."""
        vector = prototype(features, mask)
        if vector is None:
            return False
        score = self.in_mask_score(features, obj, mask)
        limit = self.threshold(obj, cfg)
        if score is not None and limit is not None and score < limit:
            return False
        if score is not None:
            self._references.setdefault(obj, deque(maxlen=self._max_references)).append(score)
        if obj not in self._first:
            self._first[obj] = vector
            self._recent[obj] = deque(maxlen=self.max_prototypes - 1)
        elif self.max_prototypes > 1:
            self._recent[obj].append(vector)
        return True

    def search(
        self, features: PatchFeatures, obj: Hashable, cfg: ReidConfig | None = None
    ) -> Match:
        """Where `obj` matches the frame best; with `cfg`, the match's box covers the connected
        region scoring at least the object's threshold."""
        limit = None if cfg is None else self.threshold(obj, cfg)
        return find(features, self.prototypes(obj), limit)


def is_lost(mask: Bool[Tensor, "H W"], score: float, cfg: ReidConfig) -> bool:
    """The tracker has lost the object on this frame: a low score or a (nearly) empty mask."""
    return score < cfg.lost_score or int(mask.sum()) < cfg.min_area


def is_confident(mask: Bool[Tensor, "H W"], score: float, cfg: ReidConfig) -> bool:
    """The tracker is sure of the object on this frame: the bank may learn from it."""
    return score >= cfg.confident_score and int(mask.sum()) >= cfg.min_area


def should_reprompt(
    match: Match | None, threshold: float | None, frames_since_prompt: int | None, cfg: ReidConfig
) -> bool:
    """Re-prompt a lost object at `match`? Only with a calibrated `threshold` (the bank's), a match
    reaching it, and `cooldown` frames since the object's last prompt (None: never prompted)."""
    if match is None or threshold is None:
        return False
    if frames_since_prompt is not None and frames_since_prompt < cfg.cooldown:
        return False
    return match.score >= threshold
