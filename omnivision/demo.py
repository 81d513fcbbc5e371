"""`omnivision demo`: the main job on the embedded demo scene, offline and without model weights.

Writes the demo scene, renders RGB / depth / object ids from a few cameras into one overview,
lifts weight-free colour features onto the Gaussians (LUDVIG aggregation), then answers one query
by example: a click on the red mug in view 0 selects the Gaussians whose lifted features match the
rendered feature under the click, shown highlighted in another view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from omnivision.lift.cli import lift_main
from omnivision.lift.store import load_features
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


@dataclass
class QueryShown:
    image: Path
    click: tuple[int, int]
    selected: int
    name: str
    iou: float


def query_by_click(gaussians, cameras, features, objects, path: Path, obj: int = 1) -> QueryShown:
    """Click the centre of object `obj` in view 0, select Gaussians whose lifted feature is close to
    the rendered feature under the click (`query.exemplar_scores`, Otsu threshold on the cosine),
    highlight them in view 4."""
    from omnivision.query.queries import exemplar_scores
    from omnivision.twod.localize import otsu_threshold

    ids = gaussians.extras["object_id"]
    w2c, K = cameras.world_to_camera[0], cameras.K[0]
    centre = gaussians.means[ids == obj].mean(0)
    cam = w2c[:3, :3] @ centre + w2c[:3, 3]
    u, v = (K @ cam)[:2] / cam[2]
    click = (int(u), int(v))
    similarity = exemplar_scores(gaussians, cameras, 0, features, xy=click)
    selected = similarity > otsu_threshold(similarity)
    highlighted = gaussians.clone()
    grey = highlighted.sh[:, 0].mean(-1, keepdim=True)
    highlighted.sh[:, 0] = torch.where(selected[:, None], highlighted.sh[:, 0], 0.35 * grey - 1.0)
    highlighted.sh[selected, 0] = torch.tensor([3.0, -1.5, 3.0])  # magenta
    before = render(gaussians, cameras[4], config=RenderConfig(background=(1.0, 1.0, 1.0)))
    after = render(highlighted, cameras[4], config=RenderConfig(background=(1.0, 1.0, 1.0)))
    assert before.rgb is not None and after.rgb is not None
    clicked = render(gaussians, cameras[0], config=RenderConfig(background=(1.0, 1.0, 1.0))).rgb
    assert clicked is not None
    photo = to_uint8(clicked[0])
    photo[max(click[1] - 3, 0) : click[1] + 4, max(click[0] - 3, 0) : click[0] + 4] = (255, 0, 255)
    image = save_image(
        path, np.concatenate([photo, to_uint8(before.rgb[0]), to_uint8(after.rgb[0])], axis=1)
    )
    truth = ids == obj
    iou = float((selected & truth).sum() / (selected | truth).sum())
    return QueryShown(image, click, int(selected.sum()), objects.get(obj, str(obj)), iou)


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

    # The real `omnivision-lift` path: features land in scene/omnivision/ for query and view.
    lift_main([str(scene_dir), "--features", "colour", "--force"], "omnivision-lift")
    lifted = load_features(scene_dir / "omnivision", "colour", scene_file=scene.gaussians_file)
    query = query_by_click(
        gaussians, cameras, lifted.features, scene.objects, cfg.out / "query.png"
    )
    print(f"\nscene     : {scene_dir} ({len(gaussians)} Gaussians, {len(cameras)} views)")
    print(f"objects   : {', '.join(scene.objects.values())}")
    print(
        f"overview  : {overview} (rows: views {list(cfg.views)}; columns: rgb, depth, object ids)"
    )
    print(f"web splat : {splat}")
    print(
        f"lifted    : colour features ({lifted.features.shape[1]} dims) onto "
        f"{100 * float(lifted.seen.float().mean()):.1f}% of the Gaussians from "
        f"{len(lifted.entry['views'])} views in {lifted.entry['seconds']:.1f} s"
    )
    print(
        f"query     : {query.image} (click {query.click} on view 0 -> {query.selected} Gaussians "
        f"selected; IoU with the true '{query.name}' Gaussians {query.iou:.2f})"
    )
    print(f"time      : {time.perf_counter() - start:.1f} s")
    x, y = query.click
    print(f"\nnext: omnivision view {scene_dir}     # the web viewer: query, select, edit, export")
    print(
        f"      omnivision query {scene_dir} --exemplar 0:{x},{y} --then recolor=#00ff00 "
        f"--out {cfg.out / 'green_mug.ply'}"
    )
    print(f"      omnivision render {scene_dir} --all --out {cfg.out / 'renders'}")
    return 0
