"""Cameras and rays a browser gives the viewer, and the geometry of clicks and rectangles on them.

Pure functions on tensors (OpenCV cameras, `scenes.cameras.Cameras`); no viser, no state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.scenes.cameras import Cameras, intrinsics_from_fov, look_at
from omnivision.scenes.gaussians import GaussianScene, quats_to_rotmats


def pinhole_camera(
    position: Sequence[float] | np.ndarray,
    wxyz: Sequence[float] | np.ndarray,
    fov_y: float,
    width: int,
    height: int,
) -> Cameras:
    """One OpenCV camera at `position` with camera-to-world rotation `wxyz` (x right, y down,
    z forward), vertical field of view `fov_y` radians, square pixels, centred principal point."""
    rot = quats_to_rotmats(torch.as_tensor(np.asarray(wxyz, dtype=np.float64))[None])[0]
    center = torch.as_tensor(np.asarray(position, dtype=np.float64))
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = rot.T
    w2c[:3, 3] = -rot.T @ center
    f = 0.5 * height / math.tan(0.5 * fov_y)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    return Cameras(w2c[None].float(), K[None].float(), [int(width)], [int(height)], ["client"])


def ray_camera(
    origin: Sequence[float] | Tensor, direction: Sequence[float] | Tensor, fov_deg: float = 0.5
) -> Cameras:
    """A 9x9-pixel camera at `origin` looking along `direction`: its centre pixel (4, 4) is the ray."""
    o = torch.as_tensor(origin, dtype=torch.float64).reshape(1, 3)
    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=torch.float64), dim=0)
    up = torch.tensor([0.0, 0.0, 1.0] if abs(float(d[2])) <= 0.9 else [1.0, 0.0, 0.0])
    w2c = look_at(o, o + d, up)
    return Cameras(w2c, intrinsics_from_fov(fov_deg, 9, 9)[None], [9], [9], ["ray"])


def crop_camera(
    camera: Cameras, xyxy: tuple[float, float, float, float], max_side: int | None = None
) -> tuple[Cameras, float]:
    """The part `xyxy` of a one-view camera's image as a camera of its own, scaled down so its
    long side is at most `max_side`; returns it and the scale (crop pixels per image pixel)."""
    x0, y0, x1, y1 = xyxy
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    s = 1.0 if max_side is None else min(1.0, max_side / max(w, h))
    K = camera.K[0].clone().double()
    K[0, 0] *= s
    K[1, 1] *= s
    K[0, 2] = (K[0, 2] - x0) * s
    K[1, 2] = (K[1, 2] - y0) * s
    width, height = max(1, math.ceil(w * s)), max(1, math.ceil(h * s))
    crop = Cameras(camera.world_to_camera[:1].clone(), K[None].float(), [width], [height], ["crop"])
    return crop, s


def capped_camera(camera: Cameras, max_side: int) -> Cameras:
    """A one-view camera resized (same view) so its long side is at most `max_side` pixels."""
    w, h = camera.widths[0], camera.heights[0]
    s = min(1.0, max_side / max(w, h))
    return camera if s >= 1.0 else camera.resized(max(1, round(w * s)), max(1, round(h * s)))


def same_camera(a: Cameras, b: Cameras) -> bool:
    """Whether two one-view cameras show the same image (pose to 1e-5, intrinsics to 1e-3)."""
    return (
        a.widths == b.widths
        and a.heights == b.heights
        and torch.allclose(a.world_to_camera, b.world_to_camera, atol=1e-5)
        and torch.allclose(a.K, b.K, atol=1e-3)
    )


def project_centres(
    scene: GaussianScene, camera: Cameras, xyxy: tuple[float, float, float, float]
) -> tuple[Bool[Tensor, "N"], Float[Tensor, "N 2"], Float[Tensor, "N"]]:
    """Which centres project into `xyxy` in front of the camera; their pixel xy and depth."""
    w2c = camera.world_to_camera[0].to(scene.means)
    K = camera.K[0].to(scene.means)
    cam = scene.means @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    safe = torch.where(z > 1e-9, z, torch.ones_like(z))
    u = K[0, 0] * cam[:, 0] / safe + K[0, 2]
    v = K[1, 1] * cam[:, 1] / safe + K[1, 2]
    x0, y0, x1, y1 = (float(c) for c in xyxy)
    inside = (z > 1e-6) & (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
    return inside, torch.stack([u, v], dim=-1), z


def nearest_to_ray(
    scene: GaussianScene, origin: Sequence[float], direction: Sequence[float]
) -> int:
    """The Gaussian in front of the ray origin whose centre is nearest the ray, in units of its
    largest scale, if within 3 of them (-1 otherwise)."""
    o = torch.as_tensor(origin, dtype=scene.means.dtype)
    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=scene.means.dtype), dim=0)
    rel = scene.means - o
    t = rel @ d
    dist = (rel - t[:, None] * d).norm(dim=-1) / scene.scales.max(dim=-1).values.clamp_min(1e-12)
    dist = torch.where(t > 0, dist, torch.full_like(dist, float("inf")))
    if len(dist) == 0 or float(dist.min()) > 3:
        return -1
    return int(torch.argmin(dist))


def point_on_ray(
    origin: Sequence[float], direction: Sequence[float], target: Sequence[float] | Tensor
) -> np.ndarray:
    """The point of the ray nearest `target` (a Gaussian's centre): where a click marker goes."""
    o = np.asarray(origin, np.float64)
    d = np.asarray(direction, np.float64)
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    t = max(float((np.asarray(target, np.float64) - o) @ d), 0.0)
    return o + t * d


def inside_volume(
    means: Float[Tensor, "N 3"],
    shape: str,
    centre: Sequence[float],
    wxyz: Sequence[float],
    size: Sequence[float],
) -> Bool[Tensor, "N"]:
    """Centres inside a volume placed at `centre` with rotation `wxyz` (local-to-world):
    "box" with half extents `size` (3,) along its local axes, or "sphere" of radius `size[0]`."""
    rot = quats_to_rotmats(torch.as_tensor(np.asarray(wxyz, np.float64))[None])[0].to(means)
    local = (means - torch.as_tensor(np.asarray(centre, np.float64)).to(means)) @ rot
    half = torch.as_tensor(np.asarray(size, np.float64)).to(means)
    if shape == "sphere":
        return local.norm(dim=-1) <= half[0]
    return (local.abs() <= half).all(dim=-1)


def circle_polygon(xy: tuple[float, float], radius: float, sides: int = 32) -> np.ndarray:
    """(sides, 2) vertices of a circle of `radius` pixels around `xy` (a brush dab)."""
    angle = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    return np.stack([xy[0] + radius * np.cos(angle), xy[1] + radius * np.sin(angle)], axis=1)
