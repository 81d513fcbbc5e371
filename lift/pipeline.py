"""Lift a whole scene: choose the views, make each view's 2D feature map, aggregate, optionally
diffuse and refine. The objects a user holds: `LiftConfig` in, `LiftResult` out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.scenes.cameras import Cameras
from omnivision.scenes.errors import SceneError
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.io_images import read_image
from omnivision.scenes.load import Scene
from omnivision.scenes.render import RenderConfig, render
from omnivision.twod.dino import Precision

from .aggregate import (
    PCA,
    AggregationPath,
    FeatureMap,
    FeatureSums,
    LabelMap,
    accumulate_view,
    dense_map,
    fit_pca,
    sample_pixels,
)
from .diffusion import adjacency, diffuse, edge_weights, fill_unseen, knn_graph
from .store import feature_name


@dataclass(frozen=True)
class LiftConfig:
    features: str = "colour"
    """colour (weight-free), rgb, dinov3-vitb16 / dinov2-small / a hub id or folder, clip-pyramid
    (LERF-style crops), clip-masks (LangSplat-style SAM 2 masks), clip-masks:DIR (LangSplat-style,
    masks from label PNGs: pixel = region id, 0 = none), masks:DIR (label PNGs),
    segment:CLASSES (per-pixel class probabilities of `twod.segment`, CLASSES a comma list or
    @FILE; CLIP dense features, or DINO/colour patches through `bridge`), segment-labels:DIR
    (per-view class-id PNGs + DIR/classes.txt, as `omnivision segment` writes them, one-hot;
    ids past the class list, e.g. 255, are no class)."""
    source: Literal["auto", "images", "render"] = "auto"
    """auto: the scene's photos when it has them, else renders of the views."""
    views: tuple[int, ...] | None = None
    """Camera indices to use (default: all)."""
    shard: tuple[int, int] | None = None
    """(k, n): use every n-th of the views starting at k (a parallel job's share)."""
    pca: int | None = None
    """Project features to this many dims (fitted on pixels sampled from the first views)."""
    short_side: int = 448
    """Short side the 2D backbone sees."""
    precision: Precision = "fp32"
    """dtype of a DINO backbone's weights and activations (fp32, bf16, fp16)."""
    max_side: int | None = None
    """Render at most this many pixels on the long side (cameras scaled down); default: camera size."""
    diffuse: bool = False
    """Fill unseen Gaussians and smooth features over the kNN graph after aggregation."""
    knn: int = 16
    diffusion_iterations: int = 10
    clip: str = "ViT-B-16"
    """OpenCLIP model (or local folder) for clip-pyramid / clip-masks."""
    clip_pretrained: str | None = "laion2b_s34b_b88k"
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 (hub id or local .pt with sam_config) for clip-masks."""
    sam_config: str | None = None
    bridge: Path | None = None
    """Text bridge folder for segment:CLASSES: class names into the space of the bridge's
    backbone (DINO or colour patches); default: dense CLIP features of `clip`."""
    segment_temperature: float = 0.01
    """segment:CLASSES: probabilities = softmax(scores / T) over the classes per pixel (CLIP's
    logit scale 100 is T = 0.01)."""
    cache_dir: Path | None = None
    """Where dense CLIP features are cached per image (default: no cache)."""
    aggregation: AggregationPath = "auto"
    """auto: maps coarser than the render are lifted on their own grid (blending weights pooled
    through the bilinear upsampling), others per pixel; pooled / pixel force one (same sums)."""
    refine: int = 0
    """Gradient steps of feature distillation after aggregation (0: aggregation only). Needs
    every view's map, so it cannot go with `shard` (a shard writes sums, not features)."""
    device: str | None = None


@dataclass
class LiftResult:
    """Per-Gaussian features (N, D) and what produced them."""

    features: Float[Tensor, "N D"]
    weights: Float[Tensor, "N"]
    seen: Bool[Tensor, "N"]
    sums: FeatureSums
    views: list[int]
    feature_name: str
    seconds: float
    pca: PCA | None = None
    filled: int = 0
    notes: list[str] = field(default_factory=list)
    classes: tuple[str, ...] | None = None
    """Class names of segment features (channel k = the probability of class k), else None."""

    @property
    def coverage(self) -> float:
        return float(self.seen.float().mean())


