"""Optional distillation refinement (the Feature-3DGS objective, features only, geometry frozen):
starting from the aggregated features, gradient descent on Σ_views ‖render(f) − α·F‖² through our
differentiable renderer. α is the rendered opacity, so a constant feature field reproduces F
exactly where the scene is opaque and the loss does not pull features towards zero at edges.

Refinement stays per pixel (see lift/DESIGN.md): the gradient Wᵀ(W f − α U F) has a pooled part,
Wᵀ diag(α) U F, but W f is a render of the features being fitted, so each step's D-sized work is
per pixel anyway. What it keeps from the pooled design is the maps at their own grid (a
`LabelMap` as labels), upsampled one view at a time inside the loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.render import RenderConfig, render

from .aggregate import FeatureMap, dense_map, resize_feature_map


def reconstruction_loss(
    scene: GaussianScene, cameras: Cameras, view: int, features: Tensor, target: FeatureMap
) -> Tensor:
    out = render(scene, cameras[view], features, RenderConfig(rgb=False))
    assert out.features is not None
    size = (cameras.heights[view], cameras.widths[view])
    goal = resize_feature_map(dense_map(target), size).to(out.features) * out.alpha[0, ..., None]
    return ((out.features[0] - goal) ** 2).mean()


def refine_features(
    scene: GaussianScene,
    cameras: Cameras,
    views: list[int],
    feature_map: Callable[[int], FeatureMap],
    init: Float[Tensor, "N D"],
    steps: int,
    lr: float = 0.02,
    seed: int = 0,
) -> tuple[Float[Tensor, "N D"], list[float]]:
    """`steps` Adam steps, one random view each; returns the features and the loss per step."""
    f = init.clone().float().to(scene.device).requires_grad_(True)
    optimiser = torch.optim.Adam([f], lr=lr)
    order = torch.randint(0, len(views), (steps,), generator=torch.Generator().manual_seed(seed))
    losses = []
    for step in range(steps):
        view = views[int(order[step])]
        loss = reconstruction_loss(scene, cameras, view, f, feature_map(view))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return f.detach(), losses
