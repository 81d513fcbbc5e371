"""`omnivision track` as a user runs it: label propagation on a frame folder (masks, overlay
video, boxes), the DAVIS protocol scored by `omnivision eval davis`, SAM 2 from clicks on real
frames, an exemplar photo as the prompt, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path, moving_shapes
from PIL import Image

from omnivision.cli import main
from omnivision.twod.davis import read_index_png, write_index_png
from omnivision.twod.video import open_video, video_encoder

pytestmark = pytest.mark.usefixtures("one_thread")
# Twice the 144-pixel frames: 4-pixel patches for the colour backend (test_propagate's setting).
COLOUR = ["--method", "propagate", "--backbone", "colour", "--short-side", "288"]


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


def j(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = (predicted | truth).sum()
    return 1.0 if union == 0 else float((predicted & truth).sum() / union)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    frames, masks = moving_shapes()
    root = tmp_path_factory.mktemp("shapes")
    folder = write_frames(root / "frames", frames)
    write_index_png(root / "first.png", masks[0])
    return folder, root / "first.png", masks


def test_propagate_writes_masks_overlay_and_boxes(shapes, tmp_path, capsys):
    folder, first, truth = shapes
    out = tmp_path / "out"
    assert (
        main(["track", "--video", str(folder), "--mask", str(first), *COLOUR, "--out", str(out)])
        == 0
    )
    assert "tracked 3 object(s) over 16 frames" in capsys.readouterr().out
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(16)]
    predicted = np.stack([read_index_png(p) for p in pngs])
    # Measured on these JPEG frames: 0.968 / 0.977 / 0.936 (test_propagate's lossless frames:
    # 0.967 / 0.985 / 0.935); thresholds 0.03-0.04 under.
    means = {
        o: np.mean([j(predicted[t] == o, truth[t] == o) for t in range(1, 16)]) for o in (1, 2, 3)
    }
    assert means[1] > 0.93 and means[2] > 0.95 and means[3] > 0.9, means
    record = json.loads((out / "track.json").read_text())
    assert record["method"] == "propagate" and record["objects"] == [1, 2, 3]
    frame5 = record["frames"][5]["objects"]["2"]
    ys, xs = np.nonzero(truth[5] == 2)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert np.abs(np.array(frame5["box"]) - box).max() <= 3, (frame5["box"], box)
    assert record["frames"][9]["objects"]["3"]["box"] is None  # wholly hidden on frames 8-10
    if video_encoder() is not None:
        overlay = open_video(out / "overlay.mp4")
        assert len(overlay) == 16 and overlay.size == truth[0].shape


def davis_folder(root: Path, frames: list[np.ndarray], masks: list[np.ndarray], seq: str) -> None:
    write_frames(root / "JPEGImages" / "480p" / seq, frames)
    for t, ids in enumerate(masks):
        write_index_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", ids)


def test_davis_protocol_scored_by_eval_davis(tmp_path, capsys):
    frames, masks = moving_shapes()
    gt = tmp_path / "DAVIS"
    davis_folder(gt, frames, masks, "shapes")
    davis_folder(gt, frames[::-1], masks[::-1], "reversed")
    # Only the first annotation is a prompt: the others are there for the evaluation.
    pred, run = tmp_path / "pred", tmp_path / "run"
    assert main(["track", "--davis", str(gt), *COLOUR, "--out", str(pred)]) == 0
    assert sorted(p.name for p in pred.iterdir()) == ["reversed", "shapes"]
    assert main(["eval", "davis", "--pred", str(pred), "--gt", str(gt), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    jf = {row["metric"]: row["value"] for row in metrics["rows"]}
    # Measured: J&F 0.980 (J 0.959, F 1.000) over 6 objects; the issue asks >= 0.9.
    assert jf["j&f"] > 0.95 and jf["f-mean"] > 0.97, jf


@pytest.mark.parametrize("method", ["sam2", "sam2+reid"])
def test_sam2_tracks_the_notebook_clicks_on_real_frames(method, tiny_sam2_files, tmp_path):
    """The tiny random SAM 2 gives meaningless masks: what is checked is the plumbing on the
    real 960x540 bedroom frames (two objects, every frame, palette PNGs, scores)."""
    checkpoint, config = tiny_sam2_files
    out = tmp_path / "out"
    argv = ["track", "--video", str(data_path("bedroom")), "--click", "210,350", "400,150"]
    argv += ["--sam", str(checkpoint), "--sam-config", str(config), "--out", str(out), "--no-mp4"]
    assert main([*argv, "--method", method, "--backbone", "colour", "--short-side", "96"]) == 0
    record = json.loads((out / "track.json").read_text())
    assert record["objects"] == [1, 2] and len(record["frames"]) == 8
    assert record["method"] == method
    assert all(set(f["objects"]) == {"1", "2"} for f in record["frames"])
    assert all(0 <= o["score"] <= 1 for f in record["frames"] for o in f["objects"].values())
    first = read_index_png(out / "masks" / "00000.png")
    assert first.shape == (540, 960) and set(np.unique(first)) <= {0, 1, 2}
    assert not (out / "overlay.mp4").exists()


def test_an_exemplar_photo_finds_the_object_then_it_is_tracked(shapes, tmp_path):
    """A crop of the blue square from another 'photo' (frame 15, where it has moved), found on
    frame 0 by localize-by-example and propagated."""
    folder, _, truth = shapes
    photo = np.array(Image.open(folder / "00015.jpg"))
    ref = tmp_path / "ref.png"
    Image.fromarray(photo).save(ref)
    ys, xs = np.nonzero(truth[15] == 2)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    out = tmp_path / "out"
    argv = ["track", "--video", str(folder), "--ref", str(ref), "--ref-box", box, *COLOUR]
    assert main([*argv, "--out", str(out), "--no-mp4"]) == 0
    predicted = [read_index_png(out / "masks" / f"{t:05d}.png") == 1 for t in range(16)]
    scores = [j(predicted[t], truth[t] == 2) for t in range(16)]
    # Measured: 0.959 on frame 0 (the localized mask), 0.934-0.962 after.
    assert min(scores) > 0.9, scores


def bad_cases(root: Path, shapes) -> dict[str, tuple[list[str], str]]:
    folder, first, truth = shapes
    empty = root / "empty"
    empty.mkdir()
    mixed = write_frames(root / "mixed", [np.zeros((32, 48, 3), np.uint8)] * 2)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(mixed / "00002.jpg")
    write_index_png(root / "blank.png", np.zeros_like(truth[0]))
    write_index_png(root / "small.png", truth[0][:100, :100])
    Image.fromarray(truth[0].astype(np.uint16) * 1000).save(root / "deep.png")
    (root / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    video = ["--video", str(folder)]
    return {
        "click outside": ([*video, "--click", "500,20"], "outside the 208x144"),
        "frame out of range": ([*video, "--click", "5,5", "--frame", "16"], "--frame 16"),
        "mask without object": ([*video, "--mask", str(root / "blank.png")], "no object"),
        "object id not in mask": ([*video, "--mask", str(first), "--objects", "1,7"], "[7]"),
        "mask of another size": ([*video, "--mask", str(root / "small.png")], "small.png"),
        "16-bit mask": ([*video, "--mask", str(root / "deep.png")], "deep.png"),
        "folder without frames": (["--video", str(empty), "--click", "5,5"], "empty"),
        "frames of mixed sizes": (["--video", str(mixed), "--click", "5,5"], "00002"),
        "truncated video": (["--video", str(root / "cut.mp4"), "--click", "5,5"], "cut.mp4"),
        "two prompts": ([*video, "--click", "5,5", "--mask", str(first)], "one way"),
        "video and davis": ([*video, "--davis", str(root)], "one of them"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "click outside",
        "frame out of range",
        "mask without object",
        "object id not in mask",
        "mask of another size",
        "16-bit mask",
        "folder without frames",
        "frames of mixed sizes",
        "truncated video",
        "two prompts",
        "video and davis",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, shapes, tmp_path, capsys):
    argv, needle = bad_cases(tmp_path, shapes)[case]
    out = tmp_path / "out"
    assert main(["track", *argv, *COLOUR, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_propagate_from_a_box_starts_from_the_sam2_image_mask(shapes, tiny_sam2_files, tmp_path):
    """Clicks and boxes reach label propagation through the SAM 2 image model: frame 0's mask
    is what `Sam2.predict` gives for the box (the tiny random model's mask: plumbing only)."""
    from omnivision.twod.sam import load_sam2

    folder, _, _ = shapes
    checkpoint, config = tiny_sam2_files
    out = tmp_path / "out"
    box = "76,50,117,91"
    argv = ["track", "--video", str(folder), "--box", box, *COLOUR, "--out", str(out)]
    argv += ["--sam", str(checkpoint), "--sam-config", str(config), "--no-mp4"]
    assert main(argv) == 0
    sam = load_sam2(checkpoint, config=config, device="cpu")
    sam.set_image(np.array(Image.open(folder / "00000.jpg")))
    expected = sam.predict(box=[76, 50, 117, 91], multimask=False).masks[0].numpy()
    assert expected.any()
    np.testing.assert_array_equal(read_index_png(out / "masks" / "00000.png") == 1, expected)
    assert len(list((out / "masks").glob("*.png"))) == 16
