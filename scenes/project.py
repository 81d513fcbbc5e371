"""EWA projection of 3D Gaussians into one pinhole view (pure torch, gsplat's conventions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .gaussians import GaussianScene, covariances

ALPHA_MIN = 1.0 / 255.0
"""A Gaussian contributes to a pixel only where its alpha reaches this (as in gsplat/INRIA)."""
ALPHA_MAX = 0.999
T_MIN = 1e-4
"""Compositing stops once transmittance would fall to this."""


@dataclass
class Projected:
    """N Gaussians in one view. `extents` are exact half-sizes (pixels) of the region where alpha
    can reach ALPHA_MIN, so culling by them never drops a contribution."""

    means2d: Float[Tensor, "N 2"]
    conics: Float[Tensor, "N 3"]
    depths: Float[Tensor, "N"]
    opacities: Float[Tensor, "N"]
    extents: Float[Tensor, "N 2"]
    visible: Bool[Tensor, "N"]


def project(
    scene: GaussianScene,
    world_to_camera: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projected:
    """Project every Gaussian; `eps2d` is the screen-space low-pass filter added to the 2D covariance."""
    rot = world_to_camera[:3, :3].to(scene.means.dtype)
    t = world_to_camera[:3, 3].to(scene.means.dtype)
    means_c = scene.means @ rot.T + t
    cov_c = rot @ covariances(scene) @ rot.T
    tx, ty, tz = means_c.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    safe_tz = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))

    # Clamp the Jacobian's evaluation point to a little outside the frustum (3DGS/gsplat).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x = ((width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx)
    lim_y = ((height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy)
    jx = safe_tz * torch.clamp(tx / safe_tz, min=-lim_x[1], max=lim_x[0])
    jy = safe_tz * torch.clamp(ty / safe_tz, min=-lim_y[1], max=lim_y[0])
    zeros = torch.zeros_like(tz)
    J = torch.stack(
        [fx / safe_tz, zeros, -fx * jx / safe_tz**2, zeros, fy / safe_tz, -fy * jy / safe_tz**2],
        dim=-1,
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a = cov2d[:, 0, 0] + eps2d
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    det_safe = det.clamp_min(1e-10)
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * tx / safe_tz + cx, fy * ty / safe_tz + cy], dim=-1)

    opac = scene.opacities
    # alpha = o * exp(-q/2) >= ALPHA_MIN  <=>  q <= 2 ln(o / ALPHA_MIN); per-axis extent sqrt(q * cov_ii).
    q_max = 2 * torch.log((opac / ALPHA_MIN).clamp_min(1.0))
    extents = torch.stack([torch.sqrt(q_max * a), torch.sqrt(q_max * c)], dim=-1)
    visible = (
        (tz > near)
        & (tz < far)
        & (det > 0)
        & (opac >= ALPHA_MIN)
        & (means2d[:, 0] + extents[:, 0] > 0.5)
        & (means2d[:, 0] - extents[:, 0] < width - 0.5)
        & (means2d[:, 1] + extents[:, 1] > 0.5)
        & (means2d[:, 1] - extents[:, 1] < height - 0.5)
        & torch.isfinite(means2d).all(-1)
    )
    return Projected(means2d, conics, tz, opac, extents, visible)


def pixel_ranges(proj: Projected, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inclusive pixel column/row ranges whose centres (i + 0.5) fall inside each Gaussian's extents."""
    x0 = torch.ceil(proj.means2d[:, 0] - proj.extents[:, 0] - 0.5).clamp(0, width - 1)
    x1 = torch.floor(proj.means2d[:, 0] + proj.extents[:, 0] - 0.5).clamp(-1, width - 1)
    y0 = torch.ceil(proj.means2d[:, 1] - proj.extents[:, 1] - 0.5).clamp(0, height - 1)
    y1 = torch.floor(proj.means2d[:, 1] + proj.extents[:, 1] - 0.5).clamp(-1, height - 1)
    return x0.long(), x1.long(), y0.long(), y1.long()