FeatureFn = Callable[[Tensor, int], FeatureMap]
"""(image (H, W, 3) in [0, 1], view index) -> feature map (h, w, D), or a `LabelMap` (h, w)."""


def mean_of_levels(maps: Float[Tensor, "L h w E"]) -> Float[Tensor, "h w E"]:
    """Dense CLIP levels (scales or mask granularities) merged into one unit-norm map; cells no
    level covers stay zero."""
    return F.normalize(maps.sum(0), dim=-1)


def make_feature_fn(
    name: str, cameras: Cameras, short_side: int, device: str, config: LiftConfig | None = None
) -> tuple[FeatureFn, str]:
    """The per-view feature map maker for a feature name, and the name stored on disk."""
    config = config or LiftConfig()
    if name in ("clip-pyramid", "clip-masks") or name.startswith("clip-masks:"):
        from omnivision.twod.clip import load_clip
        from omnivision.twod.clip_dense import langsplat_features, lerf_features

        clip = load_clip(
            config.clip,
            config.clip_pretrained,
            device,
            fallback="or lift other features (--features dinov2-base, or colour)",
        )
        cache = config.cache_dir
        if name == "clip-pyramid":
            return (
                lambda image, _: mean_of_levels(lerf_features(clip, image, cache_dir=cache).maps)
            ), name
        if name.startswith("clip-masks:"):
            # masks given as label PNGs (pixel = region id, 0 = no region) instead of SAM 2's
            label_maps = _label_maps(Path(name.removeprefix("clip-masks:")), cameras)

            def given_masks(image: Tensor, view: int) -> Tensor:
                labels = label_maps[view]
                regions = [labels == v for v in labels.unique().tolist() if v != 0]
                if not regions:
                    return torch.zeros(*labels.shape, clip.embed_dim)
                masks = [torch.stack(regions)]
                return mean_of_levels(
                    langsplat_features(clip, image, masks=masks, cache_dir=cache).maps
                )

            return given_masks, "clip-masks"
        from omnivision.twod.sam import load_sam2

        sam = load_sam2(config.sam, config=config.sam_config, device=device)
        return (
            lambda image, _: mean_of_levels(
                langsplat_features(clip, image, sam=sam, cache_dir=cache).maps
            )
        ), name
    if name.startswith(("segment:", "segment-labels:")):
        return _segment_fn(name, cameras, device, config), feature_name(name)
    if name == "rgb":
        return (lambda image, _: image), "rgb"
    if name.startswith("masks:"):
        folder = Path(name.removeprefix("masks:"))
        label_maps = _label_maps(folder, cameras)
        num = int(max(int(m.max()) for m in label_maps.values())) + 1
        return (lambda _, view: LabelMap(label_maps[view], num)), "masks"
    from omnivision.twod.extractors import load_extractor

    extractor = load_extractor(
        name, short_side=short_side, device=device, precision=config.precision, flag="--features"
    )

    def fn(image: Tensor, _: int) -> Tensor:
        return extractor.extract([image]).normalized()[0]

    return fn, feature_name(name)


def segment_classes(features: str) -> tuple[str, ...] | None:
    """The class list of a segment feature spec: `segment:a,b,c`, `segment:@FILE` (one name a
    line, or `id: name` lines), `segment-labels:DIR` (DIR/classes.txt); None for other
    features. An empty list, an empty or repeated name, a missing file: TwoDError (exit 2)."""
    from omnivision.twod.errors import TwoDError
    from omnivision.twod.segdata import read_class_list
    from omnivision.twod.segment import check_classes

    kind, sep, rest = features.partition(":")
    if not sep or kind not in ("segment", "segment-labels"):
        return None
    if kind == "segment-labels":
        folder = Path(rest)
        if not folder.is_dir():
            raise TwoDError(f"--features {features}: {folder} is not a folder of label PNGs")
        listing = folder / "classes.txt"
        if not listing.is_file():
            raise TwoDError(
                f"{listing}: missing (the class names, one a line, as omnivision segment writes)"
            )
        return check_classes(read_class_list(listing), str(listing))
    if rest.startswith("@"):
        return check_classes(read_class_list(rest[1:]), rest[1:])
    return check_classes(rest.split(","), f"--features {features}")


