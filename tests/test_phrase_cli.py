"""`omnivision phrase` and `omnivision train-bridge` as a user runs them (through the dispatcher's
`run_command`, which turns bad input into one line and exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_bridge import new_bridge, shapes_scene, write_scenes
from test_localize import iou

from omnivision.cli import run_command
from omnivision.twod.bridge import TrainConfig, train_bridge
from omnivision.twod.colour import ColourTextureExtractor

# Tiny models: a second thread only adds contention on shared CI cores (7-30x slower here).
pytestmark = pytest.mark.usefixtures("one_thread")


def phrase(*args: str) -> int:
    return run_command("omnivision.twod.cli_language:phrase_main", list(args), "omnivision phrase")


def train_cli(*args: str) -> int:
    return run_command(
        "omnivision.twod.cli_language:train_bridge_main", list(args), "omnivision train-bridge"
    )


@pytest.fixture(scope="module")
def bridge_dir(tiny_clip, tmp_path_factory):
    """A tiny bridge on the colour backend, trained 150 steps on 32 synthetic scenes and saved."""
    root = tmp_path_factory.mktemp("bridge")
    pairs = write_scenes(root / "scenes", range(32))
    extractor = ColourTextureExtractor(short_side=96)
    bridge = new_bridge(tiny_clip, extractor)
    config = TrainConfig(epochs=1, batch_size=32, steps_per_epoch=150, lr=3e-3, device="cpu")
    train_bridge(bridge, pairs, extractor, config, progress=False)
    return bridge.save(root / "bridge")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A held-out scene (not among the training seeds) saved as a PNG, with its shapes."""
    folder = tmp_path_factory.mktemp("scene")
    image, objects = shapes_scene(201)
    Image.fromarray((image.numpy() * 255 + 0.5).astype(np.uint8)).save(folder / "shapes.png")
    return folder / "shapes.png", objects


def test_phrase_with_a_bridge_finds_the_named_shape(bridge_dir, scene, tmp_path, capsys):
    from pycocotools import mask as mask_utils

    path, objects = scene
    for target in objects:
        out = tmp_path / target.phrase.replace(" ", "_")
        code = phrase(
            "--text", target.phrase, "--image", str(path), "--bridge", str(bridge_dir),
            "--sam", "none", "--out", str(out),
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert f"of '{target.phrase}' in 1 image(s)" in capsys.readouterr().out
        assert (out / "shapes_overlay.png").is_file() and (out / "shapes_heatmap.png").is_file()
        coco = json.loads((out / "detections.json").read_text())
        assert coco["categories"] == [{"id": 1, "name": target.phrase}]
        found = sorted(coco["annotations"], key=lambda a: -a["score"])
        assert found, target.phrase
        x, y, w, h = found[0]["bbox"]
        assert iou((x, y, x + w, y + h), target.box) >= 0.5, (target.phrase, found[0]["bbox"])
        # No other shape is reported as the phrase.
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in found)]
        for other in objects:
            if other is not target:
                assert all(iou(box, other.box) < 0.3 for box in boxes), (target.phrase, other)
        masks = sorted(out.glob("shapes_mask_*.png"))
        assert len(masks) == len(found)
        with Image.open(masks[0]) as im:
            assert im.size == (128, 96)
        rle = found[0]["segmentation"]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"]})
        assert decoded.shape == (96, 128) and decoded.sum() == found[0]["area"]


