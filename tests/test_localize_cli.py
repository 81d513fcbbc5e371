"""`omnivision localize` as a user runs it: files written, COCO JSON readable, clear errors (in this
process: tests/cli_run.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_run import omnivision
from conftest import data_path
from PIL import Image
from test_localize import shapes_image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    image, _ = shapes_image()
    pixels = (image.numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "shapes.png")
    Image.fromarray(pixels[40:136, 40:136]).save(folder / "crop.png")
    (folder / "targets").mkdir()
    Image.fromarray(pixels).save(folder / "targets" / "a.png")
    Image.fromarray(pixels[:, ::-1].copy()).save(folder / "targets" / "b.jpg")
    return folder


def test_localize_folder_writes_overlays_masks_and_coco(shapes, tmp_path):
    from pycocotools import mask as mask_utils

    out = omnivision(
        "localize", "--ref", str(shapes / "crop.png"), "--box", "20,20,76,76",
        "--target", str(shapes / "targets"), "--backbone", "colour", "--sam", "none", "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "found 8 instance(s) in 2 image(s)" in out.stdout
    for stem in ("a", "b"):
        assert (tmp_path / f"{stem}_overlay.png").is_file() and (
            tmp_path / f"{stem}_heatmap.png"
        ).is_file()
        assert len(list(tmp_path.glob(f"{stem}_mask_*.png"))) == 4
    coco = json.loads((tmp_path / "detections.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.jpg"]
    assert len(coco["annotations"]) == 8
    ann = coco["annotations"][0]
    decoded = mask_utils.decode(
        {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]}
    )
    assert decoded.shape == (480, 640) and decoded.sum() == ann["area"]
    x, y, w, h = ann["bbox"]
    assert w == pytest.approx(56, abs=4) and h == pytest.approx(56, abs=4)


def test_localize_with_a_sam2_checkpoint(shapes, tmp_path):
    """The SAM 2 path end to end with a tiny random checkpoint loaded as a user's .pt + config."""
    from omnivision.twod.sam import build_tiny_sam2_checkpoint

    ckpt, config = build_tiny_sam2_checkpoint(tmp_path / "sam")
    out = omnivision(
        "localize", "--ref", str(shapes / "crop.png"), "--click", "48,48",
        "--target", str(shapes / "shapes.png"), "--backbone", "colour",
        "--sam", str(ckpt), "--sam-config", str(config), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    masks = sorted((tmp_path / "out").glob("shapes_mask_*.png"))
    assert len(masks) == 4
    with Image.open(masks[0]) as im:
        assert im.size == (640, 480)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ref", "{notes}", "--click", "1,1", "--target", "{shapes}"],
            "notes.txt: not a readable image",
        ),
        (
            ["--ref", "{crop}", "--click", "500,20", "--target", "{shapes}"],
            "reference point (500, 20) is outside the 96x96 image",
        ),
        (["--ref", "{crop}", "--click", "5,5", "--target", "{empty}"], "folder has no images"),
        (["--ref", "{crop}", "--target", "{shapes}"], "give the reference as --click"),
        (["--ref", "{crop}", "--box", "10,10,5,5", "--target", "{shapes}"], "X2 must exceed X1"),
        (
            [
                "--ref",
                "{crop}",
                "--click",
                "5,5",
                "--target",
                "{shapes}",
                "--backbone",
                "dinov3-vitb16",
            ],
            "--backbone colour",
        ),
    ],
)
def test_bad_localize_input_is_one_line_exit_2(shapes, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    subs = {
        "{notes}": str(tmp_path / "notes.txt"), "{crop}": str(shapes / "crop.png"),
        "{shapes}": str(shapes / "shapes.png"), "{empty}": str(tmp_path / "empty"),
    }  # fmt: skip
    argv = [subs.get(a, a) for a in args]
    if "--backbone" not in argv:
        argv += ["--backbone", "colour"]
    out = omnivision("localize", *argv, "--sam", "none", "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_localize_real_photo_runs_end_to_end(tmp_path):
    """truck.jpg with the notebook's wheel box as reference, the colour backend, no SAM."""
    truck = data_path("images", "truck.jpg")
    out = omnivision(
        "localize", "--ref", str(truck), "--box", "425,600,700,875", "--target", str(truck),
        "--backbone", "colour", "--short-side", "224", "--sam", "none", "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    coco = json.loads((tmp_path / "detections.json").read_text())
    boxes = [a["bbox"] for a in coco["annotations"]]
    # The reference region itself is found: some box overlaps the wheel box.
    assert any(x < 700 and x + w > 425 and y < 875 and y + h > 600 for x, y, w, h in boxes)


def test_localize_runs_a_dino_backbone_at_reduced_precision(shapes, tmp_path):
    """--precision reaches the extractor: a tiny random DINOv2 saved as a folder runs in bf16."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14
    )
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    out = omnivision(
        "localize", "--ref", str(shapes / "crop.png"), "--box", "20,20,76,76",
        "--target", str(shapes / "shapes.png"), "--backbone", str(tmp_path / "dino"),
        "--precision", "bf16", "--short-side", "112", "--sam", "none", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o" / "shapes_heatmap.png").is_file()
    bad = omnivision("localize", "--ref", "x.png", "--target", "x.png", "--precision", "int4")
    assert bad.returncode == 2 and "int4" in bad.stderr
