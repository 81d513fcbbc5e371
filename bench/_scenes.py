"""Scenes the benches build: a random cloud of N Gaussians (bench/query.py, bench/formats.py,
bench/eval.py)."""

from __future__ import annotations

import torch

from omnivision.scenes.gaussians import GaussianScene, normalize_quats


def random_scene(n: int, sh_degree: int = 3, seed: int = 0) -> GaussianScene:
    """A random cloud like tests/conftest.py's, with scales shrinking as N grows."""
    g = torch.Generator().manual_seed(seed)
    spacing = n ** (-1 / 3)  # mean spacing of n points in the cloud's ~unit-volume core
    return GaussianScene(
        means=torch.randn(n, 3, generator=g) * 0.5,
        quats=normalize_quats(torch.randn(n, 4, generator=g)),
        log_scales=torch.log(spacing * (0.5 + torch.rand(n, 3, generator=g))),
        opacity_logits=torch.randn(n, generator=g) * 2 + 1,
        sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3,
    )
