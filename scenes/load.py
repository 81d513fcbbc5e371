"""`load_scene`: find the Gaussians, the cameras and the photos of a scene folder, in the layouts
people actually have (INRIA/gsplat/nerfstudio outputs, COLMAP datasets, gsplat test assets)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras, orbit_around_points
from .errors import SceneError, atomic_path
from .gaussians import GaussianScene, normalize_quats, rgb_to_sh_dc
from .io_cameras import (
    read_gsplat_npz,
    read_inria_cameras,
    read_transforms,
    resolve_image,
    write_inria_cameras,
)
from .io_colmap import colmap_root, points_file, read_colmap, read_colmap_points
from .io_compressed_ply import is_compressed_ply, read_compressed_ply
from .io_gltf import is_gltf_splats, read_gltf
from .io_ksplat import read_ksplat
from .io_ply import is_gaussian_ply, read_ply, read_splat, write_ply
from .io_sog import is_sog, read_sog
from .io_spz import is_spz, read_spz

SCENE_LAYOUTS = (
    "point_cloud.ply, point_cloud/iteration_*/point_cloud.ply, ckpts/ckpt_*.pt, "
    "a 3DGS *.ply, a *.splat, *.spz, *.compressed.ply, *.sog or SOG meta.json, *.ksplat, "
    "a *.glb / *.gltf with KHR_gaussian_splatting, "
    "a gsplat npz (means3d, colors, viewmats, Ks), "
    "or a COLMAP sparse/0 with points3D (Gaussians initialised from the points)"
)


@dataclass
class Scene:
    """A loaded scene: Gaussians, cameras (if any were found), and where each came from."""

    gaussians: GaussianScene
    cameras: Cameras | None
    root: Path
    gaussians_file: Path
    cameras_file: Path | None = None
    objects: dict[int, str] = field(default_factory=dict)
    """Object id -> name, from `objects.json` (the demo scene has one)."""
    notes: list[str] = field(default_factory=list)
    """Things a user may want to know about how the scene was read (e.g. rescaled intrinsics)."""

    def cameras_or_orbit(self, num_views: int = 12, width: int = 512, height: int = 512) -> Cameras:
        """The scene's cameras, or an orbit framing the Gaussians when the scene has none."""
        if self.cameras is not None:
            return self.cameras
        return orbit_around_points(self.gaussians.means, num_views, width, height)


def _iteration(path: Path, pattern: str) -> int:
    m = re.search(pattern, path.as_posix())
    return int(m.group(1)) if m else -1


def find_gaussians_file(root: Path) -> Path:
    """The file holding the Gaussians of a scene folder; see SCENE_LAYOUTS for the search order."""
    if (root / "point_cloud.ply").is_file():
        return root / "point_cloud.ply"
    iterations = sorted(
        root.glob("point_cloud/iteration_*/point_cloud.ply"),
        key=lambda p: _iteration(p, r"iteration_(\d+)"),
    )
    if iterations:
        return iterations[-1]
    ckpts = sorted(root.glob("ckpts/ckpt_*.pt"), key=lambda p: _iteration(p, r"ckpt_(\d+)"))
    if ckpts:
        return ckpts[-1]
    plys = [p for p in sorted(root.glob("*.ply")) if is_gaussian_ply(p)]
    if len(plys) > 1:
        raise SceneError(
            root, f"several 3DGS ply files ({', '.join(p.name for p in plys)}): pass one"
        )
    if plys:
        return plys[0]
    found = [
        *sorted(root.glob("*.splat")),
        *sorted(root.glob("*.spz")),
        *sorted(root.glob("*.sog")),
        *sorted(root.glob("*.ksplat")),
        *[p for p in sorted([*root.glob("*.glb"), *root.glob("*.gltf")]) if is_gltf_splats(p)],
    ]
    found += [root / "meta.json"] if is_sog(root / "meta.json") else []
    found += [p for p in sorted(root.glob("*.ply")) if is_compressed_ply(p)] + [
        p for p in sorted(root.glob("*.npz")) if _is_points_npz(p)
    ]
    if found:
        return found[0]
    for model in (root / "sparse" / "0", root / "sparse", root):
        points = points_file(model)
        if points is not None:
            return points
    if root.is_dir() and not any(root.iterdir()):
        raise SceneError(root, "folder is empty")
    raise SceneError(root, f"no 3DGS scene found; expected {SCENE_LAYOUTS}")


