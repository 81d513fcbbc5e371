"""`GaussianScene`: the per-Gaussian parameters of a 3DGS scene, as the INRIA/gsplat trainers store them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from jaxtyping import Float
from torch import Tensor

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic constant: rgb = 0.5 + SH_C0 * f_dc."""


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_degree_from_bases(num_bases: int) -> int:
    degree = round(num_bases**0.5) - 1
    if degree < 0 or num_sh_bases(degree) != num_bases:
        raise ValueError(f"{num_bases} SH coefficients per channel is not (degree+1)^2")
    return degree


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """Inverse of the DC colour mapping: rgb in [0, 1] -> f_dc."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: Tensor) -> Tensor:
    return dc * SH_C0 + 0.5


@dataclass
class GaussianScene:
    """N Gaussians with the parameters a trainer optimises (raw, before activations).

    Conventions (see DESIGN.md): quaternions are `wxyz` and unit-norm; scales are log-scales;
    opacities are logits; `sh` holds all coefficients, `sh[:, 0]` is the DC term.
    `extras` holds optional per-Gaussian fields whose first dimension is N (e.g. `object_id`).
    """

    means: Float[Tensor, "N 3"]
    quats: Float[Tensor, "N 4"]
    log_scales: Float[Tensor, "N 3"]
    opacity_logits: Float[Tensor, "N"]
    sh: Float[Tensor, "N K 3"]
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"{name} has shape {tuple(getattr(self, name).shape)}, want {shape}"
                )
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"sh has shape {tuple(self.sh.shape)}, want ({n}, K, 3)")
        sh_degree_from_bases(self.sh.shape[1])
        for name, value in self.extras.items():
            if value.shape[0] != n:
                raise ValueError(f"extra field {name!r} has {value.shape[0]} rows, want {n}")

    # -- derived quantities -------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_bases(self.sh.shape[1])

    @property
    def scales(self) -> Float[Tensor, "N 3"]:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Float[Tensor, "N"]:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb_dc(self) -> Float[Tensor, "N 3"]:
        """View-independent colour from the DC term, clamped to [0, 1]."""
        return sh_dc_to_rgb(self.sh[:, 0]).clamp(0.0, 1.0)

    @property
    def device(self) -> torch.device:
        return self.means.device

    # -- moves and subsets ----------------------------------------------------------------
    def _map(self, fn) -> GaussianScene:
        values = {f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "extras"}
        extras = {k: fn(v) for k, v in self.extras.items()}
        return GaussianScene(**values, extras=extras)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to a device; `dtype` applies to floating-point fields only."""

        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return self._map(move)

    def subset(self, index: Tensor | Sequence[int]) -> GaussianScene:
        """Gaussians selected by a boolean mask (N,) or an index tensor, in that order."""
        index = torch.as_tensor(index, device=self.device)
        if index.dtype == torch.bool and index.shape != (len(self),):
            raise ValueError(f"mask has shape {tuple(index.shape)}, want ({len(self)},)")
        return self._map(lambda t: t[index])

    def clone(self) -> GaussianScene:
        return self._map(torch.clone)

    @staticmethod
    def concat(scenes: Sequence[GaussianScene]) -> GaussianScene:
        """Concatenate scenes; SH is padded with zeros to the highest degree; extras must match."""
        if not scenes:
            raise ValueError("concat needs at least one scene")
        k = max(s.sh.shape[1] for s in scenes)
        keys = set(scenes[0].extras)
        if any(set(s.extras) != keys for s in scenes):
            raise ValueError("scenes to concatenate have different extra fields")

        def pad(sh: Tensor) -> Tensor:
            return torch.nn.functional.pad(sh, (0, 0, 0, k - sh.shape[1]))

        return GaussianScene(
            means=torch.cat([s.means for s in scenes]),
            quats=torch.cat([s.quats for s in scenes]),
            log_scales=torch.cat([s.log_scales for s in scenes]),
            opacity_logits=torch.cat([s.opacity_logits for s in scenes]),
            sh=torch.cat([pad(s.sh) for s in scenes]),
            extras={key: torch.cat([s.extras[key] for s in scenes]) for key in sorted(keys)},
        )

    def with_sh_degree(self, degree: int) -> GaussianScene:
        """Truncate or zero-pad the SH coefficients to `degree`."""
        k = num_sh_bases(degree)
        sh = self.sh[:, :k]
        if sh.shape[1] < k:
            sh = torch.nn.functional.pad(sh, (0, 0, 0, k - sh.shape[1]))
        return GaussianScene(
            self.means, self.quats, self.log_scales, self.opacity_logits, sh, dict(self.extras)
        )


def normalize_quats(quats: Tensor, tol: float = 1e-6) -> Tensor:
    """Unit quaternions; rows already unit within `tol` are kept bit-for-bit (so round trips are exact)."""
    norms = quats.double().norm(dim=-1, keepdim=True)
    if bool(((norms - 1).abs() <= tol).all()):
        return quats
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    unit = (quats.double() / safe).to(quats.dtype)
    unit[(norms == 0).squeeze(-1)] = torch.tensor([1.0, 0, 0, 0], dtype=quats.dtype)
    keep = ((norms - 1).abs() <= tol).squeeze(-1)
    unit[keep] = quats[keep]
    return unit


def quats_to_rotmats(quats: Float[Tensor, "N 4"]) -> Float[Tensor, "N 3 3"]:
    """Rotation matrices from unit `wxyz` quaternions."""
    w, x, y, z = quats.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def covariances(scene: GaussianScene) -> Float[Tensor, "N 3 3"]:
    """World-space covariance R S S^T R^T of each Gaussian."""
    rs = quats_to_rotmats(scene.quats) * scene.scales[:, None, :]
    return rs @ rs.transpose(-1, -2)