def test_phrase_with_sam2_masks_over_a_folder(bridge_dir, scene, tmp_path, capsys):
    """SAM 2 (a tiny random checkpoint, loaded as a user's .pt + config) turns boxes into masks,
    one mask PNG per detection, over every image of a folder; --negative is accepted."""
    from omnivision.twod.sam import build_tiny_sam2_checkpoint

    ckpt, config = build_tiny_sam2_checkpoint(tmp_path / "sam")
    path, objects = scene
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(path.read_bytes())
    with Image.open(path) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.png")
    code = phrase(
        "--text", objects[0].phrase, "--negative", objects[1].phrase, "--image", str(folder),
        "--bridge", str(bridge_dir), "--sam", str(ckpt), "--sam-config", str(config),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    coco = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    for stem, image_id in (("a", 1), ("b", 2)):
        count = sum(a["image_id"] == image_id for a in coco["annotations"])
        assert count >= 1
        assert len(list((tmp_path / "out").glob(f"{stem}_mask_*.png"))) == count


def test_phrase_with_dense_clip_runs_end_to_end(tiny_clip, scene, tmp_path, capsys):
    """The CLIP path (LERF-style dense features, relevancy against the canonical negatives and
    --negative) with the tiny random CLIP: outputs are written; what it finds is meaningless."""
    path, _ = scene
    code = phrase(
        "--text", "red square", "--negative", "grey floor", "--image", str(path),
        "--clip", str(tiny_clip[0]), "--sam", "none", "--batch-size", "64", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "shapes_overlay.png").is_file() and (
        tmp_path / "shapes_heatmap.png"
    ).is_file()
    coco = json.loads((tmp_path / "detections.json").read_text())
    assert coco["images"][0]["height"] == 96 and coco["categories"][0]["name"] == "red square"
    assert len(list(tmp_path.glob("shapes_mask_*.png"))) == len(coco["annotations"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", ""], "--text is empty"),
        (["--text", "   "], "--text is empty"),
        (["--text", "red square", "--negative", ""], "--negative is empty"),
        (["--text", "red square", "--clip", "ViT-B-16"], "give one of --bridge DIR"),
        (["--text", "red square", "--backbone", "dinov3-vitb16"], "not 'dinov3-vitb16'"),
    ],
)
def test_phrase_bad_input_is_one_line_and_exit_2(
    bridge_dir, scene, tmp_path, capsys, args, message
):
    code = phrase(
        *args, "--image", str(scene[0]), "--bridge", str(bridge_dir), "--sam", "none",
        "--out", str(tmp_path),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("omnivision phrase: error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "detections.json").exists()


def test_train_bridge_cli_trains_saves_and_resumes(tiny_clip, tmp_path, capsys):
    pairs = write_scenes(tmp_path / "images", range(12))
    lines = [
        {"image": p.image.name, "phrase": p.phrase}
        | ({"polygon": [list(v) for v in p.polygon]} if p.polygon else {"box": list(p.box)})
        for p in pairs
    ]
    train, val = lines[: len(lines) - 8], lines[len(lines) - 8 :]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(line) for line in train))
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(line) for line in val))
    common = [
        "--pairs", str(tmp_path / "train.jsonl"), "--val-pairs", str(tmp_path / "val.jsonl"),
        "--images", str(tmp_path / "images"), "--backbone", "colour", "--short-side", "96",
        "--clip", str(tiny_clip[0]), "--hidden", "32", "--batch-size", "16",
        "--steps-per-epoch", "4", "--out", str(tmp_path / "bridge"),
    ]  # fmt: skip
    assert train_cli(*common, "--epochs", "1") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trained 4 steps on" in out and "held-out pointing accuracy" in out
    saved = json.loads((tmp_path / "bridge" / "bridge.json").read_text())
    assert saved["backbone"] == "colour" and saved["clip_model"] == str(tiny_clip[0].resolve())
    assert saved["short_side"] == 96 and saved["hidden_dim"] == 32
    assert (tmp_path / "bridge" / "checkpoint" / "training_state.pt").is_file()
    # Resume to 3 epochs: 8 more steps on top of the 4 taken.
    assert train_cli(*common, "--epochs", "3", "--resume") == 0, capsys.readouterr().err
    assert "trained 12 steps on" in capsys.readouterr().out
    # Resuming with another shape than the checkpoint's is refused.
    assert (
        train_cli(*common[:-2], "--hidden", "64", "--out", str(tmp_path / "bridge"), "--resume")
        == 2
    )
    assert "hidden_dim 32 -> 64" in capsys.readouterr().err


def test_train_bridge_cli_errors_are_one_line(tmp_path, capsys):
    assert train_cli("--pairs", str(tmp_path / "missing.jsonl"), "--backbone", "colour") == 2
    err = capsys.readouterr().err
    assert "missing.jsonl: no such pairs file" in err and err.count("\n") == 1
    assert train_cli("--backbone", "colour") == 2
    assert "one of --pairs FILE, --refcoco ROOT, --flickr30k ROOT" in capsys.readouterr().err


def test_missing_clip_weights_print_one_line(scene, tmp_path):
    """open_clip logs an `ERROR:root:` line of its own before raising; only ours reaches stderr,
    and its fallback is a flag of this command."""
    from cli_run import omnivision_process

    out = omnivision_process(
        "phrase", "--text", "red square", "--image", str(scene[0]), "--clip", "ViT-B-16",
        "--sam", "none", "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "weights not available offline" in out.stderr and "--bridge DIR" in out.stderr