def _segment_fn(name: str, cameras: Cameras, device: str, config: LiftConfig) -> FeatureFn:
    """Per-view class probabilities (h, w, K): one-hot of given label PNGs (segment-labels:DIR),
    or softmax(scores / T) of `twod.segment` (local-global scores, guided upsampling; no SAM 2
    regions) with the class texts of CLIP or of `config.bridge`."""
    classes = segment_classes(name)
    assert classes is not None
    num = len(classes)
    if name.startswith("segment-labels:"):
        label_maps = _label_maps(Path(name.removeprefix("segment-labels:")), cameras)

        def one_hot(_: Tensor, view: int) -> Tensor:
            labels = label_maps[view].clamp(0, num)  # ids past the list (255): no class
            return F.one_hot(labels, num + 1)[..., :num].float()

        return one_hot
    from omnivision.twod.cli_segment import SegmentCommand, load_scorer
    from omnivision.twod.segment import SegmentConfig, local_global_scores, pixel_scores

    request = SegmentCommand(
        image=Path("."), out=Path("."), bridge=config.bridge,
        clip=None if config.bridge is not None else config.clip,
        pretrained=config.clip_pretrained,
    )  # fmt: skip
    scorer = load_scorer(request, classes, device)
    segment_config = SegmentConfig()
    temperature = config.segment_temperature

    def probabilities(image: Tensor, _: int) -> Tensor:
        with torch.no_grad():
            coarse, _views = local_global_scores(image, scorer, segment_config)
            scores = pixel_scores(coarse.cpu(), image.cpu(), segment_config)
        return torch.softmax(scores / temperature, dim=0).permute(1, 2, 0).contiguous()

    return probabilities


def _label_maps(folder: Path, cameras: Cameras) -> dict[int, Tensor]:
    from PIL import Image

    if not folder.is_dir():
        raise SceneError(folder, "masks folder not found")
    maps = {}
    for i, name in enumerate(cameras.names):
        stem = Path(name).stem
        path = next(
            (p for p in (folder / f"{stem}.png", folder / f"{name}.png") if p.is_file()), None
        )
        if path is None:
            raise SceneError(folder, f"no label PNG for view {name!r} (expected {stem}.png)")
        with Image.open(path) as im:
            arr = np.asarray(im)
        if arr.ndim != 2:
            raise SceneError(path, "label maps must be single-channel PNGs (pixel value = label)")
        if arr.shape != (cameras.heights[i], cameras.widths[i]):
            raise SceneError(
                path,
                f"is {arr.shape[1]}x{arr.shape[0]}, view is {cameras.widths[i]}x{cameras.heights[i]}",
            )
        maps[i] = torch.from_numpy(arr.astype(np.int64))
    return maps


def select_views(cameras: Cameras, config: LiftConfig) -> list[int]:
    views = list(config.views) if config.views is not None else list(range(len(cameras)))
    bad = [v for v in views if not 0 <= v < len(cameras)]
    if bad:
        raise ValueError(f"views {bad} out of range: the scene has {len(cameras)} cameras")
    if config.shard is not None:
        k, n = config.shard
        views = views[k::n]
    return views


def view_image(scene: GaussianScene, cameras: Cameras, index: int, use_photos: bool) -> Tensor:
    if use_photos and cameras.image_paths is not None:
        return read_image(cameras.image_paths[index])
    out = render(scene, cameras[index], config=RenderConfig(background=(1.0, 1.0, 1.0)))
    assert out.rgb is not None
    return out.rgb[0].clamp(0, 1).cpu()


