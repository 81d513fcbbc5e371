"""Camera readers and writers: INRIA `cameras.json`, `transforms.json`, gsplat npz (COLMAP
`sparse/0` models: `io_colmap.py`).

Every reader returns OpenCV `Cameras` (world_to_camera 4x4, K in pixels) and raises `SceneError`
naming the file on bad input.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cameras import GL_TO_CV, Cameras
from .errors import SceneError, atomic_path


def _as_w2c(rot_c2w: np.ndarray, position: np.ndarray) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot_c2w, position
    return np.linalg.inv(c2w)


def read_inria_cameras(path: str | Path) -> Cameras:
    """INRIA `cameras.json`: per camera `position` (centre) and `rotation` (camera-to-world, OpenCV
    axes), `fx`, `fy`, `width`, `height`, `img_name`; the principal point is the image centre."""
    path = Path(path)
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise SceneError(path, "expected a non-empty JSON list of cameras")
    w2c, ks, widths, heights, names = [], [], [], [], []
    for i, cam in enumerate(
        sorted(entries, key=lambda c: c.get("id", 0) if isinstance(c, dict) else 0)
    ):
        try:
            rot = np.asarray(cam["rotation"], dtype=np.float64).reshape(3, 3)
            pos = np.asarray(cam["position"], dtype=np.float64).reshape(3)
            w, h = int(cam["width"]), int(cam["height"])
            fx, fy = float(cam["fx"]), float(cam["fy"])
            name = str(cam.get("img_name", f"view_{i:04d}"))
        except (KeyError, TypeError, ValueError) as err:
            raise SceneError(path, f"camera {i}: missing or malformed field ({err})") from None
        for field, value in (("width", w), ("height", h)):
            if value <= 0:
                raise SceneError(
                    path,
                    f"camera {cam.get('id', i)} ({name!r}): {field} {value} is not a positive "
                    "image size",
                )
        w2c.append(_as_w2c(rot, pos))
        ks.append([[fx, 0, w / 2], [0, fy, h / 2], [0, 0, 1]])
        widths.append(w)
        heights.append(h)
        names.append(name)
    return checked_cameras(path, w2c, ks, widths, heights, names)


def write_inria_cameras(cameras: Cameras, path: str | Path) -> Path:
    """Write INRIA `cameras.json` (principal point must be the image centre to round-trip)."""
    c2w = cameras.camera_to_world.double().cpu().numpy()
    entries = []
    for i in range(len(cameras)):
        entries.append(
            {
                "id": i,
                "img_name": cameras.names[i],
                "width": cameras.widths[i],
                "height": cameras.heights[i],
                "position": c2w[i, :3, 3].tolist(),
                "rotation": c2w[i, :3, :3].tolist(),
                "fx": float(cameras.K[i, 0, 0]),
                "fy": float(cameras.K[i, 1, 1]),
            }
        )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(entries, indent=1))
    return Path(path)


def read_transforms(path: str | Path, image_size: tuple[int, int] | None = None) -> Cameras:
    """nerfstudio / instant-ngp / Blender `transforms.json` (camera-to-world, OpenGL axes).

    Intrinsics come from `fl_x/fl_y/cx/cy/w/h` (top level or per frame) or `camera_angle_x`;
    Blender-style files without `w/h` take the size of the first image (or `image_size`).
    """
    path = Path(path)
    meta = _read_json(path)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames:
        raise SceneError(path, "no 'frames' list")
    w2c, ks, widths, heights, names = [], [], [], [], []
    for i, frame in enumerate(frames):
        merged: dict[str, Any] = {**meta, **frame}
        try:
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64).reshape(4, 4)
            name = str(frame.get("file_path", f"view_{i:04d}"))
            w, h = _frame_size(path, merged, name, image_size)
            if "fl_x" in merged:
                fx = float(merged["fl_x"])
                fy = float(merged.get("fl_y", fx))
            elif "camera_angle_x" in merged:
                fx = 0.5 * w / math.tan(0.5 * float(merged["camera_angle_x"]))
                fy = (
                    0.5 * h / math.tan(0.5 * float(merged["camera_angle_y"]))
                    if "camera_angle_y" in merged
                    else fx
                )
            else:
                raise KeyError("fl_x or camera_angle_x")
            cx, cy = float(merged.get("cx", w / 2)), float(merged.get("cy", h / 2))
        except (KeyError, TypeError, ValueError) as err:
            raise SceneError(path, f"frame {i}: missing or malformed field ({err})") from None
        w2c.append(np.linalg.inv(c2w @ GL_TO_CV.numpy()))
        ks.append([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        widths.append(w)
        heights.append(h)
        names.append(name)
    return checked_cameras(path, w2c, ks, widths, heights, names)


def _frame_size(path: Path, meta: dict[str, Any], name: str, image_size) -> tuple[int, int]:
    if "w" in meta and "h" in meta:
        return int(meta["w"]), int(meta["h"])
    if image_size is not None:
        return image_size
    image = resolve_image(path.parent, name)
    if image is None:
        raise SceneError(path, f"no 'w'/'h' and image {name!r} not found to read its size")
    from PIL import Image

    with Image.open(image) as im:
        return im.size


def resolve_image(root: Path, name: str) -> Path | None:
    """The image a camera names: as given, under images/, or with a usual extension added."""
    candidates = [root / name, root / "images" / name, root / "images" / Path(name).name]
    for c in list(candidates):
        if not c.suffix:
            candidates += [c.with_suffix(ext) for ext in (".png", ".jpg", ".jpeg", ".JPG", ".PNG")]
    return next((c for c in candidates if c.is_file()), None)


def read_gsplat_npz(path: str | Path) -> Cameras:
    """gsplat's test-asset layout: `viewmats` (C,4,4) world-to-camera, `Ks` (C,3,3), `width`, `height`."""
    path = Path(path)
    data = _read_npz(path)
    for key in ("viewmats", "Ks", "width", "height"):
        if key not in data:
            raise SceneError(path, f"npz has no {key!r} array (want viewmats, Ks, width, height)")
    viewmats, ks = np.asarray(data["viewmats"]), np.asarray(data["Ks"])
    c = viewmats.shape[0]
    w, h = int(data["width"]), int(data["height"])
    return checked_cameras(
        path, list(viewmats), list(ks), [w] * c, [h] * c, [f"view_{i:04d}" for i in range(c)]
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as err:
        raise SceneError(path, f"not a readable npz file ({err})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneError(path, f"invalid JSON ({err})") from None


def checked_cameras(path: Path, w2c, ks, widths, heights, names) -> Cameras:
    w2c_t = torch.as_tensor(np.asarray(w2c, dtype=np.float64)).float()
    k_t = torch.as_tensor(np.asarray(ks, dtype=np.float64)).float()
    if not (torch.isfinite(w2c_t).all() and torch.isfinite(k_t).all()):
        raise SceneError(path, "camera poses or intrinsics contain NaN or infinite values")
    for i, (w, h) in enumerate(zip(widths, heights, strict=True)):
        if w <= 0 or h <= 0:
            raise SceneError(
                path, f"camera {i} ({names[i]!r}) has a non-positive image size {w}x{h}"
            )
    return Cameras(w2c_t, k_t, list(widths), list(heights), list(names))
