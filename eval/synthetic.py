"""The synthetic benchmark that ships: the demo scene with LERF-OVS-layout labels, NVOS- and
SPIn-NeRF-layout prompts and masks, and a tiny CLIP and text bridge trained for the scene, so the
whole language path runs offline on models whose image and text towers agree.

Labels come from the rendered object ids of the evaluation views (`train_clip.EVAL_VIEWS`, never
used for training): each visible connected part of an object becomes one labelled object whose
polygon is the part's outer contour (marching squares through `contourpy`, matplotlib's contour
engine) and whose box is the part's pixel bounds; a category's parts are merged by the reader.
Categories are the object names plus the two-word phrases in `train_clip.CATEGORIES`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from omnivision.scenes.demo import object_id_features, render_object_ids, write_demo_scene

from .lerf_labels import CategoryLabel, LabelFrame, write_label_file
from .runs import replace_folder

MIN_PART_PIXELS = 30
"""Visible parts smaller than this (pixels) are not labelled (a sliver behind another object)."""


def mask_parts(mask: np.ndarray, min_pixels: int = MIN_PART_PIXELS) -> list[np.ndarray]:
    """The connected parts (8-connected) of a bool mask with at least `min_pixels` pixels."""
    from scipy.ndimage import label

    labelled, count = label(mask, structure=np.ones((3, 3)))  # type: ignore[misc]
    parts = [labelled == i for i in range(1, int(count) + 1)]
    return [p for p in parts if p.sum() >= min_pixels]


def outer_polygon(part: np.ndarray) -> list[tuple[float, float]]:
    """The outer contour of one connected part, (x, y) pixel vertices: the 0.75 level line of the
    mask (a quarter pixel inside the boundary between pixel centres), shifted by +0.5, so that
    filling the polygon as LangSplat does (integer-truncated vertices) gives back the part's
    pixels exactly for parts without holes (tests/test_eval_lerf.py); a polygon cannot hold a
    hole, so the torus's and the mug's openings are labelled as object, as a person drawing the
    polygon would."""
    from contourpy import LineType, contour_generator

    padded = np.pad(part.astype(np.float64), 1)
    lines = contour_generator(z=padded, line_type=LineType.Separate).lines(0.75)
    best: list[tuple[float, float]] = []
    best_area = -1.0
    for line in lines:  # type: ignore[union-attr]
        points = np.asarray(line, dtype=np.float64)
        xs, ys = points[:, 0] - 1 + 0.5, points[:, 1] - 1 + 0.5
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        if area > best_area:
            best, best_area = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)], area
    return best


def label_frame(
    ids: np.ndarray, name: str, categories: dict[str, int], path: Path | None = None
) -> LabelFrame:
    """The LERF-OVS labels of one view from its id map."""
    H, W = ids.shape
    frame = LabelFrame(path or Path(f"{Path(name).stem}.json"), name, W, H)
    for category, object_id in categories.items():
        for part in mask_parts(ids == object_id):
            polygon = outer_polygon(part)
            if len(polygon) < 3:
                continue
            rows, cols = np.nonzero(part)
            box = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
            label = frame.categories.setdefault(category, CategoryLabel([], []))
            label.boxes.append(box)
            label.polygons.append(polygon)
    return frame


def write_lerf_labels(
    scene_dir: Path, out: Path, views: tuple[int, ...], categories: dict[str, int]
) -> list[Path]:
    """`out/<view name>.json` for each view (LERF-OVS layout) and the frame's image beside it
    (LangSplat's label folders hold the frame images too)."""
    from .train_clip import load_demo_scene

    scene = load_demo_scene(scene_dir)
    cameras = scene.cameras
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for view in views:
        name = f"{cameras.names[view]}.png"
        path = out / f"{cameras.names[view]}.json"
        frame = label_frame(
            render_object_ids(scene.gaussians, cameras, view).numpy(), name, categories, path
        )
        write_label_file(path, frame)
        if cameras.image_paths is not None:
            shutil.copyfile(cameras.image_paths[view], out / name)
        written.append(path)
    return written


def write_id_pngs(scene_dir: Path, out: Path) -> Path:
    """One label PNG per view (pixel = object id + 1, 0 = nothing): class-agnostic masks that
    stand in for SAM 2's automatic masks (`omnivision-lift --features clip-masks:DIR`)."""
    from PIL import Image

    from .train_clip import load_demo_scene

    scene = load_demo_scene(scene_dir)
    out.mkdir(parents=True, exist_ok=True)
    for view, name in enumerate(scene.cameras.names):
        ids = render_object_ids(scene.gaussians, scene.cameras, view).numpy()
        Image.fromarray((ids + 1).astype(np.uint8)).save(out / f"{Path(name).stem}.png")
    return out


def make_synthetic(
    out: Path, seed: int = 0, progress: bool = True, clip_steps: int | None = None
) -> dict[str, Path]:
    """Write (or reuse) the whole synthetic benchmark under `out`; returns its parts' paths.

    out/scene (+ scene/ids: per-view object-id PNGs), out/lerf_labels, out/nvos, out/spinnerf,
    out/models/clip, out/models/bridge. Each part is skipped when already complete (the models
    check their own training fingerprint), so a second run costs seconds."""
    from .seg3d import write_nvos, write_spinnerf
    from .train_clip import (
        CATEGORIES,
        CLIP_STEPS,
        EVAL_VIEWS,
        train_scene_bridge,
        train_scene_clip,
    )

    out = Path(out)
    paths = {
        "scene": out / "scene",
        "ids": out / "scene" / "ids",
        "labels": out / "lerf_labels",
        "nvos": out / "nvos",
        "spinnerf": out / "spinnerf",
        "clip": out / "models" / "clip",
        "bridge": out / "models" / "bridge",
    }
    if not (paths["scene"] / "point_cloud.ply").is_file():
        replace_folder(
            paths["scene"], lambda tmp: write_demo_scene(tmp, seed=seed, progress=progress)
        )
    if not paths["ids"].is_dir():
        replace_folder(paths["ids"], lambda tmp: write_id_pngs(paths["scene"], tmp))
    if not paths["labels"].is_dir():
        replace_folder(
            paths["labels"],
            lambda tmp: write_lerf_labels(paths["scene"], tmp, EVAL_VIEWS, CATEGORIES),
        )
    if not paths["nvos"].is_dir():
        replace_folder(paths["nvos"], lambda tmp: write_nvos(paths["scene"], tmp))
    if not paths["spinnerf"].is_dir():
        replace_folder(paths["spinnerf"], lambda tmp: write_spinnerf(paths["scene"], tmp))
    steps = CLIP_STEPS if clip_steps is None else clip_steps
    train_scene_clip(paths["scene"], paths["clip"], seed=seed, steps=steps, progress=progress)
    train_scene_bridge(paths["scene"], paths["clip"], paths["bridge"], seed=seed, progress=progress)
    (out / "benchmark.json").write_text(
        json.dumps(
            {
                "eval_views": list(EVAL_VIEWS),
                "categories": CATEGORIES,
                **{k: str(v.relative_to(out)) for k, v in paths.items()},
            },
            indent=1,
        )
    )
    return paths


SMOOTH = 10
"""Box-filter side for the 320 x 240 demo frames: LangSplat's 30 px at LERF-OVS's ~986 px wide
frames, scaled to the same fraction of the frame."""
LERF_PATHS = ("pyramid", "masks", "bridge")
"""The language paths the synthetic benchmark scores (plus `oracle`)."""


def oracle_text_space(categories: dict[str, int], num_ids: int):
    """Phrases -> one-hot object ids (negatives -> the uniform vector): with one-hot id features
    this scores the protocols themselves, free of any model."""
    import torch.nn.functional as F

    uniform = F.normalize(torch.ones(num_ids), dim=0)

    def text(phrases):
        return torch.stack(
            [
                F.one_hot(torch.tensor(categories[p]), num_ids).float()
                if p in categories
                else uniform
                for p in phrases
            ]
        )

    return text


def run_synthetic(
    out: Path, seed: int = 0, clip_steps: int | None = None, progress: bool = True
) -> dict[str, dict]:
    """make-synthetic, then lift and score every path; runs in out/runs/, report in out/report.md.
    Returns each run's metrics.json content by run name."""

    from omnivision.lift.cli import lift_main

    from .cli import lerf_main
    from .lerf import LerfConfig, Level, evaluate_lerf
    from .lerf_labels import read_labels
    from .report import report_main
    from .seg3d import seg3d_main
    from .train_clip import CATEGORIES, load_demo_scene

    out = Path(out)
    paths = make_synthetic(out, seed=seed, progress=progress, clip_steps=clip_steps)
    scene_dir, clip_dir = paths["scene"], paths["clip"]
    clip = ["--clip", str(clip_dir), "--clip-pretrained", "None"]
    lift_main([str(scene_dir), "--features", "clip-pyramid", *clip], "omnivision-lift")
    lift_main(
        [str(scene_dir), "--features", f"clip-masks:{paths['ids']}", *clip], "omnivision-lift"
    )
    lift_main([str(scene_dir), "--features", "colour"], "omnivision-lift")
    runs = out / "runs"
    common = ["--labels", str(paths["labels"]), "--smooth", str(SMOOTH), "--scene-name", "demo"]
    lerf_main(
        [str(scene_dir), "--features", "clip-pyramid", *common, "--out", str(runs / "pyramid")], ""
    )
    lerf_main(
        [str(scene_dir), "--features", "clip-masks", *common, "--out", str(runs / "masks")], ""
    )
    lerf_main(
        [str(scene_dir), "--features", "colour", "--bridge", str(paths["bridge"]), *common,
         "--out", str(runs / "bridge")],
        "",
    )  # fmt: skip
    scene = load_demo_scene(scene_dir)
    ids = scene.gaussians.extras["object_id"].long()
    num_ids = int(ids.max()) + 1
    oracle = evaluate_lerf(
        scene.gaussians,
        scene.cameras,
        [Level("oracle-ids", object_id_features(ids, num_ids))],
        oracle_text_space(CATEGORIES, num_ids),
        read_labels(paths["labels"]),
        LerfConfig(smooth=SMOOTH),
    )
    oracle.write(
        runs / "oracle", oracle.metrics("demo", "oracle-ids", "oracle", {"smooth": SMOOTH})
    )
    for bench in ("nvos", "spinnerf"):
        seg3d_main(
            [str(scene_dir), f"--{bench}", str(paths[bench]), "--features", "colour",
             "--out", str(runs / bench)],
            "",
        )  # fmt: skip
    names = ["oracle", *LERF_PATHS, "nvos", "spinnerf"]
    report_main([*(str(runs / n) for n in names), "--out", str(out / "report.md")], "")
    return {n: json.loads((runs / n / "metrics.json").read_text()) for n in names}
