"""Where a selection is, in scene units: the centroid of the selected Gaussians' centres, their
axis-aligned box and their oriented (minimum-volume) box; and the selection as a coloured point
cloud with its oriented box, through trimesh, for Blender or a robotics stack.

Geometry is of the Gaussians' centres (not their 3-sigma ellipsoids): what a trained scene's
points are, and what the exported point cloud holds. `selection_geometry` is pure; the export is
the edge (`export_selection_mesh`, atomic). The oriented box is trimesh's minimum-volume box over
the convex hull (`trimesh.bounds.oriented_bounds`); its simple twin `principal_box` (the box along
the principal axes of the points) is the fallback for fewer than four points or a degenerate hull,
and the tests check the oriented box never holds more volume than it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

MESH_SUFFIXES = (".glb", ".obj", ".ply")


@dataclass(frozen=True)
class SelectionGeometry:
    """Centroid and boxes of `count` Gaussian centres. Arrays are float64, in scene units."""

    count: int
    centroid: np.ndarray
    """(3,) mean of the centres."""
    aabb_min: np.ndarray
    """(3,) per-axis minimum of the centres."""
    aabb_max: np.ndarray
    """(3,) per-axis maximum."""
    obb_transform: np.ndarray
    """(4, 4) the oriented box's frame in the scene: columns 0-2 of the rotation are its axes
    (a proper rotation, det +1), the translation its centre."""
    obb_extents: np.ndarray
    """(3,) side lengths of the oriented box along its axes, ascending."""

    @property
    def extent(self) -> np.ndarray:
        """(3,) side lengths of the axis-aligned box (max - min per axis)."""
        return self.aabb_max - self.aabb_min

    @property
    def obb_center(self) -> np.ndarray:
        return self.obb_transform[:3, 3]

    @property
    def obb_rotation(self) -> np.ndarray:
        return self.obb_transform[:3, :3]

    @property
    def obb_volume(self) -> float:
        return float(np.prod(self.obb_extents))

    def to_json(self) -> dict[str, Any]:
        """Plain lists and floats for a JSON summary."""

        def values(array: np.ndarray) -> list:
            return np.round(array, 7).tolist()

        return {
            "units": "scene",
            "of": "Gaussian centres",
            "count": self.count,
            "centroid": values(self.centroid),
            "aabb": {
                "min": values(self.aabb_min),
                "max": values(self.aabb_max),
                "extent": values(self.extent),
            },
            "obb": {
                "center": values(self.obb_center),
                "extents": values(self.obb_extents),
                "rotation": values(self.obb_rotation),
                "transform": values(self.obb_transform),
                "volume": round(self.obb_volume, 10),
            },
            "extent": round(float(np.linalg.norm(self.obb_extents)), 7),
        }


def principal_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transform (4, 4), extents (3,) ascending): the box along the principal axes of `points`
    (N, 3), centred on the middle of their spread along each axis. Defined for any N >= 1."""
    points = np.asarray(points, np.float64)
    centred = points - points.mean(axis=0)
    _, _, vh = np.linalg.svd(centred, full_matrices=True)
    axes = vh.T  # columns: principal directions
    local = centred @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    order = np.argsort(hi - lo, kind="stable")
    axes, lo, hi = axes[:, order], lo[order], hi[order]
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
        lo[2], hi[2] = -hi[2], -lo[2]
    transform = np.eye(4)
    transform[:3, :3] = axes
    transform[:3, 3] = points.mean(axis=0) + axes @ ((lo + hi) / 2)
    return transform, hi - lo


