"""The embedded demo scene: a procedurally built tabletop with named objects and known object ids.

Every surface is covered by flat Gaussians (two tangent scales, a thin normal scale) like a trained
3DGS scene; degree-1 SH add a soft view-dependent shading, degrees 2-3 are stored as zeros.
Deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras, orbit_cameras
from .gaussians import GaussianScene, rgb_to_sh_dc
from .sh import C1

SurfaceSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
"""(rng, count) -> (points (n,3), unit normals (n,3))."""


@dataclass(frozen=True)
class DemoObject:
    object_id: int
    name: str
    color: tuple[float, float, float]
    parts: tuple[tuple[SurfaceSampler, float], ...]
    """(sampler, area in m^2) for each surface of the object."""
    texture: str = "speckle"


def _cylinder(cx, cy, z0, radius, height, outward=True) -> SurfaceSampler:
    def sample(rng, n):
        t = rng.uniform(0, 2 * math.pi, n)
        z = rng.uniform(z0, z0 + height, n)
        normal = np.stack([np.cos(t), np.sin(t), np.zeros(n)], 1) * (1 if outward else -1)
        pts = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t), z], 1)
        return pts, normal

    return sample


def _disk(cx, cy, z, radius, up=True, inner=0.0) -> SurfaceSampler:
    def sample(rng, n):
        r = np.sqrt(rng.uniform(inner**2 / radius**2, 1, n)) * radius
        t = rng.uniform(0, 2 * math.pi, n)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)], 1)
        normal = np.tile([0.0, 0.0, 1.0 if up else -1.0], (n, 1))
        return pts, normal

    return sample


def _sphere(cx, cy, cz, radius) -> SurfaceSampler:
    def sample(rng, n):
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return np.array([cx, cy, cz]) + radius * v, v

    return sample


def _cone(cx, cy, z0, radius, height) -> SurfaceSampler:
    slope = radius / height

    def sample(rng, n):
        s = np.sqrt(rng.uniform(0, 1, n))  # area grows linearly towards the base
        t = rng.uniform(0, 2 * math.pi, n)
        r = s * radius
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t), z0 + height * (1 - s)], 1)
        normal = np.stack([np.cos(t), np.sin(t), np.full(n, slope)], 1)
        return pts, normal / np.linalg.norm(normal, axis=1, keepdims=True)

    return sample


def _torus(cx, cy, cz, major, minor, tilt_deg=0.0, arc=2 * math.pi) -> SurfaceSampler:
    tilt = math.radians(tilt_deg)
    rot = np.array(
        [[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]]
    )

    def sample(rng, n):
        u = rng.uniform(0, arc, n)
        v = rng.uniform(0, 2 * math.pi, n)
        normal = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], 1)
        centre = np.stack([major * np.cos(u), major * np.sin(u), np.zeros(n)], 1)
        pts = centre + minor * normal
        return pts @ rot.T + np.array([cx, cy, cz]), normal @ rot.T

    return sample


def _box(cx, cy, z0, size, yaw_deg) -> list[tuple[SurfaceSampler, float]]:
    yaw = math.radians(yaw_deg)
    rot = np.array(
        [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    )
    half = size / 2
    faces = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            if axis == 2 and sign < 0:
                continue  # the face on the table is never seen

            def sample(rng, n, axis=axis, sign=sign):
                pts = rng.uniform(-half, half, (n, 3))
                pts[:, axis] = sign * half
                normal = np.zeros((n, 3))
                normal[:, axis] = sign
                return pts @ rot.T + np.array([cx, cy, z0 + half]), normal @ rot.T

            faces.append((sample, size * size))
    return faces


def _rectangle(x0, x1, y0, y1, z) -> SurfaceSampler:
    def sample(rng, n):
        pts = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n), np.full(n, z)], 1)
        return pts, np.tile([0.0, 0.0, 1.0], (n, 1))

    return sample


def demo_objects() -> list[DemoObject]:
    """The table (id 0) and seven objects on it."""
    mug_r, mug_h = 0.07, 0.11
    return [
        DemoObject(
            0,
            "wooden table",
            (0.55, 0.36, 0.2),
            ((_rectangle(-0.6, 0.6, -0.45, 0.45, 0.0), 1.08),),
            "stripes",
        ),
        DemoObject(
            1,
            "red mug",
            (0.8, 0.1, 0.1),
            (
                (_cylinder(-0.3, 0.18, 0.0, mug_r, mug_h), 2 * math.pi * mug_r * mug_h),
                (_cylinder(-0.3, 0.18, 0.01, mug_r - 0.006, mug_h - 0.01, outward=False), 0.044),
                (_disk(-0.3, 0.18, mug_h, mug_r, inner=mug_r - 0.006), 0.003),
                (_torus(-0.3 + mug_r + 0.015, 0.18, 0.055, 0.03, 0.008, tilt_deg=90), 0.01),
            ),
        ),
        DemoObject(2, "blue box", (0.1, 0.25, 0.8), tuple(_box(0.28, 0.2, 0.0, 0.14, 20.0))),
        DemoObject(
            3,
            "green ball",
            (0.15, 0.7, 0.2),
            ((_sphere(0.05, -0.22, 0.07, 0.07), 4 * math.pi * 0.07**2),),
        ),
        DemoObject(
            4,
            "yellow cone",
            (0.95, 0.85, 0.1),
            ((_cone(0.35, -0.18, 0.0, 0.07, 0.16), math.pi * 0.07 * math.hypot(0.07, 0.16)),),
        ),
        DemoObject(
            5,
            "purple torus",
            (0.55, 0.2, 0.7),
            ((_torus(-0.3, -0.2, 0.028, 0.07, 0.028), 4 * math.pi**2 * 0.07 * 0.028),),
        ),
        DemoObject(
            6,
            "orange can",
            (1.0, 0.5, 0.05),
            (
                (_cylinder(0.02, 0.24, 0.0, 0.045, 0.14), 2 * math.pi * 0.045 * 0.14),
                (_disk(0.02, 0.24, 0.14, 0.045), math.pi * 0.045**2),
            ),
            "stripes",
        ),
        DemoObject(
            7,
            "white plate",
            (0.92, 0.92, 0.9),
            ((_disk(-0.02, -0.02, 0.006, 0.11), math.pi * 0.11**2),),
        ),
    ]


def _texture(kind: str, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness multiplier per point: wood-like stripes or speckle."""
    if kind == "stripes":
        return 0.85 + 0.15 * np.sin(pts[:, 0] * 90 + 0.3 * np.sin(pts[:, 1] * 40))
    return 0.9 + 0.1 * rng.uniform(-1, 1, len(pts))


