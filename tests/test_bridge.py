"""The text bridge (CLIP text -> patch-feature space): it learns to point at named shapes, saves and
reloads, refuses another backbone, resumes training exactly, reads RefCOCO / Flickr30k Entities in
their real formats; and the referring metrics on hand-made cases."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from omnivision.twod.bridge import (
    BridgeConfig,
    Pair,
    TextBridge,
    TrainConfig,
    make_pair,
    read_flickr30k_entities,
    read_pairs_jsonl,
    read_refcoco,
    text_heatmap,
    train_bridge,
)
from omnivision.twod.colour import ColourTextureExtractor
from omnivision.twod.features import TwoDError
from omnivision.twod.referring import (
    mask_iou,
    overall_iou,
    peak_component,
    pointing_accuracy,
    pointing_hits,
    referring_miou,
)

# Tiny models: a second thread only adds contention on shared CI cores (7-30x slower here).
pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {
    "red": (0.85, 0.1, 0.1),
    "yellow": (0.9, 0.85, 0.1),
    "green": (0.1, 0.7, 0.2),
    "cyan": (0.1, 0.75, 0.8),
    "blue": (0.1, 0.2, 0.85),
    "magenta": (0.8, 0.15, 0.75),
}
SHAPES = ("square", "circle", "triangle")
SIZE = (96, 128)


def shape_outline(shape: str, box: tuple[float, float, float, float]):
    """The polygon of a circle or triangle inscribed in the box; None (the box) for a square."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in t]
    if shape == "triangle":
        return [(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)]
    return None


def shapes_scene(seed: int, size: tuple[int, int] = SIZE):
    """A textured grey (H, W) image with 3-4 non-overlapping shapes of distinct colours, and for
    each its phrase ("red circle"), box and polygon (None for squares)."""
    rng = np.random.default_rng(seed)
    H, W = size
    pixels = 0.5 + 0.04 * rng.standard_normal((H, W, 3))
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    objects, boxes = [], []
    for colour in rng.choice(list(COLOURS), int(rng.integers(3, 5)), replace=False):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        side = int(rng.integers(24, 34))
        for _ in range(200):
            x0, y0 = int(rng.integers(2, W - side - 2)), int(rng.integers(2, H - side - 2))
            box = (x0, y0, x0 + side, y0 + side)
            if all(
                box[0] > b[2] + 4 or b[0] > box[2] + 4 or box[1] > b[3] + 4 or b[1] > box[3] + 4
                for b in boxes
            ):
                break
        else:
            continue
        boxes.append(box)
        pair = make_pair("scene.png", f"{colour} {shape}", box, shape_outline(shape, box))
        inside = pair.contains(xs, ys)
        pixels[inside] = np.array(COLOURS[colour]) + 0.04 * rng.standard_normal((inside.sum(), 3))
        objects.append(pair)
    return torch.from_numpy(np.clip(pixels, 0, 1)).float(), objects


def write_scenes(folder, seeds):
    """Scenes saved as PNGs; their pairs point at the files."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for seed in seeds:
        image, objects = shapes_scene(seed)
        path = folder / f"scene_{seed:03d}.png"
        Image.fromarray((image.numpy() * 255 + 0.5).astype(np.uint8)).save(path)
        pairs += [Pair(path, p.phrase, p.box, p.polygon) for p in objects]
    return pairs


class CountingExtractor(ColourTextureExtractor):
    """The colour backend, counting the images it sees (the cache must run it once per image)."""

    calls: int = 0

    def extract(self, images):
        self.calls += len(images)
        return super().extract(images)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return write_scenes(root / "train", range(48)), write_scenes(root / "held_out", range(100, 116))


def new_bridge(tiny_clip, extractor, seed: int = 0) -> TextBridge:
    """A small bridge (hidden 64) from the tiny CLIP (folder, model) to the extractor's space."""
    clip_folder, clip = tiny_clip
    config = BridgeConfig.for_models(clip, extractor, clip_model=str(clip_folder), hidden_dim=64)
    torch.manual_seed(seed)
    return TextBridge(clip, config)


@pytest.fixture(scope="module")
def trained(tiny_clip, scenes):
    train_pairs, held_out = scenes
    extractor = CountingExtractor(short_side=96)
    bridge = new_bridge(tiny_clip, extractor)
    config = TrainConfig(epochs=3, batch_size=32, steps_per_epoch=100, lr=3e-3, device="cpu")
    result = train_bridge(bridge, train_pairs, extractor, config, held_out, progress=False)
    return result, extractor


