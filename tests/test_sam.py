"""SAM 2 wrapper: a tiny random SAM 2.1 saved and reloaded through `load_sam2` (the path a real
checkpoint takes), run with the SAM 2 notebook prompts on the notebook images. Random weights give
meaningless masks, so the tests check the plumbing: shapes, ordering, one mask per box, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path
from PIL import Image

from omnivision.twod.features import TwoDError
from omnivision.twod.sam import Masks, build_tiny_sam2_checkpoint, load_sam2

TRUCK_HW = (1200, 1800)
TRUCK_BOXES = [
    [75, 275, 1725, 850],
    [425, 600, 700, 875],
    [1375, 550, 1650, 800],
    [1240, 675, 1400, 750],
]
GROCERY_BOXES = [
    [450, 170, 520, 350],
    [350, 190, 450, 350],
    [500, 170, 580, 350],
    [580, 170, 640, 350],
]


def load_image(name: str) -> np.ndarray:
    return np.array(Image.open(data_path("images", name)).convert("RGB"))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return build_tiny_sam2_checkpoint(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="module")
def sam(tiny_checkpoint):
    checkpoint, config = tiny_checkpoint
    return load_sam2(checkpoint, config=config, device="cpu")


@pytest.fixture(scope="module")
def truck_sam(tiny_checkpoint):
    """A second model with truck.jpg embedded once, for the point/box prompt tests."""
    checkpoint, config = tiny_checkpoint
    model = load_sam2(checkpoint, config=config, device="cpu")
    model.set_image(load_image("truck.jpg"))
    return model


def assert_sorted_masks(masks: Masks, count: int, hw: tuple[int, int]) -> None:
    assert masks.masks.shape == (count, *hw) and masks.masks.dtype == torch.bool
    assert masks.scores.shape == (count,)
    assert torch.all(masks.scores[:-1] >= masks.scores[1:])


def test_tiny_checkpoint_is_an_official_style_state_dict(tiny_checkpoint, sam):
    checkpoint, config = tiny_checkpoint
    state = torch.load(checkpoint, weights_only=True)
    assert set(state) == {"model"}
    assert state["model"].keys() == sam.model.state_dict().keys()
    assert config.suffix == ".yaml" and sam.model.image_size == 256
    assert not sam.model.training


def test_single_click_gives_three_masks_best_first(truck_sam):
    masks = truck_sam.predict(points=[[500, 375]], labels=[1])
    assert_sorted_masks(masks, 3, TRUCK_HW)
    assert masks.logits is not None and masks.logits.shape == (3, 64, 64)


def test_include_and_exclude_clicks(truck_sam):
    masks = truck_sam.predict(
        points=np.array([[500, 375], [1125, 625]]), labels=np.array([1, 0]), multimask=False
    )
    assert_sorted_masks(masks, 1, TRUCK_HW)


def test_box_and_box_with_negative_click(truck_sam):
    box = np.array([425, 600, 700, 875])
    assert_sorted_masks(truck_sam.predict(box=box, multimask=False), 1, TRUCK_HW)
    masks = truck_sam.predict(points=[[575, 750]], labels=[0], box=box, multimask=False)
    assert_sorted_masks(masks, 1, TRUCK_HW)


def test_mask_input_round_trips_from_logits(truck_sam):
    first = truck_sam.predict(points=[[500, 375]])
    again = truck_sam.predict(points=[[500, 375]], mask_input=first.logits[0], multimask=False)
    assert_sorted_masks(again, 1, TRUCK_HW)
    assert again.logits.shape == (1, *first.logits.shape[1:])
    with pytest.raises(TwoDError, match="mask_input"):
        truck_sam.predict(points=[[500, 375]], mask_input=torch.zeros(32, 32))


def test_predict_boxes_gives_one_mask_per_box(sam):
    truck = sam.predict_boxes(
        load_image("truck.jpg"), torch.tensor(TRUCK_BOXES, dtype=torch.float32)
    )
    assert truck.shape == (4, *TRUCK_HW) and truck.dtype == torch.bool
    groceries = torch.from_numpy(load_image("groceries.jpg")).float() / 255  # float tensor input
    masks = sam.predict_boxes(groceries, GROCERY_BOXES)
    assert masks.shape == (4, 534, 800)
    assert sam.predict_boxes(groceries, [GROCERY_BOXES[0]], multimask=True).shape == (1, 534, 800)
    assert sam.predict_boxes(groceries, torch.zeros(0, 4)).shape == (0, 534, 800)


def test_generate_returns_sorted_masks_at_image_size(sam):
    found = sam.generate(
        load_image("groceries.jpg"),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    assert len(found) >= 1 and found.logits is None
    assert_sorted_masks(found, len(found), (534, 800))


def test_bad_prompts_name_the_problem(truck_sam):
    with pytest.raises(TwoDError, match=r"click \(1900, 375\) is outside the 1800x1200 image"):
        truck_sam.predict(points=[[1900, 375]], labels=[1])
    with pytest.raises(TwoDError, match="outside"):
        truck_sam.predict(points=[[500, -1]])
    with pytest.raises(TwoDError, match="labels"):
        truck_sam.predict(points=[[500, 375]], labels=[2])
    with pytest.raises(TwoDError, match=r"box \[700, 600, 425, 875\] is empty"):
        truck_sam.predict(box=[700, 600, 425, 875])
    with pytest.raises(TwoDError, match=r"\(K, 4\)"):
        truck_sam.predict(box=[425, 600, 700])
    with pytest.raises(TwoDError, match="predict_boxes"):
        truck_sam.predict(box=TRUCK_BOXES)


def test_predict_before_set_image_and_bad_images(tiny_checkpoint):
    fresh = load_sam2(tiny_checkpoint[0], config=tiny_checkpoint[1], device="cpu")
    with pytest.raises(TwoDError, match="set_image"):
        fresh.predict(points=[[1, 1]])
    with pytest.raises(TwoDError, match=r"\(H, W, 3\)"):
        fresh.set_image(np.zeros((8, 8), np.uint8))
    with pytest.raises(TwoDError, match=r"\[0, 1\]"):
        fresh.set_image(np.full((8, 8, 3), 255.0, np.float32))


@pytest.mark.parametrize("name", ["facebook/sam2.1-hiera-tiny", "sam2.1-hiera-tiny"])
def test_uncached_hub_id_offline_says_how_to_get_it(name, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TwoDError) as err:
        load_sam2(name)
    message = str(err.value)
    assert "\n" not in message
    assert "hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt" in message
    assert "--sam none" in message


def test_missing_or_mismatched_checkpoint_names_the_file(tiny_checkpoint, tmp_path):
    missing = tmp_path / "sam2.1_hiera_huge.pt"
    with pytest.raises(TwoDError, match=f"{missing} not found"):
        load_sam2(missing, config="configs/sam2.1/sam2.1_hiera_t.yaml")
    with pytest.raises(TwoDError, match="hub id such as facebook/sam2.1-hiera-tiny"):
        load_sam2("facebook/sam2.1-hiera-huge")
    checkpoint, config = tiny_checkpoint
    with pytest.raises(TwoDError, match="needs its config"):
        load_sam2(checkpoint)
    with pytest.raises(TwoDError, match="config nope.yaml not found"):
        load_sam2(checkpoint, config="nope.yaml")
    with pytest.raises(TwoDError, match=f"{checkpoint} does not fit config"):
        load_sam2(
            checkpoint, config=config, overrides=["++model.memory_encoder.fuser.num_layers=2"]
        )
    not_sam = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_sam)
    with pytest.raises(TwoDError, match=f"{not_sam} is not a SAM 2 checkpoint"):
        load_sam2(not_sam, config=config)
