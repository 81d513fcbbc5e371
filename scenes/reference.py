"""The slow twin of the tile compositor: every Gaussian x every pixel, one Gaussian at a time.

Obviously correct and obviously slow (O(N·H·W) with a Python loop over N). Tests and benchmarks
compare `render.render` against it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cameras import Cameras
from .gaussians import GaussianScene
from .project import ALPHA_MAX, ALPHA_MIN, T_MIN
from .render import RenderConfig, RenderOutput, project_view
from .sh import sh_colors


@torch.no_grad()
def render_dense_reference(
    scene: GaussianScene,
    cameras: Cameras,
    features: Tensor | None = None,
    config: RenderConfig | None = None,
) -> RenderOutput:
    config = config or RenderConfig()
    outs = [_one_view(scene, cameras, i, features, config) for i in range(len(cameras))]
    return RenderOutput(
        rgb=torch.stack([o[0] for o in outs]),
        depth=torch.stack([o[1] for o in outs]),
        alpha=torch.stack([o[2] for o in outs]),
        features=None if features is None else torch.stack([o[3] for o in outs]),
    )


def _one_view(scene: GaussianScene, cameras: Cameras, index: int, features, config: RenderConfig):
    width, height = cameras.widths[index], cameras.heights[index]
    proj = project_view(scene, cameras, index, config)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.reshape(-1).float() + 0.5, ys.reshape(-1).float() + 0.5
    degree = scene.sh_degree if config.sh_degree is None else min(config.sh_degree, scene.sh_degree)
    colors = sh_colors(degree, scene.sh, scene.means, cameras.centers[index].to(scene.means))
    d = 0 if features is None else features.shape[1]

    transmittance = torch.ones(height * width)
    done = torch.zeros(height * width, dtype=torch.bool)
    rgb = torch.zeros(height * width, 3)
    depth = torch.zeros(height * width)
    feats = torch.zeros(height * width, d)
    for i in torch.argsort(proj.depths, stable=True).tolist():
        if not proj.visible[i]:
            continue
        dx, dy = px - proj.means2d[i, 0], py - proj.means2d[i, 1]
        a, b, c = proj.conics[i]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = (proj.opacities[i] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN) & ~done, alpha, 0.0)
        next_t = transmittance * (1 - alpha)
        stop = (alpha > 0) & (next_t <= T_MIN)
        done |= stop
        alpha = torch.where(stop, 0.0, alpha)
        weight = alpha * transmittance
        rgb += weight[:, None] * colors[i]
        depth += weight * proj.depths[i]
        if features is not None:
            feats += weight[:, None] * features[i].float()
        transmittance = transmittance * (1 - alpha)
    alpha_total = 1 - transmittance
    rgb += transmittance[:, None] * torch.tensor(config.background)
    depth = torch.where(alpha_total > 0, depth / alpha_total.clamp_min(1e-10), 0.0)
    return (
        rgb.reshape(height, width, 3),
        depth.reshape(height, width),
        alpha_total.reshape(height, width),
        feats.reshape(height, width, d),
    )