def test_bridge_points_at_the_named_shape_on_held_out_images(trained, scenes, tiny_clip):
    """Trained 300 steps on 48 synthetic images (3-4 shapes of distinct colours each, phrases like
    "red circle"), with the colour backend as the DINO stand-in and a tiny random CLIP as the
    frozen text encoder: on 16 held-out images (53 phrases) the heatmap's peak lands on the named
    shape.

    Chance: a random point hits the target with probability = its area fraction (measured 0.052);
    picking one of the image's 3-4 shapes at random hits 0.30 on average, and the untrained bridge
    measured 0.28. Measured after training: pointing accuracy 1.00 (already after 100 steps), mIoU
    of the heatmap's peak region 0.71; untrained 0.28 (15 / 53). Training is seeded and runs on one
    thread, but float summation order differs between BLAS builds, so each threshold leaves about
    two phrases of room: accuracy >= 0.96 (measured 1.00 = 53 / 53; 51 / 53 = 0.962 still passes),
    mIoU >= 0.68 (measured 0.71, margin 0.03), untrained <= 0.33 (measured 0.28, margin 0.05 =
    about 2.5 phrases)."""
    result, extractor = trained
    held_out = scenes[1]
    scores = result.final
    assert scores is not None and scores.pairs == len(held_out)
    shapes_per_image = len(held_out) / len({p.image for p in held_out})
    assert scores.chance < 0.1 and 1 / shapes_per_image < 0.35
    assert scores.pointing_accuracy >= 0.96, result.history  # measured 1.00
    assert scores.pointing_accuracy > 2.5 / shapes_per_image
    assert scores.miou >= 0.68, scores.miou  # measured 0.71
    assert result.steps == 300 and len(result.history) == 3
    # Features were computed once per image, not once per epoch.
    assert result.images_encoded == extractor.calls == 48 + 16
    # Control: the same evaluation of an untrained bridge (lr 0) is near the shape-level chance.
    untrained = train_bridge(
        new_bridge(tiny_clip, extractor, seed=5), scenes[0], extractor,
        TrainConfig(epochs=1, batch_size=32, steps_per_epoch=1, lr=0.0, device="cpu"),
        held_out, progress=False,
    ).final  # fmt: skip
    assert untrained is not None
    assert untrained.pointing_accuracy <= 0.33, untrained.pointing_accuracy  # measured 0.28


def test_phrase_vectors_are_unit_norm_and_score_every_patch(trained, scenes):
    result, extractor = trained
    bridge = result.bridge
    image, objects = shapes_scene(101)
    with torch.no_grad():
        queries = bridge([p.phrase for p in objects])
    assert queries.shape == (len(objects), extractor.dim)
    torch.testing.assert_close(queries.norm(dim=-1), torch.ones(len(objects)))
    heat = text_heatmap(queries, extractor.extract([image]))
    assert heat.shape == (len(objects), 12, 16) and heat.abs().max() <= 1 + 1e-5


def test_save_load_round_trip_gives_equal_outputs(trained, tiny_clip, tmp_path):
    bridge = trained[0].bridge
    bridge.save(tmp_path / "bridge")
    assert sorted(p.name for p in (tmp_path / "bridge").iterdir()) == [
        "bridge.json",
        "bridge.safetensors",
    ]
    # CLIP is not in the file: only the MLP and the temperature.
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "bridge" / "bridge.safetensors"))
    assert keys == {"logit_scale"} | {k for k in keys if k.startswith("mlp.")}
    # Reloaded with the recorded CLIP folder (loaded again from disk) and with a given CLIP.
    again = TextBridge.load(tmp_path / "bridge", expect_backbone="colour", device="cpu")
    given = TextBridge.load(tmp_path / "bridge", clip=tiny_clip[1], device="cpu")
    phrases = ["red circle", "blue square", "a phrase never seen"]
    with torch.no_grad():
        expected = bridge(phrases)
        torch.testing.assert_close(again(phrases), expected)
        torch.testing.assert_close(given(phrases), expected)
    assert again.config == bridge.config and again.temperature == pytest.approx(bridge.temperature)


def test_loading_with_another_backbone_names_folder_and_both(trained, tmp_path):
    folder = trained[0].bridge.save(tmp_path / "bridge")
    with pytest.raises(TwoDError) as err:
        TextBridge.load(folder, expect_backbone="dinov3-vitb16", device="cpu")
    message = str(err.value)
    assert str(folder) in message and "'colour'" in message and "'dinov3-vitb16'" in message
    assert "\n" not in message


