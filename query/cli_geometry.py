"""`omnivision query ... [--export-mesh OUT.glb|.obj|.ply] [--summary OUT.json]`: the edge of
`query.geometry` (the selection's centroid and boxes printed and put in the JSON summary, the
point cloud + oriented box written) and of the summary file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from omnivision.scenes.errors import atomic_path
from omnivision.scenes.gaussians import GaussianScene

from .cli import QueryError
from .geometry import MESH_SUFFIXES, export_selection_mesh, selection_geometry
from .selection import Selection


def check_mesh_path(path: Path | None) -> None:
    """--export-mesh's suffix, checked before the scene loads."""
    if path is not None and path.suffix.lower() not in MESH_SUFFIXES:
        raise QueryError(
            f"--export-mesh {path}: the suffix must be {', '.join(MESH_SUFFIXES)} "
            "(glTF binary, Wavefront OBJ, PLY point cloud)"
        )


def _triple(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def selection_report(
    scene: GaussianScene, selection: Selection, mesh_path: Path | None
) -> dict[str, Any] | None:
    """The selection's geometry as JSON (None when nothing is selected), printed on one line;
    with `mesh_path` the coloured point cloud + oriented box written there. An empty selection
    with `mesh_path` is a QueryError (exit 2), with nothing written."""
    if selection.count == 0:
        if mesh_path is not None:
            raise QueryError(
                f"--export-mesh {mesh_path}: the selection is empty, nothing to export"
            )
        return None
    mask = selection.mask.cpu()
    means, rgb = scene.means.cpu()[mask], scene.rgb_dc.cpu()[mask]
    geometry = selection_geometry(means)
    print(
        f"geometry (scene units): centroid {_triple(geometry.centroid)}, axis-aligned box "
        f"{_triple(geometry.aabb_min)} - {_triple(geometry.aabb_max)}, oriented box extents "
        f"{_triple(geometry.obb_extents)} at {_triple(geometry.obb_center)}"
    )
    if mesh_path is not None:
        export_selection_mesh(mesh_path, means, rgb, geometry)
        box = "" if mesh_path.suffix.lower() == ".ply" else " + its oriented box"
        print(f"export-mesh: wrote {mesh_path} ({geometry.count} coloured points{box})")
    return geometry.to_json()


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """The query's JSON summary, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return path


__all__ = ["check_mesh_path", "selection_report", "write_summary"]
