"""Dense CLIP features (LangSplat masks, LERF multi-scale crops) and LERF relevancy, with a tiny
random OpenCLIP saved and reloaded through `load_clip`'s local-folder path. Random weights make the
embeddings meaningless, so the tests check what holds for any weights: the painted embedding is the
embedding of the mask's crop, maps are unit norm where covered, crops move with the image, the
cache returns the same tensors without running the model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import data_path

from omnivision.twod.clip import build_tiny_clip, load_clip
from omnivision.twod.clip_dense import (
    CANONICAL_NEGATIVES,
    DenseClipFeatures,
    langsplat_features,
    lerf_features,
    relevancy,
)
from omnivision.twod.features import TwoDError
from omnivision.twod.io import read_image
from omnivision.twod.sam import Masks, build_tiny_sam2_checkpoint, load_sam2

# Tiny models: a second thread only adds contention on shared CI cores (7-30x slower here).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_clip(
        str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")), device="cpu"
    )


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


def box_mask(hw: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(hw, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def mask_crop_embedding(clip, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LangSplat's crop built here independently: bounding box, black outside the mask, centred in
    a black square, embedded by the model at full resolution."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(y1 - y0, x1 - x0)
    square = torch.zeros(3, side, side)
    top, left = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
    masked = image * mask[..., None]
    square[:, top : top + y1 - y0, left : left + x1 - x0] = masked[y0:y1, x0:x1].permute(2, 0, 1)
    return clip.encode_crops(square[None])[0]


# --- relevancy ---------------------------------------------------------------------------------


def test_relevancy_exact_values_on_hand_made_embeddings():
    e = torch.eye(4)
    query = e[0]
    # phi = query, negatives orthogonal: softmax(10 * [1, 0])[0] for every negative.
    expected = math.exp(10) / (math.exp(10) + 1)
    scores = relevancy(e[0].repeat(5, 1), query, e[1:3])
    assert scores.shape == (5,)
    torch.testing.assert_close(scores, torch.full((5,), expected))
    # The minimum over negatives: the one at cosine 0.6 wins over the orthogonal one.
    closer = 0.6 * e[0] + 0.8 * e[1]
    scores = relevancy(e[0][None], query, torch.stack([e[2], closer]))
    torch.testing.assert_close(scores, torch.tensor([math.exp(10) / (math.exp(10) + math.exp(6))]))
    # Cosine, not dot product: scaling phi, the query or a negative changes nothing.
    torch.testing.assert_close(
        relevancy(3 * e[0][None], 2 * query, 5 * e[1:3]), torch.tensor([expected])
    )


def test_relevancy_keeps_map_shape_and_a_phrase_equal_to_a_negative_scores_half():
    phi = F.normalize(torch.randn(6, 7, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    negatives = F.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    scores = relevancy(phi, negatives[2], negatives)
    assert scores.shape == (6, 7)
    assert torch.all(scores <= 0.5 + 1e-6)  # one negative is the query itself
    torch.testing.assert_close(
        relevancy(phi, negatives[2], negatives[2:3]), torch.full((6, 7), 0.5)
    )
    # (N, E) rows give the same scores as the map's cells; zero (uncovered) cells score 0.5.
    torch.testing.assert_close(
        relevancy(phi.reshape(-1, 16), negatives[0], negatives[1:]).reshape(6, 7),
        relevancy(phi, negatives[0], negatives[1:]),
    )
    assert relevancy(torch.zeros(3, 16), negatives[0], negatives[1:]).tolist() == [0.5] * 3


def test_relevancy_rejects_mismatched_inputs():
    with pytest.raises(TwoDError, match="one E"):
        relevancy(torch.zeros(5, 8), torch.zeros(4), torch.zeros(2, 8))
    with pytest.raises(TwoDError, match="at least one negative"):
        relevancy(torch.zeros(5, 8), torch.zeros(8), torch.zeros(0, 8))


def test_relevancy_with_text_of_the_model(clip):
    """The intended use: a phrase and the canonical negatives from `encode_text`."""
    texts = clip.encode_text(["a red mug", *CANONICAL_NEGATIVES])
    maps = F.normalize(torch.randn(2, 3, 4, texts.shape[1]), dim=-1)
    scores = relevancy(maps, texts[0], texts[1:])
    assert scores.shape == (2, 3, 4) and torch.all((scores > 0) & (scores < 1))


def test_embed_dim_of_a_text_projection_with_bias():
    """OpenCLIP configs with `proj_bias` make the text projection a Linear: its width is read."""
    import copy

    import open_clip

    from omnivision.twod.clip import TINY_CLIP_CONFIG, _text_embed_dim

    config = copy.deepcopy(TINY_CLIP_CONFIG)
    config["text_cfg"]["proj_bias"] = True
    config["embed_dim"] = 24
    model = open_clip.CLIP(**config)
    assert isinstance(model.text_projection, torch.nn.Linear) and _text_embed_dim(model) == 24


# --- LangSplat ---------------------------------------------------------------------------------


def test_langsplat_paints_each_masks_crop_embedding_smallest_on_top(clip):
    hw = (48, 64)
    image = random_image(*hw)
    small = box_mask(hw, 5, 20, 10, 30)
    larger = box_mask(hw, 10, 35, 20, 55)  # overlaps `small`
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    disc = (yy - 24) ** 2 + (xx - 30) ** 2 < 18**2
    feats = langsplat_features(clip, image, [torch.stack([larger, small]), disc[None]], stride=1)
    assert isinstance(feats, DenseClipFeatures)
    assert feats.maps.shape == (2, 48, 64, clip.embed_dim)
    assert feats.levels == ["level_0", "level_1"] and feats.image_size == hw and feats.stride == 1
    fine, coarse = feats.maps
    expected_small = mask_crop_embedding(clip, image, small)
    expected_larger = mask_crop_embedding(clip, image, larger)
    torch.testing.assert_close(
        fine[small], expected_small.expand(int(small.sum()), -1), atol=1e-5, rtol=0
    )
    only_larger = larger & ~small
    torch.testing.assert_close(
        fine[only_larger], expected_larger.expand(int(only_larger.sum()), -1), atol=1e-5, rtol=0
    )
    assert torch.all(fine[~(small | larger)] == 0)
    expected_disc = mask_crop_embedding(clip, image, disc)
    torch.testing.assert_close(
        coarse[disc], expected_disc.expand(int(disc.sum()), -1), atol=1e-5, rtol=0
    )
    assert torch.all(coarse[~disc] == 0)
    norms = feats.maps.norm(dim=-1)
    torch.testing.assert_close(norms[norms > 0], torch.ones(int((norms > 0).sum())))
    # At stride 1, upsampling to the image size is the identity.
    torch.testing.assert_close(feats.upsampled(), feats.maps, atol=1e-5, rtol=0)


def test_langsplat_on_a_coarse_grid_with_named_levels(clip):
    hw = (50, 66)  # not multiples of the stride: the last cells are partial
    image = random_image(*hw, seed=1)
    part = box_mask(hw, 8, 24, 8, 40)
    whole = box_mask(hw, 4, 44, 4, 60)
    feats = langsplat_features(clip, image, {"part": part[None], "whole": whole[None]}, stride=4)
    assert feats.levels == ["part", "whole"] and feats.stride == 4
    assert feats.maps.shape == (2, 13, 17, clip.embed_dim)
    inside = feats.level("part")[3:5, 3:9]  # cells fully inside the part
    torch.testing.assert_close(
        inside, mask_crop_embedding(clip, image, part).expand(2, 6, -1), atol=1e-5, rtol=0
    )
    assert torch.all(feats.level("part")[8:] == 0)  # rows 32.. are outside the part
    up = feats.upsampled()
    assert up.shape == (2, *hw, clip.embed_dim)
    norms = up.norm(dim=-1)
    assert torch.all(((norms - 1).abs() < 1e-4) | (norms == 0))
    assert up[0, 16, 24].norm() > 0.99 and up[0, 45, 60].norm() == 0
    assert feats.upsampled((25, 33)).shape == (2, 25, 33, clip.embed_dim)


class FakeSam:
    """A SAM stand-in: six nested-free boxes of distinct areas, counting its calls."""

    name = "fake-sam"

    def __init__(self, hw: tuple[int, int]):
        self.calls = 0
        boxes = [
            (0, 4, 0, 4),
            (0, 4, 40, 45),
            (10, 16, 0, 6),
            (10, 17, 40, 47),
            (20, 28, 0, 8),
            (20, 29, 40, 49),
        ]
        self.masks = torch.stack([box_mask(hw, *b) for b in boxes])

    def generate(self, image) -> Masks:
        self.calls += 1
        return Masks(self.masks, torch.linspace(1, 0.5, len(self.masks)))


def test_langsplat_splits_sam_masks_into_area_terciles_and_caches(clip, tmp_path):
    hw = (32, 64)
    image = random_image(*hw, seed=2)
    sam = FakeSam(hw)
    feats = langsplat_features(clip, image, sam=sam, stride=1, cache_dir=tmp_path)
    assert feats.levels == ["small", "medium", "large"]
    for level, pair in zip(feats.maps, sam.masks.split(2), strict=True):
        assert torch.equal(level.norm(dim=-1) > 0, pair.any(0))
    again = langsplat_features(clip, image, sam=sam, stride=1, cache_dir=tmp_path)
    assert sam.calls == 1 and torch.equal(again.maps, feats.maps)  # a hit skips SAM too


def test_langsplat_with_tiny_sam2_on_a_real_photo(clip, tmp_path_factory):
    photo = read_image(data_path("images", "groceries.jpg"))  # 534 x 800
    image = F.interpolate(photo.permute(2, 0, 1)[None], scale_factor=0.25, mode="area")[0]
    image = image.permute(1, 2, 0).contiguous()
    checkpoint, config = build_tiny_sam2_checkpoint(tmp_path_factory.mktemp("sam2"))
    sam = load_sam2(checkpoint, config=config, device="cpu")

    class PermissiveSam:  # random weights: keep every mask the 4 x 4 grid of clicks gives
        name = "tiny-sam2-permissive"

        def generate(self, img) -> Masks:
            return sam.generate(
                img, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
            )

    feats = langsplat_features(clip, image, sam=PermissiveSam(), stride=2)
    H, W = image.shape[:2]
    assert feats.levels == ["small", "medium", "large"] and feats.image_size == (H, W)
    assert feats.maps.shape == (3, math.ceil(H / 2), math.ceil(W / 2), clip.embed_dim)
    norms = feats.maps.norm(dim=-1)
    assert norms.max() > 0.99 and torch.all(((norms - 1).abs() < 1e-4) | (norms == 0))


def test_langsplat_rejects_bad_masks(clip):
    image = random_image(20, 30)
    with pytest.raises(TwoDError, match="masks is empty"):
        langsplat_features(clip, image, [])
    with pytest.raises(TwoDError, match=r"\(M, 20, 30\)"):
        langsplat_features(clip, image, [torch.ones(2, 20, 31, dtype=torch.bool)])
    with pytest.raises(TwoDError, match="must be bool"):
        langsplat_features(clip, image, [torch.ones(1, 20, 30)])
    with pytest.raises(TwoDError, match="every mask is empty"):
        langsplat_features(clip, image, [torch.zeros(2, 20, 30, dtype=torch.bool)])
    with pytest.raises(TwoDError, match="masks .* or a sam"):
        langsplat_features(clip, image)
    with pytest.raises(TwoDError, match=r"\(H, W, 3\)"):
        langsplat_features(clip, image[..., :2], [torch.ones(1, 20, 30, dtype=torch.bool)])


# --- LERF --------------------------------------------------------------------------------------


def object_image(x0: int) -> torch.Tensor:
    """96 x 160, black (as LERF's padding), a 24 x 24 red square at rows 36:60, columns x0:x0+24."""
    image = torch.zeros(96, 160, 3)
    image[36:60, x0 : x0 + 24] = torch.tensor([0.9, 0.2, 0.1])
    return image


def test_lerf_maps_shapes_and_unit_norm(clip):
    feats = lerf_features(clip, random_image(48, 64, seed=3), scales=(0.25, 0.5), stride=4)
    assert feats.levels == ["scale_0.25", "scale_0.50"] and feats.stride == 4
    assert feats.maps.shape == (2, 12, 16, clip.embed_dim) and feats.image_size == (48, 64)
    torch.testing.assert_close(feats.maps.norm(dim=-1), torch.ones(2, 12, 16))
    assert not torch.allclose(feats.maps[0, 0, 0], feats.maps[0, 6, 8])  # depends on the content
    torch.testing.assert_close(feats.upsampled().norm(dim=-1), torch.ones(2, 48, 64))


def test_lerf_map_at_an_object_is_closest_to_the_objects_crop(clip):
    image = object_image(28)  # centre (48, 40); scale 0.25 of 96 = 24 px crops, the object's size
    feats = lerf_features(clip, image, scales=(0.25,), stride=4)
    crop = clip.encode_crops(image[36:60, 28:52].permute(2, 0, 1)[None])[0]
    at_object, far_away = feats.maps[0, 12, 10] @ crop, feats.maps[0, 12, 32] @ crop
    assert at_object > far_away + 0.05


def test_lerf_translating_the_image_translates_the_map(clip):
    # Crops every 12 px (half of 24), map cells of 4 px: moving the object 12 px moves the crop grid
    # by one and the map by 3 cells. The black background equals the padding, so all of it moves.
    before = lerf_features(clip, object_image(28), scales=(0.25,), stride=4).maps[0]
    after = lerf_features(clip, object_image(40), scales=(0.25,), stride=4).maps[0]
    torch.testing.assert_close(after[:, 3:37], before[:, 0:34], atol=1e-5, rtol=0)
    assert not torch.allclose(after, before, atol=1e-3)


def test_lerf_rejects_bad_scales(clip):
    image = random_image(20, 30)
    with pytest.raises(TwoDError, match="scales"):
        lerf_features(clip, image, scales=(0.0, 0.5))
    with pytest.raises(TwoDError, match="scales"):
        lerf_features(clip, image, scales=())
    with pytest.raises(TwoDError, match="stride_fraction"):
        lerf_features(clip, image, stride_fraction=1.5)


# --- cache -------------------------------------------------------------------------------------


@pytest.fixture
def counted(clip, monkeypatch):
    """The model's `encode_crops`, counting how many crops it embeds."""
    calls = {"crops": 0}
    encode = clip.encode_crops

    def counting(crops, batch_size=32):
        calls["crops"] += crops.shape[0]
        return encode(crops, batch_size)

    monkeypatch.setattr(clip, "encode_crops", counting)
    return calls


def test_cache_second_call_loads_without_the_model(clip, counted, tmp_path):
    image = random_image(40, 56, seed=4)
    masks = [torch.stack([box_mask((40, 56), 2, 20, 2, 30), box_mask((40, 56), 10, 38, 20, 54)])]
    first = langsplat_features(clip, image, masks, cache_dir=tmp_path)
    lerf_first = lerf_features(clip, image, scales=(0.3, 0.6), cache_dir=tmp_path)
    embedded = counted["crops"]
    assert embedded == 2 + 8 * 11 + 5 * 6  # 2 masks; 12 px crops every 6 px; 24 px every 12 px
    files = sorted(p.name for p in tmp_path.iterdir())  # hidden temp files included
    assert len(files) == 2 and all(
        f.endswith(".safetensors") and not f.startswith(".") for f in files
    )
    second = langsplat_features(clip, image, masks, cache_dir=tmp_path)
    lerf_second = lerf_features(clip, image, scales=(0.3, 0.6), cache_dir=tmp_path)
    assert counted["crops"] == embedded
    assert torch.equal(second.maps, first.maps) and second.levels == first.levels
    assert (
        torch.equal(lerf_second.maps, lerf_first.maps) and lerf_second.levels == lerf_first.levels
    )
    # Another image, other masks or other parameters are other entries.
    langsplat_features(clip, image, [masks[0][:1]], cache_dir=tmp_path)
    lerf_features(clip, image, scales=(0.3,), cache_dir=tmp_path)
    langsplat_features(clip, random_image(40, 56, seed=5), masks, cache_dir=tmp_path)
    assert counted["crops"] == embedded + 1 + 8 * 11 + 2
    assert len(list(tmp_path.iterdir())) == 5


def test_cache_rewrites_an_unreadable_entry(clip, counted, tmp_path):
    image = random_image(24, 24, seed=6)
    first = lerf_features(clip, image, scales=(0.5,), cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"not safetensors")
    again = lerf_features(clip, image, scales=(0.5,), cache_dir=tmp_path)
    assert counted["crops"] == 2 * 25 and torch.equal(again.maps, first.maps)
    assert (
        lerf_features(clip, image, scales=(0.5,), cache_dir=tmp_path).maps.shape == first.maps.shape
    )
    assert counted["crops"] == 2 * 25


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_relevancy_blocks_match_the_one_shot_formula_in_every_storage_dtype(dtype):
    """The CPU path works in row blocks; N is not a multiple of the block and rows have any norm."""
    g = torch.Generator().manual_seed(0)
    phi = (torch.randn(10_001, 16, generator=g) * torch.rand(10_001, 1, generator=g) * 5).to(dtype)
    query, negatives = torch.randn(16, generator=g), torch.randn(3, 16, generator=g)
    texts = F.normalize(torch.cat([query[None], negatives]), dim=-1)
    cos = F.normalize(phi.float(), dim=-1) @ texts.T
    expected = torch.sigmoid(10 * (cos[:, 0] - cos[:, 1:].amax(1)))
    torch.testing.assert_close(relevancy(phi, query, negatives), expected, rtol=1e-5, atol=1e-6)
