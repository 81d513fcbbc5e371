"""Real spherical harmonics up to degree 3 (the 3DGS/gsplat basis and sign convention)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Float[Tensor, "N 3"]) -> Float[Tensor, "N K"]:
    """The (degree+1)^2 basis functions evaluated at unit directions."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree {degree} is not supported (0..3)")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
        if degree >= 3:
            out += [
                C3[0] * y * (3 * xx - yy),
                C3[1] * xy * z,
                C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
                C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy),
            ]
    return torch.stack(out, dim=-1)


def eval_sh(
    degree: int, coeffs: Float[Tensor, "N K 3"], dirs: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3"]:
    """Colour (before the +0.5 offset) of SH `coeffs` seen along `dirs` (need not be unit length)."""
    k = (degree + 1) ** 2
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))
    return torch.einsum("nk,nkc->nc", basis, coeffs[:, :k])


def sh_colors(
    degree: int,
    coeffs: Float[Tensor, "N K 3"],
    means: Float[Tensor, "N 3"],
    camera_center: Float[Tensor, "3"],
) -> Float[Tensor, "N 3"]:
    """RGB of each Gaussian seen from `camera_center`, as gsplat computes it: max(SH + 0.5, 0)."""
    return (eval_sh(degree, coeffs, means - camera_center) + 0.5).clamp_min(0.0)