def lift_scene(
    scene: Scene,
    config: LiftConfig | None = None,
    feature_fn: tuple[FeatureFn, str] | None = None,
    progress: bool = False,
) -> LiftResult:
    """Aggregate per-view features onto the Gaussians (LUDVIG), streaming over views."""
    from tqdm import tqdm

    config = config or LiftConfig()
    if config.shard is not None and config.refine:
        raise ValueError(
            "refinement needs every view's feature map: it cannot run on a shard (lift without "
            "shard to refine)"
        )
    classes = segment_classes(config.features)
    if classes is not None and config.pca:
        raise ValueError(
            "segment features are class probabilities: they are not PCA-projected (drop pca)"
        )
    start = time.perf_counter()
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cameras = scene.cameras_or_orbit()
    if config.max_side and max(cameras.widths[0], cameras.heights[0]) > config.max_side:
        s = config.max_side / max(cameras.widths[0], cameras.heights[0])
        cameras = Cameras.concat(
            [
                cameras[i].resized(round(cameras.widths[i] * s), round(cameras.heights[i] * s))
                for i in range(len(cameras))
            ]
        )
        cameras.image_paths = scene.cameras.image_paths if scene.cameras is not None else None
    use_photos = config.source != "render" and cameras.image_paths is not None
    if config.source == "images" and not use_photos:
        raise SceneError(
            scene.root, "--source images: the scene has no photos (images/); use --source render"
        )
    fn, name = feature_fn or make_feature_fn(
        config.features, cameras, config.short_side, device, config
    )
    gaussians = scene.gaussians.to(device)
    views = select_views(cameras, config)
    pca = _fit_pca(
        gaussians,
        cameras,
        views if config.shard is None else select_views(cameras, LiftConfig(views=config.views)),
        use_photos,
        fn,
        config.pca,
    )
    sums: FeatureSums | None = None
    kept: dict[int, FeatureMap] = {}  # per-view maps, kept only for refinement
    for view in tqdm(views, desc=f"lift {name}", unit="view", disable=not progress):
        image = view_image(gaussians, cameras, view, use_photos)
        feature_map = fn(image, view)
        if pca is not None:
            feature_map = pca(dense_map(feature_map))
        if config.refine:
            kept[view] = feature_map.to("cpu")
        if sums is None:
            sums = FeatureSums.zeros(len(gaussians), feature_map.shape[-1], device)
        accumulate_view(
            sums, gaussians, cameras, view, feature_map.to(device), path=config.aggregation
        )
    if sums is None:
        raise ValueError("no views to lift")
    result = finish(sums, views, name, pca, gaussians.means, config, time.perf_counter() - start)
    result.classes = classes
    if config.refine:
        from .refine import refine_features

        refined, losses = refine_features(
            gaussians, cameras, views, kept.__getitem__, result.features, config.refine
        )
        result.features = refined.cpu()
        result.notes.append(
            f"refined {config.refine} steps: loss {losses[0]:.4g} -> {losses[-1]:.4g}"
        )
        result.seconds = time.perf_counter() - start
    return result


def _fit_pca(gaussians, cameras, views, use_photos, fn, dim) -> PCA | None:
    if not dim:
        return None
    generator = torch.Generator().manual_seed(0)
    samples = [
        sample_pixels(
            dense_map(fn(view_image(gaussians, cameras, v, use_photos), v)), 4096, generator
        )
        for v in views[:4]
    ]
    return fit_pca(torch.cat(samples), dim)


def finish(
    sums: FeatureSums,
    views: list[int],
    name: str,
    pca: PCA | None,
    means: Tensor,
    config: LiftConfig,
    seconds: float,
) -> LiftResult:
    """Weighted means, then (with `config.diffuse`) fill unseen Gaussians and smooth on the graph."""
    features = sums.features()
    seen = sums.seen()
    filled = 0
    notes = []
    if config.diffuse:
        graph = knn_graph(means.cpu(), config.knn)
        features, left = fill_unseen(features.cpu(), seen.cpu(), graph)
        filled = int((~seen).sum()) - left
        matrix = adjacency(graph, edge_weights(graph, features))
        features = diffuse(features, matrix, config.diffusion_iterations, restart=0.5)
        notes.append(f"diffused over a {graph.k}-NN graph; filled {filled} unseen Gaussians")
    return LiftResult(
        features.cpu(),
        sums.weights.cpu(),
        seen.cpu(),
        sums,
        views,
        name,
        seconds,
        pca,
        filled,
        notes,
    )
