"""`omnivision demo`: the main job on the embedded demo scene, offline and without model weights.

Today: write the demo scene, render RGB / depth / object ids from a few of its cameras into one
overview image, and export it for web viewers. Later stages (lifting, queries) extend this job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from omnivision.scenes.demo import object_id_features, write_demo_scene
from omnivision.scenes.io_images import colorize, save_image, to_uint8
from omnivision.scenes.io_ply import write_splat
from omnivision.scenes.load import load_scene
from omnivision.scenes.render import RenderConfig, render


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    """Folder for everything the demo writes."""
    views: tuple[int, ...] = (0, 4, 14)
    """Cameras shown in the overview image."""


def id_colours(num: int) -> torch.Tensor:
    from matplotlib import colormaps

    return torch.tensor(colormaps["tab10"](np.arange(num) % 10)[:, :3], dtype=torch.float32)


def main(argv: list[str], prog: str) -> int:
    cfg: DemoConfig = tyro.cli(
        DemoConfig,
        args=argv,
        prog=prog,
        description="Run the main job on the embedded demo scene (offline, no weights).\n\n"
        "example: omnivision demo --out demo_out",
    )
    start = time.perf_counter()
    scene_dir = write_demo_scene(cfg.out / "scene", progress=True)
    scene = load_scene(scene_dir)
    assert scene.cameras is not None
    gaussians, cameras = scene.gaussians, scene.cameras
    palette = id_colours(max(scene.objects) + 1)
    onehot = object_id_features(gaussians.extras["object_id"], len(palette))
    rows = []
    for view in cfg.views:
        out = render(gaussians, cameras[view], onehot, RenderConfig(background=(1.0, 1.0, 1.0)))
        seen = out.alpha[0] > 0.5
        assert out.features is not None and out.rgb is not None
        ids = palette[out.features[0].argmax(-1)] * seen[..., None]
        rows.append(
            np.concatenate(
                [to_uint8(out.rgb[0]), colorize(out.depth[0], seen), to_uint8(ids)],
                axis=1,  # type: ignore[index]
            )
        )
    overview = save_image(cfg.out / "overview.png", np.concatenate(rows, axis=0))
    splat = write_splat(gaussians, cfg.out / "demo.splat")
    print(f"\nscene     : {scene_dir} ({len(gaussians)} Gaussians, {len(cameras)} views)")
    print(f"objects   : {', '.join(scene.objects.values())}")
    print(
        f"overview  : {overview} (rows: views {list(cfg.views)}; columns: rgb, depth, object ids)"
    )
    print(f"web splat : {splat}")
    print(f"time      : {time.perf_counter() - start:.1f} s")
    print(f"\nnext: omnivision render {scene_dir} --all --out {cfg.out / 'renders'}")
    return 0
