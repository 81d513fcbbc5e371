"""LUDVIG aggregation: per-view feature maps -> per-Gaussian features, streaming over views.

    f_i = Σ_{d,p} w_i(d,p) F(d,p) / Σ_{d,p} w_i(d,p)

with w_i(d, p) the alpha-blending weight of Gaussian i at pixel p of view d. Only the N x D sums
and the N weight sums live across views (`FeatureSums`); each view's map is used once and dropped.

Two fast paths and their twins (`lift_view` chooses, `path="auto"`):
- pooled (`lift.pooling`): a map on a grid coarser than the render is lifted on its own grid,
  P F with P = Wᵀ U the blending weights pooled through the bilinear upsampling U, so the D-sized
  work is per (Gaussian, cell), not per (Gaussian, pixel); a `LabelMap` is scattered by label.
- pixel (`lift_view_pixel`): the map resized to the render (`resize_feature_map`) and
  `scenes.render.accumulate` (tile blocks, one bmm per block): the pooled path's slow twin, and
  the path for maps at (or finer than) the render size.
The slow twin of both, `lift_view_autograd`, differentiates the rendered features with respect to
per-Gaussian features, as LUDVIG does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.render import RenderConfig, accumulate, render

from .pooling import accumulate_labels, pool_weights

AggregationPath = Literal["auto", "pooled", "pixel"]
"""auto: pooled on the map's grid when it is coarser than the render (and never finer on
either axis), else per pixel; pooled / pixel: force one (both give the same sums)."""


@dataclass
class FeatureSums:
    """Running sums of one lift: Σ w·F (N, D) and Σ w (N). Add views (or shards) with `+=`."""

    sums: Float[Tensor, "N D"]
    weights: Float[Tensor, "N"]
    views: int = 0

    @staticmethod
    def zeros(n: int, d: int, device: torch.device | str = "cpu") -> FeatureSums:
        return FeatureSums(torch.zeros(n, d, device=device), torch.zeros(n, device=device))

    def add(self, sums: Tensor, weights: Tensor) -> None:
        self.sums += sums.to(self.sums)
        self.weights += weights.to(self.weights)
        self.views += 1

    def __iadd__(self, other: FeatureSums) -> FeatureSums:
        self.sums += other.sums.to(self.sums)
        self.weights += other.weights.to(self.weights)
        self.views += other.views
        return self

    def seen(self, min_weight: float = 1e-6) -> Bool[Tensor, "N"]:
        return self.weights > min_weight

    def features(self, min_weight: float = 1e-6) -> Float[Tensor, "N D"]:
        """Weighted means; Gaussians no view saw get zeros (see `seen`)."""
        safe = self.weights.clamp_min(min_weight)[:, None]
        return torch.where(
            self.seen(min_weight)[:, None], self.sums / safe, torch.zeros_like(self.sums)
        )


def resize_feature_map(
    feature_map: Float[Tensor, "h w D"], size: tuple[int, int]
) -> Float[Tensor, "H W D"]:
    """Bilinear resize of a channels-last map to the render resolution (H, W)."""
    if tuple(feature_map.shape[:2]) == tuple(size):
        return feature_map
    x = feature_map.permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)


@dataclass
class LabelMap:
    """Integer labels per pixel or cell (h, w), lifted as their one-hot map of `num` channels
    without forming it (mask lifting: label PNGs, object ids)."""

    labels: Int[Tensor, "h w"]
    num: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.labels.shape, self.num)

    def one_hot(self) -> Float[Tensor, "h w L"]:
        return F.one_hot(self.labels.long(), self.num).float()

    def to(self, device: torch.device | str) -> LabelMap:
        return LabelMap(self.labels.to(device), self.num)


FeatureMap = Tensor | LabelMap
"""A view's map: float (h, w, D), or labels lifted as one-hot."""


def dense_map(feature_map: FeatureMap) -> Float[Tensor, "h w D"]:
    return feature_map.one_hot() if isinstance(feature_map, LabelMap) else feature_map


def choose_path(
    map_size: tuple[int, int], render_size: tuple[int, int], path: AggregationPath = "auto"
) -> Literal["pooled", "pixel"]:
    """pooled when the map is coarser than the render: fewer cells than pixels, no axis finer."""
    if path != "auto":
        return path
    (h, w), (height, width) = map_size, render_size
    return "pooled" if h <= height and w <= width and h * w < height * width else "pixel"


