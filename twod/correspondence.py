"""Keypoint correspondence from patch features, PCK, and a reader for SPair-71k.

Matching is nearest-neighbour in cosine similarity: the source feature is sampled (bilinearly by
default) on the L2-normalised patch grid at the keypoint, compared with every target patch, and
the best patch centre (optionally refined by a soft-argmax) is returned in target pixels.
Points are xy in original-image pixels, a pixel (i, j) covering [j, j+1) x [i, i+1); boxes xyxy.

SPair-71k layout: `PairAnnotation/{trn,val,test}/*.json` (one pair each: `src_imname`,
`trg_imname`, `category`, `src_kps`, `trg_kps` as [[x, y], ...], `src_bndbox`, `trg_bndbox` xyxy,
`src_imsize`, `trg_imsize` as [w, h, c], ...) and images at `JPEGImages/<category>/<imname>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from .features import FeatureExtractor, PatchFeatures, TwoDError
from .io import read_image


def _single(features: PatchFeatures, role: str) -> Float[Tensor, "h w D"]:
    if features.patches.shape[0] != 1:
        raise TwoDError(f"{role} features must hold one image, got {features.patches.shape[0]}")
    return features.normalized()[0]


@dataclass(frozen=True)
class MatchConfig:
    """How a source keypoint's feature is taken and its best target patch turned into a point.

    Measured (colour backend, 12 homography warps of 3 real photos, 50 keypoints each): PCK@0.1
    0.805 bilinear vs 0.833 nearest; `refine_radius` 1 changed nothing at PCK@0.1.
    """

    sampling: Literal["bilinear", "nearest"] = "bilinear"
    """Source feature at the keypoint: bilinear on the patch grid, or the patch under it."""
    refine_radius: int = 0
    """r > 0: soft-argmax over the (2r+1)^2 target patches around the best one; 0: its centre."""
    temperature: float = 0.02
    """Softmax temperature on cosine similarity for the soft-argmax."""


def match_keypoints(
    src: PatchFeatures,
    trg: PatchFeatures,
    src_kps: Float[Tensor, "K 2"],
    config: MatchConfig = MatchConfig(),
) -> Float[Tensor, "K 2"]:
    """Target xy (pixels) matching each source keypoint xy (pixels), by cosine nearest neighbour
    over the L2-normalised patch features of one source and one target image."""
    src_grid, trg_grid = _single(src, "source"), _single(trg, "target")
    if src_grid.shape[-1] != trg_grid.shape[-1]:
        raise TwoDError(f"feature dims differ: {src_grid.shape[-1]} vs {trg_grid.shape[-1]}")
    (src_h, src_w), (h, w) = src.image_size, trg.image_size
    scale = torch.tensor([2.0 / src_w, 2.0 / src_h])
    uv = (src_kps.float() * scale - 1).view(1, 1, -1, 2)  # grid_sample's [-1, 1] image edges
    src_map = src_grid.permute(2, 0, 1)[None]
    sampled = F.grid_sample(
        src_map, uv, mode=config.sampling, padding_mode="border", align_corners=False
    )
    queries = F.normalize(sampled[0, :, 0].T, dim=-1)  # (K, D), cosine is meant
    gh, gw = trg.grid
    similarity = (queries @ trg_grid.reshape(gh * gw, -1).T).view(-1, gh, gw)  # (K, gh, gw)
    best = similarity.flatten(1).argmax(1)
    rows, cols = (best // gw).float(), (best % gw).float()
    if config.refine_radius > 0:
        r = config.refine_radius
        offsets = torch.arange(-r, r + 1, dtype=torch.float32)
        win_rows = (rows[:, None, None] + offsets[None, :, None]).expand(-1, 2 * r + 1, 2 * r + 1)
        win_cols = (cols[:, None, None] + offsets[None, None, :]).expand(-1, 2 * r + 1, 2 * r + 1)
        inside = (win_rows >= 0) & (win_rows < gh) & (win_cols >= 0) & (win_cols < gw)
        flat = (win_rows.clamp(0, gh - 1) * gw + win_cols.clamp(0, gw - 1)).long().flatten(1)
        logits = similarity.flatten(1).gather(1, flat) / config.temperature
        weights = logits.masked_fill(~inside.flatten(1), float("-inf")).softmax(1)
        rows, cols = (weights * win_rows.flatten(1)).sum(1), (weights * win_cols.flatten(1)).sum(1)
    return torch.stack([(cols + 0.5) * w / gw, (rows + 0.5) * h / gh], dim=1)


@dataclass
class PCKResult:
    """Percentage of correct keypoints for one set of predictions."""

    pck: float
    """Fraction of keypoints within `threshold` pixels of the ground truth (0 for K = 0)."""
    correct: Bool[Tensor, "K"]
    """Per keypoint: distance to the ground truth <= threshold."""
    threshold: float
    """alpha * max(h, w) of the box (or image), in pixels."""


def pck(
    pred: Float[Tensor, "K 2"],
    gt: Float[Tensor, "K 2"],
    bbox: Sequence[float] | Tensor,
    alpha: float = 0.1,
) -> PCKResult:
    """PCK@alpha with SPair-71k's threshold alpha * max(bbox_h, bbox_w).

    `bbox` is an xyxy box of the target object, or an image size (H, W) (max is order-free).
    """
    box = [float(v) for v in bbox]
    if len(box) == 4:
        extent = max(box[2] - box[0], box[3] - box[1])
    elif len(box) == 2:
        extent = max(box)
    else:
        raise TwoDError(f"bbox must be xyxy or (H, W), got {len(box)} values")
    threshold = alpha * extent
    correct = (pred.float() - gt.float()).norm(dim=-1) <= threshold
    return PCKResult(float(correct.float().mean()) if len(correct) else 0.0, correct, threshold)


@dataclass(frozen=True)
class SPairPair:
    """One annotated SPair-71k pair; images are read from disk on access."""

    name: str
    """Annotation file stem, e.g. `000001-2008_000585-2008_004704:aeroplane`."""
    category: str
    src_path: Path
    trg_path: Path
    src_kps: Float[Tensor, "K 2"]
    """Source keypoints, xy pixels; row k matches row k of `trg_kps`."""
    trg_kps: Float[Tensor, "K 2"]
    src_bbox: Float[Tensor, "4"]
    """Source object box, xyxy pixels."""
    trg_bbox: Float[Tensor, "4"]
    src_size: tuple[int, int]
    """(H, W) of the source image, from the annotation."""
    trg_size: tuple[int, int]

    @property
    def src_image(self) -> Float[Tensor, "H W 3"]:
        return read_image(self.src_path)

    @property
    def trg_image(self) -> Float[Tensor, "H W 3"]:
        return read_image(self.trg_path)


class SPairDataset:
    """The pairs of one split (`trn`, `val`, `test`) of an SPair-71k folder, sorted by file name."""

    def __init__(self, root: str | Path, split: str = "test", category: str | None = None):
        self.root = Path(root)
        folder = self.root / "PairAnnotation" / {"train": "trn"}.get(split, split)
        if not folder.is_dir():
            raise TwoDError(f"no SPair-71k annotations at {folder} (want PairAnnotation/<split>/)")
        self.files = sorted(folder.glob("*.json"))
        if category is not None:
            self.files = [f for f in self.files if self._category_of(f) == category]
        if not self.files:
            raise TwoDError(
                f"no pairs in {folder}" + (f" of category {category!r}" if category else "")
            )

    def _read(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TwoDError(f"bad SPair-71k annotation {path}: {e}") from e

    def _category_of(self, path: Path) -> str:  # SPair names files `<id>-<src>-<trg>:<category>`
        return (
            path.stem.rsplit(":", 1)[1]
            if ":" in path.stem
            else str(self._read(path).get("category"))
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> SPairPair:
        path = self.files[index]
        ann = self._read(path)
        try:
            cat = ann["category"]
            images = self.root / "JPEGImages" / cat
            return SPairPair(
                path.stem, cat, images / ann["src_imname"], images / ann["trg_imname"],
                torch.tensor(ann["src_kps"], dtype=torch.float32).view(-1, 2),
                torch.tensor(ann["trg_kps"], dtype=torch.float32).view(-1, 2),
                torch.tensor(ann["src_bndbox"], dtype=torch.float32),
                torch.tensor(ann["trg_bndbox"], dtype=torch.float32),
                (int(ann["src_imsize"][1]), int(ann["src_imsize"][0])),
                (int(ann["trg_imsize"][1]), int(ann["trg_imsize"][0])),
            )  # fmt: skip
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise TwoDError(f"bad SPair-71k annotation {path}: {type(e).__name__} {e}") from e

    def __iter__(self) -> Iterator[SPairPair]:
        return (self[i] for i in range(len(self)))


@dataclass
class PCKSummary:
    """PCK over many pairs, threshold alpha * max side of each target object box."""

    mean: float
    """Mean over pairs of the per-pair PCK (0 when there are no pairs)."""
    per_keypoint: float
    """Correct keypoints / all keypoints, pooled over pairs."""
    per_pair: dict[str, float]
    """Pair name -> PCK."""
    per_category: dict[str, float]
    """Category -> mean per-pair PCK."""
    alpha: float


def evaluate_pck(
    extractor: FeatureExtractor,
    pairs: Iterable[SPairPair],
    alpha: float = 0.1,
    progress: bool = False,
    config: MatchConfig = MatchConfig(),
) -> PCKSummary:
    """Match each pair's source keypoints into its target with `extractor`'s features; score PCK
    against the target object box."""
    from tqdm import tqdm

    per_pair: dict[str, float] = {}
    by_category: dict[str, list[float]] = {}
    hits = total = 0
    for pair in tqdm(
        pairs, desc=f"PCK@{alpha} {extractor.name}", unit="pair", disable=not progress
    ):
        src, trg = extractor.extract([pair.src_image]), extractor.extract([pair.trg_image])
        result = pck(
            match_keypoints(src, trg, pair.src_kps, config), pair.trg_kps, pair.trg_bbox, alpha
        )
        per_pair[pair.name] = result.pck
        by_category.setdefault(pair.category, []).append(result.pck)
        hits, total = hits + int(result.correct.sum()), total + len(result.correct)
    return PCKSummary(
        mean=sum(per_pair.values()) / len(per_pair) if per_pair else 0.0,
        per_keypoint=hits / total if total else 0.0,
        per_pair=per_pair,
        per_category={cat: sum(v) / len(v) for cat, v in by_category.items()},
        alpha=alpha,
    )