def test_missing_files_are_one_line_errors(trained, tmp_path):
    with pytest.raises(TwoDError, match="not a text bridge"):
        TextBridge.load(tmp_path / "nothing", device="cpu")
    folder = trained[0].bridge.save(tmp_path / "bridge")
    (folder / "bridge.safetensors").unlink()
    with pytest.raises(TwoDError, match="no bridge.safetensors"):
        TextBridge.load(folder, device="cpu")


def test_resume_continues_from_the_checkpoint_exactly(tiny_clip, scenes, tmp_path):
    """Two epochs at once equal one epoch, then a resumed run to two (weights, step count,
    history); the resumed run reads the feature cache instead of running the backbone."""
    train_pairs, held_out = scenes[0][:40], scenes[1][:8]
    config = TrainConfig(epochs=2, batch_size=16, steps_per_epoch=5, device="cpu")

    straight = train_bridge(
        new_bridge(tiny_clip, ColourTextureExtractor(short_side=96)),
        train_pairs, ColourTextureExtractor(short_side=96), config, held_out,
        progress=False, checkpoint_dir=tmp_path / "a",
    )  # fmt: skip
    first = train_bridge(
        new_bridge(tiny_clip, ColourTextureExtractor(short_side=96)),
        train_pairs, ColourTextureExtractor(short_side=96), TrainConfig(**{**config.__dict__, "epochs": 1}),
        held_out, progress=False, checkpoint_dir=tmp_path / "b",
    )  # fmt: skip
    assert first.steps == 5 and (tmp_path / "b" / "bridge.json").is_file()
    extractor = CountingExtractor(short_side=96)
    resumed = train_bridge(
        new_bridge(tiny_clip, extractor, seed=123),  # other initial weights: the checkpoint wins
        train_pairs, extractor, TrainConfig(**{**config.__dict__, "resume": True}), held_out,
        progress=False, checkpoint_dir=tmp_path / "b",
    )  # fmt: skip
    assert resumed.steps == straight.steps == 10
    assert extractor.calls == 0 and resumed.images_encoded == 0
    assert [s.epoch for s in resumed.history] == [1, 2]
    for key, value in straight.bridge.state_dict().items():
        torch.testing.assert_close(resumed.bridge.state_dict()[key], value, rtol=0, atol=1e-6)
    assert resumed.history[-1].loss == pytest.approx(straight.history[-1].loss, abs=1e-6)


def test_resume_without_a_checkpoint_is_an_error(tiny_clip, scenes, tmp_path):
    extractor = ColourTextureExtractor(short_side=96)
    with pytest.raises(TwoDError, match="no training_state.pt"):
        train_bridge(
            new_bridge(tiny_clip, extractor), scenes[0][:4], extractor,
            TrainConfig(resume=True), progress=False, checkpoint_dir=tmp_path,
        )  # fmt: skip


def test_fixed_temperature_stays_fixed(tiny_clip, scenes):
    extractor = ColourTextureExtractor(short_side=96)
    config = BridgeConfig.for_models(
        tiny_clip[1], extractor, hidden_dim=16, temperature=0.1, learn_temperature=False
    )
    bridge = TextBridge(tiny_clip[1], config)
    result = train_bridge(
        bridge, scenes[0][:20], extractor, TrainConfig(epochs=1, batch_size=8), progress=False
    )
    assert result.history[0].temperature == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------
# Readers, on tiny folders in the real formats