@torch.no_grad()
def accumulate_view(
    sums: FeatureSums,
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    feature_map: FeatureMap,
    config: RenderConfig | None = None,
    path: AggregationPath = "auto",
) -> None:
    """Add view `index` to the running sums in place: Σ_p w_i(p) F(p) and Σ_p w_i(p), F being the
    map resized bilinearly to the camera's size (computed on the map's grid when pooled). The
    pooled path allocates nothing of size N x D: its product goes into `sums` a chunk at a time."""
    size = (cameras.heights[index], cameras.widths[index])
    map_size = (int(feature_map.shape[0]), int(feature_map.shape[1]))
    device = sums.sums.device
    if choose_path(map_size, size, path) == "pixel":
        s, w = lift_view_pixel(scene, cameras, index, dense_map(feature_map), config)
        sums.add(s, w)
        return
    if isinstance(feature_map, LabelMap) and map_size == size:
        weights = accumulate_labels(
            scene, cameras, index, feature_map.labels, sums.sums, config
        )  # no taps at the render's own size: the weights scatter by label directly
    else:
        pooled = pool_weights(scene, cameras, index, map_size, config)
        if isinstance(feature_map, LabelMap):
            pooled.lift_labels_into(sums.sums, feature_map.labels.to(device))
        else:
            pooled.lift_into(sums.sums, feature_map.to(device))
        weights = pooled.weight_sums
    sums.weights += weights.to(sums.weights)
    sums.views += 1


def lift_view(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    feature_map: FeatureMap,
    config: RenderConfig | None = None,
    path: AggregationPath = "auto",
) -> tuple[Float[Tensor, "N D"], Float[Tensor, "N"]]:
    """(Σ_p w_i(p) F(p), Σ_p w_i(p)) of one view, F resized bilinearly to the camera's size when
    it is on another grid (e.g. DINO patches); see `accumulate_view` for the paths."""
    channels = feature_map.num if isinstance(feature_map, LabelMap) else feature_map.shape[-1]
    sums = FeatureSums.zeros(len(scene), channels, scene.device)
    accumulate_view(sums, scene, cameras, index, feature_map, config, path)
    return sums.sums, sums.weights


def lift_view_pixel(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    feature_map: Float[Tensor, "h w D"],
    config: RenderConfig | None = None,
) -> tuple[Float[Tensor, "N D"], Float[Tensor, "N"]]:
    """The pixel path: the map resized to the camera's size, then `accumulate` (cost and memory
    grow with pixels x D). The pooled path's slow twin."""
    size = (cameras.heights[index], cameras.widths[index])
    return accumulate(scene, cameras, index, resize_feature_map(feature_map, size), config)


def lift_view_autograd(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    feature_map: FeatureMap,
    config: RenderConfig | None = None,
) -> tuple[Float[Tensor, "N D"], Float[Tensor, "N"]]:
    """The slow twin (LUDVIG's trick): d/df Σ_p render(f)(p)·F(p) = Σ_p w_i(p) F(p). A ones
    channel appended to F gives the weight sums in the same backward pass."""
    config = config or RenderConfig()
    size = (cameras.heights[index], cameras.widths[index])
    target = resize_feature_map(dense_map(feature_map), size).float()
    target = torch.cat([target, torch.ones_like(target[..., :1])], dim=-1)
    f = torch.zeros(len(scene), target.shape[-1], device=scene.device, requires_grad=True)
    out = render(scene, cameras[index], f, RenderConfig(**{**config.__dict__, "rgb": False}))
    assert out.features is not None
    (out.features[0] * target.to(out.features)).sum().backward()
    grad = f.grad
    assert grad is not None
    return grad[:, :-1], grad[:, -1]


@dataclass
class PCA:
    """A linear projection fitted on sampled pixel features (LUDVIG keeps 40 dims of DINO)."""

    mean: Float[Tensor, "D"]
    components: Float[Tensor, "D d"]

    def __call__(self, x: Float[Tensor, "... D"]) -> Float[Tensor, "... d"]:
        return (x.float() - self.mean) @ self.components

    @property
    def dim(self) -> int:
        return self.components.shape[1]


def fit_pca(samples: Float[Tensor, "M D"], dim: int, seed: int = 0) -> PCA:
    """Top-`dim` principal directions of the samples (randomised SVD for large D)."""
    x = samples.float()
    mean = x.mean(0)
    dim = min(dim, x.shape[1], x.shape[0])
    torch.manual_seed(seed)
    _, _, v = torch.pca_lowrank(x - mean, q=dim, center=False, niter=4)
    return PCA(mean, v[:, :dim])


def sample_pixels(
    feature_map: Float[Tensor, "h w D"], count: int, generator: torch.Generator
) -> Tensor:
    flat = feature_map.reshape(-1, feature_map.shape[-1])
    idx = torch.randperm(flat.shape[0], generator=generator)[:count]
    return flat[idx]
