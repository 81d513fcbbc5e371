"""The tiny CLIP and text bridge trained for the demo scene: saved, reloaded, cached, reproducible,
and pointing at the right object on the held-out views.

The models are the synthetic benchmark's (the session fixture `synthetic_bench`, trained once
with the default steps); thresholds are a few queries below what that training measured on this
machine (60 queries: 10 phrases on 6 views).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from omnivision.eval.train_clip import (
    CATEGORIES,
    CLIP_STEPS,
    EVAL_VIEWS,
    NAMES,
    TRAIN_VIEWS,
    bridge_pointing,
    clip_pointing,
    load_views,
    negatives_beaten,
    train_scene_bridge,
    train_scene_clip,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(synthetic_bench):
    """(clip folder, bridge folder) of the synthetic benchmark."""
    folder, _ = synthetic_bench
    return folder / "models" / "clip", folder / "models" / "bridge"


@pytest.fixture(scope="module")
def clip(trained):
    from omnivision.twod.clip import load_clip

    return load_clip(str(trained[0]), device="cpu")


@pytest.fixture(scope="module")
def eval_views(demo_dir):
    return load_views(demo_dir, EVAL_VIEWS)


def test_split_and_categories():
    from omnivision.scenes.demo import demo_object_names

    assert set(TRAIN_VIEWS).isdisjoint(EVAL_VIEWS)
    assert sorted(TRAIN_VIEWS + EVAL_VIEWS) == list(range(18)) and len(TRAIN_VIEWS) == 12
    names = demo_object_names()
    for object_id in range(1, 8):
        assert CATEGORIES[names[object_id]] == object_id
    assert {p: CATEGORIES[p] for p in ("coffee mug", "soda can", "dinner plate")} == {
        "coffee mug": 1,
        "soda can": 6,
        "dinner plate": 7,
    }
    assert 0 not in CATEGORIES.values()  # the table is background, not a category
    for phrase, object_id in CATEGORIES.items():
        assert phrase in NAMES[object_id]  # every benchmark phrase is trained as a caption


def test_saved_as_a_local_openclip_folder(trained, clip):
    clip_dir, _ = trained
    saved = json.loads((clip_dir / "open_clip_config.json").read_text())
    assert set(saved) == {"model_cfg", "preprocess_cfg"}
    assert saved["model_cfg"]["text_cfg"]["vocab_size"] == 49408
    record = json.loads((clip_dir / "training.json").read_text())
    assert record["fingerprint"]["views"] == list(TRAIN_VIEWS)
    assert record["fingerprint"]["steps"] == CLIP_STEPS
    assert record["final_loss"] > 0 and record["seconds"] > 0
    texts = clip.encode_text(list(CATEGORIES))
    assert texts.shape == (len(CATEGORIES), clip.embed_dim)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(len(CATEGORIES)), atol=1e-5)
    assert not any(p.name.startswith(".") for p in clip_dir.iterdir())  # no temporaries left


def test_second_call_reuses_the_folder(synthetic_bench, trained):
    clip_dir, bridge_dir = trained
    scene_dir = synthetic_bench[0] / "scene"
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in [*clip_dir.iterdir()]}
    stamps |= {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in [*bridge_dir.iterdir()]}
    assert train_scene_clip(scene_dir, clip_dir, progress=False) == clip_dir
    assert train_scene_bridge(scene_dir, clip_dir, bridge_dir, progress=False) == bridge_dir
    for path, (mtime, data) in stamps.items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path


def test_same_seed_same_weights_and_other_settings_retrain(demo_dir, tmp_path):
    short = {"views": (0,), "steps": 2, "progress": False}
    threads = torch.get_num_threads()
    first = load_file(
        train_scene_clip(demo_dir, tmp_path / "a", **short) / "open_clip_model.safetensors"
    )
    again = load_file(
        train_scene_clip(demo_dir, tmp_path / "b", **short) / "open_clip_model.safetensors"
    )
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = load_file(
        train_scene_clip(demo_dir, tmp_path / "a", **{**short, "seed": 1})
        / "open_clip_model.safetensors"
    )  # same folder, another fingerprint: trained again, not reused
    assert json.loads((tmp_path / "a" / "training.json").read_text())["fingerprint"]["seed"] == 1
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert torch.get_num_threads() == threads  # training's own thread count is restored


def test_lerf_relevancy_points_at_the_object(clip, eval_views):
    result = clip_pointing(clip, eval_views, "lerf")
    assert result.count == 60  # every category is visible in every eval view
    assert result.chance < 0.03  # boxes cover 2.2% of the image on average
    # Measured 1.000 (60/60) at the default 200 steps (0.967 at 100 steps for seeds 0-2);
    # margin 3 queries.
    assert result.accuracy >= 0.95


def test_mask_crop_relevancy_points_at_the_object(clip, eval_views):
    result = clip_pointing(clip, eval_views, "masks")
    # Measured 1.000 at the default 200 steps (and at 100 for seeds 0-2).
    assert result.accuracy >= 0.95 and result.mask_accuracy >= 0.95
    assert result.positive >= 0.95  # the phrase beats every canonical negative on its mask


def test_phrases_beat_the_canonical_negatives_on_their_objects(clip, eval_views):
    # Measured 0.983 (59/60) at the default 200 steps; margin 3 queries.
    assert negatives_beaten(clip, eval_views) >= 0.93


def test_bridge_points_at_the_object(trained, eval_views):
    from omnivision.twod.bridge import TextBridge
    from omnivision.twod.extractors import load_extractor

    bridge = TextBridge.load(trained[1], device="cpu")  # its CLIP from the recorded folder
    assert bridge.config.backbone == "colour"
    result = bridge_pointing(bridge, load_extractor("colour", short_side=240), eval_views)
    # Measured 0.933: the white plate loses to the white background at the table's edge on the
    # two high views (the colour features cannot tell them apart there).
    assert result.accuracy >= 0.88
