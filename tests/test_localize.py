"""Localize by example with the weight-free backend: a crop of one object finds all its copies."""

from __future__ import annotations

import numpy as np
import torch

from omnivision.twod.colour import ColourTextureExtractor
from omnivision.twod.localize import (
    LocalizeConfig,
    clean_mask,
    localize,
    otsu_threshold,
    reference_vector,
)

RED, BLUE, GREEN, ORANGE = (0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.1, 0.7, 0.2), (0.95, 0.55, 0.1)


def shapes_image(seed: int = 0):
    """A 480x640 textured grey image with 4 red squares and distractors of other colours."""
    rng = np.random.default_rng(seed)
    img = 0.5 + 0.05 * rng.standard_normal((480, 640, 3))
    objects = [
        (RED, 60, 60), (RED, 300, 80), (RED, 500, 330), (RED, 120, 360),
        (BLUE, 200, 220), (BLUE, 420, 60), (GREEN, 560, 180), (ORANGE, 330, 330),
    ]  # fmt: skip
    boxes = []
    for colour, x, y in objects:
        size = 56
        img[y : y + size, x : x + size] = np.array(colour) + 0.04 * rng.standard_normal(
            (size, size, 3)
        )
        boxes.append((colour, (x, y, x + size, y + size)))
    return torch.from_numpy(np.clip(img, 0, 1)).float(), boxes


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_crop_of_one_object_finds_all_its_copies_and_no_others():
    image, objects = shapes_image()
    extractor = ColourTextureExtractor(short_side=240)
    # The reference is a crop around the first red square, the box drawn on that crop.
    crop = image[40:136, 40:136]
    ref = reference_vector(extractor.extract([crop]), box=(20, 20, 76, 76))
    found = localize(ref, extractor.extract([image]), LocalizeConfig(), image=image)
    red = [b for c, b in objects if c == RED]
    others = [b for c, b in objects if c != RED]
    hits = sum(any(iou(box.tolist(), truth) >= 0.5 for box in found.boxes) for truth in red)
    recall = hits / len(red)
    assert recall >= 0.9  # measured: 4 of 4 red squares found
    false = sum(any(iou(box.tolist(), other) >= 0.3 for box in found.boxes) for other in others)
    assert false == 0, found.boxes
    assert found.heatmap.shape == (480, 640)
    assert found.masks.shape == (len(found), 480, 640)
    # Masks cover their objects: each found red square's mask fills most of its box.
    for box, mask in zip(found.boxes, found.masks, strict=True):
        x0, y0, x1, y1 = box.int().tolist()
        assert mask[y0:y1, x0:x1].float().mean() > 0.6


def test_clicks_give_the_same_reference_as_the_patch_under_them():
    image, _ = shapes_image()
    feats = ColourTextureExtractor(short_side=240).extract([image])
    ref = reference_vector(feats, clicks=[(88.0, 88.0)])
    row, col = feats.pixel_to_patch(88.0, 88.0)
    torch.testing.assert_close(ref, feats.normalized()[0, row, col])


def test_otsu_splits_two_modes():
    values = torch.cat([torch.full((1000,), 0.2), torch.full((300,), 0.8)]) + 0.01 * torch.randn(
        1300
    )
    t = otsu_threshold(values)
    assert 0.3 < t < 0.7


def test_clean_mask_removes_specks_and_fills_pinholes():
    mask = np.zeros((50, 50), dtype=bool)
    mask[10:40, 10:40] = True
    mask[25, 25] = False  # pinhole
    mask[2, 2] = True  # speck
    cleaned = clean_mask(mask, 2)
    assert cleaned[25, 25] and not cleaned[2, 2]
    assert cleaned[12:38, 12:38].all()