def oriented_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transform (4, 4), extents (3,) ascending): trimesh's minimum-volume oriented box of
    `points` (N, 3) (flat sets: its minimum rectangle in their plane); `principal_box` for fewer
    than 4 points, points on a line, or a hull qhull cannot build."""
    from scipy.spatial import QhullError  # pyright: ignore[reportAttributeAccessIssue]
    from trimesh.bounds import oriented_bounds

    points = np.asarray(points, np.float64)
    if len(points) < 4:
        return principal_box(points)
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if spread[1] <= 1e-9 * max(spread[0], 1e-300):  # one point or a line: no hull, no plane
        return principal_box(points)
    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # a flat hull's centre of mass
            to_origin, extents = oriented_bounds(points, ordered=True)
    except (QhullError, ValueError, TypeError):  # TypeError: trimesh on a hull it cannot use
        return principal_box(points)
    transform = np.linalg.inv(to_origin)
    if np.linalg.det(transform[:3, :3]) < 0:  # a reflected frame spans the same box
        transform[:3, 2] = -transform[:3, 2]
    return transform, np.asarray(extents, np.float64)


def selection_geometry(means: Float[Tensor, "N 3"]) -> SelectionGeometry:
    """Centroid, axis-aligned and oriented boxes of the centres `means` (the selected ones)."""
    if len(means) == 0:
        raise ValueError("the selection is empty: no geometry")
    points = means.detach().cpu().double().numpy()
    transform, extents = oriented_box(points)
    return SelectionGeometry(
        count=len(points),
        centroid=points.mean(axis=0),
        aabb_min=points.min(axis=0),
        aabb_max=points.max(axis=0),
        obb_transform=transform,
        obb_extents=extents,
    )


def box_corners(geometry: SelectionGeometry) -> np.ndarray:
    """(8, 3) corners of the oriented box, in the scene."""
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    return geometry.obb_center + (signs * geometry.obb_extents / 2) @ geometry.obb_rotation.T


def point_colours(rgb: Float[Tensor, "N 3"]) -> np.ndarray:
    """(N, 4) uint8 RGBA: `rgb` in [0, 1] (the SH DC colour) rounded, alpha 255."""
    rgb8 = (rgb.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.concatenate([rgb8, np.full((len(rgb8), 1), 255, np.uint8)], axis=1)


def selection_mesh_scene(
    means: Float[Tensor, "N 3"], rgb: Float[Tensor, "N 3"], geometry: SelectionGeometry
) -> Any:
    """A `trimesh.Scene`: node `gaussians`, the centres as a point cloud coloured by `rgb`, and
    node `oriented_box`, the box as a 12-triangle mesh."""
    import trimesh

    cloud = trimesh.PointCloud(means.detach().cpu().double().numpy(), colors=point_colours(rgb))
    box = trimesh.creation.box(extents=geometry.obb_extents, transform=geometry.obb_transform)
    scene = trimesh.Scene()
    scene.add_geometry(cloud, node_name="gaussians", geom_name="gaussians")
    scene.add_geometry(box, node_name="oriented_box", geom_name="oriented_box")
    return scene


def export_selection_mesh(
    path: str | Path,
    means: Float[Tensor, "N 3"],
    rgb: Float[Tensor, "N 3"],
    geometry: SelectionGeometry,
) -> Path:
    """Write the selection's centres as a coloured point cloud plus its oriented box, by suffix:
    `.glb` (two nodes: POINTS with COLOR_0, and the box mesh), `.obj` (the points with colours
    as `v x y z r g b`, then the box's 8 vertices and 12 faces), `.ply` (the coloured point
    cloud only: one vertex list cannot keep a box apart from the points; the box is in the JSON
    summary). Written atomically; an unknown suffix or an empty selection is a ValueError."""
    from omnivision.scenes.errors import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: the suffix must be one of {', '.join(MESH_SUFFIXES)}")
    if len(means) == 0:
        raise ValueError(f"{path}: the selection is empty, nothing to export")
    scene = selection_mesh_scene(means, rgb, geometry)
    with atomic_path(path) as tmp:
        if suffix == ".ply":
            data = scene.geometry["gaussians"].export(file_type="ply")
        else:
            data = scene.export(file_type=suffix[1:])
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


__all__ = [
    "MESH_SUFFIXES",
    "SelectionGeometry",
    "box_corners",
    "export_selection_mesh",
    "oriented_box",
    "point_colours",
    "principal_box",
    "selection_geometry",
    "selection_mesh_scene",
]
