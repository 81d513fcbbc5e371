"""`omnivision segment`: open-vocabulary semantic segmentation (twod/segment.py, cli_segment.py).

Each refinement is switched on and off on a case built to need it; the command runs end to end
on the colour backend with a tiny bridge, and its output is scored by `omnivision eval ovss`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from omnivision.cli import run_command
from omnivision.twod.colour import ColourTextureExtractor
from omnivision.twod.features import PatchFeatures
from omnivision.twod.segment import (
    FeatureScorer,
    SegmentConfig,
    class_embeddings,
    crop_windows,
    guided_weights,
    local_global_scores,
    pixel_labels,
    prompt_texts,
    region_average,
    region_average_reference,
    region_owner,
    segment_image,
    upsample_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RED, BLUE, GREY, GREEN = (0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.5, 0.5, 0.5), (0.1, 0.8, 0.2)


def segment(*args: str) -> int:
    return run_command("omnivision.twod.cli_segment:segment_main", list(args), "omnivision segment")


def colour_texts(extractor, colours) -> torch.Tensor:
    """One unit vector per colour: the colour backend's mean patch feature of a flat image."""
    flat = [torch.tensor(c, dtype=torch.float32).expand(64, 64, 3).clone() for c in colours]
    return F.normalize(
        torch.stack([extractor.extract([im]).patches[0].mean((0, 1)) for im in flat]), dim=-1
    )


# ---------------------------------------------------------------------------------------------
# Text side


