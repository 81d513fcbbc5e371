"""Class labels lifted to 3D (issue 17): `omnivision-lift --features segment-labels:DIR` and
`segment:CLASSES`, `omnivision query --classes`, and the end-to-end figures on the synthetic
benchmark (its trained tiny CLIP and text bridge)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from omnivision.cli import lift_main, main
from omnivision.lift.pipeline import LiftConfig, lift_scene
from omnivision.lift.store import load_features
from omnivision.query.classes import argmax_classes, pick_classes
from omnivision.scenes.demo import render_object_ids
from omnivision.scenes.io_ply import read_ply
from omnivision.scenes.load import load_scene
from omnivision.twod.segdata import write_label_map

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL_VIEWS = (1, 4, 7, 10, 13, 16)
"""The synthetic benchmark's held-out views (`eval.train_clip.EVAL_VIEWS`; never trained on)."""


def object_names(scene) -> list[str]:
    return [scene.objects[k] for k in sorted(scene.objects)]


def write_oracle_labels(scene, folder: Path, views=None) -> Path:
    """Per-view class-id PNGs from the rendered object ids (nothing -> 255) and classes.txt: a
    segmenter that is always right, in the layout `omnivision segment` writes."""
    folder.mkdir(parents=True, exist_ok=True)
    for view in range(len(scene.cameras)) if views is None else views:
        ids = render_object_ids(scene.gaussians, scene.cameras, view).numpy()
        name = scene.cameras.names[view]
        write_label_map(folder / f"{name}.png", np.where(ids < 0, 255, ids).astype(np.uint8))
    (folder / "classes.txt").write_text("\n".join(object_names(scene)) + "\n")
    return folder


def class_accuracy(probabilities: torch.Tensor, weights: torch.Tensor, truth: torch.Tensor):
    """(per-Gaussian accuracy, weight-averaged accuracy): the share of Gaussians whose argmax
    class is their object, and the same weighted by each Gaussian's blending-weight sum over the
    views (how much it shows in the renders)."""
    right = (argmax_classes(probabilities) == truth).float()
    return float(right.mean()), float((right * weights).sum() / weights.sum())


@pytest.fixture(scope="module")
def labelled(demo_dir, tmp_path_factory):
    """A copy of the demo scene whose oracle segmentations are lifted by the command (with
    --diffuse) into SCENE/omnivision: (scene folder, loaded scene)."""
    root = tmp_path_factory.mktemp("segment3d") / "scene"
    shutil.copytree(demo_dir, root, ignore=shutil.ignore_patterns("omnivision"))
    scene = load_scene(root)
    labels = write_oracle_labels(scene, root.parent / "labels")
    assert lift_main([str(root), "--features", f"segment-labels:{labels}", "--diffuse"]) == 0
    return root, scene


def test_oracle_segmentations_lift_to_each_gaussians_object(labelled):
    root, scene = labelled
    lifted = load_features(root / "omnivision", "segment-labels", scene.gaussians_file)
    assert lifted.entry["classes"] == object_names(scene)
    assert lifted.features.shape == (len(scene.gaussians), 8)
    truth = scene.gaussians.extras["object_id"].long()
    per_gaussian, weighted = class_accuracy(lifted.features, lifted.weight_sums, truth)
    # measured 0.9603 per Gaussian, 0.9976 weight-averaged (18 views, diffused); asserts >= 0.95
    # (the bar) and >= 0.99. The misses are Gaussians hidden in every view (1025 of the
    # 1162 are the table's under the objects, 504 of them under the plate): their small weights
    # come through the pixels of what covers them, so they take its class
    assert per_gaussian >= 0.95, per_gaussian
    assert weighted >= 0.99, weighted
    wrong = argmax_classes(lifted.features) != truth
    # measured 0.882 of the misses are table Gaussians (1025 of 1162); asserts >= 0.85
    assert float((truth == 0)[wrong].float().mean()) >= 0.85


