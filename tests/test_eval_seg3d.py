"""`omnivision eval seg3d`: the NVOS and SPIn-NeRF readers on hand-made files in the published
layouts, the metrics on hand-made masks, bad input, and both benchmarks end to end on the demo
scene (writers -> command) with colour features lifted by the real `omnivision-lift` path."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnivision.eval.seg3d import (
    iou,
    match_view,
    pixel_accuracy,
    read_mask,
    read_nvos,
    read_spinnerf,
    seg3d_main,
    write_nvos,
    write_spinnerf,
)
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.errors import SceneError

pytestmark = pytest.mark.usefixtures("one_thread")

PROG = "omnivision eval seg3d"


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def nvos_tree(root: Path, scene: str = "fern", size: tuple[int, int] = (6, 4)) -> dict:
    """A tiny NVOS layout (as SA3D reads it): RGB-coloured scribbles, a 0/255 target mask."""
    w, h = size
    pos = np.zeros((h, w, 3), np.uint8)
    pos[1, 1:4] = (0, 255, 0)
    neg = np.zeros((h, w, 3), np.uint8)
    neg[3, 4] = (255, 0, 0)
    mask = np.zeros((h, w), np.uint8)
    mask[0:2, 2:5] = 255
    rgb = np.full((h, w, 3), 128, np.uint8)
    png(root / "reference_image" / scene / "IMG_2.JPG", rgb)
    png(root / "masks" / scene / "IMG_1.JPG", rgb)
    png(root / "masks" / scene / "IMG_1_mask.png", mask)
    png(root / "scribbles" / scene / f"pos_0_{scene}.png", pos)
    png(root / "scribbles" / scene / f"neg_0_{scene}.png", neg)
    return {"pos": pos.any(-1), "neg": neg.any(-1), "mask": mask > 0}


def test_nvos_reader_reads_the_published_layout(tmp_path):
    truth = nvos_tree(tmp_path / "labels" / "llff")
    labels = read_nvos(tmp_path)  # the download's labels/llff/ is found too
    assert labels.scene == "fern" and labels.reference == "IMG_2.JPG"
    assert np.array_equal(labels.positive, truth["pos"])
    assert np.array_equal(labels.negative, truth["neg"])
    assert [t.name for t in labels.targets] == ["IMG_1"]
    assert np.array_equal(labels.targets[0].mask, truth["mask"])
    nvos_tree(tmp_path / "labels" / "llff", scene="horns_center")
    with pytest.raises(SceneError, match="several scenes"):
        read_nvos(tmp_path)
    assert read_nvos(tmp_path, fallback="horns_center").scene == "horns_center"
    assert read_nvos(tmp_path, "fern").scene == "fern"


def test_spinnerf_reader_reads_both_layouts(tmp_path):
    """SPIn-NeRF's README layout (0/1 labels under images_N/label) and the MVSeg release as SA3D
    reads it (PNGs in the scene folder, cutout / pseudo files skipped)."""
    label = np.zeros((4, 6), np.uint8)
    label[1:3, 1:3] = 1
    for name in ("IMG_2707", "IMG_2708"):
        png(
            tmp_path / "spin" / "statue" / "images_2" / f"{name}.png", np.zeros((4, 6, 3), np.uint8)
        )
        png(tmp_path / "spin" / "statue" / "images_2" / "label" / f"{name}.png", label)
    labels = read_spinnerf(tmp_path / "spin")
    assert labels.scene == "statue" and [v.name for v in labels.views] == ["IMG_2707", "IMG_2708"]
    assert all(np.array_equal(v.mask, label > 0) for v in labels.views)
    for name in ("a.png", "b.png", "a_cutout.png", "b_pseudo.png"):
        png(tmp_path / "mvseg" / "room" / name, label * 255)
    labels = read_spinnerf(tmp_path / "mvseg", "room")
    assert [v.name for v in labels.views] == ["a", "b"]
    with pytest.raises(SceneError, match="scene not found"):
        read_spinnerf(tmp_path / "mvseg", "fern")


def test_masks_read_as_published(tmp_path):
    """0/1 labels, 0/255 masks, RGB masks and palette masks all give the same bool mask."""
    mask = np.zeros((3, 5), bool)
    mask[1, 1:4] = True
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[mask] = (0, 0, 200)
    palette = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(tmp_path / "p.png")
    for path in (
        png(tmp_path / "01.png", mask.astype(np.uint8)),
        png(tmp_path / "0255.png", mask.astype(np.uint8) * 255),
        png(tmp_path / "rgb.png", rgb),
        tmp_path / "p.png",
    ):
        assert np.array_equal(read_mask(path), mask), path.name


def test_images_match_cameras_with_or_without_extension():
    cams = Cameras(
        torch.eye(4).repeat(3, 1, 1),
        torch.eye(3).repeat(3, 1, 1),
        [6] * 3,
        [4] * 3,
        ["IMG_1.JPG", "IMG_2.JPG", "view_000"],
    )
    assert match_view("IMG_1.JPG", cams, Path("x")) == 0
    assert match_view("IMG_2", cams, Path("x")) == 1
    assert match_view("img_2.png", cams, Path("x")) == 1
    assert match_view("view_000.png", cams, Path("x")) == 2
    with pytest.raises(SceneError, match=r"masks/IMG_9_mask.png: image name 'IMG_9' matches no"):
        match_view("IMG_9", cams, Path("masks/IMG_9_mask.png"))


def test_iou_and_pixel_accuracy_on_hand_made_masks():
    pred = torch.zeros(4, 5, dtype=torch.bool)
    truth = torch.zeros(4, 5, dtype=torch.bool)
    pred[0, 0:4] = True  # 4 pixels
    truth[0, 2:5] = True  # 3 pixels, 2 shared
    assert iou(pred, truth) == pytest.approx(2 / 5)
    assert pixel_accuracy(pred, truth) == pytest.approx(17 / 20)  # 3 pixels differ
    assert iou(pred, pred) == 1.0 and pixel_accuracy(pred, ~pred) == 0.0
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert iou(empty, empty) == 1.0 and pixel_accuracy(empty, empty) == 1.0
    with pytest.raises(ValueError, match="shapes"):
        iou(pred, empty)


# ---------------------------------------------------------------------------------------------
# end to end on the demo scene

LIFT_VIEWS = ("0", "3", "6", "9", "12", "15")
"""Six of the 18 views for the lift (a third of the time; every Gaussian is still seen)."""
SPIN_VIEWS = (0, 4, 8, 13)
"""The prompt view (view_000) and three scored views, one from the high ring."""


@pytest.fixture(scope="module")
def lifted(demo_dir, tmp_path_factory) -> Path:
    """A copy of the demo scene with colour features lifted by `omnivision-lift`."""
    from omnivision.cli import lift_main

    scene = tmp_path_factory.mktemp("seg3d") / "scene"
    shutil.copytree(demo_dir, scene, ignore=shutil.ignore_patterns("omnivision"))
    assert lift_main([str(scene), "--views", *LIFT_VIEWS]) == 0
    return scene


@pytest.fixture(scope="module")
def nvos_root(lifted, tmp_path_factory) -> Path:
    return write_nvos(lifted, tmp_path_factory.mktemp("nvos") / "nvos")


@pytest.fixture(scope="module")
def spin_root(lifted, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spinnerf") / "spinnerf"
    write_spinnerf(lifted, root, views=SPIN_VIEWS)
    return root


def run(scene: Path, *args: str) -> tuple[dict, list[dict]]:
    out = Path(args[args.index("--out") + 1])
    assert seg3d_main([str(scene), *args], PROG) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "per_query.csv") as f:
        return metrics, list(csv.DictReader(f))


def value(metrics: dict, metric: str) -> float:
    (row,) = [r for r in metrics["rows"] if r["metric"] == metric]
    assert (row["protocol"], row["path"]) == ("-", "-") and 0.0 <= row["value"] <= 1.0
    return row["value"]


def test_writers_use_the_published_layouts(nvos_root, spin_root):
    scribbles = nvos_root / "scribbles" / "demo"
    assert sorted(p.name for p in scribbles.iterdir()) == ["neg_0_demo.png", "pos_0_demo.png"]
    assert [p.name for p in (nvos_root / "reference_image" / "demo").iterdir()] == ["view_000.png"]
    assert sorted(p.name for p in (nvos_root / "masks" / "demo").iterdir()) == [
        "view_007.png",
        "view_007_mask.png",
    ]
    labels = read_nvos(nvos_root)
    assert not (labels.positive & labels.negative).any()
    label_dir = spin_root / "demo" / "images" / "label"
    assert sorted(p.name for p in label_dir.iterdir()) == [f"view_{i:03d}.png" for i in SPIN_VIEWS]
    assert set(np.unique(np.asarray(Image.open(label_dir / "view_000.png")))) == {0, 1}


def test_nvos_end_to_end(lifted, nvos_root, tmp_path):
    metrics, rows = run(lifted, "--nvos", str(nvos_root), "--out", str(tmp_path / "run"))
    assert (metrics["benchmark"], metrics["scene"], metrics["features"]) == (
        "nvos",
        "demo",
        "colour",
    )
    assert [r["view"] for r in rows] == ["view_007"]
    # measured 99.6% mIoU, 99.99% accuracy (6-view lift); 4 points of margin
    assert value(metrics, "miou") > 0.95
    assert value(metrics, "pixel_accuracy") > 0.995
    metrics, _ = run(
        lifted, "--nvos", str(nvos_root), "--prompt", "mask", "--out", str(tmp_path / "mask")
    )
    assert value(metrics, "miou") > 0.85  # measured 92.0%: label propagation from the scribbles


def test_spinnerf_end_to_end(lifted, spin_root, tmp_path):
    metrics, rows = run(lifted, "--spinnerf", str(spin_root), "--out", str(tmp_path / "run"))
    assert metrics["benchmark"] == "spinnerf" and metrics["settings"]["prompt_view"] == "view_000"
    assert [r["view"] for r in rows] == [f"view_{i:03d}" for i in SPIN_VIEWS[1:]]
    assert all(float(r["iou"]) > 0.8 for r in rows)
    # measured 94.8% mIoU, 99.9% accuracy (6-view lift); 5 points of margin
    assert value(metrics, "miou") > 0.90
    assert value(metrics, "pixel_accuracy") > 0.99


def copy_nvos(nvos_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "nvos"
    shutil.copytree(nvos_root, root)
    return root


def fails(scene: Path, args: list[str], tmp_path: Path, match: str) -> None:
    out = tmp_path / "run"
    with pytest.raises(SceneError, match=match):
        seg3d_main([str(scene), *args, "--out", str(out)], PROG)
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_bad_input_names_the_file_and_leaves_no_run(lifted, nvos_root, tmp_path):
    root = copy_nvos(nvos_root, tmp_path)
    shutil.rmtree(root / "scribbles")
    fails(
        lifted, ["--nvos", str(root)], tmp_path, r"scribbles/demo: NVOS scribbles folder not found"
    )

    root = copy_nvos(nvos_root, tmp_path / "size")
    pos = root / "scribbles" / "demo" / "pos_0_demo.png"
    Image.open(pos).resize((160, 120)).save(pos)
    fails(
        lifted,
        ["--nvos", str(root)],
        tmp_path,
        r"pos_0_demo.png: is 160x120 but camera 'view_000' is 320x240",
    )

    root = copy_nvos(nvos_root, tmp_path / "name")
    mask = root / "masks" / "demo" / "view_007_mask.png"
    mask.rename(mask.with_name("IMG_4027_mask.png"))
    fails(
        lifted,
        ["--nvos", str(root)],
        tmp_path,
        r"IMG_4027_mask.png: image name 'IMG_4027' matches no camera",
    )

    root = copy_nvos(nvos_root, tmp_path / "empty")
    pos = root / "scribbles" / "demo" / "pos_0_demo.png"
    png(pos, np.zeros((240, 320), np.uint8))
    fails(
        lifted, ["--nvos", str(root)], tmp_path, r"pos_0_demo.png: the positive scribble is empty"
    )

    fails(lifted, [], tmp_path, "exactly one of --nvos ROOT or --spinnerf ROOT")


def test_no_lifted_features_says_to_lift_first(lifted, nvos_root, tmp_path):
    scene = tmp_path / "unlifted"
    shutil.copytree(lifted, scene, ignore=shutil.ignore_patterns("omnivision"))
    fails(scene, ["--nvos", str(nvos_root)], tmp_path, r"no lifted features; run `omnivision-lift")
    fails(lifted, ["--nvos", str(nvos_root), "--features", "dino"], tmp_path, "not found")