def _frames_from_normals(normals: np.ndarray) -> np.ndarray:
    """wxyz quaternions of rotations whose third column is the normal."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normals, t1)
    rot = np.stack([t1, t2, normals], axis=2)  # columns
    return _rotmat_to_quat(rot)


def _rotmat_to_quat(m: np.ndarray) -> np.ndarray:
    w = np.sqrt(np.clip(1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2], 0, None)) / 2
    x = np.sqrt(np.clip(1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 0, None)) / 2
    y = np.sqrt(np.clip(1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 0, None)) / 2
    z = np.sqrt(np.clip(1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2], 0, None)) / 2
    x = np.copysign(x, m[:, 2, 1] - m[:, 1, 2])
    y = np.copysign(y, m[:, 0, 2] - m[:, 2, 0])
    z = np.copysign(z, m[:, 1, 0] - m[:, 0, 1])
    q = np.stack([w, x, y, z], 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def build_demo_gaussians(spacing: float = 0.0055, seed: int = 0) -> GaussianScene:
    """About 30k Gaussians for the default `spacing` (metres between neighbours on a surface)."""
    rng = np.random.default_rng(seed)
    pts_all, normals_all, colors_all, ids_all = [], [], [], []
    for obj in demo_objects():
        # The table is sampled twice as sparsely: it is large and plain.
        step = spacing * (1.6 if obj.object_id == 0 else 1.0)
        for sampler, area in obj.parts:
            n = max(20, int(area / step**2))
            pts, normals = sampler(rng, n)
            shade = _texture(obj.texture, pts, rng)[:, None]
            pts_all.append(pts)
            normals_all.append(normals)
            colors_all.append(np.clip(np.array(obj.color) * shade, 0, 1))
            ids_all.append(np.full(n, obj.object_id, dtype=np.int32))
    pts = np.concatenate(pts_all)
    normals = np.concatenate(normals_all)
    colors = np.concatenate(colors_all)
    ids = np.concatenate(ids_all)
    n = len(pts)
    step = np.where(ids == 0, spacing * 1.6, spacing)
    scales = np.stack([step * 0.85, step * 0.85, step * 0.08], 1)
    sh = np.zeros((n, 16, 3))
    sh[:, 0] = rgb_to_sh_dc(torch.from_numpy(colors)).numpy()
    # Headlight shading β·(n · -d) through the degree-1 basis (-C1·y, C1·z, -C1·x).
    beta = 0.12
    sh[:, 1] = (beta / C1) * normals[:, 1:2]
    sh[:, 2] = -(beta / C1) * normals[:, 2:3]
    sh[:, 3] = (beta / C1) * normals[:, 0:1]
    return GaussianScene(
        means=torch.from_numpy(pts).float(),
        quats=torch.from_numpy(_frames_from_normals(normals)).float(),
        log_scales=torch.from_numpy(np.log(scales)).float(),
        opacity_logits=torch.full((n,), 3.0),
        sh=torch.from_numpy(sh).float(),
        extras={"object_id": torch.from_numpy(ids)},
    )


def demo_cameras(width: int = 320, height: int = 240) -> Cameras:
    """Two rings around the table: 12 views at 35° elevation and 6 at 65°."""
    center = (0.0, 0.0, 0.04)
    low = orbit_cameras(center, 1.25, 12, 35.0, width, height, 60.0)
    high = orbit_cameras(center, 1.15, 6, 65.0, width, height, 60.0)
    cams = Cameras.concat([low, high])
    cams.names = [f"view_{i:03d}" for i in range(len(cams))]
    return cams


def demo_object_names() -> dict[int, str]:
    return {o.object_id: o.name for o in demo_objects()}


def object_id_features(object_ids: torch.Tensor, num_objects: int) -> torch.Tensor:
    """One-hot (N, num_objects) features of integer object ids, for rendering id maps."""
    return torch.nn.functional.one_hot(object_ids.long(), num_objects).float()


_ID_MAPS: OrderedDict[str, torch.Tensor] = OrderedDict()
ID_MAP_CACHE = 48
"""Id maps kept by `render_object_ids` (a 320 x 240 map of int64 is 0.6 MB)."""


def _id_map_key(scene: GaussianScene, cameras: Cameras, view: int, num: int) -> str:
    """A digest of everything an id map depends on: the Gaussians' geometry, opacity and ids,
    and the view's camera."""
    digest = hashlib.sha1(f"{cameras.widths[view]} {cameras.heights[view]} {num}".encode())
    for t in (
        scene.means, scene.quats, scene.log_scales, scene.opacity_logits,
        scene.extras["object_id"], cameras.world_to_camera[view], cameras.K[view],
    ):  # fmt: skip
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def render_object_ids(
    scene: GaussianScene, cameras: Cameras, view: int, num_objects: int | None = None
) -> torch.Tensor:
    """int64 (H, W): the object id covering each pixel of `view` (the largest blended one-hot
    id feature where alpha > 0.5), -1 where nothing does. Needs `extras["object_id"]`.

    Maps are remembered by a digest of the Gaussians and the camera (the synthetic benchmark
    asks for each view's map from four writers; the digest costs far less than the render)."""
    from .render import RenderConfig, render

    ids = scene.extras["object_id"].long()
    num = int(ids.max()) + 1 if num_objects is None else num_objects
    key = _id_map_key(scene, cameras, view, num)
    if key in _ID_MAPS:
        _ID_MAPS.move_to_end(key)
        return _ID_MAPS[key].clone()
    out = render(scene, cameras[view], object_id_features(ids, num), RenderConfig(rgb=False))
    assert out.features is not None
    labels = out.features[0].argmax(-1)
    result = torch.where(out.alpha[0] > 0.5, labels, torch.full_like(labels, -1)).cpu()
    _ID_MAPS[key] = result.clone()
    while len(_ID_MAPS) > ID_MAP_CACHE:
        _ID_MAPS.popitem(last=False)
    return result


def write_demo_scene(
    folder: str | Path,
    width: int = 320,
    height: int = 240,
    spacing: float = 0.0055,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write the demo as a normal scene folder: point_cloud.ply (with an `object_id` field),
    cameras.json, objects.json and images/view_NNN.png rendered from every camera."""
    from tqdm import tqdm

    from .io_images import save_image
    from .load import Scene, save_scene
    from .render import RenderConfig, render

    folder = Path(folder)
    gaussians = build_demo_gaussians(spacing, seed)
    cameras = demo_cameras(width, height)
    scene = Scene(
        gaussians, cameras, folder, folder / "point_cloud.ply", objects=demo_object_names()
    )
    save_scene(scene, folder)
    background = RenderConfig(background=(1.0, 1.0, 1.0))
    for i in tqdm(range(len(cameras)), desc="render demo views", unit="view", disable=not progress):
        out = render(gaussians, cameras[i], config=background)
        save_image(folder / "images" / f"{cameras.names[i]}.png", out.rgb[0])  # type: ignore[index]
    return folder