def test_query_classes_selects_paints_and_exports_class_ids(labelled, tmp_path, capsys):
    root, scene = labelled
    truth = scene.gaussians.extras["object_id"].long()
    out = tmp_path / "mug.ply"
    code = main(
        ["query", str(root), "--classes", "red mug", "--then", "extract", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "by --classes (segment-labels features)" in stdout
    mug = read_ply(out)
    class_ids = mug.extras["class_id"].long()
    assert bool((class_ids == 1).all())  # every extracted Gaussian is labelled mug
    # and they are the mug: measured IoU 0.989 with the true mug Gaussians; asserts >= 0.95
    hits, size = int((mug.extras["object_id"].long() == 1).sum()), int((truth == 1).sum())
    assert hits / (len(mug) + size - hits) >= 0.95

    painted = tmp_path / "painted.ply"
    code = main(["query", str(root), "--classes", "--then", "paint", "--out", str(painted)])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "classes: wooden table " in stdout and "white plate " in stdout
    written = read_ply(painted)
    ids = written.extras["class_id"].long()
    assert len(written) == len(scene.gaussians)
    # each class's Gaussians share one colour, and two classes differ
    colours = [written.rgb_dc[ids == k].unique(dim=0) for k in (1, 2)]
    assert all(len(c) == 1 for c in colours) and not torch.equal(colours[0], colours[1])


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (",", "empty class list"),
        ("red mug,red mug", "duplicate class 'red mug'"),
        ("spoon", "unknown class 'spoon'; the lifted classes are: wooden table, red mug"),
    ],
)
def test_bad_class_names_are_one_line_exit_2(labelled, capsys, tmp_path, classes, message):
    root, _ = labelled
    out = tmp_path / "x.ply"
    code = main(["query", str(root), "--classes", classes, "--then", "extract", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_features_without_classes_are_refused(labelled, capsys):
    root, _ = labelled
    assert lift_main([str(root), "--features", "colour", "--views", "0"]) == 0
    capsys.readouterr()
    code = main(["query", str(root), "--classes", "red mug", "--features", "colour"])
    err = capsys.readouterr().err
    assert code == 2 and "'colour' are not segment features" in err
    assert len(err.strip().splitlines()) == 1
    code = main(["query", str(root), "--click", "0:10,10", "--then", "paint"])
    assert code == 2 and "use it with --classes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("segment:", "empty class list"),
        ("segment:mug,box,mug", "duplicate class 'mug'"),
        ("segment:@missing.txt", "missing.txt: no such class-list file"),
        ("segment-labels:nowhere", "nowhere is not a folder of label PNGs"),
    ],
)
def test_bad_lift_class_lists_are_one_line_exit_2(demo_dir, tmp_path, capsys, spec, message):
    code = lift_main([str(demo_dir), "--features", spec, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_pick_classes_reads_comma_lists_and_defaults_to_every_class():
    classes = ("table", "mug", "box")
    assert pick_classes(("mug,box",), classes) == (1, 2)
    assert pick_classes(("box", "table"), classes) == (2, 0)
    assert pick_classes((), classes) == (0, 1, 2)


def test_argmax_leaves_gaussians_without_probability_unlabelled():
    probabilities = torch.tensor([[0.2, 0.7], [0.0, 0.0], [0.5, 0.5]])
    assert argmax_classes(probabilities).tolist() == [1, -1, 0]


# ---------------------------------------------------------------------------------------------
# End to end on the synthetic benchmark: the demo scene's held-out views, its tiny CLIP and bridge


class OracleScorer:
    """The 2D pipeline's scores with perfect features: each 16-pixel patch scores every class
    by the share of its pixels the rendered ids give that class (set `ids` per image)."""

    has_global = False
    ids: torch.Tensor

    def __call__(self, view, short_side, global_weight):
        one_hot = torch.nn.functional.one_hot(self.ids.clamp_min(0), 8).float()
        one_hot *= (self.ids >= 0)[..., None]
        return torch.nn.functional.avg_pool2d(one_hot.permute(2, 0, 1)[None], 16)[0]


@pytest.fixture(scope="module")
def held_out(synthetic_bench, tmp_path_factory):
    """The benchmark's held-out views as an `omnivision segment` input folder, their GT class
    maps (rendered ids; nothing = 255, ignored) and the class list (object names in id order)."""
    folder, _ = synthetic_bench
    scene = load_scene(folder / "scene")
    root = tmp_path_factory.mktemp("held_out")
    write_oracle_labels(scene, root / "gt", EVAL_VIEWS)
    (root / "gt" / "classes.txt").rename(root / "classes.txt")
    (root / "images").mkdir()
    for view in EVAL_VIEWS:
        name = scene.cameras.names[view]
        shutil.copyfile(scene.cameras.image_paths[view], root / "images" / f"{name}.png")
    return folder, scene, root


def miou(root: Path, pred: Path, classes) -> float:
    from omnivision.eval.ovss import evaluate_ovss
    from omnivision.twod.segdata import find_layout

    return evaluate_ovss(find_layout(root / "gt"), pred, classes).scores.miou


def test_held_out_views_segment_in_2d_with_oracle_features_and_the_tiny_models(held_out, capsys):
    from omnivision.twod.io import read_image
    from omnivision.twod.segment import SegmentConfig, segment_image

    folder, scene, root = held_out
    classes = object_names(scene)
    oracle = OracleScorer()
    for guided in (True, False):
        pred = root / f"oracle_guided_{guided}"
        for view in EVAL_VIEWS:
            oracle.ids = render_object_ids(scene.gaussians, scene.cameras, view)
            image = read_image(scene.cameras.image_paths[view])
            labels = segment_image(image, oracle, SegmentConfig(guided=guided)).labels
            path = pred / f"{scene.cameras.names[view]}.png"
            write_label_map(path, labels.numpy().astype(np.uint8))
    # measured 0.975 with guided upsampling, 0.815 bilinear (16-px patches blur thin parts:
    # the mug's handle, the torus); asserts >= 0.95 and <= 0.85
    guided, bilinear = (miou(root, root / f"oracle_guided_{g}", classes) for g in (True, False))
    with capsys.disabled():
        print(f"2D mIoU, oracle features: {guided:.3f} guided, {bilinear:.3f} bilinear")
    assert guided >= 0.95 and bilinear <= 0.85
    common = ["--image", str(root / "images"), "--classes-file", str(root / "classes.txt")]
    for text_side, expected in (
        (["--clip", str(folder / "models" / "clip"), "--pretrained", "None"], 0.86),
        (["--bridge", str(folder / "models" / "bridge")], 0.85),
    ):
        out = root / text_side[0].strip("-")
        assert main(["segment", *common, *text_side, "--sam", "none", "--out", str(out)]) == 0
        # measured mIoU 0.898 (dense CLIP) and 0.882 (colour patches through the bridge) with the
        # fixture's models (0.914 and 0.885 with an earlier eval-synthetic run's); asserts >= 0.86
        # and >= 0.85
        score = miou(root, out, classes)
        capsys.readouterr()
        with capsys.disabled():
            print(f"2D mIoU, tiny model {text_side[0]}: {score:.3f}")
        assert score >= expected, text_side[0]


def test_held_out_views_lift_the_tiny_bridges_classes_to_the_gaussians(held_out):
    folder, scene, _ = held_out
    spec = "segment:" + ",".join(object_names(scene))
    config = LiftConfig(features=spec, bridge=folder / "models" / "bridge", views=EVAL_VIEWS)
    result = lift_scene(scene, config)
    assert result.classes == tuple(object_names(scene))
    truth = scene.gaussians.extras["object_id"].long()
    per_gaussian, weighted = class_accuracy(result.features, result.weights, truth)
    print(
        f"3D class accuracy, tiny bridge: {per_gaussian:.4f} per Gaussian, {weighted:.4f} weighted"
    )
    # measured 0.9507 per Gaussian, 0.9840 weight-averaged from the 6 held-out views (the oracle
    # from all 18 views: 0.960 / 0.998); asserts >= 0.93 and >= 0.97
    assert per_gaussian >= 0.93, per_gaussian
    assert weighted >= 0.97, weighted


@pytest.mark.parametrize("guided", [True, False])
def test_pixel_scores_are_what_pixel_labels_takes_the_argmax_of(guided):
    from omnivision.twod.segment import SegmentConfig, pixel_labels, pixel_scores, region_owner

    g = torch.Generator().manual_seed(0)
    coarse, image = torch.randn(5, 6, 8, generator=g), torch.rand(48, 64, 3, generator=g)
    regions = torch.zeros(2, 48, 64, dtype=torch.bool)
    regions[0, :20, :30], regions[1, 30:, 10:50] = True, True
    config = SegmentConfig(guided=guided, class_chunk=2)  # the labels run 2 classes at a time
    for owner in (None, region_owner(regions)):
        scores = pixel_scores(coarse, image, config, owner)
        assert scores.shape == (5, 48, 64)
        assert torch.equal(scores.argmax(0), pixel_labels(coarse, image, config, owner))


def test_segment_lift_command_stores_probabilities_and_the_class_names(
    demo_dir, tiny_clip, tmp_path, capsys
):
    folder, _ = tiny_clip
    out = tmp_path / "out"
    argv = [str(demo_dir), "--features", "segment:mug,box,table", "--clip", str(folder)]
    argv += ["--clip-pretrained", "None", "--views", "0", "--out", str(out)]
    assert lift_main(argv) == 0
    lifted = load_features(out, "segment")
    assert lifted.entry["classes"] == ["mug", "box", "table"]
    assert lifted.entry["request"]["clip"] == str(folder)
    # every pixel's probabilities sum to 1, and aggregation is a weighted mean: so do the rows
    rows = lifted.features[lifted.seen].sum(1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=2e-3, rtol=0)  # fp16 storage
    assert lift_main(argv) == 0 and "up to date" in capsys.readouterr().out
    assert lift_main([*argv, "--pca", "2"]) == 2
    assert "drop --pca" in capsys.readouterr().err
