"""`Cameras`: pinhole cameras in the OpenCV convention (x right, y down, z forward)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

# OpenGL/Blender camera axes (x right, y up, z backward) -> OpenCV axes (x right, y down, z forward).
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass
class Cameras:
    """C pinhole cameras. `world_to_camera` is an OpenCV 4x4 extrinsic; `K` holds intrinsics in pixels.

    Image sizes are per camera (real captures mix portrait and landscape photos).
    """

    world_to_camera: Float[Tensor, "C 4 4"]
    K: Float[Tensor, "C 3 3"]
    widths: list[int]
    heights: list[int]
    names: list[str] = field(default_factory=list)
    image_paths: list[Path] | None = None

    def __post_init__(self) -> None:
        c = self.world_to_camera.shape[0]
        if self.world_to_camera.shape != (c, 4, 4) or self.K.shape != (c, 3, 3):
            raise ValueError(
                f"world_to_camera {tuple(self.world_to_camera.shape)} and K {tuple(self.K.shape)} "
                f"must be (C, 4, 4) and (C, 3, 3)"
            )
        if not self.names:
            self.names = [f"view_{i:04d}" for i in range(c)]
        lengths = {len(self.widths), len(self.heights), len(self.names)}
        if self.image_paths is not None:
            lengths.add(len(self.image_paths))
        if lengths != {c}:
            raise ValueError(f"per-camera lists must all have {c} entries")

    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    def __getitem__(self, index: int | slice | Sequence[int]) -> Cameras:
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"view {index} out of range: the scene has {len(self)} cameras")
            idx = [index % len(self)]
        elif isinstance(index, slice):
            idx = list(range(len(self)))[index]
        else:
            idx = [int(i) for i in index]
        return Cameras(
            world_to_camera=self.world_to_camera[idx],
            K=self.K[idx],
            widths=[self.widths[i] for i in idx],
            heights=[self.heights[i] for i in idx],
            names=[self.names[i] for i in idx],
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in idx],
        )

    @property
    def camera_to_world(self) -> Float[Tensor, "C 4 4"]:
        return torch.linalg.inv(self.world_to_camera)

    @property
    def centers(self) -> Float[Tensor, "C 3"]:
        """Camera positions in world coordinates."""
        rot = self.world_to_camera[:, :3, :3]
        t = self.world_to_camera[:, :3, 3:]
        return -(rot.transpose(-1, -2) @ t)[..., 0]

    @property
    def same_size(self) -> bool:
        return len(set(zip(self.widths, self.heights, strict=True))) <= 1

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        return Cameras(
            world_to_camera=self.world_to_camera.to(device=device, dtype=dtype),
            K=self.K.to(device=device, dtype=dtype),
            widths=list(self.widths),
            heights=list(self.heights),
            names=list(self.names),
            image_paths=None if self.image_paths is None else list(self.image_paths),
        )

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras rendering `width x height` images (intrinsics scaled per axis)."""
        K = self.K.clone()
        sx = torch.tensor([width / w for w in self.widths], dtype=K.dtype)
        sy = torch.tensor([height / h for h in self.heights], dtype=K.dtype)
        K[:, 0] *= sx[:, None]
        K[:, 1] *= sy[:, None]
        return Cameras(
            self.world_to_camera.clone(),
            K,
            [width] * len(self),
            [height] * len(self),
            list(self.names),
            self.image_paths,
        )

    @staticmethod
    def concat(cameras: Sequence[Cameras]) -> Cameras:
        paths = [c.image_paths for c in cameras]
        return Cameras(
            world_to_camera=torch.cat([c.world_to_camera for c in cameras]),
            K=torch.cat([c.K for c in cameras]),
            widths=[w for c in cameras for w in c.widths],
            heights=[h for c in cameras for h in c.heights],
            names=[n for c in cameras for n in c.names],
            image_paths=None
            if any(p is None for p in paths)
            else [q for p in paths for q in p or []],
        )


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> Tensor:
    """K for a centred principal point and square pixels with horizontal field of view `fov_x_deg`."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float32)


def look_at(
    eye: Float[Tensor, "C 3"], target: Float[Tensor, "C 3"], up: Float[Tensor, "3"]
) -> Float[Tensor, "C 4 4"]:
    """OpenCV world_to_camera matrices of cameras at `eye` looking at `target`; `up` is world up."""
    eye, target, up = eye.double(), target.double(), up.double()
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(
        torch.linalg.cross(forward, up.expand_as(forward)), dim=-1
    )
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4, dtype=torch.float64).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, eye
    return torch.linalg.inv(c2w).float()


def orbit_cameras(
    center: Sequence[float] | Tensor,
    radius: float,
    num_views: int = 12,
    elevation_deg: float = 30.0,
    width: int = 512,
    height: int = 512,
    fov_x_deg: float = 50.0,
    up: Sequence[float] = (0.0, 0.0, 1.0),
) -> Cameras:
    """A ring of `num_views` cameras at `radius` around `center`, `elevation_deg` above the plane ⟂ `up`."""
    center_t = torch.as_tensor(center, dtype=torch.float64).reshape(3)
    up_t = torch.nn.functional.normalize(torch.as_tensor(up, dtype=torch.float64), dim=0)
    # Two axes spanning the plane perpendicular to `up`.
    helper = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    if abs(float(up_t @ helper)) > 0.9:
        helper = torch.tensor([0, 1.0, 0], dtype=torch.float64)
    a = torch.nn.functional.normalize(torch.linalg.cross(up_t, helper), dim=0)
    b = torch.linalg.cross(up_t, a)
    angles = torch.arange(num_views, dtype=torch.float64) * (2 * math.pi / num_views)
    elev = math.radians(elevation_deg)
    offsets = radius * (
        math.cos(elev) * (torch.cos(angles)[:, None] * a + torch.sin(angles)[:, None] * b)
        + math.sin(elev) * up_t
    )
    eyes = center_t + offsets
    w2c = look_at(eyes, center_t.expand_as(eyes), up_t)
    K = intrinsics_from_fov(fov_x_deg, width, height)
    return Cameras(
        world_to_camera=w2c,
        K=K.repeat(num_views, 1, 1),
        widths=[width] * num_views,
        heights=[height] * num_views,
        names=[f"orbit_{i:03d}" for i in range(num_views)],
    )


def orbit_around_points(
    points: Float[Tensor, "N 3"],
    num_views: int = 12,
    width: int = 512,
    height: int = 512,
    fov_x_deg: float = 50.0,
    elevation_deg: float = 30.0,
    up: Sequence[float] | None = None,
) -> Cameras:
    """An orbit that frames the bulk of `points` (2nd–98th percentile box), for scenes without cameras.

    `up` defaults to the axis along which the points are thinnest (the normal of a tabletop or a donut).
    """
    pts = points.double()
    if pts.shape[0] > 200_000:
        pts = pts[
            torch.randperm(pts.shape[0], generator=torch.Generator().manual_seed(0))[:200_000]
        ]
    lo = torch.quantile(pts, 0.02, dim=0)
    hi = torch.quantile(pts, 0.98, dim=0)
    center = (lo + hi) / 2
    if up is None:
        up_t = torch.zeros(3, dtype=torch.float64)
        up_t[int(torch.argmin(hi - lo))] = 1.0
    else:
        up_t = torch.as_tensor(up, dtype=torch.float64)
    half_extent = float((hi - lo).norm() / 2)
    fov = math.radians(min(fov_x_deg, fov_x_deg * height / width))
    radius = 1.1 * half_extent / math.sin(fov / 2)
    return orbit_cameras(
        center, radius, num_views, elevation_deg, width, height, fov_x_deg, up_t.tolist()
    )