def _is_points_npz(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "means3d" in npz.files or "means" in npz.files
    except Exception:
        return False


def read_gaussians(path: Path) -> GaussianScene:
    """Gaussians from a ply, splat, gsplat checkpoint, or points npz (by file type)."""
    suffix = path.suffix.lower()
    if suffix == ".spz" or (suffix == ".ply" and is_spz(path)):  # by magic: gzip or NGSP
        return read_spz(path)
    if suffix == ".ply":
        return read_compressed_ply(path) if is_compressed_ply(path) else read_ply(path)
    if suffix == ".splat":
        return read_splat(path)
    if suffix == ".sog" or path.name == "meta.json":
        return read_sog(path)
    if suffix == ".ksplat":
        return read_ksplat(path)
    if suffix in (".glb", ".gltf"):
        return read_gltf(path)
    if suffix == ".pt":
        return read_gsplat_checkpoint(path)
    if suffix == ".npz":
        return gaussians_from_points_npz(path)
    if path.stem == "points3D" and suffix in (".bin", ".txt"):
        return gaussians_from_points(*read_colmap_points(path.parent))
    raise SceneError(path, f"unknown scene file type {suffix!r}; expected {SCENE_LAYOUTS}")


def read_gsplat_checkpoint(path: Path) -> GaussianScene:
    """A gsplat trainer checkpoint (`{"splats": {means, quats, scales, opacities, sh0, shN}}`)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SceneError(
            path, f"not a readable torch checkpoint ({type(err).__name__}: {err})"
        ) from None
    splats = ckpt.get("splats", ckpt) if isinstance(ckpt, dict) else None
    need = ("means", "quats", "scales", "opacities", "sh0")
    if not isinstance(splats, dict) or any(k not in splats for k in need):
        raise SceneError(path, f"checkpoint has no splats dict with {', '.join(need)} (+ shN)")
    sh0 = splats["sh0"].float()
    sh = torch.cat([sh0, splats["shN"].float()], dim=1) if "shN" in splats else sh0
    return GaussianScene(
        means=splats["means"].float(),
        quats=normalize_quats(splats["quats"].float()),
        log_scales=splats["scales"].float(),
        opacity_logits=splats["opacities"].float(),
        sh=sh,
    )


def gaussians_from_points(
    points: torch.Tensor, colors: torch.Tensor, opacity: float = 0.1, neighbours: int = 3
) -> GaussianScene:
    """Isotropic Gaussians on points, as 3DGS training initialises them from SfM points: scale =
    RMS distance to the `neighbours` nearest points (scipy cKDTree), constant opacity (stored as
    its logit), SH DC colour from `colors` in [0, 1], no higher SH."""
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]

    pts = points.double().numpy()
    dist, _ = cKDTree(pts).query(pts, k=neighbours + 1, workers=-1)
    rms = np.sqrt((dist[:, 1:] ** 2).mean(axis=1)).clip(min=1e-7)
    n = points.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return GaussianScene(
        means=points.float(),
        quats=quats,
        log_scales=torch.from_numpy(np.log(rms)).float()[:, None].repeat(1, 3),
        opacity_logits=torch.full((n,), float(np.log(opacity / (1 - opacity)))),
        sh=rgb_to_sh_dc(colors.float())[:, None, :],
    )


def gaussians_from_points_npz(path: Path) -> GaussianScene:
    with np.load(path, allow_pickle=False) as data:
        key = "means3d" if "means3d" in data.files else "means"
        if key not in data.files:
            raise SceneError(path, "npz has no 'means3d' (or 'means') array of points")
        points = torch.from_numpy(np.asarray(data[key], dtype=np.float32))
        if points.ndim != 2 or points.shape[1] != 3 or not torch.isfinite(points).all():
            raise SceneError(
                path, f"'{key}' must be finite (N, 3) points, got {tuple(points.shape)}"
            )
        if "colors" in data.files:
            raw = data["colors"]
            colors = torch.from_numpy(np.asarray(raw, dtype=np.float32))
            colors = colors / 255.0 if raw.dtype == np.uint8 else colors
        else:
            colors = torch.full_like(points, 0.5)
    return gaussians_from_points(points, colors)


def find_cameras(root: Path, gaussians_file: Path) -> tuple[Cameras | None, Path | None]:
    """Cameras of a scene folder: COLMAP sparse/0 (or sparse/), cameras.json, transforms.json, or the npz."""
    for model in (root / "sparse" / "0", root / "sparse"):
        if any((model / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return read_colmap(model), model
    for name, reader in (
        ("cameras.json", read_inria_cameras),
        ("transforms.json", read_transforms),
    ):
        if (root / name).is_file():
            return reader(root / name), root / name
    if gaussians_file.suffix == ".npz":
        with np.load(gaussians_file, allow_pickle=False) as npz:
            if "viewmats" in npz.files:
                return read_gsplat_npz(gaussians_file), gaussians_file
    return None, None


def attach_images(cameras: Cameras, root: Path, cameras_file: Path, notes: list[str]) -> Cameras:
    """Point the cameras at their photos under `root/images` (when that folder exists) and check sizes.

    Photos downscaled uniformly from the calibrated size rescale the intrinsics (noted); a missing
    photo or a different aspect ratio is an error naming the file.
    """
    if not (root / "images").is_dir():
        return cameras
    from PIL import Image

    paths: list[Path] = []
    missing = []
    for name in cameras.names:
        image = resolve_image(root, name)
        if image is None:
            missing.append(name)
        else:
            paths.append(image)
    if missing:
        raise SceneError(
            cameras_file,
            f"{len(missing)} camera(s) name images missing from {root / 'images'} (first: {missing[0]!r})",
        )
    K = cameras.K.clone()
    widths, heights = list(cameras.widths), list(cameras.heights)
    rescaled = 0
    for i, image in enumerate(paths):
        try:
            with Image.open(image) as im:
                w, h = im.size
        except Exception as err:
            raise SceneError(image, f"not a readable image ({err})") from None
        if (w, h) == (widths[i], heights[i]):
            continue
        sx, sy = w / widths[i], h / heights[i]
        if abs(sx - sy) * max(widths[i], heights[i]) > 1.0:
            raise SceneError(
                image,
                f"image is {w}x{h} but its camera in {cameras_file.name} is {widths[i]}x{heights[i]} "
                "(different aspect ratio: intrinsics do not match the image)",
            )
        K[i, 0] *= sx
        K[i, 1] *= sy
        widths[i], heights[i] = w, h
        rescaled += 1
    if rescaled:
        notes.append(f"{rescaled} camera(s) rescaled to the size of their images")
    return Cameras(cameras.world_to_camera, K, widths, heights, list(cameras.names), paths)


def load_scene(path: str | Path, orbit_views: int | None = None) -> Scene:
    """Load a scene folder or file (see SCENE_LAYOUTS). With `orbit_views`, a scene that has no
    cameras gets that many orbit cameras framing it."""
    path = Path(path)
    if not path.exists():
        raise SceneError(path, "no such file or folder")
    if path.is_dir():
        root, gaussians_file = path, find_gaussians_file(path)
    else:
        root, gaussians_file = path.parent, path
    model_root = root
    if gaussians_file.parent.name.startswith("iteration_"):
        model_root = gaussians_file.parent.parent.parent
    from_points = gaussians_file.stem == "points3D"  # a COLMAP model without trained Gaussians
    gaussians = read_gaussians(gaussians_file)
    if from_points:  # the cameras of the same model; photos under the dataset's images/
        model_root = colmap_root(gaussians_file.parent)
        cameras, cameras_file = read_colmap(gaussians_file.parent), gaussians_file.parent
    else:
        cameras, cameras_file = find_cameras(model_root, gaussians_file)
    notes: list[str] = []
    if from_points:
        notes.append(
            f"no trained Gaussians: {len(gaussians)} initialised from the COLMAP points "
            f"({gaussians_file.name}) as 3DGS training starts (isotropic, opacity 0.1, point colour)"
        )
    if cameras is not None and cameras_file is not None:
        cameras = attach_images(cameras, model_root, cameras_file, notes)
    elif orbit_views:
        cameras = orbit_around_points(gaussians.means, orbit_views)
        notes.append(f"no cameras found: using an orbit of {orbit_views} views")
    objects = (
        read_objects(model_root / "objects.json") if (model_root / "objects.json").is_file() else {}
    )
    return Scene(gaussians, cameras, model_root, gaussians_file, cameras_file, objects, notes)


def read_objects(path: Path) -> dict[int, str]:
    try:
        entries = json.loads(path.read_text())["objects"]
        return {int(o["id"]): str(o["name"]) for o in entries}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise SceneError(path, f"expected {{'objects': [{{'id', 'name'}}, ...]}} ({err})") from None


WRITE_SUFFIXES = (".ply", ".splat", ".spz", ".compressed.ply", ".sog", ".glb", ".gltf")
"""What `write_gaussians` writes, by the end of the file name."""
SIDECAR_SUFFIXES = (".splat", ".spz", ".compressed.ply", ".sog")
"""Formats without a slot for integer per-Gaussian fields: those go to a sidecar beside the file."""


def write_suffix(path: str | Path) -> str:
    """The format `write_gaussians` picks for `path` (".compressed.ply" counts as one suffix)."""
    name = Path(path).name.lower()
    return ".compressed.ply" if name.endswith(".compressed.ply") else Path(path).suffix.lower()


def write_gaussians(
    scene: GaussianScene, path: str | Path, source: str | Path | None = None
) -> Path:
    """Write Gaussians by the end of the name (`WRITE_SUFFIXES`), atomically: `.ply` (exact,
    integer extras as vertex properties), `.glb`/`.gltf` (float32 glTF, extras as attributes),
    or lossy `.splat`, `.spz`, `.compressed.ply`, `.sog` (integer extras in a sidecar beside the
    file naming `source`, the scene they came from)."""
    from .io_compressed_ply import write_compressed_ply
    from .io_gltf import write_gltf
    from .io_ply import write_splat
    from .io_sog import write_sog
    from .io_spz import write_spz

    path = Path(path)
    kind = write_suffix(path)
    if kind == ".ply":
        return write_ply(scene, path)
    if kind in (".glb", ".gltf"):
        return write_gltf(scene, path)
    sidecar = {
        ".splat": write_splat,
        ".spz": write_spz,
        ".compressed.ply": write_compressed_ply,
        ".sog": write_sog,
    }
    if kind not in sidecar:
        raise SceneError(path, f"the name must end in {', '.join(WRITE_SUFFIXES)}")
    return sidecar[kind](scene, path, source=source)


def save_scene(scene: Scene, folder: str | Path) -> Path:
    """Write a scene folder readable by `load_scene` and by INRIA-format tools:
    point_cloud.ply, cameras.json (if cameras), objects.json (if objects)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(scene.gaussians, folder / "point_cloud.ply")
    if scene.cameras is not None:
        write_inria_cameras(scene.cameras, folder / "cameras.json")
    if scene.objects:
        payload = {"objects": [{"id": k, "name": v} for k, v in sorted(scene.objects.items())]}
        with atomic_path(folder / "objects.json") as tmp:
            tmp.write_text(json.dumps(payload, indent=1))
    return folder