def test_class_embedding_is_the_normalised_mean_of_its_prompts():
    rng = torch.Generator().manual_seed(0)
    table: dict[str, torch.Tensor] = {}

    def encode(texts):
        for t in texts:
            table.setdefault(t, torch.randn(8, generator=rng) * (1 + len(table)))  # unequal norms
        return torch.stack([table[t] for t in texts])

    templates = ("a photo of a {}.", "a {} in the scene.", "a large {}.")
    got = class_embeddings(encode, ["chair", "table"], templates)
    assert prompt_texts(["chair"], templates) == [
        "a photo of a chair.",
        "a chair in the scene.",
        "a large chair.",
    ]
    for k, name in enumerate(["chair", "table"]):
        units = F.normalize(torch.stack([table[t.format(name)] for t in templates]), dim=-1)
        want = F.normalize(units.mean(0), dim=0)
        torch.testing.assert_close(got[k], want)
        # Not the first template alone, nor the mean of the raw (unnormalised) embeddings.
        assert not torch.allclose(got[k], units[0], atol=1e-3)
        raw = F.normalize(torch.stack([table[t.format(name)] for t in templates]).mean(0), dim=0)
        assert not torch.allclose(got[k], raw, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Refinements, each on a case that needs it


@dataclasses.dataclass
class GridExtractor:
    """A fake backbone handing back fixed patches and CLS (any view, any short side)."""

    patches: torch.Tensor
    cls: torch.Tensor | None
    stride: int = 8
    short_side: int = 32
    name: str = "grid"

    @property
    def dim(self) -> int:
        return self.patches.shape[-1]

    def extract(self, images):
        H, W = images[0].shape[:2]
        return PatchFeatures(self.patches[None], self.stride, (H, W), (H, W),
                             None if self.cls is None else self.cls[None])  # fmt: skip


def test_global_term_breaks_ties_towards_the_class_the_view_shows():
    """The right half's patches sit between two classes (a hair closer to class 0), the CLS token
    is class 1: with the global term the right half is class 1, without it class 0."""
    texts = torch.eye(3)
    patches = torch.zeros(4, 4, 3)
    patches[:, :2] = texts[2]
    patches[:, 2:] = F.normalize(torch.tensor([1.0, 0.98, 0.0]), dim=0)
    extractor = GridExtractor(patches, cls=texts[1])
    image = torch.full((32, 32, 3), 0.5)
    on = SegmentConfig(global_weight=0.3, guided=False, local_global=False)
    off = dataclasses.replace(on, global_weight=0.0)
    with_global = segment_image(image, FeatureScorer(extractor, texts), on).labels
    without = segment_image(image, FeatureScorer(extractor, texts), off).labels
    # (columns 12..19 blend the two halves' cells in the upsampling)
    assert (without[:, 20:] == 0).all() and (with_global[:, 20:] == 1).all()
    assert (without[:, :12] == 2).all() and (with_global[:, :12] == 2).all()


def test_colour_backend_has_no_global_term_and_says_so():
    extractor = ColourTextureExtractor(short_side=32)
    texts = colour_texts(extractor, [RED, GREY])
    image = torch.tensor(RED).expand(32, 32, 3).clone()
    config = SegmentConfig(local_global=False, guided=False)
    result = segment_image(image, FeatureScorer(extractor, texts), config)
    assert any("no CLS token" in note for note in result.notes)
    assert (result.labels == 0).all()


def edge_case():
    """A 64x16 image, red left of x = 26, blue right of it; coarse scores on 16-px cells as a
    backbone gives them: cell 1 (x 16..32, mostly blue) says blue outright."""
    image = torch.zeros(16, 64, 3)
    image[:, :26] = torch.tensor(RED)
    image[:, 26:] = torch.tensor(BLUE)
    coarse = torch.zeros(2, 1, 4)
    coarse[0, 0, 0] = 1.0
    coarse[1, 0, 1:] = 1.0
    return image, coarse


def test_guided_upsampling_snaps_the_class_edge_to_the_image_edge():
    image, coarse = edge_case()
    truth = (torch.arange(64) >= 26).long().expand(16, 64)
    guided = pixel_labels(coarse, image, SegmentConfig(guided=True))
    bilinear = pixel_labels(coarse, image, SegmentConfig(guided=False))
    wrong_guided = int((guided != truth).any(0).sum())
    wrong_bilinear = int((bilinear != truth).any(0).sum())
    # Bilinear puts the edge half-way between the cell centres (x = 16): columns 16..25 wrong.
    assert wrong_bilinear >= 8, wrong_bilinear
    assert wrong_guided <= 1, wrong_guided


def test_guided_weights_match_joint_bilateral_upsampling():
    """The once-per-image weights give what `features.joint_bilateral_upsample` (the slow twin,
    weights recomputed per call) gives, on random scores and a random guide."""
    from omnivision.twod.features import joint_bilateral_upsample

    g = torch.Generator().manual_seed(1)
    scores, guide = torch.randn(5, 6, 9, generator=g), torch.rand(45, 70, 3, generator=g)
    fast = upsample_scores(scores, (45, 70), guided_weights((6, 9), guide))
    slow = joint_bilateral_upsample(scores.permute(1, 2, 0)[None], guide[None], 0.8, 0.12)
    torch.testing.assert_close(fast, slow[0].permute(2, 0, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(upsample_scores(scores, (45, 70), guide), fast)


def test_regions_fix_a_noisy_boundary():
    """Noisy scores flip ~30% of the pixels near the boundary; averaging inside the two true
    regions (boolean masks, as SAM 2's automatic masks are passed) gives every pixel its region's
    class."""
    g = torch.Generator().manual_seed(0)
    H, W = 24, 24
    truth = (torch.arange(W) >= 11).long().expand(H, W)
    coarse = F.one_hot(truth, 2).permute(2, 0, 1).float() * 0.2 + 0.6 * torch.rand(
        2, H, W, generator=g
    )
    image = torch.full((H, W, 3), 0.5)
    config = SegmentConfig(guided=False)
    regions = torch.stack([truth == 0, truth == 1])
    plain = pixel_labels(coarse, image, config)
    refined = pixel_labels(coarse, image, config, region_owner(regions))
    assert float((plain == truth).float().mean()) < 0.8
    assert (refined == truth).all()
    # A pixel in no region keeps its own scores; the fast average equals its per-mask twin.
    partial = region_owner(regions[:1])
    torch.testing.assert_close(
        region_average(coarse, partial), region_average_reference(coarse, partial)
    )
    assert torch.equal(region_average(coarse, partial)[:, :, 11:], coarse[:, :, 11:])


def test_smaller_region_wins_where_masks_nest():
    whole = torch.ones(1, 8, 8, dtype=torch.bool)
    part = torch.zeros(1, 8, 8, dtype=torch.bool)
    part[0, :2, :2] = True
    owner = region_owner(torch.cat([part, whole]))
    assert (owner[:2, :2] == 0).all() and (owner[2:] == 1).all()


def test_crops_see_a_detail_the_resized_whole_image_loses():
    """A 256x256 grey image with a green stripe 16 px wide: seen whole at short side 64 (4x down,
    8-px patches = 32 image px) the stripe drowns in grey; 64-px crops at native size find it,
    and their average with the whole view keeps most of it (measured: 13 of its 16 columns; the
    whole view's grey pulls the stripe's edge columns back)."""
    image = torch.tensor(GREY).expand(256, 256, 3).clone()
    image[:, 128:144] = torch.tensor(GREEN)
    extractor = ColourTextureExtractor(short_side=64)
    scorer = FeatureScorer(extractor, colour_texts(extractor, [GREY, GREEN]))
    whole_only = SegmentConfig(local_global=False, guided=False, whole=64, crop=64, stride=48)
    crops = dataclasses.replace(whole_only, local_global=True)
    stripe = (slice(None), slice(128, 144))
    assert (segment_image(image, scorer, whole_only).labels == 1).sum() == 0
    result = segment_image(image, scorer, crops)
    assert (result.labels[stripe] == 1).float().mean() >= 0.75  # measured 0.8125
    assert (result.labels[:, :128] == 0).all() and (result.labels[:, 144:] == 0).all()
    assert result.views == len(crop_windows((256, 256), 64, 48)) + 1 == 26


def test_crop_windows_cover_the_image_and_overlapping_views_average():
    windows = crop_windows((100, 300), 64, 48)
    covered = torch.zeros(100, 300, dtype=torch.bool)
    for y0, x0, y1, x1 in windows:
        assert (y1 - y0, x1 - x0) == (64, 64)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert crop_windows((40, 50), 64, 48) == [(0, 0, 40, 50)]

    class Constant:
        """Every crop scores 1 on class 0, the whole image 0: the average is 0.5 everywhere."""

        has_global = False

        def __call__(self, view, short_side, global_weight):
            return torch.full((1, view.shape[0] // 8, view.shape[1] // 8), float(short_side == 64))

    config = SegmentConfig(crop=64, stride=48, whole=32)
    scores, views = local_global_scores(torch.zeros(100, 300, 3), Constant(), config)
    assert views == len(windows) + 1
    torch.testing.assert_close(scores, torch.full_like(scores, 0.5))


# ---------------------------------------------------------------------------------------------
# The command, end to end

CLASSES = ("grey floor", "red box", "blue ball")


def scene_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 160x120 grey image with a red box and a blue disc (mild noise), and its label map."""
    rng = np.random.default_rng(seed)
    H, W = 120, 160
    labels = np.zeros((H, W), np.uint8)
    labels[20:70, 15:75] = 1
    ys, xs = np.mgrid[0:H, 0:W]
    labels[(ys - 75) ** 2 + (xs - 115) ** 2 < 30**2] = 2
    colours = np.array([GREY, RED, BLUE], np.float32)
    image = colours[labels] + 0.03 * rng.standard_normal((H, W, 3)).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), labels


@pytest.fixture(scope="module")
def colour_bridge(tiny_clip, tmp_path_factory):
    """A tiny bridge (tiny random CLIP -> the colour backend) whose last layer is solved in closed
    form so each class's prompt-averaged text lands on its colour's feature; saved and reloaded
    by the command through the real `TextBridge.load` path."""
    from omnivision.twod.bridge import BridgeConfig, TextBridge
    from omnivision.twod.segment import TEMPLATES

    folder, clip = tiny_clip
    extractor = ColourTextureExtractor(short_side=96)
    config = BridgeConfig.for_models(clip, extractor, clip_model=str(folder), hidden_dim=64)
    torch.manual_seed(0)
    bridge = TextBridge(clip, config)
    targets = colour_texts(extractor, [GREY, RED, BLUE])
    with torch.no_grad():
        text = class_embeddings(bridge.encode_phrases, CLASSES, TEMPLATES)
        hidden = bridge.mlp[:3](text)
        design = torch.cat([hidden, torch.ones(len(CLASSES), 1)], dim=1)
        solution = torch.linalg.lstsq(design, targets).solution  # (65, D)
        last = bridge.mlp[3]
        assert isinstance(last, torch.nn.Linear)
        last.weight.copy_(solution[:-1].T)
        last.bias.copy_(solution[-1])
        torch.testing.assert_close(bridge.project(text), targets, atol=1e-4, rtol=0)
    return bridge.save(tmp_path_factory.mktemp("colour_bridge") / "bridge")


def ovss_miou(pred, gt, classes, run) -> float:
    code = run_command(
        "omnivision.eval.cli:eval_main",
        [
            "ovss",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--classes",
            str(classes),
            "--out",
            str(run),
        ],
        "omnivision eval",
    )
    assert code == 0
    return json.loads((run / "metrics.json").read_text())["global_results"]["mIoU"]


def test_segment_command_writes_maps_that_eval_ovss_scores(colour_bridge, tmp_path, capsys):
    image, labels = scene_image()
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "scene.png")
    Image.fromarray(labels, mode="L").save(tmp_path / "gt" / "scene.png")
    out = tmp_path / "seg"
    common = [
        "--image", str(tmp_path / "images"), "--classes", ",".join(CLASSES),
        "--bridge", str(colour_bridge), "--features", "colour", "--sam", "none",
        "--crop", "64", "--stride", "48", "--whole", "96",
    ]  # fmt: skip
    code = segment(*common, "--out", str(out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no CLS token" in captured.err  # the colour backend: global term skipped, said once
    assert "segmented 1 image(s) into 3 classes" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.txt", "scene.json", "scene.png", "scene_overlay.png",
    ]  # fmt: skip
    with Image.open(out / "scene.png") as im:
        assert im.mode == "P" and im.size == (160, 120)
    with Image.open(out / "scene_overlay.png") as im:
        assert im.size[1] == 120 and im.size[0] > 160  # the legend panel on the right
    record = json.loads((out / "scene.json").read_text())
    assert list(record["fractions"]) == list(CLASSES)
    assert abs(sum(record["fractions"].values()) - 1) < 1e-4
    for k, name in enumerate(CLASSES):
        assert abs(record["fractions"][name] - float((labels == k).mean())) < 0.03, name

    miou = ovss_miou(out, tmp_path / "gt", out / "classes.txt", tmp_path / "run")
    # Measured 1.0 (every pixel right: guided upsampling puts the class edges on the image's
    # edges); asserted with a 0.01 margin.
    assert miou >= 0.99, miou
    # Bilinear upsampling (--no-guided) blurs the edges by up to half a patch: measured 0.9646.
    code = segment(*common, "--no-guided", "--out", str(tmp_path / "bilinear"))
    assert code == 0, capsys.readouterr().err
    bilinear = ovss_miou(
        tmp_path / "bilinear", tmp_path / "gt", out / "classes.txt", tmp_path / "run2"
    )
    assert bilinear < miou - 0.02, bilinear


def test_segment_with_dense_clip_runs_end_to_end(tiny_clip, tmp_path, capsys):
    """The CLIP path (dense CLIP features and the whole view's embedding against the class
    prompts) with the tiny random CLIP: outputs are written; the labels mean nothing."""
    image, _ = scene_image()
    Image.fromarray(image[:64, :96]).save(tmp_path / "scene.png")
    code = segment(
        "--image", str(tmp_path / "scene.png"), "--classes", "floor,box", "--clip",
        str(tiny_clip[0]), "--sam", "none", "--crop", "64", "--stride", "48",
        "--out", str(tmp_path / "seg"),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "seg" / "scene.json").read_text())
    assert record["views"] == 3 and abs(sum(record["fractions"].values()) - 1) < 1e-4


def test_missing_sam2_weights_turn_the_regions_off_with_a_note(
    colour_bridge, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("omnivision.twod.sam.hub_unavailable", lambda *args: True)
    image, _ = scene_image()
    Image.fromarray(image).save(tmp_path / "scene.png")
    code = segment(
        "--image", str(tmp_path / "scene.png"), "--classes", ",".join(CLASSES),
        "--bridge", str(colour_bridge), "--no-local-global", "--whole", "64",
        "--out", str(tmp_path / "seg"),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [line for line in captured.err.splitlines() if "SAM 2" in line]
    assert len(notes) == 1 and "late refinement off" in notes[0], captured.err
    assert (tmp_path / "seg" / "scene.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--classes", " , "], "--classes: empty class list"),
        (["--classes", "chair,table,chair"], "duplicate class 'chair'"),
        (["--clip", "NoSuchModel-B-99"], "unknown OpenCLIP model 'NoSuchModel-B-99'"),
    ],
    ids=["empty-classes", "duplicate-class", "unknown-model"],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    image, _ = scene_image()
    Image.fromarray(image).save(tmp_path / "scene.png")
    base = ["--image", str(tmp_path / "scene.png"), "--out", str(tmp_path / "seg"), "--sam", "none"]
    if "--classes" not in args:
        base += ["--classes", "chair,table"]
    if "--clip" not in args:
        base += ["--clip", "NoSuchModel-B-99"]  # never reached: the classes fail first
    code = segment(*base, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "seg").exists()


def test_unreadable_image_is_named_before_any_model_loads(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    image, _ = scene_image()
    Image.fromarray(image).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    code = segment(
        "--image", str(folder), "--classes", "chair,table", "--clip", "NoSuchModel-B-99",
        "--sam", "none", "--out", str(tmp_path / "seg"),
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "b.png: not a readable image" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "seg").exists()


def test_bad_templates_leave_the_previous_output(colour_bridge, tmp_path, capsys):
    """--out already holds a run; a run refused on bad input leaves it whole."""
    out = tmp_path / "seg"
    out.mkdir()
    (out / "old.png").write_bytes(b"previous run")
    image, _ = scene_image()
    Image.fromarray(image).save(tmp_path / "scene.png")
    code = segment(
        "--image", str(tmp_path / "scene.png"), "--classes", ",".join(CLASSES),
        "--bridge", str(colour_bridge), "--features", "colour", "--sam", "none",
        "--templates", "no placeholder", "--out", str(out),
    )  # fmt: skip
    assert code == 2 and "must each hold '{}'" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["old.png"]
