"""Selections drawn on images: a rectangle on the view (with a depth test), a SAM 2 prompt
lifted onto the Gaussians, a reference photo found in the scene's views.

Pure functions of the edited scene, its cameras and the prompt (no state, no viser); `state.py`
turns their scores into the live query.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.query.queries import mask_prompt_scores
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.render import RenderConfig, render
from omnivision.twod.features import FeatureExtractor

from .geometry import capped_camera, crop_camera, project_centres
from .modes import ViewerError
from .session import SamPrompt

PromptSegmenter = Callable[
    [Tensor, Tensor | None, Tensor | None, tuple[float, float, float, float] | None], Tensor
]
"""(image (H, W, 3) in [0, 1], points (P, 2) xy pixels or None, labels (P,) 1/0 or None, box
xyxy or None) -> mask bool (H, W): SAM 2 prompted with clicks and/or a box."""
Progress = Callable[[float, str], None]
"""(fraction done in [0, 1], what is happening) for long operations."""


def _no_progress(fraction: float, what: str) -> None:
    return None


def load_segmenter(sam: str, sam_config: str | None = None) -> PromptSegmenter:
    """SAM 2 (`sam`: hub id or a local .pt with its `sam_config`) as a `PromptSegmenter`."""
    from omnivision.twod.features import TwoDError
    from omnivision.twod.sam import load_sam2

    try:
        model = load_sam2(sam, sam_config)
    except TwoDError as err:
        raise ViewerError(f"no SAM 2 model: {err}") from None

    def segment(image, points, labels, box) -> Tensor:
        model.set_image(image)
        return model.predict(
            None if points is None else points.numpy(),
            None if labels is None else labels.numpy(),
            box,
            multimask=points is not None and box is None,
        ).masks[0]

    return segment


def evenly_spaced(cameras: Cameras, count: int, max_side: int) -> Cameras:
    """`count` of the cameras, evenly spaced, each at most `max_side` pixels wide."""
    views = np.linspace(0, len(cameras), min(count, len(cameras)), endpoint=False).astype(int)
    return Cameras.concat([capped_camera(cameras[int(i)], max_side) for i in views])


def rect_mask(
    scene: GaussianScene,
    camera: Cameras,
    xyxy: tuple[float, float, float, float],
    visible_only: bool = True,
    max_side: int = 256,
) -> Bool[Tensor, "N"]:
    """Gaussians whose centres project into the rectangle `xyxy` (pixels of `camera`), only
    those not hidden behind a surface when `visible_only` (a depth test against a render of
    the rectangle at most `max_side` pixels wide)."""
    inside, uv, depth = project_centres(scene, camera, xyxy)
    if not visible_only or not bool(inside.any()):
        return inside
    x0, y0 = xyxy[0], xyxy[1]
    crop, s = crop_camera(camera, xyxy, max_side)
    out = render(scene, crop, config=RenderConfig(rgb=False))
    ids = torch.nonzero(inside).squeeze(1)
    px = ((uv[ids, 0] - x0) * s).long().clamp(0, crop.widths[0] - 1)
    py = ((uv[ids, 1] - y0) * s).long().clamp(0, crop.heights[0] - 1)
    surface = out.depth[0][py, px]
    alpha = out.alpha[0][py, px]
    tolerance = 0.02 * surface + 3 * scene.scales[ids].max(dim=-1).values
    front = (alpha < 0.5) | (depth[ids] <= surface + tolerance)
    visible = torch.zeros_like(inside)
    visible[ids[front]] = True
    return visible


def lasso_mask(
    scene: GaussianScene,
    camera: Cameras,
    polygon: np.ndarray,
    visible_only: bool = True,
    max_side: int = 256,
) -> Bool[Tensor, "N"]:
    """Gaussians whose centres project inside `polygon` ((P, 2) xy pixels of `camera`, P >= 3),
    only the visible ones when `visible_only` (the depth test of `rect_mask` on its bounds)."""
    from matplotlib.path import Path as PolygonPath

    polygon = np.asarray(polygon, np.float64)
    if len(polygon) < 3:
        raise ViewerError(f"a lasso needs at least 3 points, got {len(polygon)}")
    (x0, y0), (x1, y1) = polygon.min(0), polygon.max(0)
    inside = rect_mask(scene, camera, (x0, y0, x1, y1), visible_only, max_side)
    ids = torch.nonzero(inside).squeeze(1)
    if len(ids) == 0:
        return inside
    _, uv, _ = project_centres(scene, camera, (x0, y0, x1, y1))
    keep = PolygonPath(polygon).contains_points(uv[ids].double().numpy())
    mask = torch.zeros_like(inside)
    mask[ids[torch.from_numpy(keep)]] = True
    return mask


def sam_scores(
    scene: GaussianScene,
    prompt: SamPrompt,
    scene_cameras: Cameras,
    segment: PromptSegmenter,
    refine_views: int = 4,
    max_side: int = 512,
    progress: Progress = _no_progress,
) -> Float[Tensor, "N"]:
    """Segment the prompt's view with SAM 2 and lift the mask onto the Gaussians; then re-prompt
    SAM 2 with the selection's box in `refine_views` scene cameras (evenly spaced) and lift all
    masks together, so the sides the prompt view cannot see are selected too. Views are rendered
    at most `max_side` pixels wide."""
    if not bool((prompt.labels == 1).any()):
        raise ViewerError("add at least one SAM +point on the object")
    camera = capped_camera(prompt.camera, max_side)
    points = prompt.points * torch.tensor(
        [
            camera.widths[0] / prompt.camera.widths[0],
            camera.heights[0] / prompt.camera.heights[0],
        ]
    )
    progress(0.15, "rendering the view")
    image = render(scene, camera, config=RenderConfig(background=(1.0, 1.0, 1.0))).rgb
    assert image is not None
    progress(0.3, "segmenting")
    mask = segment(image[0].clamp(0, 1), points, prompt.labels, None).bool()
    if not bool(mask.any()):
        raise ViewerError("SAM 2 found no mask for these points")
    others = np.linspace(0, len(scene_cameras), refine_views, endpoint=False).astype(int)
    cameras = Cameras.concat(
        [camera, *(capped_camera(scene_cameras[int(i)], max_side) for i in others)]
    )
    progress(0.5, f"lifting the mask (refined in {refine_views} views)")
    return mask_prompt_scores(
        scene,
        cameras,
        0,
        mask,
        segment=lambda view, image, box: segment(image, None, None, box),
        refine_views=range(1, len(cameras)),
    )


def reference_scores(
    scene: GaussianScene,
    scene_cameras: Cameras,
    photo: tuple[str, Tensor],
    box: str,
    max_views: int = 12,
    max_side: int = 512,
    extractor: FeatureExtractor | None = None,
    progress: Progress = _no_progress,
) -> Float[Tensor, "N"]:
    """Scores of the object boxed on the reference `photo` ((file name, (H, W, 3) image); `box`
    "X0,Y0,X1,Y1" in photo pixels) as `omnivision query --ref` finds it (`query.reference`):
    localized in up to `max_views` scene cameras (evenly spaced, rendered at most `max_side`
    pixels wide) with `extractor` (default: the weight-free colour features), masks lifted."""
    from omnivision.query.reference import find_reference
    from omnivision.twod.cli import check_inside, parse_box
    from omnivision.twod.errors import TwoDError
    from omnivision.twod.extractors import load_extractor

    name, image = photo
    try:
        xyxy = parse_box(box, "box")
        corners = [(xyxy[0], xyxy[1]), (xyxy[2] - 1e-3, xyxy[3] - 1e-3)]
        check_inside(Path(name), (image.shape[0], image.shape[1]), corners, "box corner")
    except TwoDError as err:
        raise ViewerError(str(err)) from None
    cameras = evenly_spaced(scene_cameras, max_views, max_side)
    progress(0.1, f"finding {name} in {len(cameras)} views")
    extractor = extractor or load_extractor("colour")
    return find_reference(scene, cameras, extractor, image, box=xyxy).scores[0]
