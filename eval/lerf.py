"""LERF-OVS localization and segmentation on a lifted scene, by the two protocols papers use.

**2D protocol** (LangSplat / LUDVIG tables). For each labelled frame and category: the lifted
features are rendered into the frame's camera and LERF relevancy is computed per pixel against
the canonical negatives (tau = 10). Two paths give that map: `features` renders the per-Gaussian
features and scores each pixel's feature (what LangSplat does); `scalar` scores each Gaussian
first and renders the per-Gaussian relevancy as one channel (cheaper: 1 channel, not E).

- Localization (LangSplat's `lerf_localization`): the map is smoothed with a k x k box filter
  (default k = 30 px, LangSplat's `evaluate_iou_loc.py`; at the synthetic benchmark's 320 x 240
  we pass 10, the same fraction of the frame) and its maximum taken: a hit when that point lies
  in any box of the category (box edges inclusive, as LangSplat). One point: the first maximum in
  row-major order (LangSplat counts a hit if any tied maximum falls in a box; with real relevancy
  ties do not happen, and one point keeps a constant map at chance).
- Mask IoU (LangSplat's `activate_stream`): the map is averaged with its box-smoothed self,
  normalised to [0, 1] per frame and category (min-max), rescaled as clip(2 * x - 1, 0, 1) and
  thresholded at 0.4 (LangSplat's default `--mask_thresh 0.4`, i.e. normalised relevancy above
  0.7), then cleaned with LangSplat's 7 x 7 majority filter; IoU with the union of the category's
  polygons.
- Several feature files act as levels (LangSplat's three SAM levels): per query the level whose
  smoothed map has the largest maximum is taken, as LangSplat does (for the mask, the level with
  the largest maximum of the averaged map).

**3D protocol** (OpenGaussian / Dr. Splat tables). The phrase selects Gaussians through query/
(per-Gaussian relevancy, the query command's default cut: Otsu's threshold, never below 0.5);
the selection is rendered into the frame with the full scene around it (occlusion respected: a
pixel is in the mask when the selected Gaussians' blending weight there exceeds 0.5); mIoU and
mAcc@0.25 (the fraction of queries with IoU above 0.25). This protocol is per Gaussian by
definition, so it has one path.

Pixels nothing covers (rendered alpha below 0.01) show no surface and score relevancy 0 on both
paths: they can hold no object (a captured LERF-OVS frame has none; the synthetic scene's empty
surroundings do, and a zero rendered feature would otherwise score LERF's neutral 0.5 there,
above an object whose lifted relevancy is, say, 0.3 but far above every other surface's).
Chance: a uniformly random pixel's probability of falling in a category's boxes, exactly, from
the boxes' pixel areas.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.lift.aggregate import PCA
from omnivision.lift.codebook import Codebook
from omnivision.query.queries import PhraseIndex, relevancy_threshold
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.errors import SceneError
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.render import RenderConfig, render
from omnivision.twod.clip_dense import CANONICAL_NEGATIVES

from .lerf_labels import LabelError, LabelFrame

TextSpace = Callable[[Sequence[str]], Tensor]
"""Phrases -> (Q, E) unit vectors in the lifted features' space (CLIP text, a bridge, an oracle)."""
Path2D = Literal["features", "scalar"]
EMPTY_ALPHA = 0.01
"""Below this rendered alpha a pixel shows no surface: its relevancy is `EMPTY_RELEVANCY`."""
EMPTY_RELEVANCY = 0.0


@dataclass(frozen=True)
class LerfConfig:
    smooth: int = 30
    """Box-filter side (pixels) for localization and the mask map (LangSplat: 30)."""
    mask_threshold: float = 0.4
    """Cut on clip(2 * normalised - 1, 0, 1) (LangSplat's --mask_thresh 0.4)."""
    majority: int = 7
    """Side of LangSplat's majority filter on the predicted mask (0: off)."""
    tau: float = 10.0
    negatives: tuple[str, ...] = CANONICAL_NEGATIVES
    paths: tuple[Path2D, ...] = ("features", "scalar")
    """2D-protocol paths to run."""
    protocol_3d: bool = True
    acc_iou: float = 0.25
    """IoU above which a 3D-protocol query counts for mAcc."""


@dataclass
class Level:
    """One lifted feature set (a LangSplat level), with its PCA when stored compressed, and its
    codebook when stored as one (`features` are then the decoded rows, rendered by the 2D
    `features` path; per-Gaussian relevancy is scored per entry and gathered)."""

    name: str
    features: Float[Tensor, "N E"]
    pca: PCA | None = None
    codebook: Codebook | None = None


