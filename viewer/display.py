"""What the splats look like: colours per loaded Gaussian for each colour mode, the selection
highlight, the relevancy colour map with its colour bar, and the feature-PCA colours.

Pure numpy / torch, no viser: `state.py` picks the inputs, `app.py` sends the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.scenes.gaussians import GaussianScene, sh_dc_to_rgb

HIGHLIGHT_RGB = (1.0, 0.0, 1.0)
HIGHLIGHT_MIX = 0.7
"""Selected splats are drawn as (1 - mix) * colour + mix * magenta (when the highlight is on)."""


@dataclass(frozen=True)
class DisplayColors:
    """What the splats look like, one row per Gaussian of the *loaded* scene (deleted ones have
    opacity 0): `rgb` (N0, 3) float32 in [0, 1], `opacity` (N0,) float32 in [0, 1]."""

    rgb: Float[np.ndarray, "N 3"]
    opacity: Float[np.ndarray, "N"]


def dc_rgb(scene: GaussianScene, index: Tensor, n0: int) -> np.ndarray:
    """(N0, 3) SH DC colours of the edited scene's Gaussians at their loaded rows (0 elsewhere)."""
    rgb = np.zeros((n0, 3), np.float32)
    rgb[index.numpy()] = sh_dc_to_rgb(scene.sh[:, 0].float()).clamp(0, 1).numpy()
    return rgb


def scatter_opacity(scene: GaussianScene, index: Tensor, n0: int) -> np.ndarray:
    """(N0,) opacities of the edited scene's Gaussians at their loaded rows (0 elsewhere)."""
    opacity = np.zeros(n0, np.float32)
    opacity[index.numpy()] = torch.sigmoid(scene.opacity_logits.float()).numpy()
    return opacity


def highlight(rgb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of `rgb` with `rows` mixed towards magenta."""
    out = rgb.copy()
    out[rows] = out[rows] * (1 - HIGHLIGHT_MIX) + np.asarray(
        HIGHLIGHT_RGB, np.float32
    ) * np.float32(HIGHLIGHT_MIX)
    return out


_TURBO: np.ndarray | None = None


def turbo() -> np.ndarray:
    """matplotlib's turbo colour map as (256, 3) float32."""
    global _TURBO
    if _TURBO is None:
        from matplotlib import colormaps

        _TURBO = colormaps["turbo"](np.linspace(0, 1, 256))[:, :3].astype(np.float32)
    return _TURBO


def relevancy_limits(scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """The scores the colour map's ends stand for: the 1st and 99th percentiles, widened to
    include the threshold."""
    if scores.size == 0:
        return threshold, threshold
    lo, hi = np.percentile(scores, [1, 99])
    return min(float(lo), threshold), max(float(hi), threshold)


def relevancy_rgb(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Turbo colours of `scores` between `relevancy_limits`."""
    if scores.size == 0:
        return np.zeros((0, 3), np.float32)
    lo, hi = relevancy_limits(scores, threshold)
    t = (scores - lo) / max(hi - lo, 1e-12)
    return turbo()[np.clip((t * 255).astype(np.int64), 0, 255)]


def colour_bar_html(lo: float, hi: float, threshold: float, stops: int = 11) -> str:
    """The relevancy colour bar as HTML: a turbo gradient from `lo` to `hi` with a tick at the
    threshold and the three values written under it."""
    cmap = turbo()
    colours = ", ".join(
        "rgb({},{},{})".format(
            *(int(round(255 * c)) for c in cmap[int(round(k * 255 / (stops - 1)))])
        )
        for k in range(stops)
    )
    at = 0.0 if hi - lo < 1e-12 else min(max((threshold - lo) / (hi - lo), 0.0), 1.0)
    return (
        '<div style="padding:0 0.75em">'
        f'<div style="position:relative;height:12px;border-radius:2px;'
        f'background:linear-gradient(to right, {colours})">'
        f'<div style="position:absolute;left:{100 * at:.1f}%;top:-2px;bottom:-2px;width:2px;'
        'background:white;outline:1px solid black"></div></div>'
        '<div style="display:flex;justify-content:space-between;font-size:0.75em">'
        f"<span>{lo:.3g}</span><span>threshold {threshold:.3g}</span><span>{hi:.3g}</span>"
        "</div></div>"
    )


def feature_pca_rgb(features: Float[Tensor, "N D"], sample: int = 100_000) -> np.ndarray:
    """(N, 3) float32 in [0, 1]: the features' first three principal components (fitted on up to
    `sample` rows spread over the scene) as RGB, each stretched so its 1st..99th percentiles span
    [0, 1] (feature-field papers show lifted features this way)."""
    x = features.detach().float().cpu()
    n, d = x.shape
    if n == 0:
        return np.zeros((0, 3), np.float32)
    fit = x[:: max(1, n // sample)]
    mean = fit.mean(0)
    _, _, vh = torch.linalg.svd(fit - mean, full_matrices=False)
    basis = vh[: min(3, d)].T  # (D, <=3)
    proj = ((x - mean) @ basis).numpy()
    if proj.shape[1] < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = np.percentile(proj, [1, 99], axis=0)
    return np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1).astype(np.float32)
