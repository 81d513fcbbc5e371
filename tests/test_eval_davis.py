"""DAVIS-2017 semi-supervised evaluation: J and F on hand-made masks (values worked out by hand),
the official statistics, the first/last frame exclusion, the layout reader/writer, the command end
to end, its bad input, and an independent computation on the real Cutie masks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path
from PIL import Image
from scipy import ndimage

from omnivision.eval.davis import (
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    evaluate_davis,
    f_measure,
    seg2bmap,
)
from omnivision.twod.davis import (
    DAVIS_PALETTE,
    davis_sequences,
    read_index_png,
    sequence_annotations,
    sequence_frames,
    write_index_png,
)
from omnivision.twod.features import TwoDError


def square(shift: int = 0, size: int = 20) -> np.ndarray:
    """A 10x10 square, rows 5..14 and columns 5+shift..14+shift, on a size x size canvas."""
    mask = np.zeros((size, size), bool)
    mask[5:15, 5 + shift : 15 + shift] = True
    return mask


# ---------------------------------------------------------------------------------------------
# J and F by hand


def test_j_of_a_shifted_square():
    # Shifted 2 columns: intersection 10 x 8 = 80, union 100 + 100 - 80 = 120, J = 2/3.
    assert db_eval_iou(square(), square(2)) == pytest.approx(2 / 3, abs=1e-12)
    assert db_eval_iou(square(), square()) == 1.0
    # Frames stack: (T, H, W) -> (T,).
    stack = db_eval_iou(np.stack([square(), square()]), np.stack([square(2), square(5)]))
    np.testing.assert_allclose(stack, [80 / 120, 50 / 150])


def test_boundary_map_of_a_square():
    # The boundary sits half a pixel towards the origin: the outline of the 11x11 square of
    # rows 4..14, columns 4..14 -- top and bottom rows 11 pixels each, left and right columns
    # 9 more each: 40 pixels.
    bmap = seg2bmap(square())
    ring = np.zeros((20, 20), bool)
    ring[4, 4:15] = ring[14, 4:15] = ring[4:15, 4] = ring[4:15, 14] = True
    np.testing.assert_array_equal(bmap, ring)
    assert bmap.sum() == 40


def test_f_of_a_shifted_square_depends_on_the_tolerance():
    # 20x20: tolerance ceil(0.008 * 28.3) = 1 pixel. The predicted outline (columns 6..16) against
    # the GT one (columns 4..14): its top and bottom rows match at columns 6..15 (10 + 10), its left
    # column only at rows 5 and 13 (next to the GT's top and bottom rows), its right column nowhere:
    # 22 of 40. By symmetry the GT matches 22 of 40 too: P = R = F = 0.55.
    assert f_measure(square(2), square()) == pytest.approx(0.55, abs=1e-12)
    # Tolerance 2 pixels: every outline pixel lies within 2 of the other outline: F = 1.
    assert f_measure(square(2), square(), bound_th=2) == 1.0
    # Shifted by one, the default tolerance already matches everything.
    assert f_measure(square(1), square()) == 1.0


def test_f_precision_and_recall_differ_with_an_extra_blob():
    # 100x100, GT rows 50.. (its boundary: row 49, 100 pixels). The prediction adds one pixel at
    # (47, 30), whose boundary is 4 pixels at rows 46 and 47. Default tolerance ceil(0.008 * 141.4)
    # = 2: the two row-47 pixels match (distance 2 to row 49), the two row-46 ones do not.
    gt = np.zeros((100, 100), bool)
    gt[50:] = True
    pred = gt.copy()
    pred[47, 30] = True
    # P = 102 / 104, R = 1, F = 2PR / (P + R) = 102 / 103.
    assert f_measure(pred, gt) == pytest.approx(102 / 103, abs=1e-12)
    # Tolerance 1: P = 100 / 104, F = 50 / 51; tolerance 3: everything matches.
    assert f_measure(pred, gt, bound_th=1) == pytest.approx(50 / 51, abs=1e-12)
    assert f_measure(pred, gt, bound_th=3) == 1.0
    # J = 5000 / 5001.
    assert db_eval_iou(gt, pred) == pytest.approx(5000 / 5001, abs=1e-12)
    np.testing.assert_allclose(db_eval_boundary(gt[None], pred[None]), [102 / 103])


def test_empty_masks():
    empty = np.zeros((20, 20), bool)
    # Both empty: J = 1 (empty union) and F = 1 (P = R = 1).
    assert db_eval_iou(empty, empty) == 1.0
    assert f_measure(empty, empty) == 1.0
    # Only one side empty: J = 0, F = 0 (P = 0, R = 1 or P = 1, R = 0).
    assert db_eval_iou(square(), empty) == 0.0
    assert f_measure(empty, square()) == 0.0
    assert f_measure(square(), empty) == 0.0


def test_statistics_on_a_hand_made_series():
    values = [1, 1, 1, 0.5, 0.6, 0.4, 0.2, 0]
    stats = db_statistics(values)
    assert stats.mean == pytest.approx(4.7 / 8)
    # Above 0.5 (strictly): 1, 1, 1, 0.6.
    assert stats.recall == pytest.approx(4 / 8)
    # Official bins for T = 8: edges round(linspace(1, 8, 5) + 1e-10) - 1 = 0, 2, 4, 5, 7, each
    # bin to the next edge inclusive: first = frames 0-2 (mean 1), last = frames 5-7 (mean 0.2).
    # (np.array_split would give frames 0-1 and 6-7: 1 - 0.1 = 0.9.)
    assert stats.decay == pytest.approx(0.8)
    # T = 4: edges 0, 1, 2, 2, 3: first bin frames 0-1, last bin frames 2-3.
    assert db_statistics([1, 0.8, 0.4, 0.2]).decay == pytest.approx(0.9 - 0.3)
    # One frame: every bin is that frame, no decay.
    assert db_statistics([0.7]).decay == 0.0


# ---------------------------------------------------------------------------------------------
# The layout reader / writer


def test_palette():
    assert len(DAVIS_PALETTE) == 768
    colours = np.frombuffer(DAVIS_PALETTE, np.uint8).reshape(256, 3)
    assert colours[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert colours[9].tolist() == [192, 0, 0]
    assert colours[255].tolist() == [224, 224, 192]  # PASCAL VOC's void colour
    # Cutie's masks carry a DAVIS-style palette; the object colours in use agree.
    cutie = Image.open(data_path("cutie", "masks", "bike", "00000.png")).getpalette()
    assert cutie is not None
    assert bytes(cutie[: 9 * 3]) == DAVIS_PALETTE[: 9 * 3]


def test_read_index_png_on_the_cutie_masks():
    bike = read_index_png(data_path("cutie", "masks", "bike", "00000.png"))
    assert bike.dtype == np.uint8 and bike.shape == (480, 854)
    assert sorted(np.unique(bike).tolist()) == [0, 1, 2]
    narrow = read_index_png(data_path("cutie", "masks", "judo", "00005.png"))
    assert narrow.shape == (480, 853)
    assert sorted(np.unique(narrow).tolist()) == [0, 2]


def test_read_index_png_modes(tmp_path):
    ids = np.arange(60, dtype=np.uint8).reshape(6, 10)
    Image.fromarray(ids).save(tmp_path / "grey.png")  # mode L: the values are the ids
    np.testing.assert_array_equal(read_index_png(tmp_path / "grey.png"), ids)
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(TwoDError, match=r"rgb\.png: mode RGB; want an 8-bit palette or grey"):
        read_index_png(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((6, 10), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(TwoDError, match=r"deep\.png: mode I"):
        read_index_png(tmp_path / "deep.png")
    with pytest.raises(TwoDError, match=r"none\.png: no such mask file"):
        read_index_png(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(TwoDError, match=r"junk\.png: not a readable image"):
        read_index_png(tmp_path / "junk.png")


def test_write_index_png_round_trip(tmp_path):
    ids = read_index_png(data_path("cutie", "masks", "bike", "00000.png"))
    out = write_index_png(tmp_path / "seq" / "00000.png", ids)
    with Image.open(out) as im:
        assert im.mode == "P"
        assert bytes(im.getpalette() or []) == DAVIS_PALETTE
    np.testing.assert_array_equal(read_index_png(out), ids)
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["00000.png"]  # no temp file
    with pytest.raises(TwoDError, match="0..255"):
        write_index_png(tmp_path / "bad.png", np.full((2, 2), 300))
    assert not (tmp_path / "bad.png").exists()


def test_davis_folders(tmp_path):
    root = tmp_path / "DAVIS"
    for seq in ("dogs", "bike"):
        for t in (1, 0):
            (root / "JPEGImages" / "480p" / seq).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 3)).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
            write_index_png(
                root / "Annotations" / "480p" / seq / f"{t:05d}.png", np.zeros((3, 4), np.uint8)
            )
    assert davis_sequences(root) == ["bike", "dogs"]
    assert [p.name for p in sequence_frames(root, "bike", "480p")] == ["00000.jpg", "00001.jpg"]
    assert [p.name for p in sequence_annotations(root, "dogs", "480p")] == [
        "00000.png",
        "00001.png",
    ]
    with pytest.raises(TwoDError, match=r"Full-Resolution: no such folder"):
        davis_sequences(root, "Full-Resolution")
    with pytest.raises(TwoDError, match=r"480p[/\\]cat: no such folder"):
        sequence_frames(root, "cat", "480p")
    (root / "Annotations" / "480p" / "dogs" / "00000.png").unlink()
    (root / "Annotations" / "480p" / "dogs" / "00001.png").unlink()
    with pytest.raises(TwoDError, match=r"dogs: no \.png masks"):
        sequence_annotations(root, "dogs", "480p")
    for png in (root / "Annotations" / "480p").rglob("*.png"):
        png.unlink()
    for folder in sorted((root / "Annotations").rglob("*"), reverse=True):
        folder.rmdir()
    (root / "Annotations").rmdir()
    with pytest.raises(TwoDError, match=r"Annotations[/\\]480p: no such folder"):
        davis_sequences(root)


# ---------------------------------------------------------------------------------------------
# Sequences: the first and last frame are not scored; objects are ids 1..max of the first frame


def write_sequence(folder: Path, frames: dict[int, np.ndarray]) -> None:
    for t, ids in frames.items():
        write_index_png(folder / f"{t:05d}.png", ids)


def test_first_and_last_frame_are_not_scored(tmp_path):
    gt = {t: square().astype(np.uint8) for t in range(5)}
    # Predictions only for frames 1..3 (none for 0 and 4): frames 1 and 3 perfect, 2 shifted.
    pred = {1: square().astype(np.uint8), 2: square(2).astype(np.uint8), 3: gt[3]}
    write_sequence(tmp_path / "gt" / "seq", gt)
    write_sequence(tmp_path / "pred" / "seq", pred)
    result = evaluate_davis(tmp_path / "gt", tmp_path / "pred")
    (scores,) = result.objects
    assert scores.frames == ("00001", "00002", "00003")
    np.testing.assert_allclose(scores.j, [1, 2 / 3, 1])
    np.testing.assert_allclose(scores.f, [1, 0.55, 1])
    # A wrong mask on the first and the last frame changes nothing.
    write_sequence(tmp_path / "pred" / "seq", {0: square(7).astype(np.uint8), 4: gt[4] * 0})
    again = evaluate_davis(tmp_path / "gt", tmp_path / "pred")
    assert again.summary == result.summary
    s = result.summary
    assert s.j_mean == pytest.approx((2 + 2 / 3) / 3)
    assert s.f_mean == pytest.approx(2.55 / 3)
    assert s.j_and_f == pytest.approx((s.j_mean + s.f_mean) / 2)
    assert (s.objects, s.sequences, s.frames) == (1, 1, 3)


def test_objects_are_the_ids_of_the_first_annotation(tmp_path):
    # First annotation: ids {0, 1, 3} -> objects 1, 2, 3 (2 is absent: empty in GT and
    # prediction, J = F = 1 on every frame). Id 4 appears later in the GT only: not an object.
    first = square().astype(np.uint8)
    first[0:2, 0:2] = 3
    later = first.copy()
    later[18:20, 18:20] = 4
    gt = {0: first, 1: later, 2: later, 3: later}
    pred = {1: first, 2: first}
    write_sequence(tmp_path / "gt" / "seq", gt)
    write_sequence(tmp_path / "pred" / "seq", pred)
    result = evaluate_davis(tmp_path / "gt", tmp_path / "pred")
    assert [o.object_id for o in result.objects] == [1, 2, 3]
    for o in result.objects:
        np.testing.assert_allclose(o.j, 1.0)
        np.testing.assert_allclose(o.f, 1.0)
    # Frame 1 predicted without object 3 scores it as empty there: J = 0 and F = 0.
    write_sequence(tmp_path / "pred" / "seq", {1: square().astype(np.uint8)})
    result = evaluate_davis(tmp_path / "gt", tmp_path / "pred")
    np.testing.assert_allclose(result.objects[2].j, [0, 1])
    np.testing.assert_allclose(result.objects[2].f, [0, 1])


# ---------------------------------------------------------------------------------------------
# The command


def run_eval(args, capsys):
    from omnivision.cli import main

    code = main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture
def tiny_davis(tmp_path):
    """A DAVIS root with two 5-frame sequences of 20x20 masks, and predictions for frames 1..3."""
    root, pred = tmp_path / "DAVIS", tmp_path / "pred"
    two = square().astype(np.uint8)
    two[0:3, 15:20] = 2
    write_sequence(root / "Annotations" / "480p" / "squares", {t: two for t in range(5)})
    write_sequence(root / "Annotations" / "480p" / "still", {t: two for t in range(5)})
    moved = square(2).astype(np.uint8)
    moved[0:3, 15:20] = 2
    write_sequence(pred / "squares", {t: moved for t in (1, 2, 3)})
    write_sequence(pred / "still", {t: two for t in (1, 2, 3)})
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("squares\n")
    return root, pred


def test_cli_end_to_end(tiny_davis, tmp_path, capsys):
    from omnivision.eval.report import write_report

    root, pred = tiny_davis
    run = tmp_path / "run"
    code, out, err = run_eval(["davis", "--pred", pred, "--gt", root, "--out", run], capsys)
    assert code == 0, err
    # Objects: squares_1 (shifted: J = 2/3, F = 0.55 on each frame), squares_2, still_1, still_2
    # (perfect). J-Mean = (2/3 + 3) / 4, F-Mean = (0.55 + 3) / 4.
    j_mean, f_mean = (2 / 3 + 3) / 4, (0.55 + 3) / 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["benchmark"] == "davis-2017" and metrics["features"] == "pred"
    values = {row["metric"]: row["value"] for row in metrics["rows"]}
    assert values["j&f"] == pytest.approx((j_mean + f_mean) / 2)
    assert values["j-mean"] == pytest.approx(j_mean)
    assert values["f-mean"] == pytest.approx(f_mean)
    assert values["j-recall"] == values["f-recall"] == 1.0
    assert {row["count"] for row in metrics["rows"]} == {4}
    assert metrics["global_results"]["J-Decay"] == 0.0
    with open(run / "per_query.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sequence"], r["object"]) for r in rows] == [
        ("squares", "1"), ("squares", "2"), ("still", "1"), ("still", "2"),
    ]  # fmt: skip
    assert float(rows[0]["j-mean"]) == pytest.approx(2 / 3, abs=1e-6)
    with open(run / "davis.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Sequence", "J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
                        "F-Recall", "F-Decay"]  # fmt: skip
    assert table[1][:3] == ["global", f"{(j_mean + f_mean) / 2:.3f}", f"{j_mean:.3f}"]
    assert table[2][0] == "squares_1" and table[2][2] == "0.667"
    assert "first and last frame of each sequence not scored" in out
    assert f"{100 * (j_mean + f_mean) / 2:.1f}" in out

    # The image set, a folder of sequence folders as GT, and --sequences give the same squares.
    code, _, err = run_eval(
        ["davis", "--pred", pred, "--gt", root, "--imageset", "val", "--out", tmp_path / "v"],
        capsys,
    )
    assert code == 0, err
    code, _, err = run_eval(
        ["davis", "--pred", pred, "--gt", root / "Annotations" / "480p", "--sequences", "squares",
         "--out", tmp_path / "s"], capsys,
    )  # fmt: skip
    assert code == 0, err
    for other in ("v", "s"):
        rows = json.loads((tmp_path / other / "metrics.json").read_text())["rows"]
        j = next(r["value"] for r in rows if r["metric"] == "j-mean")
        assert j == pytest.approx((2 / 3 + 1) / 2)

    # The report renders the run, with the published DAVIS-2017 figures beside it.
    report = write_report([run], tmp_path / "report" / "report.md")
    text = report.path.read_text()
    assert "## DAVIS-2017" in text and "SAM 2 Hiera-L" in text
    assert f"{100 * (j_mean + f_mean) / 2:.1f}" in text


def test_cli_bad_input(tiny_davis, tmp_path, capsys):
    root, pred = tiny_davis
    run = tmp_path / "run"

    def fails(naming: Path, *words: str) -> None:
        code, _, err = run_eval(["davis", "--pred", pred, "--gt", root, "--out", run], capsys)
        assert code == 2
        assert "\n" not in err and str(naming) in err, err
        for word in words:
            assert word in err, err
        assert not run.exists()

    missing = pred / "squares" / "00002.png"
    frame = read_index_png(missing)
    missing.unlink()
    fails(missing, "missing prediction frame")
    write_index_png(missing, np.zeros((20, 21), np.uint8))
    fails(missing, "21x20", "20x20")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(missing)
    fails(missing, "mode RGB")
    write_index_png(missing, np.where(frame == 2, 7, frame))
    fails(missing, "object id 7", "2 objects")
    write_index_png(missing, frame)
    code, _, err = run_eval(
        ["davis", "--pred", pred, "--gt", root, "--sequences", "cat", "--out", run], capsys
    )
    assert code == 2 and "cat" in err and not run.exists()


def test_cli_real_mask_size_mismatch(tmp_path, capsys):
    # judo/00005.png is one pixel narrower (853) than the 854x480 annotations.
    judo = data_path("cutie", "masks", "judo")
    gt, pred = tmp_path / "gt" / "judo", tmp_path / "pred" / "judo"
    first = read_index_png(judo / "00000.png")
    write_sequence(gt, {0: first, 1: first, 2: first})
    pred.mkdir(parents=True)
    (pred / "00001.png").write_bytes((judo / "00005.png").read_bytes())
    run = tmp_path / "run"
    code, _, err = run_eval(
        ["davis", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", run], capsys
    )
    assert code == 2 and str(pred / "00001.png") in err and "853x480" in err
    assert not run.exists()


# ---------------------------------------------------------------------------------------------
# An independent computation on real masks


def plain_boundary(mask: np.ndarray) -> np.ndarray:
    """DAVIS's boundary map written out plainly: a pixel that differs from its right, lower or
    lower-right neighbour (zero beyond the image); on the last row the right one only, on the last
    column the lower one only, the bottom-right corner never."""
    padded = np.pad(mask, ((0, 1), (0, 1)))
    right, down, diagonal = padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    edge = (mask != right) | (mask != down) | (mask != diagonal)
    edge[-1, :] = mask[-1, :] != right[-1, :]
    edge[:, -1] = mask[:, -1] != down[:, -1]
    edge[-1, -1] = False
    return edge


def plain_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """Boundary F with disk dilations (scipy.ndimage.binary_dilation), 8 px at 854x480."""
    radius = math.ceil(0.008 * math.hypot(*gt.shape))
    assert radius == 8
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = x**2 + y**2 <= radius**2
    pred_edge, gt_edge = plain_boundary(pred), plain_boundary(gt)
    precision = (pred_edge & ndimage.binary_dilation(gt_edge, disk)).sum() / pred_edge.sum()
    recall = (gt_edge & ndimage.binary_dilation(pred_edge, disk)).sum() / gt_edge.sum()
    return 2 * precision * recall / (precision + recall)


def test_real_masks_against_a_plain_computation(tmp_path):
    bike = read_index_png(data_path("cutie", "masks", "bike", "00000.png"))
    # The prediction: object 1 shifted 10 pixels right (beyond the 8 px tolerance: F < 1),
    # object 2 eroded 5 times (thin parts vanish: F < 1 too).
    shifted = np.roll(bike == 1, 10, axis=1)
    eroded = ndimage.binary_erosion(bike == 2, iterations=5)
    pred = np.zeros_like(bike)
    pred[shifted] = 1
    pred[eroded & ~shifted] = 2
    write_sequence(tmp_path / "gt" / "bike", {0: bike, 1: bike, 2: bike})
    write_sequence(tmp_path / "pred" / "bike", {1: pred})
    result = evaluate_davis(tmp_path / "gt", tmp_path / "pred")
    for o in result.objects:
        truth, guess = bike == o.object_id, pred == o.object_id
        iou = (truth & guess).sum() / (truth | guess).sum()
        assert o.j[0] == pytest.approx(iou, abs=1e-12)
        assert o.f[0] == pytest.approx(plain_f(guess, truth), abs=1e-12)
    j1, j2 = (o.j[0] for o in result.objects)
    f1, f2 = (o.f[0] for o in result.objects)
    assert 0.1 < j1 < 0.5 and 0.5 < j2 < 0.8 and 0.8 < f1 < 0.99 and 0.8 < f2 < 0.99