@dataclass
class QueryResult:
    frame: str
    category: str
    protocol: Literal["2d", "3d"]
    path: str
    iou: float
    hit: bool | None = None
    """Localization hit (2D protocol only)."""
    point: tuple[int, int] | None = None
    """The localization point (x, y) in pixels."""
    level: str = ""
    chance: float = 0.0
    """A random pixel's probability of hitting the category's boxes."""


@dataclass
class FrameMaps:
    """What a report draws for one frame (2D protocol, first path)."""

    image: np.ndarray
    categories: list[str]
    relevancy: np.ndarray
    """float16 (Q, H, W)"""
    argmax: np.ndarray
    """int (Q, 2) xy: the localization point of each category"""
    masks: np.ndarray
    """bool (Q, H, W)"""
    boxes: dict[str, list[list[float]]]


@dataclass
class LerfResult:
    queries: list[QueryResult]
    maps: dict[str, FrameMaps] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """metrics.json rows (eval/DESIGN.md): per protocol and path, each metric over queries."""
        rows = []
        groups: dict[tuple[str, str], list[QueryResult]] = {}
        for q in self.queries:
            groups.setdefault((q.protocol, q.path), []).append(q)
        for (protocol, path), items in groups.items():
            ious = [q.iou for q in items]
            if protocol == "2d":
                hits = [bool(q.hit) for q in items]
                rows.append(_row(protocol, path, "accuracy", float(np.mean(hits)), len(items)))
                rows.append(_row(protocol, path, "miou", float(np.mean(ious)), len(items)))
            else:
                rows.append(_row(protocol, path, "miou", float(np.mean(ious)), len(items)))
                acc = float(np.mean([bool(q.hit) for q in items]))
                rows.append(_row(protocol, path, "macc@0.25", acc, len(items)))
        return rows

    def value(self, protocol: str, path: str, metric: str) -> float:
        for row in self.rows():
            if (row["protocol"], row["path"], row["metric"]) == (protocol, path, metric):
                return row["value"]
        raise KeyError((protocol, path, metric))

    def per_query(self) -> list[dict]:
        """per_query.csv rows: one per (frame, category, protocol, path)."""
        return [
            {
                "frame": q.frame,
                "category": q.category,
                "protocol": q.protocol,
                "path": q.path,
                "iou": round(q.iou, 6),
                "hit": "" if q.hit is None else int(q.hit),
                "x": "" if q.point is None else q.point[0],
                "y": "" if q.point is None else q.point[1],
                "level": q.level,
                "chance": round(q.chance, 6),
            }
            for q in self.queries
        ]

    def metrics(self, scene: str, features: str, text: str, settings: dict) -> dict:
        """metrics.json content (eval/DESIGN.md)."""
        return {
            "benchmark": "lerf-ovs",
            "scene": scene,
            "features": features,
            "text": text,
            "settings": settings,
            "rows": self.rows(),
            "chance": {"accuracy": self.chance},
        }

    def write(self, out: Path, metrics: dict) -> Path:
        """The run folder: metrics.json, per_query.csv, maps/ (atomically)."""
        from .runs import write_run

        return write_run(
            out, metrics, self.per_query(), lambda tmp: save_maps(tmp / "maps", self.maps)
        )

    @property
    def chance(self) -> float:
        """Mean over (frame, category) of a random pixel's box-hit probability."""
        seen = {(q.frame, q.category): q.chance for q in self.queries}
        return float(np.mean(list(seen.values()))) if seen else 0.0


def _row(protocol: str, path: str, metric: str, value: float, count: int) -> dict:
    return {"protocol": protocol, "path": path, "metric": metric, "value": value, "count": count}


# ---------------------------------------------------------------------------------------------
# Pure scoring functions on maps (numpy, (H, W) float)


