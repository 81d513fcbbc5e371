"""Scene nodes the viewer draws besides the splats: pose helpers for the scene cameras, the
camera a browser reports, and each browser's own markers (SAM points, lasso corners) and
selection volume. viser is imported lazily (`rotation_wxyz`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from omnivision.scenes.cameras import Cameras

from .geometry import pinhole_camera
from .panels import ClientPanel


def camera_to_world(cameras: Cameras, i: int) -> np.ndarray:
    return np.linalg.inv(cameras.world_to_camera[i].double().numpy())


def vertical_fov(cameras: Cameras, i: int) -> float:
    return 2 * math.atan(0.5 * cameras.heights[i] / float(cameras.K[i, 1, 1]))


def scene_up(cameras: Cameras) -> np.ndarray:
    """World up: the mean of the cameras' up vectors (-y of OpenCV cameras), +z if they cancel."""
    c2w = torch.linalg.inv(cameras.world_to_camera.double()).numpy()
    up = -c2w[:, :3, 1].mean(axis=0)
    norm = float(np.linalg.norm(up))
    return up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def client_camera(client: Any) -> Cameras:
    """The OpenCV camera of a browser's current view (its canvas size, or 720 px high)."""
    camera = client.camera
    height = int(camera.image_height) or 720
    width = int(camera.image_width) or round(height * float(camera.aspect))
    return pinhole_camera(camera.position, camera.wxyz, float(camera.fov), width, height)


def rotation_wxyz(rotation: np.ndarray) -> tuple[float, float, float, float]:
    import viser.transforms as tf

    w, x, y, z = tf.SO3.from_matrix(rotation).wxyz
    return float(w), float(x), float(y), float(z)


def draw_markers(panel: ClientPanel, size: float) -> None:
    """Draw `client`'s SAM prompt points (green +, red -) and lasso corners (yellow) where
    they met the scene (points `size` wide), seen only by that browser; remove them when the
    prompt is gone."""
    if panel.client is None:
        return
    session = panel.session
    prompts: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"sam": None, "lasso": None}
    if session.sam_prompt is not None:
        positive = session.sam_prompt.labels.numpy()[:, None] == 1
        colours = np.where(positive, [[40, 220, 60]], [[230, 30, 30]])
        prompts["sam"] = (session.sam_prompt.world, colours)
    if session.lasso is not None:
        colours = np.tile([[250, 210, 0]], (len(session.lasso.world), 1))
        prompts["lasso"] = (session.lasso.world, colours)
    for name, prompt in prompts.items():
        old = panel.markers.pop(name, None)
        if old is not None:
            old.remove()
        if prompt is None:
            continue
        world, colours = prompt
        met = ~np.isnan(world).any(axis=1)
        if met.any():
            panel.markers[name] = panel.client.scene.add_point_cloud(
                f"/{name}_points",
                points=world[met].astype(np.float32),
                colors=colours[met].astype(np.uint8),
                point_size=size,
                point_shape="circle",
                precision="float32",
            )


def draw_volume(panel: ClientPanel) -> None:
    """Draw a browser's selection volume (wireframe box or sphere) under its gizmo."""
    if panel.gizmo is None or panel.client is None:
        return
    volume = panel.session.volume
    panel.gizmo.position, panel.gizmo.wxyz = volume.centre, volume.wxyz
    if panel.volume_node is not None:
        panel.volume_node.remove()
    scene = panel.client.scene
    if volume.shape == "sphere":
        panel.volume_node = scene.add_icosphere(
            "/volume/shape", radius=volume.size[0], color=(250, 210, 0), wireframe=True
        )
    else:
        dimensions = tuple(2 * v for v in volume.size)
        panel.volume_node = scene.add_box(
            "/volume/shape", color=(250, 210, 0), dimensions=dimensions, wireframe=True
        )