def test_jsonl_pairs_boxes_polygons_and_errors(tmp_path):
    lines = [
        {"image": "a.jpg", "phrase": "red backpack", "box": [10, 20, 50, 60]},
        {"image": "sub/b.jpg", "phrase": "a dog", "polygon": [[0, 0], [30, 0], [30, 10]]},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    pairs = read_pairs_jsonl(path, images=tmp_path / "imgs")
    assert pairs[0] == Pair(tmp_path / "imgs" / "a.jpg", "red backpack", (10.0, 20.0, 50.0, 60.0))
    assert pairs[1].box == (0.0, 0.0, 30.0, 10.0) and pairs[1].polygon is not None
    assert pairs[1].contains(np.array([25.0, 5.0]), np.array([5.0, 8.0])).tolist() == [True, False]
    path.write_text(json.dumps({"image": "a.jpg", "phrase": " ", "box": [0, 0, 1, 1]}))
    with pytest.raises(TwoDError, match=r"pairs.jsonl:1: empty phrase"):
        read_pairs_jsonl(path)
    path.write_text(json.dumps({"image": "a.jpg", "phrase": "x", "box": [5, 0, 1, 1]}))
    with pytest.raises(TwoDError, match=r"pairs.jsonl:1: box .* is empty"):
        read_pairs_jsonl(path)


def write_refcoco(root):
    """refs(unc).p (a protocol-2 pickle of the REFER toolkit's dicts) + instances.json."""
    root.mkdir(parents=True)
    refs = [
        {
            "sent_ids": [0, 1], "file_name": "COCO_train2014_000000000009_101.jpg", "ann_id": 101,
            "ref_id": 0, "image_id": 9, "split": "train", "category_id": 1,
            "sentences": [
                {"tokens": ["left", "man"], "raw": "Left man", "sent_id": 0, "sent": "left man"},
                {"tokens": ["guy", "in", "red"], "raw": "guy in red", "sent_id": 1, "sent": "guy in red"},
            ],
        },
        {
            "sent_ids": [2], "file_name": "COCO_train2014_000000000025_102.jpg", "ann_id": 102,
            "ref_id": 1, "image_id": 25, "split": "testA", "category_id": 1,
            "sentences": [{"tokens": ["right", "woman"], "raw": "right woman", "sent_id": 2, "sent": "right woman"}],
        },
    ]  # fmt: skip
    with (root / "refs(unc).p").open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    instances = {
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 480, "width": 640},
            {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "height": 426, "width": 640},
        ],
        "annotations": [
            {"id": 101, "image_id": 9, "category_id": 1, "bbox": [10.5, 20.0, 100.0, 200.0],
             "area": 15000.0, "iscrowd": 0, "segmentation": [[10.5, 20, 110.5, 20, 110.5, 220]]},
            {"id": 102, "image_id": 25, "category_id": 1, "bbox": [300.0, 50.0, 40.0, 80.0],
             "area": 3000.0, "iscrowd": 0, "segmentation": [[300, 50, 340, 50, 340, 130]]},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }  # fmt: skip
    (root / "instances.json").write_text(json.dumps(instances))


def test_refcoco_reader_gives_one_pair_per_sentence_of_the_split(tmp_path):
    write_refcoco(tmp_path / "refcoco")
    train = read_refcoco(tmp_path / "refcoco", "train", images=tmp_path / "train2014")
    assert [p.phrase for p in train] == ["left man", "guy in red"]
    assert train[0].image == tmp_path / "train2014" / "COCO_train2014_000000000009.jpg"
    assert train[0].box == (10.5, 20.0, 110.5, 220.0)
    test_a = read_refcoco(tmp_path / "refcoco", "testA", images=tmp_path / "train2014")
    assert [(p.phrase, p.box) for p in test_a] == [("right woman", (300.0, 50.0, 340.0, 130.0))]
    assert len(read_refcoco(tmp_path / "refcoco", None)) == 3
    with pytest.raises(TwoDError, match=r"no refs in split 'val' \(splits: testA, train\)"):
        read_refcoco(tmp_path / "refcoco", "val")
    with pytest.raises(TwoDError, match=r"refs\(umd\)\.p"):
        read_refcoco(tmp_path / "refcoco", "train", split_by="umd")


def test_refcoco_reader_refuses_a_pickle_that_runs_code(tmp_path):
    write_refcoco(tmp_path / "refcoco")
    with (tmp_path / "refcoco" / "refs(unc).p").open("wb") as f:
        pickle.dump([Pair], f, protocol=2)  # a class reference: unpickling would import it
    with pytest.raises(TwoDError, match="not a RefCOCO refs pickle"):
        read_refcoco(tmp_path / "refcoco", "train")


FLICKR_XML = """<annotation>
\t<filename>1000092795.jpg</filename>
\t<size>
\t\t<width>333</width>
\t\t<height>500</height>
\t\t<depth>3</depth>
\t</size>
\t<object>
\t\t<name>1</name>
\t\t<bndbox>
\t\t\t<xmin>159</xmin>
\t\t\t<ymin>125</ymin>
\t\t\t<xmax>219</xmax>
\t\t\t<ymax>335</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>220</ymin>
\t\t\t<xmax>211</xmax>
\t\t\t<ymax>473</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox>
\t\t\t<xmin>276</xmin>
\t\t\t<ymin>215</ymin>
\t\t\t<xmax>332</xmax>
\t\t\t<ymax>337</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>1</name>
\t\t<name>6</name>
\t\t<bndbox>
\t\t\t<xmin>197</xmin>
\t\t\t<ymin>110</ymin>
\t\t\t<xmax>261</xmax>
\t\t\t<ymax>373</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>8</name>
\t\t<nobndbox>0</nobndbox>
\t\t<scene>1</scene>
\t</object>
\t<object>
\t\t<name>10</name>
\t\t<scene>0</scene>
\t\t<nobndbox>1</nobndbox>
\t</object>
</annotation>
"""
FLICKR_TXT = """[/EN#1/people Two young guys] with [/EN#2/bodyparts shaggy hair] look at their hands while hanging out in [/EN#8/scene the yard] .
[/EN#1/people Two young guys] are outside near [/EN#4/scene many bushes] .
[/EN#6/people A man] in [/EN#7/clothing a blue shirt] standing in [/EN#0/notvisual a garden] .
[/EN#1/people Two friends] enjoy [/EN#10/other time] spent together .
"""


