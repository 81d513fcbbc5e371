"""Find an object from a photo taken elsewhere: localize it by example in every view of the
scene, then lift the per-view masks onto the Gaussians.

```
reference photo ─ extract ─ reference_vector(clicks | box) ─┐
view v (photo or render) ─ extract ─ heatmaps ──────────────┴─ cut by Otsu over the values
  above the median ─ components ─ the best one (or all) ─ mask (H, W) of view v ─ accumulate_view
  into running sums (as `queries.lift_masks`) ─ weighted mean per Gaussian ─ unseen_filled (0,
  or diffused on a kNN graph) ─ scores (N,) ─ Selection.from_scores(scores, 0.5)
```

Pure functions: the views' images come from a callable (the CLI reads the scene's photos, the
viewer renders the edited scene), the reference is a tensor; no file access, no printing (a tqdm
bar over the views with `progress`, each step a view found and lifted). Several references
share one pass over the views (`find_references`): each view is extracted once, its Q heatmaps
upsampled together, and the Q masks lift as the channels of one lift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.lift.aggregate import FeatureSums, accumulate_view
from omnivision.lift.diffusion import KnnGraph
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.twod.features import FeatureExtractor, PatchFeatures
from omnivision.twod.localize import (
    LocalizeConfig,
    detect_in_heatmap,
    heatmaps,
    morph_radius_pixels,
    reference_vector,
)
from omnivision.twod.referring import phrase_threshold

from .queries import unseen_filled

ViewImage = Callable[[int], Float[Tensor, "H W 3"]]
"""View index -> its image in [0, 1] (a photo, or a render of the scene)."""


@dataclass(frozen=True)
class ReferenceConfig:
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    """Per-view localize settings; its `threshold` None cuts each view's heatmap by Otsu over
    the values above the median (the object is a minority of a view: plain Otsu lets the
    background-vs-rest split take the cut, and a table of similar colour with it)."""
    instances: Literal["best", "all"] = "best"
    """A view's mask: its best-scoring detection (one object, seen once per view) or the union
    of all (every instance that looks like the reference)."""
    min_weight: float = 0.05
    """Gaussians whose blending weight summed over the views is below this are unseen: score 0,
    or their neighbours' scores when a kNN graph is given."""
    iterations: int = 50
    """Diffusion steps on the kNN graph (when one is given)."""


@dataclass
class ReferenceResult:
    """What the views say about Q references: `scores` (Q, N) lifted per reference (unseen
    Gaussians filled), `masks` per view (Q, H, W) at the camera's size, `weights` (N,) the
    blending weight each Gaussian received over all views."""

    scores: Float[Tensor, "Q N"]
    masks: dict[int, Bool[Tensor, "Q H W"]]
    weights: Float[Tensor, "N"]

    def best_view(self, reference: int = 0) -> int:
        """The view where the reference's mask is largest (0 when no view found it)."""
        areas = {view: int(mask[reference].sum()) for view, mask in self.masks.items()}
        return max(areas, key=lambda view: areas[view], default=0)


def view_masks(
    references: Float[Tensor, "Q D"],
    features: PatchFeatures,
    image: Float[Tensor, "H W 3"],
    config: ReferenceConfig | None = None,
) -> Bool[Tensor, "Q H W"]:
    """Each reference localized in one image (its `features`): the mask of its best detection,
    or of all of them (`config.instances`); empty where nothing matched."""
    config = config or ReferenceConfig()
    heat = heatmaps(references, features, image)  # one edge-aware upsampling for all Q
    radius = morph_radius_pixels(features, config.localize)
    masks = torch.zeros(heat.shape, dtype=torch.bool)
    for q in range(references.shape[0]):
        found = detect_in_heatmap(
            heat[q], config.localize, radius, default_threshold=phrase_threshold
        )
        if len(found):  # detections come sorted by score
            masks[q] = found.masks[0] if config.instances == "best" else found.masks.any(0)
    return masks


def find_references(
    scene: GaussianScene,
    cameras: Cameras,
    extractor: FeatureExtractor,
    references: Float[Tensor, "Q D"],
    images: ViewImage | None = None,
    config: ReferenceConfig | None = None,
    graph: KnnGraph | None = None,
    features: Float[Tensor, "N D"] | None = None,
    progress: bool = False,
) -> ReferenceResult:
    """Localize Q reference vectors (`twod.localize.reference_vector`) in every view of
    `cameras` and lift the masks onto the Gaussians of `scene`.

    `images(v)` gives view v's image (default: the scene rendered on white, as the lift renders
    scenes without photos); a mask is resized to the camera's size when the image has another.
    Unseen Gaussians score 0, or, with a kNN `graph`, are diffused from their neighbours (edges
    weighted by `features` when given), as `query.queries.mask_prompt_scores` does."""
    from tqdm import tqdm

    config = config or ReferenceConfig()
    if images is None:
        from omnivision.lift.pipeline import view_image

        def rendered(view: int) -> Tensor:
            return view_image(scene, cameras, view, use_photos=False)

        images = rendered
    references = references.float().cpu()
    masks: dict[int, Tensor] = {}
    sums = FeatureSums.zeros(len(scene), references.shape[0])  # the Q masks lift as channels
    for view in tqdm(range(len(cameras)), desc="find", unit="view", disable=not progress):
        image = images(view).float().cpu()
        found = view_masks(references, extractor.extract([image]), image, config)
        size = (cameras.heights[view], cameras.widths[view])
        if tuple(found.shape[1:]) != size:
            found = F.interpolate(found[None].float(), size=size, mode="nearest")[0] > 0.5
        masks[view] = found
        accumulate_view(sums, scene, cameras, view, found.float().permute(1, 2, 0))
    probability, weights = sums.features(), sums.weights  # as `queries.lift_masks`, Q at once
    scores = torch.stack(
        [
            unseen_filled(p, weights, config.min_weight, graph, features, config.iterations)
            for p in probability.T
        ]
    )
    return ReferenceResult(scores, masks, weights)


def find_reference(
    scene: GaussianScene,
    cameras: Cameras,
    extractor: FeatureExtractor,
    photo: Float[Tensor, "H W 3"],
    clicks: Sequence[tuple[float, float]] = (),
    box: tuple[float, float, float, float] | None = None,
    *,
    images: ViewImage | None = None,
    config: ReferenceConfig | None = None,
    graph: KnnGraph | None = None,
    features: Float[Tensor, "N D"] | None = None,
    progress: bool = False,
) -> ReferenceResult:
    """`find_references` for one reference `photo` (H, W, 3) in [0, 1] and the clicks or the
    box (xyxy pixels) on it that say which object it shows; its scores are `scores[0]`."""
    vector = reference_vector(extractor.extract([photo.float().cpu()]), clicks, box)
    return find_references(
        scene, cameras, extractor, vector[None], images, config, graph, features, progress
    )


__all__ = ["ReferenceConfig", "ReferenceResult", "find_reference", "find_references", "view_masks"]