def box_filter(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window, mirrored at the edges (cv2.filter2D's default border)."""
    from scipy.ndimage import uniform_filter

    if size <= 1:
        return image.astype(np.float64)
    return uniform_filter(image.astype(np.float64), size=size, mode="mirror")


def majority_filter(mask: np.ndarray, size: int) -> np.ndarray:
    """LangSplat's `smooth`: each pixel takes the majority value of its size x size window
    (ties go to background, as np.argmax(np.bincount) picks 0)."""
    if size <= 1:
        return mask.astype(bool)
    return box_filter(mask.astype(np.float64), size) > 0.5 + 1e-9


def localize(levels: Sequence[np.ndarray], smooth: int) -> tuple[int, tuple[int, int]]:
    """(level index, (x, y)): the level whose box-smoothed map has the largest maximum, and the
    first maximum of that map in row-major order."""
    smoothed = [box_filter(m, smooth) for m in levels]
    best = int(np.argmax([s.max() for s in smoothed]))
    y, x = np.unravel_index(int(np.argmax(smoothed[best])), smoothed[best].shape)
    return best, (int(x), int(y))


def relevancy_mask(
    levels: Sequence[np.ndarray], smooth: int, threshold: float, majority: int
) -> tuple[int, np.ndarray]:
    """(level index, bool mask): LangSplat's mask from a relevancy map (see the module doc)."""
    averaged = [0.5 * (box_filter(m, smooth) + m) for m in levels]
    best = int(np.argmax([a.max() for a in averaged]))
    values = averaged[best]
    unit = (values - values.min()) / (values.max() - values.min() + 1e-9)
    mask = np.clip(2.0 * unit - 1.0, 0.0, 1.0) > threshold
    return best, majority_filter(mask, majority)


def in_boxes(point: tuple[int, int], boxes: Sequence[Sequence[float]]) -> bool:
    x, y = point
    return any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in boxes)


def box_chance(boxes: Sequence[Sequence[float]], height: int, width: int) -> float:
    """Exact probability that a uniformly random pixel (x, y) lies in any box (edges inclusive)."""
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        xa, xb = max(int(np.ceil(x0)), 0), min(int(np.floor(x1)), width - 1)
        ya, yb = max(int(np.ceil(y0)), 0), min(int(np.floor(y1)), height - 1)
        if xa <= xb and ya <= yb:
            covered[ya : yb + 1, xa : xb + 1] = True
    return float(covered.mean())


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(prediction, truth).sum()
    return float(np.logical_and(prediction, truth).sum() / union) if union else 0.0


# ---------------------------------------------------------------------------------------------
# Frames, cameras and rendering


def match_frames(frames: Sequence[LabelFrame], cameras: Cameras) -> list[int]:
    """The camera index of each label frame, by image name with or without extension."""
    by_stem: dict[str, int] = {}
    for i, name in enumerate(cameras.names):
        by_stem.setdefault(Path(name).stem, i)
        by_stem.setdefault(Path(name).name, i)
    views = []
    for frame in frames:
        view = by_stem.get(frame.stem, by_stem.get(frame.name))
        if view is None:
            raise LabelError(
                f"{frame.path}: frame {frame.name}: no camera of the scene has this image name "
                f"(cameras are named e.g. {', '.join(cameras.names[:3])})"
            )
        views.append(view)
    return views


def frame_camera(cameras: Cameras, view: int, frame: LabelFrame) -> Cameras:
    """The view's camera at the label frame's size (labels may be at another resolution)."""
    camera = cameras[view]
    if (camera.widths[0], camera.heights[0]) != (frame.width, frame.height):
        camera = camera.resized(frame.width, frame.height)
    return camera


def _rendered(
    scene: GaussianScene, camera: Cameras, channels: Float[Tensor, "N C"]
) -> tuple[Float[Tensor, "H W C"], Float[Tensor, "H W"]]:
    """Per-Gaussian channels alpha-blended into the view (not divided by alpha), and the alpha:
    one render serves every path and query of a frame."""
    out = render(scene, camera, channels.float(), RenderConfig(rgb=False))
    assert out.features is not None
    return out.features[0].cpu(), out.alpha[0].cpu()


def _relevancy(
    features: Float[Tensor, "M E"] | Codebook, pca: PCA | None, texts: Tensor, config: LerfConfig
) -> Float[Tensor, "Q M"]:
    """Relevancy of M feature rows (Gaussians or pixels) to each query of `texts` ([queries,
    negatives]): one `PhraseIndex` pass for the negatives' part, then one mv per query;
    PCA-stored rows are scored from their coefficients."""
    index = PhraseIndex(features, pca)
    negatives = texts[-len(config.negatives) :]
    return torch.stack(
        [index.relevancy(q, negatives, config.tau) for q in texts[: -len(negatives)]]
    )


def _with_empty(maps: Tensor, alpha: Tensor) -> np.ndarray:
    """(Q, H, W) float64 with the pixels that show no surface set to `EMPTY_RELEVANCY`."""
    out = maps.numpy().astype(np.float64)
    out[:, (alpha < EMPTY_ALPHA).numpy()] = EMPTY_RELEVANCY
    return out


def _pixel_relevancy(
    blended: Tensor, alpha: Tensor, level: Level, texts: Tensor, config: LerfConfig
) -> np.ndarray:
    """(Q, H, W) relevancy of the rendered features (the `features` path); `blended` (H, W, E)
    (PCA coefficients for a PCA-stored level)."""
    H, W, E = blended.shape
    image = (blended / alpha[..., None].clamp_min(1e-6)).reshape(H * W, E)
    return _with_empty(_relevancy(image, level.pca, texts, config).reshape(-1, H, W), alpha)


def _scalar_relevancy(blended: Tensor, alpha: Tensor) -> np.ndarray:
    """(Q, H, W) per-Gaussian relevancy rendered as channels (the `scalar` path); `blended` (H, W, Q)."""
    return _with_empty((blended / alpha[..., None].clamp_min(1e-6)).permute(2, 0, 1), alpha)


def selection_masks(blended: Tensor) -> np.ndarray:
    """(Q, H, W) bool: where the selected Gaussians' blending weight exceeds 0.5 (the selection
    indicators rendered with the full scene, occlusion respected); `blended` (H, W, Q)."""
    return (blended > 0.5).permute(2, 0, 1).numpy()


def frame_image(scene: GaussianScene, cameras: Cameras, view: int, camera: Cameras) -> np.ndarray:
    """The frame's photo when the scene has one at this size, else a render (uint8 (H, W, 3))."""
    from omnivision.scenes.io_images import read_image, to_uint8

    paths = cameras.image_paths
    if paths is not None and paths[view] is not None and Path(paths[view]).is_file():
        photo = read_image(paths[view])
        if tuple(photo.shape[:2]) == (camera.heights[0], camera.widths[0]):
            return to_uint8(photo)
    out = render(scene, camera, config=RenderConfig(background=(1.0, 1.0, 1.0)))
    assert out.rgb is not None
    return to_uint8(out.rgb[0].clamp(0, 1))


# ---------------------------------------------------------------------------------------------
# The evaluation


def evaluate_lerf(
    scene: GaussianScene,
    cameras: Cameras,
    levels: Sequence[Level],
    text: TextSpace,
    frames: Sequence[LabelFrame],
    config: LerfConfig | None = None,
    keep_maps: bool = True,
    progress: bool = False,
) -> LerfResult:
    """Score lifted features on LERF-OVS-layout labels by the 2D and 3D protocols."""
    from tqdm import tqdm

    config = config or LerfConfig()
    if not levels:
        raise ValueError("no lifted features to evaluate")
    for level in levels:
        if level.features.shape[0] != len(scene):
            raise ValueError(
                f"features {level.name!r} have {level.features.shape[0]} rows for "
                f"{len(scene)} Gaussians"
            )
    views = match_frames(frames, cameras)
    result = LerfResult([])
    for frame, view in tqdm(
        list(zip(frames, views, strict=True)), desc="eval lerf", unit="frame", disable=not progress
    ):
        camera = frame_camera(cameras, view, frame)
        H, W = frame.height, frame.width
        categories = list(frame.categories)
        Q = len(categories)
        texts = text([*categories, *config.negatives])
        truths = [frame.categories[c].mask(H, W) for c in categories]
        boxes = [frame.categories[c].boxes for c in categories]
        gaussian_scores = [
            _relevancy(lv.features if lv.codebook is None else lv.codebook, lv.pca, texts, config)
            for lv in levels
        ]
        # the 3D protocol takes, per query, the level with the largest per-Gaussian relevancy
        picks = [int(np.argmax([float(s[k].max()) for s in gaussian_scores])) for k in range(Q)]
        selected = torch.stack(
            [
                (gaussian_scores[i][k] > relevancy_threshold(gaussian_scores[i][k]))
                for k, i in enumerate(picks)
            ],
            dim=1,
        ).float()
        # one render per level: [scores (Q) | selections (Q), last level only | features (E)]
        path_maps: dict[str, list[np.ndarray]] = {p: [] for p in config.paths}
        masks_3d = np.zeros((Q, H, W), dtype=bool)
        for i, (level, scores) in enumerate(zip(levels, gaussian_scores, strict=True)):
            with_selection = config.protocol_3d and i == len(levels) - 1
            channels = [scores.T, *([selected] if with_selection else [])]
            if "features" in config.paths:
                channels.append(level.features.float())
            blended, alpha = _rendered(scene, camera, torch.cat(channels, dim=1))
            if "scalar" in config.paths:
                path_maps["scalar"].append(_scalar_relevancy(blended[..., :Q], alpha))
            if with_selection:
                masks_3d = selection_masks(blended[..., Q : 2 * Q])
            if "features" in config.paths:
                tail = blended[..., Q * (2 if with_selection else 1) :]
                path_maps["features"].append(_pixel_relevancy(tail, alpha, level, texts, config))
        shown: list[tuple[int, tuple[int, int], np.ndarray]] = []  # the first path's, for maps
        for k, category in enumerate(categories):
            chance = box_chance(boxes[k], H, W)
            for path, maps in path_maps.items():
                per_level = [m[k] for m in maps]
                chosen, point = localize(per_level, config.smooth)
                _, mask = relevancy_mask(
                    per_level, config.smooth, config.mask_threshold, config.majority
                )
                if path == config.paths[0]:
                    shown.append((chosen, point, mask))
                result.queries.append(
                    QueryResult(
                        frame.name,
                        category,
                        "2d",
                        path,
                        iou(mask, truths[k]),
                        in_boxes(point, boxes[k]),
                        point,
                        levels[chosen].name,
                        chance,
                    )  # fmt: skip
                )
            if config.protocol_3d:
                value = iou(masks_3d[k], truths[k])
                result.queries.append(
                    QueryResult(
                        frame.name,
                        category,
                        "3d",
                        "gaussians",
                        value,
                        value > config.acc_iou,
                        None,
                        levels[picks[k]].name,
                        chance,
                    )  # fmt: skip
                )
        if keep_maps and shown:
            maps = path_maps[config.paths[0]]
            result.maps[frame.stem] = FrameMaps(
                image=frame_image(scene, cameras, view, camera),
                categories=categories,
                relevancy=np.stack([maps[lv][k] for k, (lv, _, _) in enumerate(shown)]).astype(
                    np.float16
                ),
                argmax=np.array([p for _, p, _ in shown], dtype=np.int64).reshape(-1, 2),
                masks=np.stack([m for _, _, m in shown]),
                boxes={c: [list(b) for b in boxes[k]] for k, c in enumerate(categories)},
            )
    return result


def save_maps(folder: Path, maps: dict[str, FrameMaps]) -> None:
    """One maps/FRAME.npz per frame, in the layout eval/DESIGN.md gives."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, m in maps.items():
        np.savez_compressed(
            folder / f"{stem}.npz",
            image=m.image,
            categories=np.array(m.categories),
            relevancy=m.relevancy,
            argmax=m.argmax,
            masks=m.masks,
            boxes=np.array(json.dumps(m.boxes)),
        )


MAP_KEYS = ("image", "categories", "relevancy", "argmax", "masks", "boxes")


def read_maps(path: Path) -> FrameMaps:
    """maps/FRAME.npz as eval/DESIGN.md gives it, checked; `boxes` parsed from its JSON string."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise SceneError(path, f"not a readable .npz ({err})") from None
    missing = [key for key in MAP_KEYS if key not in data]
    if missing:
        raise SceneError(path, f"missing {', '.join(missing)} (see eval/DESIGN.md)")
    image, relevancy, argmax, masks = (data[k] for k in ("image", "relevancy", "argmax", "masks"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SceneError(path, f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    categories = [str(c) for c in np.atleast_1d(data["categories"])]
    q = len(categories)
    if relevancy.shape != (q, height, width) or not np.issubdtype(relevancy.dtype, np.floating):
        raise SceneError(
            path, f"relevancy must be float ({q}, {height}, {width}), got {relevancy.shape}"
        )
    if masks.shape != (q, height, width) or masks.dtype != np.bool_:
        raise SceneError(
            path, f"masks must be bool ({q}, {height}, {width}), got {masks.dtype} {masks.shape}"
        )
    if argmax.shape != (q, 2) or not np.issubdtype(argmax.dtype, np.integer):
        raise SceneError(path, f"argmax must be int ({q}, 2) xy, got {argmax.dtype} {argmax.shape}")
    try:
        boxes = json.loads(str(data["boxes"]))
    except json.JSONDecodeError as err:
        raise SceneError(path, f"boxes is not a JSON string ({err.msg})") from None
    if not isinstance(boxes, dict) or not all(
        isinstance(v, list) and all(isinstance(b, list) and len(b) == 4 for b in v)
        for v in boxes.values()
    ):
        raise SceneError(path, "boxes must be {category: [[x0, y0, x1, y1], ...]}")
    return FrameMaps(image, categories, relevancy.astype(np.float32), argmax, masks, boxes)