def test_flickr30k_entities_reader_merges_boxes_and_skips_boxless(tmp_path):
    root = tmp_path / "flickr30k_entities"
    (root / "Annotations").mkdir(parents=True)
    (root / "Sentences").mkdir()
    (root / "Annotations" / "1000092795.xml").write_text(FLICKR_XML)
    (root / "Sentences" / "1000092795.txt").write_text(FLICKR_TXT)
    (root / "train.txt").write_text("1000092795\n")
    pairs = read_flickr30k_entities(root, "train")
    # Entity 1 has two boxes (merged); 4 two boxes; 6 one; 2, 7 (no box), 8 (scene),
    # 0 (not visual) and 10 (no box) give nothing; the repeated "Two young guys" counts once.
    assert [(p.phrase, p.box) for p in pairs] == [
        ("Two young guys", (158.0, 109.0, 261.0, 373.0)),
        ("many bushes", (0.0, 214.0, 332.0, 473.0)),
        ("A man", (196.0, 109.0, 261.0, 373.0)),
        ("Two friends", (158.0, 109.0, 261.0, 373.0)),
    ]
    assert pairs[0].image == root / "flickr30k-images" / "1000092795.jpg"
    with pytest.raises(TwoDError, match="no val.txt"):
        read_flickr30k_entities(root, "val")


# --------------------------------------------------------------------------------------------
# Metrics


def test_mask_iou_and_miou_exact_values():
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :2, :2] = True  # 4 px
    gt[0, :2, :] = True  # 8 px, 4 shared: IoU 4/8
    pred[1, 0, 0] = True
    gt[1, 3, 3] = True  # disjoint: 0
    # both empty: 1
    torch.testing.assert_close(
        mask_iou(pred, gt), torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    )
    assert referring_miou(pred, gt) == pytest.approx(0.5)
    assert overall_iou(pred, gt) == pytest.approx(4 / 10)
    # Masks of different sizes per pair.
    assert referring_miou([np.ones((2, 3), bool), np.eye(5, dtype=bool)], [np.ones((2, 3), bool), np.ones((5, 5), bool)]) == pytest.approx((1 + 5 / 25) / 2)  # fmt: skip


def test_pointing_accuracy_exact_values_on_boxes_and_masks():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5], [0, 0, 5, 5.0]])
    points = [(5, 5), (19, 25), (5, 5), (7, 7)]
    assert pointing_hits(points, boxes).tolist() == [True, False, True, False]
    assert pointing_accuracy(points, boxes) == 0.5
    # 15-pixel tolerance as the pointing game: (19, 25) is 1 px from the box, (7, 7) 2 px.
    assert pointing_accuracy(points, boxes, tolerance=15) == 1.0
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:4, 6:8] = True  # pixels x 6..7, y 2..3
    targets = [mask, mask, mask, torch.tensor([0.0, 0.0, 1.0, 1.0])]
    points = [(6.5, 2.5), (8.0, 2.0), (5.9, 3.9), (0.5, 0.5)]
    assert pointing_hits(points, targets).tolist() == [True, False, False, True]
    assert pointing_accuracy(points, targets) == 0.5
    assert pointing_hits([(9.0, 2.0)], [mask], tolerance=1.5).tolist() == [False]
    assert pointing_hits([(9.0, 2.0)], [mask], tolerance=2).tolist() == [True]
    with pytest.raises(TwoDError, match="2 points for 1 targets"):
        pointing_accuracy([(0, 0), (1, 1)], [mask])


def test_peak_component_is_the_region_around_the_maximum():
    heat = torch.zeros(20, 20)
    heat[2:6, 2:6] = 0.8
    heat[12:18, 12:18] = 0.9  # the maximum: this region, not the other warm one
    region = peak_component(heat)
    assert region.sum() == 36 and region[15, 15] and not region[3, 3]
