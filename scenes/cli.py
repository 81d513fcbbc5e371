"""Command-line edge of `scenes`: demo-scene, info, render, export. Configs are dataclasses read by tyro."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from .errors import SceneError
from .load import SIDECAR_SUFFIXES, WRITE_SUFFIXES, load_scene, write_gaussians, write_suffix

SceneArg = Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE")]


def _parse(cls, argv: list[str], prog: str, description: str):
    return tyro.cli(cls, args=argv, prog=prog, description=description)


@dataclass
class DemoSceneConfig:
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT_DIR")]
    """Folder to write (created if missing)."""
    width: int = 320
    """Width of the rendered views."""
    height: int = 240
    """Height of the rendered views."""
    spacing: float = 0.0055
    """Distance between neighbouring Gaussians on a surface (metres); smaller = more Gaussians."""
    seed: int = 0


def demo_scene_main(argv: list[str], prog: str) -> int:
    from .demo import write_demo_scene

    cfg: DemoSceneConfig = _parse(
        DemoSceneConfig,
        argv,
        prog,
        "Write the procedural tabletop demo scene (8 named objects, ~29k Gaussians, 18 cameras) as a\n"
        "normal scene folder: point_cloud.ply (with object_id), cameras.json, objects.json, images/.\n\n"
        "example: omnivision demo-scene demo/",
    )
    write_demo_scene(cfg.out, cfg.width, cfg.height, cfg.spacing, cfg.seed, progress=True)
    scene = load_scene(cfg.out)
    print(
        f"wrote {cfg.out}: {len(scene.gaussians)} Gaussians, {len(scene.objects)} objects, "
        f"{len(scene.cameras or [])} views in {cfg.out / 'images'}"
    )
    return 0


@dataclass
class InfoConfig:
    scene: SceneArg
    """Scene folder or file (.ply, .splat, .npz, ckpt .pt)."""


def info_main(argv: list[str], prog: str) -> int:
    cfg: InfoConfig = _parse(
        InfoConfig, argv, prog, "Summarise a scene.\n\nexample: omnivision info demo/"
    )
    scene = load_scene(cfg.scene)
    g = scene.gaussians
    lo, hi = g.means.min(0).values.tolist(), g.means.max(0).values.tolist()
    print(f"gaussians : {len(g)} from {scene.gaussians_file}")
    print(f"sh degree : {g.sh_degree}")
    print(f"bounds    : min {[round(v, 4) for v in lo]} max {[round(v, 4) for v in hi]}")
    print(f"extras    : {', '.join(g.extras) or '-'}")
    if scene.cameras is None:
        print("cameras   : none (render with --orbit N)")
    else:
        sizes = sorted(set(zip(scene.cameras.widths, scene.cameras.heights, strict=True)))
        photos = "with photos" if scene.cameras.image_paths else "no photos"
        print(
            f"cameras   : {len(scene.cameras)} from {scene.cameras_file} ({photos}); sizes {sizes[:4]}"
        )
    if scene.objects:
        print(f"objects   : {', '.join(f'{k}={v}' for k, v in sorted(scene.objects.items()))}")
    for note in scene.notes:
        print(f"note      : {note}")
    return 0


@dataclass
class RenderCommandConfig:
    scene: SceneArg
    """Scene folder or file."""
    view: int = 0
    """Camera index to render."""
    out: Path = Path("render.png")
    """Output PNG (one view) or output folder (with --all)."""
    all: bool = False
    """Render every camera into the --out folder, one PNG per view."""
    kind: Literal["rgb", "depth", "alpha"] = "rgb"
    """What to write: colour, depth (turbo colour map), or accumulated opacity."""
    orbit: int = 0
    """For scenes without cameras: render an orbit of this many views around the Gaussians."""
    width: int | None = None
    """Resize the cameras to this width (height follows the aspect ratio unless --height is given)."""
    height: int | None = None
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """auto = gsplat on CUDA, our torch renderer on CPU."""
    device: str | None = None
    """cpu, cuda, cuda:1... (default: cuda when available)."""


def render_main(argv: list[str], prog: str) -> int:
    from tqdm import tqdm

    from .io_images import colorize, save_image
    from .render import RenderConfig, render

    cfg: RenderCommandConfig = _parse(
        RenderCommandConfig,
        argv,
        prog,
        "Render views of a scene with the scene's cameras (or an orbit).\n\n"
        "examples:\n  omnivision render demo/ --view 3 --out view3.png\n"
        "  omnivision render demo/ --all --out renders/ --kind depth\n"
        "  omnivision render donut/fused.ply --orbit 8 --all --out donut_views/",
    )
    for flag, value in (("--width", cfg.width), ("--height", cfg.height)):
        if value is not None and value <= 0:
            raise SceneError(cfg.scene, f"{flag} {value}: want a positive number of pixels")
    if cfg.orbit < 0:
        raise SceneError(cfg.scene, f"--orbit {cfg.orbit}: want a number of views (0: off)")
    scene = load_scene(cfg.scene, orbit_views=cfg.orbit or None)
    if scene.cameras is None:
        raise SceneError(
            cfg.scene,
            "scene has no cameras (cameras.json, sparse/0, transforms.json); pass --orbit N",
        )
    cameras = scene.cameras
    if cfg.width or cfg.height:
        w = cfg.width or max(1, round(cameras.widths[0] * cfg.height / cameras.heights[0]))  # type: ignore[operator]
        h = cfg.height or max(1, round(cameras.heights[0] * w / cameras.widths[0]))
        cameras = cameras.resized(w, h)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gaussians = scene.gaussians.to(device)
    config = RenderConfig(backend=cfg.backend, background=cfg.background, rgb=cfg.kind == "rgb")
    if cfg.all:
        views = list(range(len(cameras)))
    else:
        if not -len(cameras) <= cfg.view < len(cameras):
            raise SceneError(
                cfg.scene, f"--view {cfg.view} out of range: the scene has {len(cameras)} cameras"
            )
        views = [cfg.view % len(cameras)]
    for i in tqdm(views, desc="render", unit="view", disable=len(views) == 1):
        out = render(gaussians, cameras[i], config=config)
        if cfg.kind == "rgb":
            image = out.rgb[0]  # type: ignore[index]
        elif cfg.kind == "depth":
            image = colorize(out.depth[0], out.alpha[0] > 0.5)
        else:
            image = out.alpha[0]
        path = cfg.out / f"{cameras.names[i]}.png" if cfg.all else cfg.out
        save_image(path, image)
    print(f"wrote {len(views)} {cfg.kind} image(s) to {cfg.out}")
    return 0


@dataclass
class ExportConfig:
    scene: SceneArg
    """Scene folder or file."""
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output file: .ply (INRIA layout, lossless), .glb / .gltf (KHR_gaussian_splatting, float32),
    or lossy: .splat (32-byte web format), .spz (Niantic, v3), .compressed.ply and .sog
    (PlayCanvas/SuperSplat). Integer per-Gaussian fields (object_id, class_id, selected) are .ply
    vertex properties and glTF `_NAME` attributes; beside the other formats a sidecar
    OUT.semantics.safetensors + OUT.semantics.json that load_scene reads back."""


def export_main(argv: list[str], prog: str) -> int:
    from .semantics import semantic_fields, sidecar_paths

    cfg: ExportConfig = _parse(
        ExportConfig,
        argv,
        prog,
        "Write a scene's Gaussians as INRIA .ply, .splat, .spz, .compressed.ply, .sog or glTF\n"
        "(.glb / .gltf with KHR_gaussian_splatting), chosen by the name of OUT.\n\n"
        "examples:\n  omnivision export demo/ demo.spz\n  omnivision export demo/ demo.glb",
    )
    kind = write_suffix(cfg.out)
    if kind not in WRITE_SUFFIXES:
        raise SceneError(cfg.out, f"output must end in {', '.join(WRITE_SUFFIXES)}")
    scene = load_scene(cfg.scene)
    write_gaussians(scene.gaussians, cfg.out, source=scene.gaussians_file)
    print(f"wrote {len(scene.gaussians)} Gaussians to {cfg.out}")
    sidecar = sidecar_paths(cfg.out)[1]
    if kind in SIDECAR_SUFFIXES and sidecar.is_file():
        print(f"wrote {', '.join(semantic_fields(scene.gaussians))} to {sidecar} (+ .safetensors)")
    return 0
