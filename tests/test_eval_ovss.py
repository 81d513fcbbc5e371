"""Open-vocabulary semantic segmentation scoring (mmsegmentation's IoUMetric): IoU, mIoU, mAcc and
aAcc on hand-made label maps (values worked out by hand), the bincount path against its per-class
twin, reduce_zero_label, the readers (class lists, label maps, the ADE20K / Pascal Context
layouts), the command end to end with its report, and one test per bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivision.eval.ovss import (
    confusion_matrix,
    intersect_and_union,
    intersect_and_union_reference,
    reduce_zero_label,
    seg_scores,
)
from omnivision.twod.errors import TwoDError
from omnivision.twod.segdata import (
    ADE20K_150,
    PASCAL_CONTEXT_59,
    find_layout,
    parse_class_list,
    read_label_map,
    write_label_map,
)

CLASSES = ("wall", "floor", "sky", "car")

# GT: wall top-left, floor top-right, sky bottom-left, the bottom-right 2x2 ignored (255).
GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 255, 255],
        [2, 2, 255, 255],
    ],
    np.uint8,
)
# Prediction: wall spills into (0, 1) and over the sky; "car" (3) only on ignored pixels.
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 3, 0],
        [0, 0, 0, 3],
    ],
    np.uint8,
)
# By hand, on the 12 valid pixels:
# wall: GT 4, predicted (0,0) (1,0) (1,1) (2,0) (2,1) (3,0) (3,1) = 7, both 3: IoU 3/8, Acc 3/4.
# floor: GT 4, predicted 5, both 4: IoU 4/5, Acc 1.
# sky: GT 4, never predicted: IoU 0/4 = 0 (only in the GT: counts), Acc 0.
# car: only predicted on ignored pixels, so in neither: IoU and Acc NaN, out of the means.
IOU = [3 / 8, 4 / 5, 0.0]
ACC = [3 / 4, 1.0, 0.0]


def test_scores_of_a_hand_made_map():
    areas = intersect_and_union(GT, PRED, 4)
    assert areas.intersect.tolist() == [3, 4, 0, 0]
    assert areas.pred.tolist() == [7, 5, 0, 0]
    assert areas.label.tolist() == [4, 4, 4, 0]
    assert areas.union.tolist() == [8, 5, 4, 0]
    s = seg_scores(areas)
    np.testing.assert_allclose(s.iou[:3], IOU)
    np.testing.assert_allclose(s.acc[:3], ACC)
    assert np.isnan(s.iou[3]) and np.isnan(s.acc[3])
    assert s.miou == pytest.approx(sum(IOU) / 3)  # not / 4: car is absent from both
    assert s.macc == pytest.approx(sum(ACC) / 3)
    assert s.aacc == pytest.approx(7 / 12)  # 3 + 4 correct of 12 valid pixels
    assert (s.classes_in_miou, s.classes_in_macc) == (3, 3)


def test_ignored_pixels_count_for_nothing():
    # Whatever the prediction says on the ignored pixels, nothing changes.
    for value in (0, 1, 3, 255):
        pred = PRED.copy()
        pred[2:, 2:] = value
        again = intersect_and_union(GT, pred, 4)
        np.testing.assert_array_equal(again.union, [8, 5, 4, 0])
    # Counted as a class instead, the bottom-right corner would change every figure.
    as_class = np.where(GT == 255, 3, GT)
    assert seg_scores(intersect_and_union(as_class, PRED, 4)).iou[3] == pytest.approx(2 / 4)


def test_a_class_only_in_the_prediction_scores_zero_and_counts():
    # Predict "car" on a valid sky pixel: car's union becomes 1, its IoU 0, and it enters mIoU.
    pred = PRED.copy()
    pred[3, 0] = 3
    s = seg_scores(intersect_and_union(GT, pred, 4))
    assert s.iou[3] == 0.0 and np.isnan(s.acc[3])
    assert s.iou[0] == pytest.approx(3 / 7)  # wall lost a predicted pixel: union 4 + 6 - 3
    assert s.miou == pytest.approx((3 / 7 + 4 / 5 + 0 + 0) / 4)
    assert s.macc == pytest.approx(sum(ACC) / 3)


def test_areas_accumulate_over_the_dataset_not_per_image():
    # A second image, 2x2 of car, predicted car on 3 pixels and wall on one.
    gt2 = np.full((2, 2), 3, np.uint8)
    pred2 = np.array([[3, 3], [3, 0]], np.uint8)
    total = intersect_and_union(GT, PRED, 4) + intersect_and_union(gt2, pred2, 4)
    s = seg_scores(total)
    # wall: inter 3, union 8 + 1 (the new wall pixel on car); car: inter 3, union 4.
    np.testing.assert_allclose(s.iou, [3 / 9, 4 / 5, 0, 3 / 4])
    assert s.miou == pytest.approx((3 / 9 + 4 / 5 + 0 + 3 / 4) / 4)
    assert s.aacc == pytest.approx(10 / 16)
    # Averaging per image instead would give another number.
    per_image = np.mean([sum(IOU) / 3, (0 + 3 / 4) / 2])
    assert s.miou != pytest.approx(per_image)


def test_predicted_ids_outside_the_classes_are_wrong_and_in_no_class():
    pred = PRED.copy()
    pred[0, 0] = 9  # a wall pixel predicted with an id beyond the list
    pred[0, 1] = 255  # and a floor-predicted one with 255
    confusion = confusion_matrix(GT, pred, 4)
    assert confusion[:, 4].tolist() == [2, 0, 0, 0]
    areas = intersect_and_union(GT, pred, 4)
    assert areas.intersect.tolist() == [2, 4, 0, 0]
    assert areas.pred.tolist() == [6, 4, 0, 0]
    assert seg_scores(areas).aacc == pytest.approx(6 / 12)


def test_reduce_zero_label():
    # ADE20K stores class k as k + 1 over 0 = "other"; 255 stays ignored (not 254).
    stored = np.where(GT == 255, 0, GT + 1).astype(np.uint8)
    stored[3, 3] = 255
    reduced = reduce_zero_label(stored)
    np.testing.assert_array_equal(reduced, GT)
    assert reduce_zero_label(np.array([[0, 1, 150, 255]], np.uint8)).tolist() == [
        [255, 0, 149, 255]
    ]
    # 16-bit maps with ignore 65535.
    deep = np.array([[0, 1, 459, 65535]], np.uint16)
    assert reduce_zero_label(deep, 65535).tolist() == [[65535, 0, 458, 65535]]
    # Scored unreduced, the stored ids are off by one: "wall" would be id 1.
    assert seg_scores(intersect_and_union(reduced, PRED, 4)).miou == pytest.approx(sum(IOU) / 3)


def test_fast_and_slow_twins_agree_on_random_maps():
    rng = np.random.default_rng(0)
    for num_classes, shape in ((1, (5, 7)), (7, (31, 17)), (40, (64, 48)), (300, (40, 50))):
        ignore = 255 if num_classes <= 255 else 65535
        gt = rng.integers(0, num_classes, shape)
        gt[rng.random(shape) < 0.2] = ignore
        pred = rng.integers(0, num_classes + 3, shape)  # some ids beyond the list
        pred[rng.random(shape) < 0.1] = ignore
        fast = intersect_and_union(gt, pred, num_classes, ignore)
        slow = intersect_and_union_reference(gt, pred, num_classes, ignore)
        for name in ("intersect", "union", "pred", "label"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
        assert fast.label.sum() == (gt != ignore).sum()


def test_gt_ids_beyond_the_classes_are_refused():
    with pytest.raises(ValueError, match="GT class id 4 outside 0..3"):
        confusion_matrix(np.array([[4]]), np.array([[0]]), 4)
    with pytest.raises(ValueError, match="no labelled GT pixels"):
        seg_scores(intersect_and_union(np.full((2, 2), 255), np.zeros((2, 2)), 4))


# ---------------------------------------------------------------------------------------------
# Readers


def test_builtin_class_lists():
    assert len(ADE20K_150) == len(set(ADE20K_150)) == 150
    assert (ADE20K_150[0], ADE20K_150[7], ADE20K_150[12], ADE20K_150[-1]) == (
        "wall", "bed", "person", "flag",
    )  # fmt: skip
    assert len(PASCAL_CONTEXT_59) == len(set(PASCAL_CONTEXT_59)) == 59
    assert list(PASCAL_CONTEXT_59) == sorted(PASCAL_CONTEXT_59)
    assert (PASCAL_CONTEXT_59[0], PASCAL_CONTEXT_59[36], PASCAL_CONTEXT_59[-1]) == (
        "aeroplane", "person", "wood",
    )  # fmt: skip


def test_class_list_forms():
    assert parse_class_list("wall\n\n# comment\n floor \nsky\n", "f") == ("wall", "floor", "sky")
    assert parse_class_list("2: sky\n0: wall\n1: chest of drawers\n", "f") == (
        "wall", "chest of drawers", "sky",
    )  # fmt: skip
    with pytest.raises(TwoDError, match=r"^f: empty class list"):
        parse_class_list("\n# nothing\n", "f")
    with pytest.raises(
        TwoDError, match=r"^f: line 3: duplicate class name 'wall' \(also on line 1\)"
    ):
        parse_class_list("wall\nfloor\nwall\n", "f")
    with pytest.raises(TwoDError, match=r"line 2: duplicate class id 0"):
        parse_class_list("0: wall\n0: floor\n", "f")
    with pytest.raises(TwoDError, match=r"line 2: class id 5, but 2 classes have ids 0..1"):
        parse_class_list("0: wall\n5: floor\n", "f")
    with pytest.raises(TwoDError, match=r"line 2: 'floor' has no id"):
        parse_class_list("0: wall\nfloor\n", "f")


def test_label_maps(tmp_path):
    ids = np.arange(60, dtype=np.uint8).reshape(6, 10)
    out = write_label_map(tmp_path / "p.png", ids)
    with Image.open(out) as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(read_label_map(out), ids)
    Image.fromarray(ids).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey.png"), ids)
    deep = np.array([[0, 300], [846, 65535]], np.uint16)
    with Image.open(write_label_map(tmp_path / "deep.png", deep)) as im:
        assert im.mode.startswith("I")
    np.testing.assert_array_equal(read_label_map(tmp_path / "deep.png"), deep)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    np.testing.assert_array_equal(read_label_map(tmp_path / "deep.tif"), deep)
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(TwoDError, match=r"rgb\.png: mode RGB"):
        read_label_map(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(TwoDError, match=r"junk\.png: not a readable image"):
        read_label_map(tmp_path / "junk.png")
    with pytest.raises(TwoDError, match="0..65535"):
        write_label_map(tmp_path / "bad.png", np.full((2, 2), 70000))


def test_layouts(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    for split, names in (("validation", ("b", "a")), ("training", ("t",))):
        for name in names:
            write_label_map(ade / "annotations" / split / f"{name}.png", GT)
            (ade / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(ade / "images" / split / f"{name}.jpg")
    for root in (tmp_path, ade):
        layout = find_layout(root)
        assert (layout.kind, layout.split) == ("ade20k", "validation")
        assert [s.name for s in layout.samples] == ["a", "b"]
        assert layout.samples[0].image == ade / "images" / "validation" / "a.jpg"
    assert [s.name for s in find_layout(tmp_path, "training").samples] == ["t"]

    voc = tmp_path / "VOC2010"
    for name in ("x", "y", "z"):
        write_label_map(voc / "SegmentationClassContext" / f"{name}.png", GT)
    (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("z\nx\n")
    layout = find_layout(voc)
    assert (layout.kind, layout.split) == ("pascal-context", "val")
    assert [s.name for s in layout.samples] == ["x", "z"]
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("x\nw\n")
    with pytest.raises(TwoDError, match=r"w\.png: no label map for 'w', listed in"):
        find_layout(voc)

    flat = tmp_path / "pc459_val"
    flat.mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint16)).save(flat / "m.tif")
    layout = find_layout(flat)
    assert (layout.kind, layout.split, [s.label.name for s in layout.samples]) == (
        "folder", "pc459_val", ["m.tif"],
    )  # fmt: skip
    with pytest.raises(TwoDError, match=r"empty: no label maps"):
        (tmp_path / "empty").mkdir()
        find_layout(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# The command


def run_eval(args, capsys):
    from omnivision.cli import main

    code = main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture
def tiny_ade(tmp_path):
    """An ADE20K root with two validation maps stored ADE-style (class k as k + 1, 0 = other),
    a class-list file, and a folder of predictions (class ids 0..3)."""
    root = tmp_path / "ADEChallengeData2016"
    stored = np.where(GT == 255, 0, GT + 1).astype(np.uint8)
    write_label_map(root / "annotations" / "validation" / "ADE_val_00000001.png", stored)
    write_label_map(
        root / "annotations" / "validation" / "ADE_val_00000002.png", np.full((2, 2), 4)
    )
    (root / "images" / "validation").mkdir(parents=True)
    for name in ("ADE_val_00000001", "ADE_val_00000002"):
        Image.new("RGB", (4, 4)).save(root / "images" / "validation" / f"{name}.jpg")
    pred = tmp_path / "preds"
    write_label_map(pred / "ADE_val_00000001.png", PRED)
    write_label_map(pred / "ADE_val_00000002.png", np.array([[3, 3], [3, 0]]))
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return root, pred, classes


def ovss_args(tiny, run):
    root, pred, classes = tiny
    return ["ovss", "--pred", pred, "--gt", root, "--classes", classes, "--out", run,
            "--reduce-zero-label"]  # fmt: skip


def test_cli_end_to_end(tiny_ade, tmp_path, capsys):
    from omnivision.eval.report import write_report

    run = tmp_path / "run"
    code, out, err = run_eval(ovss_args(tiny_ade, run), capsys)
    assert code == 0, err
    # The two images of test_areas_accumulate_over_the_dataset_not_per_image.
    iou = [3 / 9, 4 / 5, 0.0, 3 / 4]
    acc = [3 / 4, 1.0, 0.0, 3 / 4]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["benchmark"] == "ovss" and metrics["features"] == "preds"
    assert metrics["scene"] == "validation"
    assert metrics["settings"]["layout"] == "ade20k"
    assert metrics["settings"]["ignore_index"] == 255
    values = {row["metric"]: (row["value"], row["count"]) for row in metrics["rows"]}
    assert values["miou"][0] == pytest.approx(np.mean(iou)) and values["miou"][1] == 4
    assert values["pixel_accuracy"][0] == pytest.approx(10 / 16)
    assert values["pixel_accuracy"][1] == 2
    assert values["macc"][0] == pytest.approx(np.mean(acc))
    with open(run / "per_query.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(CLASSES)
    np.testing.assert_allclose([float(r["iou"]) for r in rows], iou, atol=1e-6)
    assert [int(r["union"]) for r in rows] == [9, 5, 4, 4]
    assert rows[2]["accuracy"] == "0.0"
    md = (run / "ovss.md").read_text()
    assert "| 0 | wall | 33.33 | 75.00 |" in md
    assert f"| {100 * 10 / 16:.2f} | {100 * np.mean(iou):.2f} |" in md
    assert "| 0 | wall | 33.33 | 75.00 |" in out and "wrote" in out

    report = write_report([run], tmp_path / "report" / "report.md")
    text = report.path.read_text()
    assert "## Open-vocabulary semantic segmentation" in text
    assert f"{100 * np.mean(iou):.1f}" in text


def test_cli_absent_class_and_16_bit_maps_on_ade847(tmp_path, capsys):
    # 847 classes: 16-bit maps, ignore 65535, filed under ade20k-847 beside dinov3.seg's figure.
    from omnivision.eval.report import write_report

    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    gt = np.array([[300, 300], [846, 65535]], np.uint16)
    Image.fromarray(gt).save(gt_dir / "a.tif")
    write_label_map(pred_dir / "a.png", np.array([[300, 5], [846, 846]]))
    classes = tmp_path / "ade847.txt"
    classes.write_text("".join(f"{k}: class {k}\n" for k in range(847)))
    run = tmp_path / "run"
    args = ["ovss", "--pred", pred_dir, "--gt", gt_dir, "--classes", classes, "--out", run]
    code, _, err = run_eval(args, capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["benchmark"] == "ade20k-847"
    assert metrics["settings"]["ignore_index"] == 65535
    # 300: inter 1, union 2; 846: inter 1, union 1; 5: only predicted, IoU 0; 844 others absent.
    miou = next(r for r in metrics["rows"] if r["metric"] == "miou")
    assert miou["value"] == pytest.approx((1 / 2 + 1 + 0) / 3) and miou["count"] == 3
    text = write_report([run], tmp_path / "report.md").path.read_text()
    assert "## ADE20K-847" in text and "dinov3.seg" in text and "20.1" in text


def test_cli_builtin_class_list(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    write_label_map(gt_dir / "a.png", np.array([[1, 2], [150, 0]]))  # stored: wall, building, flag
    write_label_map(pred_dir / "a.png", np.array([[0, 1], [149, 7]]))
    run = tmp_path / "run"
    args = ["ovss", "--pred", pred_dir, "--gt", gt_dir, "--classes", "ade20k-150",
            "--reduce-zero-label", "--out", run]  # fmt: skip
    code, _, err = run_eval(args, capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["benchmark"] == "ade20k-150"
    assert {r["metric"]: r["value"] for r in metrics["rows"]}["miou"] == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, exit 2, no run folder


def fails(args, capsys, run: Path, naming: Path, *words: str) -> None:
    code, _, err = run_eval(args, capsys)
    assert code == 2, err
    assert "\n" not in err and str(naming) in err, err
    for word in words:
        assert word in err, err
    assert not run.exists()


def test_bad_empty_class_list(tiny_ade, tmp_path, capsys):
    _, _, classes = tiny_ade
    classes.write_text("\n# no names\n")
    run = tmp_path / "run"
    fails(ovss_args(tiny_ade, run), capsys, run, classes, "empty class list")


def test_bad_duplicate_class_name(tiny_ade, tmp_path, capsys):
    _, _, classes = tiny_ade
    classes.write_text("wall\nfloor\nsky\nwall\n")
    run = tmp_path / "run"
    fails(ovss_args(tiny_ade, run), capsys, run, classes, "duplicate class name 'wall'", "line 4")


def test_bad_gt_id_beyond_the_class_list(tiny_ade, tmp_path, capsys):
    root, _, _ = tiny_ade
    gt = root / "annotations" / "validation" / "ADE_val_00000002.png"
    write_label_map(gt, np.full((2, 2), 5))  # stored 5 = class 4; the list has 0..3
    run = tmp_path / "run"
    fails(ovss_args(tiny_ade, run), capsys, run, gt, "class id 4 (stored as 5)", "4 classes")
    # Without --reduce-zero-label the stored 4 is beyond the list too, with a hint.
    write_label_map(gt, np.full((2, 2), 4))
    fails(ovss_args(tiny_ade, run)[:-1], capsys, run, gt, "class id 4", "--reduce-zero-label")


def test_bad_prediction_size(tiny_ade, tmp_path, capsys):
    _, pred, _ = tiny_ade
    write_label_map(pred / "ADE_val_00000002.png", np.zeros((2, 3), np.uint8))
    run = tmp_path / "run"
    fails(ovss_args(tiny_ade, run), capsys, run, pred / "ADE_val_00000002.png", "3x2", "2x2")


def test_bad_missing_prediction(tiny_ade, tmp_path, capsys):
    root, pred, _ = tiny_ade
    (pred / "ADE_val_00000002.png").unlink()
    run = tmp_path / "run"
    gt = root / "annotations" / "validation" / "ADE_val_00000002.png"
    fails(ovss_args(tiny_ade, run), capsys, run, pred / "ADE_val_00000002.png",
          "missing prediction", str(gt))  # fmt: skip


@pytest.mark.parametrize("side", ["gt", "pred"])
def test_bad_unreadable_png(tiny_ade, tmp_path, capsys, side):
    root, pred, _ = tiny_ade
    folder = root / "annotations" / "validation" if side == "gt" else pred
    broken = folder / "ADE_val_00000001.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = tmp_path / "run"
    fails(ovss_args(tiny_ade, run), capsys, run, broken, "not a readable image")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(broken)
    fails(ovss_args(tiny_ade, run), capsys, run, broken, "mode RGB")


def test_bad_run_leaves_a_previous_run_whole(tiny_ade, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_eval(ovss_args(tiny_ade, run), capsys)[0] == 0
    before = (run / "metrics.json").read_text()
    _, pred, _ = tiny_ade
    (pred / "ADE_val_00000001.png").unlink()
    code, _, _ = run_eval(ovss_args(tiny_ade, run), capsys)
    assert code == 2 and (run / "metrics.json").read_text() == before
