"""Keypoint matching, PCK and the SPair-71k reader: a synthetic SPair folder, hand-made PCK
cases, and a real photo warped by a known homography."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import data_path
from PIL import Image

from omnivision.twod.colour import ColourTextureExtractor
from omnivision.twod.correspondence import (
    MatchConfig,
    SPairDataset,
    evaluate_pck,
    match_keypoints,
    pck,
)
from omnivision.twod.features import PatchFeatures, TwoDError
from omnivision.twod.io import read_image

# (file stem, category, src, trg, src [w, h, c], trg [w, h, c], src kps, trg kps, src box, trg box)
PAIRS = {
    "test": [
        ("000001-cat_a-cat_b:cat", "cat", "cat_a.jpg", "cat_b.jpg", [64, 48, 3], [40, 56, 3],
         [[10, 12], [30, 20], [50, 40]], [[5, 6], [20, 30], [35, 50]], [2, 3, 60, 45], [1, 2, 38, 54]),
        ("000002-cat_a-cat_a:cat", "cat", "cat_a.jpg", "cat_a.jpg", [64, 48, 3], [64, 48, 3],
         [[10, 12], [30, 20], [50, 40], [20, 30]], [[10, 12], [30, 20], [50, 40], [20, 30]],
         [0, 0, 63, 47], [0, 0, 63, 47]),
        ("000003-dog_a-dog_a:dog", "dog", "dog_a.jpg", "dog_a.jpg", [48, 48, 3], [48, 48, 3],
         [[8, 8], [24, 30]], [[8, 8], [24, 30]], [0, 0, 47, 47], [0, 0, 47, 47]),
    ],
    "trn": [
        ("000004-dog_a-dog_a:dog", "dog", "dog_a.jpg", "dog_a.jpg", [48, 48, 3], [48, 48, 3],
         [[1, 2]], [[3, 4]], [0, 0, 47, 47], [0, 0, 47, 47]),
    ],
}  # fmt: skip
IMAGES = {"cat": {"cat_a.jpg": (48, 64), "cat_b.jpg": (56, 40)}, "dog": {"dog_a.jpg": (48, 48)}}


@pytest.fixture
def spair_root(tmp_path):
    """An SPair-71k-shaped folder: PairAnnotation/{test,trn}/*.json and JPEGImages/<category>/."""
    rng = np.random.default_rng(0)
    for category, images in IMAGES.items():
        folder = tmp_path / "JPEGImages" / category
        folder.mkdir(parents=True)
        for name, (h, w) in images.items():
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # texture everywhere
            Image.fromarray(pixels).save(folder / name, quality=95)
    for split, pairs in PAIRS.items():
        folder = tmp_path / "PairAnnotation" / split
        folder.mkdir(parents=True)
        for stem, cat, src, trg, src_size, trg_size, src_kps, trg_kps, src_box, trg_box in pairs:
            ann = {
                "pair_id": int(stem[:6]), "filename": stem, "src_imname": src, "trg_imname": trg,
                "src_imsize": src_size, "trg_imsize": trg_size, "src_bndbox": src_box,
                "trg_bndbox": trg_box, "category": cat, "src_pose": 0, "trg_pose": 0,
                "src_kps": src_kps, "trg_kps": trg_kps, "kps_ids": [str(i) for i in range(len(src_kps))],
                "viewpoint_variation": 1, "scale_variation": 0, "truncation": 0, "occlusion": 0,
                "mirror": 0,
            }  # fmt: skip
            (folder / f"{stem}.json").write_text(json.dumps(ann))
    return tmp_path


def test_spair_reader_counts_keypoints_boxes_and_filter(spair_root):
    test = SPairDataset(spair_root)
    assert len(test) == 3 and len(SPairDataset(spair_root, split="trn")) == 1
    assert len(SPairDataset(spair_root, split="train")) == 1
    pair = test[0]
    assert pair.name == "000001-cat_a-cat_b:cat" and pair.category == "cat"
    assert torch.equal(pair.src_kps, torch.tensor([[10.0, 12], [30, 20], [50, 40]]))
    assert torch.equal(pair.trg_kps, torch.tensor([[5.0, 6], [20, 30], [35, 50]]))
    assert torch.equal(pair.trg_bbox, torch.tensor([1.0, 2, 38, 54]))
    assert pair.src_size == (48, 64) and pair.trg_size == (56, 40)  # (H, W) from [w, h, c]
    assert pair.trg_path == spair_root / "JPEGImages" / "cat" / "cat_b.jpg"
    assert [p.name for p in test] == [p[0] for p in PAIRS["test"]]
    dogs = SPairDataset(spair_root, category="dog")
    assert [p.category for p in dogs] == ["dog"] and len(
        SPairDataset(spair_root, category="cat")
    ) == 2
    with pytest.raises(TwoDError, match="horse"):
        SPairDataset(spair_root, category="horse")


def test_spair_images_load_lazily(spair_root):
    pair = SPairDataset(spair_root)[0]
    image = pair.trg_image
    assert image.shape == (*pair.trg_size, 3) and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    pair.src_path.unlink()  # only read on access: the pair was built without touching it
    pair = SPairDataset(spair_root)[0]
    with pytest.raises(TwoDError, match="cat_a.jpg"):
        _ = pair.src_image


def test_spair_errors_name_the_file(spair_root, tmp_path):
    with pytest.raises(TwoDError, match="nowhere"):
        SPairDataset(tmp_path / "nowhere")
    with pytest.raises(TwoDError, match="val"):
        SPairDataset(spair_root, split="val")
    bad = spair_root / "PairAnnotation" / "test" / "000009-x-y:cat.json"
    bad.write_text("{not json")
    with pytest.raises(TwoDError, match="000009-x-y:cat.json"):
        list(SPairDataset(spair_root))
    bad.write_text(json.dumps({"category": "cat", "src_imname": "cat_a.jpg"}))
    with pytest.raises(TwoDError, match="000009-x-y:cat.json"):
        list(SPairDataset(spair_root))


def test_pck_counts_keypoints_within_alpha_times_longest_box_side():
    gt = torch.tensor([[50.0, 50], [10, 10], [0, 0], [100, 40]])
    pred = gt + torch.tensor([[3.0, 4], [0, 9.9], [10, 0], [8, 8]])  # distances 5, 9.9, 10, 11.3
    result = pck(pred, gt, (10, 20, 110, 70))  # w = 100, h = 50: threshold 0.1 * 100
    assert result.threshold == pytest.approx(10.0)
    assert result.correct.tolist() == [True, True, True, False]
    assert result.pck == 0.75
    assert pck(pred, gt, (10, 20, 110, 70), alpha=0.05).pck == 0.25
    assert pck(pred, gt, (0, 0, 50, 200)).pck == 1.0  # h = 200 is the longest side
    assert pck(pred, gt, (60, 40)).threshold == pytest.approx(6.0)  # an image size (H, W)
    assert pck(pred[:0], gt[:0], (0, 0, 10, 10)).pck == 0.0


def test_match_keypoints_finds_the_same_patch_in_the_same_features():
    patches = torch.randn(6, 10, 16, generator=torch.Generator().manual_seed(0))
    features = PatchFeatures(patches[None], 8, (48, 80), (60, 100))  # patches 10 x 10 pixels
    centres = torch.tensor([[5.0, 5], [95, 55], [45, 25], [75, 15]])
    assert torch.allclose(match_keypoints(features, features, centres), centres)
    off_centre = centres + torch.tensor([[-4.0, 3], [4, -4], [3, 4], [-2, -3]])
    nearest = match_keypoints(features, features, off_centre, MatchConfig(sampling="nearest"))
    assert torch.allclose(nearest, centres)  # the patch under each point
    refined = match_keypoints(features, features, centres, MatchConfig(refine_radius=1))
    assert (refined - centres).norm(dim=1).max() < 5  # stays within the matched patch
    two = PatchFeatures(patches[None].repeat(2, 1, 1, 1), 8, (48, 80), (60, 100))
    with pytest.raises(TwoDError, match="one image"):
        match_keypoints(two, features, centres)


@dataclass
class PositionExtractor:
    """A test double: patch features are random Fourier features of the patch position, so two
    images of one size match point for point whatever they show."""

    name: str = "position"
    dim: int = 64
    stride: int = 4
    short_side: int = 0

    def extract(self, images: Sequence[torch.Tensor]) -> PatchFeatures:
        h, w = images[0].shape[:2]
        gh, gw = h // self.stride, w // self.stride
        rows, cols = torch.meshgrid(
            (torch.arange(gh) + 0.5) / gh, (torch.arange(gw) + 0.5) / gw, indexing="ij"
        )
        freqs = torch.randn(2, self.dim // 2, generator=torch.Generator().manual_seed(0)) * 3
        phase = 2 * math.pi * torch.stack([cols, rows], -1) @ freqs
        patches = torch.cat([phase.cos(), phase.sin()], -1)[None].repeat(len(images), 1, 1, 1)
        return PatchFeatures(patches, self.stride, (gh * self.stride, gw * self.stride), (h, w))


def test_evaluate_pck_reads_images_and_averages_per_pair_and_category(spair_root):
    same = [p for p in SPairDataset(spair_root) if p.src_path == p.trg_path]
    summary = evaluate_pck(PositionExtractor(), same, progress=True)
    assert summary.per_pair == {"000002-cat_a-cat_a:cat": 1.0, "000003-dog_a-dog_a:dog": 1.0}
    assert summary.per_category == {"cat": 1.0, "dog": 1.0}
    assert summary.mean == 1.0 and summary.per_keypoint == 1.0 and summary.alpha == 0.1
    full = evaluate_pck(PositionExtractor(), SPairDataset(spair_root))
    assert list(full.per_pair) == [p[0] for p in PAIRS["test"]]
    cat = [full.per_pair[p[0]] for p in PAIRS["test"] if p[1] == "cat"]
    assert full.per_category["cat"] == pytest.approx(sum(cat) / 2)
    assert full.mean == pytest.approx(sum(full.per_pair.values()) / 3)
    kps = {p[0]: len(p[6]) for p in PAIRS["test"]}
    assert full.per_keypoint == pytest.approx(sum(full.per_pair[n] * k for n, k in kps.items()) / 9)


def apply_homography(homography: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    xyw = (
        torch.cat([points.double(), torch.ones(len(points), 1, dtype=torch.float64)], 1)
        @ homography.T
    )
    return (xyw[:, :2] / xyw[:, 2:]).float()


def warp(image: torch.Tensor, homography: torch.Tensor) -> torch.Tensor:
    """target(p) = image(H^-1 p), pixel centres at +0.5, black outside."""
    h, w = image.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    src = apply_homography(
        torch.linalg.inv(homography), torch.stack([xs.flatten(), ys.flatten()], 1)
    )
    grid = (src / torch.tensor([w, h]) * 2 - 1).view(1, h, w, 2)
    return F.grid_sample(image.permute(2, 0, 1)[None], grid, align_corners=False)[0].permute(
        1, 2, 0
    )


def test_matcher_beats_random_on_a_real_photo_warped_by_a_known_homography():
    """groceries.jpg (800 x 534) rotated 5 degrees, scaled 0.9, shifted (60, 10) px with a little
    perspective; 50 keypoints on a 10 x 5 grid over the central 70 % (all land inside the target).

    Measured with the colour backend at short side 448: PCK@0.1 (threshold 80 px, the full target
    image) 0.84 for the matcher (0.88 with nearest sampling; refine_radius=1 the same), 0.04 for
    uniform random points with seed 0 (seeds 0-4: 0.04, 0.10, 0.08, 0.00, 0.06; chance is about
    pi * 80^2 / (800 * 534) = 0.05). Deterministic (fixed warp, fixed extractor, seeded random
    points), so the thresholds sit 2 points below the measured values: matcher >= 0.82 (measured
    0.84, i.e. at most one of the 42 hits may be lost), random points <= 0.06 (measured 0.04).
    """
    image = read_image(data_path("images", "groceries.jpg"))
    h, w = image.shape[:2]
    angle, scale = math.radians(5), 0.9
    homography = torch.tensor(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), 60.0],
            [scale * math.sin(angle), scale * math.cos(angle), 10.0],
            [1e-5, -2e-5, 1.0],
        ],
        dtype=torch.float64,
    )
    target = warp(image, homography)
    xs, ys = torch.meshgrid(
        torch.linspace(0.15, 0.85, 10) * w, torch.linspace(0.15, 0.85, 5) * h, indexing="xy"
    )
    src_kps = torch.stack([xs.flatten(), ys.flatten()], 1)
    gt = apply_homography(homography, src_kps)
    assert bool(((gt > 0) & (gt < torch.tensor([w, h]))).all())

    extractor = ColourTextureExtractor(short_side=448)
    pred = match_keypoints(extractor.extract([image]), extractor.extract([target]), src_kps)
    matcher = pck(pred, gt, (0, 0, w, h)).pck
    random_points = torch.rand(
        len(gt), 2, generator=torch.Generator().manual_seed(0)
    ) * torch.tensor([w, h])
    chance = pck(random_points, gt, (0, 0, w, h)).pck
    assert matcher >= 0.82, (matcher, chance)  # measured 0.84, margin 0.02
    assert chance <= 0.06, (matcher, chance)  # measured 0.04 (seed 0), margin 0.02


def test_eval_spair_writes_a_run_with_the_pck_of_evaluate_pck(spair_root, tmp_path, capsys):
    """`omnivision eval spair`: the run's per-pair PCK is evaluate_pck's (here 0 / 0.75 / 1 for
    the three pairs: the dog image matched to itself transfers both keypoints)."""
    from omnivision.cli import main
    from omnivision.twod.extractors import load_extractor

    run = tmp_path / "run"
    args = ["eval", "spair", str(spair_root), "--backbone", "colour", "--short-side", "64"]
    assert main([*args, "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    rows = {r["path"]: r for r in metrics["rows"]}
    direct = evaluate_pck(load_extractor("colour", short_side=64), SPairDataset(spair_root))
    assert rows["per-pair"]["value"] == pytest.approx(direct.mean)
    assert rows["per-keypoint"]["value"] == pytest.approx(direct.per_keypoint)
    per_pair = (run / "per_query.csv").read_text().splitlines()
    assert len(per_pair) == 1 + 3 and "000003-dog_a-dog_a:dog,1.0" in per_pair
    assert main([*args, "--alpha", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--alpha must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
