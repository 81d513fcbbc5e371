"""Pictures of a query: per-Gaussian scores rendered into a view as a heatmap, and a selection
highlighted. Pure functions returning arrays; the command writes them."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene, rgb_to_sh_dc, sh_dc_to_rgb
from omnivision.scenes.io_images import to_uint8
from omnivision.scenes.render import RenderConfig, render

from .queries import feature_image
from .selection import Selection

WHITE = (1.0, 1.0, 1.0)


def render_scores(
    scene: GaussianScene, cameras: Cameras, view: int, scores: Float[Tensor, "N"]
) -> tuple[Float[Tensor, "H W"], Float[Tensor, "H W"]]:
    """Scores alpha-blended into `view` like any feature channel: (score map, alpha)."""
    image, alpha = feature_image(scene, cameras, view, scores.float()[:, None])
    return image[..., 0], alpha


def heatmap_image(
    scene: GaussianScene,
    cameras: Cameras,
    view: int,
    scores: Float[Tensor, "N"],
    value_range: tuple[float, float] | None = None,
    cmap: str = "turbo",
) -> np.ndarray:
    """(H, W, 3) uint8: the scores rendered into `view`, coloured over `value_range` (default:
    the scores' min..max), over the grey scene where alpha is low."""
    from matplotlib import colormaps

    values, alpha = render_scores(scene, cameras, view, scores)
    lo, hi = value_range or (float(scores.min()), float(scores.max()))
    unit = ((values - lo) / max(hi - lo, 1e-12)).clamp(0, 1).cpu().numpy()
    colour = torch.from_numpy(colormaps[cmap](unit)[..., :3]).float()
    base = render(scene, cameras[view], config=RenderConfig(background=WHITE)).rgb
    assert base is not None
    grey = base[0].cpu().mean(-1, keepdim=True).expand(-1, -1, 3)
    a = alpha.cpu()[..., None].clamp(0, 1)
    return to_uint8(a * (0.75 * colour + 0.25 * grey) + (1 - a) * grey)


def highlighted(
    scene: GaussianScene, selection: Selection, colour: tuple[float, float, float] = (1, 0, 1)
) -> GaussianScene:
    """A copy for display: the selection in a flat `colour`, everything else greyed."""
    shown = scene.clone()
    mask = selection.mask.to(scene.device)
    dc = shown.sh[:, 0]
    grey = sh_dc_to_rgb(dc).mean(-1, keepdim=True) * 0.6 + 0.3
    dimmed = rgb_to_sh_dc(grey).expand(-1, 3)
    target = rgb_to_sh_dc(torch.tensor(colour, dtype=dc.dtype, device=dc.device))
    shown.sh[:, 0] = torch.where(mask[:, None], target.expand_as(dc), dimmed)
    shown.sh[:, 1:] = 0
    return shown


def preview_panels(
    before: GaussianScene,
    after: GaussianScene | None,
    cameras: Cameras,
    view: int,
    selection: Selection,
) -> np.ndarray:
    """(H, k*W, 3) uint8 side by side: the view before, the scores as a heatmap, the selection
    highlighted, and (when an edit ran) the view after the edit."""

    def photo(scene: GaussianScene) -> np.ndarray:
        rgb = render(scene, cameras[view], config=RenderConfig(background=WHITE)).rgb
        assert rgb is not None
        return to_uint8(rgb[0])

    panels = [
        photo(before),
        heatmap_image(before, cameras, view, selection.scores),
        photo(highlighted(before, selection)),
    ]
    if after is not None:
        panels.append(photo(after))
    return np.concatenate(panels, axis=1)
