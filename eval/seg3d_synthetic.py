"""The synthetic 3D segmentation benchmark: NVOS scribbles and target masks, and SPIn-NeRF
per-view masks, of one object of the demo scene, in exactly the published layouts (`seg3d.py`),
from the rendered object ids (argmax of one-hot ids where alpha > 0.5).

Scribbles are straight strokes between random pixels of an object's region in the reference view,
3 px wide, with the region eroded first so that they stay inside it: a few positive strokes on the
chosen object, one negative stroke on each other object (and the table) that shows enough of
itself. Deterministic for a seed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnivision.scenes.errors import SceneError

from .train_clip import load_demo_scene

NVOS_OBJECT = 2
"""The blue box: large, seen from every view."""
NVOS_REFERENCE = 0
NVOS_TARGETS = (7,)
"""A view 210 degrees round the ring from the reference: the box's other sides."""
SPINNERF_OBJECT = 1
"""The red mug: a handle and an opening, so the masks are not convex."""
STROKE_MARGIN = 3
"""Pixels between a stroke and the edge of its region (the stroke is 3 px wide)."""
MIN_NEGATIVE_PIXELS = 40
"""Objects showing fewer pixels than this (after erosion) get no negative stroke."""


def object_ids(scene, view: int) -> np.ndarray:
    """int (H, W): the object id covering each pixel of `view` (alpha > 0.5), -1 elsewhere."""
    from omnivision.scenes.demo import render_object_ids

    return render_object_ids(scene.gaussians, scene.cameras, view).numpy()


def strokes(region: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """bool (H, W): `count` straight 3-px strokes between random pixels of `region` eroded by
    `STROKE_MARGIN`, clipped to it (empty when the eroded region is)."""
    from scipy.ndimage import binary_dilation, binary_erosion

    inside = np.asarray(binary_erosion(region, iterations=STROKE_MARGIN), dtype=bool)
    ys, xs = np.nonzero(inside)
    lines = np.zeros_like(inside)
    if len(ys) == 0:
        return lines
    for _ in range(count):
        a, b = rng.choice(len(ys), 2)
        n = int(max(abs(ys[a] - ys[b]), abs(xs[a] - xs[b]))) + 1
        rows = np.linspace(ys[a], ys[b], n).round().astype(int)
        cols = np.linspace(xs[a], xs[b], n).round().astype(int)
        lines[rows, cols] = True
    # 3 px wide: one pixel of dilation, still STROKE_MARGIN - 1 inside the region
    return np.asarray(binary_dilation(lines & inside), dtype=bool)


def _save(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _photo(scene, view: int, path: Path) -> None:
    """The view's photo (the scene's image file when it has one, else a render) as `path`."""
    from omnivision.scenes.io_images import save_image
    from omnivision.scenes.render import RenderConfig, render

    paths = scene.cameras.image_paths
    if (
        paths is not None
        and Path(paths[view]).is_file()
        and Path(paths[view]).suffix == path.suffix
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[view], path)
        return
    out = render(scene.gaussians, scene.cameras[view], config=RenderConfig(background=(1, 1, 1)))
    assert out.rgb is not None
    save_image(path, out.rgb[0])


def write_nvos(
    scene_dir: str | Path,
    out_root: str | Path,
    scene_name: str = "demo",
    object_id: int = NVOS_OBJECT,
    reference_view: int = NVOS_REFERENCE,
    target_views: Sequence[int] = NVOS_TARGETS,
    positive_strokes: int = 3,
    seed: int = 0,
) -> Path:
    """Write the NVOS layout of one scene under `out_root` (returned): reference image,
    positive / negative scribbles on it, and each target view's image and GT mask."""
    scene = load_demo_scene(scene_dir)
    cameras = scene.cameras
    if reference_view in target_views:
        raise ValueError("the target views must differ from the reference view")
    out_root = Path(out_root)
    rng = np.random.default_rng(seed)
    ids = object_ids(scene, reference_view)
    positive = strokes(ids == object_id, positive_strokes, rng)
    if not positive.any():
        raise SceneError(
            scene.root, f"object {object_id} shows too little of itself in view {reference_view}"
        )
    negative = np.zeros_like(positive)
    for other in np.unique(ids):
        if other not in (-1, object_id):
            stroke = strokes(ids == other, 1, rng)
            if stroke.sum() >= MIN_NEGATIVE_PIXELS:
                negative |= stroke
    ref = Path(cameras.names[reference_view]).stem
    _photo(scene, reference_view, out_root / "reference_image" / scene_name / f"{ref}.png")
    scribbles = out_root / "scribbles" / scene_name
    _save(scribbles / f"pos_0_{scene_name}.png", positive.astype(np.uint8) * 255)
    _save(scribbles / f"neg_0_{scene_name}.png", negative.astype(np.uint8) * 255)
    for view in target_views:
        name = Path(cameras.names[view]).stem
        _photo(scene, view, out_root / "masks" / scene_name / f"{name}.png")
        mask = object_ids(scene, view) == object_id
        _save(out_root / "masks" / scene_name / f"{name}_mask.png", mask.astype(np.uint8) * 255)
    return out_root


def write_spinnerf(
    scene_dir: str | Path,
    out_root: str | Path,
    scene_name: str = "demo",
    object_id: int = SPINNERF_OBJECT,
    views: Sequence[int] | None = None,
) -> Path:
    """Write the SPIn-NeRF layout of one scene under `out_root`: `<scene>/images/<view>.png` and
    `<scene>/images/label/<view>.png` (1 on the object, 0 elsewhere) for `views` (default: all;
    full size, so the folder is `images`, as LLFF names factor 1). Returns the scene folder."""
    scene = load_demo_scene(scene_dir)
    folder = Path(out_root) / scene_name / "images"
    for view in range(len(scene.cameras)) if views is None else views:
        name = Path(scene.cameras.names[view]).stem
        _photo(scene, view, folder / f"{name}.png")
        mask = object_ids(scene, view) == object_id
        _save(folder / "label" / f"{name}.png", mask.astype(np.uint8))
    return folder.parent


__all__ = ["object_ids", "strokes", "write_nvos", "write_spinnerf"]
