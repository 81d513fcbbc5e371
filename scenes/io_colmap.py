"""COLMAP models (`sparse/0`: `cameras`, `images`, `points3D` as .bin or .txt) through pycolmap:
the registered images as OpenCV `Cameras`, and the 3D points (positions, colours) that 3DGS
training starts from. Errors are `SceneError`s naming the model folder or the file at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cameras import Cameras
from .errors import SceneError
from .io_cameras import checked_cameras

PERSPECTIVE_MODELS = {
    "SIMPLE_PINHOLE",
    "PINHOLE",
    "SIMPLE_RADIAL",
    "RADIAL",
    "OPENCV",
    "FULL_OPENCV",
}


def is_colmap_model(folder: Path) -> bool:
    """True when `folder` holds a COLMAP model's cameras and images files (.bin or .txt)."""
    return all(
        any((folder / f"{part}{ext}").is_file() for ext in (".bin", ".txt"))
        for part in ("cameras", "images")
    )


def points_file(folder: Path) -> Path | None:
    """The `points3D` file of a COLMAP model folder, if it has one."""
    if not is_colmap_model(folder):
        return None
    return next(
        (
            folder / f"points3D{ext}"
            for ext in (".bin", ".txt")
            if (folder / f"points3D{ext}").is_file()
        ),
        None,
    )


def colmap_root(model_dir: Path) -> Path:
    """The dataset folder of a model folder: ROOT for ROOT/sparse/0 or ROOT/sparse (where
    images/ lives), else the model folder itself."""
    if model_dir.name == "sparse":
        return model_dir.parent
    if model_dir.parent.name == "sparse":
        return model_dir.parent.parent
    return model_dir


def _reconstruction(model_dir: Path) -> Any:
    try:
        import pycolmap
    except ImportError:
        raise SceneError(
            model_dir, "reading COLMAP models needs pycolmap: pip install pycolmap"
        ) from None
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as err:
        undefined = _image_with_undefined_camera(model_dir)
        if undefined is not None:
            name, camera_id = undefined
            raise SceneError(
                model_dir / "images.txt",
                f"image {name!r} names camera {camera_id}, which cameras.txt does not define",
            ) from None
        raise SceneError(model_dir, f"not a readable COLMAP model ({err})") from None


def _image_with_undefined_camera(model_dir: Path) -> tuple[str, str] | None:
    """(image name, camera id) of the first image in a text model whose camera id is not in
    cameras.txt (pycolmap's own message only names a 'rig'); None when there is none."""
    cameras, images = model_dir / "cameras.txt", model_dir / "images.txt"
    if not (cameras.is_file() and images.is_file()):
        return None
    defined = {
        line.split()[0]
        for line in cameras.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    # images.txt: two lines per image (the pose line, then its 2D points, possibly empty)
    lines = [line for line in images.read_text().splitlines() if not line.startswith("#")]
    for line in lines[0::2]:
        parts = line.split()
        if len(parts) >= 10 and parts[8] not in defined:
            return " ".join(parts[9:]), parts[8]
    return None


def read_colmap(model_dir: str | Path) -> Cameras:
    """The registered images of a COLMAP model as cameras, sorted by image name.

    Lens distortion parameters are ignored: 3DGS scenes are trained on undistorted images.
    """
    model_dir = Path(model_dir)
    recon = _reconstruction(model_dir)
    w2c, ks, widths, heights, names = [], [], [], [], []
    for image_id in sorted(
        recon.reg_image_ids() if hasattr(recon, "reg_image_ids") else recon.images
    ):
        image = recon.images[image_id]
        camera = recon.cameras[image.camera_id]
        try:
            pose = image.cam_from_world()
        except (ValueError, RuntimeError) as err:
            raise SceneError(model_dir, f"image {image.name!r} has no pose ({err})") from None
        if camera.model_name not in PERSPECTIVE_MODELS:
            raise SceneError(
                model_dir,
                f"camera model {camera.model_name} of {image.name!r} is not a perspective model",
            )
        m = np.eye(4)
        m[:3, :4] = pose.matrix()
        w2c.append(m)
        ks.append(np.asarray(camera.calibration_matrix(), dtype=np.float64))
        widths.append(int(camera.width))
        heights.append(int(camera.height))
        names.append(image.name)
    if not names:
        raise SceneError(model_dir, "COLMAP model has no registered images")
    order = sorted(range(len(names)), key=lambda i: names[i])
    return checked_cameras(
        model_dir,
        [w2c[i] for i in order],
        [ks[i] for i in order],
        [widths[i] for i in order],
        [heights[i] for i in order],
        [names[i] for i in order],
    )


def read_colmap_points(model_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's 3D points: positions (P, 3) float32 and colours (P, 3) in [0, 1], by point id."""
    model_dir = Path(model_dir)
    recon = _reconstruction(model_dir)
    points = [recon.points3D[i] for i in sorted(recon.points3D)]
    if not points:
        raise SceneError(model_dir, "COLMAP model has no 3D points to start Gaussians from")
    xyz = np.array([p.xyz for p in points], dtype=np.float32)
    rgb = np.array([p.color for p in points], dtype=np.float32) / 255.0
    if not np.isfinite(xyz).all():
        raise SceneError(model_dir, "COLMAP points contain NaN or infinite positions")
    return torch.from_numpy(xyz), torch.from_numpy(rgb)
