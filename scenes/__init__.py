"""scenes: what a 3DGS scene is. Load it (INRIA/gsplat ply, gsplat checkpoints, COLMAP,
cameras.json, transforms.json, gsplat npz), render RGB/depth/alpha/features on CPU or CUDA, and
write it back (.ply, .splat). Imports nothing else of omnivision."""

from .cameras import Cameras, orbit_around_points, orbit_cameras
from .errors import SceneError
from .gaussians import GaussianScene
from .io_ply import read_ply, read_splat, write_ply, write_splat
from .load import Scene, load_scene, save_scene
from .render import RenderConfig, RenderOutput, ViewWeights, accumulate, blend_weights, render

__all__ = [
    "Cameras",
    "GaussianScene",
    "RenderConfig",
    "RenderOutput",
    "Scene",
    "SceneError",
    "ViewWeights",
    "accumulate",
    "blend_weights",
    "load_scene",
    "orbit_around_points",
    "orbit_cameras",
    "read_ply",
    "read_splat",
    "render",
    "save_scene",
    "write_ply",
    "write_splat",
]
