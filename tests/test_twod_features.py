"""Feature extractors through the real loading path (tiny random models saved with save_pretrained)."""

from __future__ import annotations

import json
import typing

import pytest
import torch

from omnivision.twod.colour import ColourTextureExtractor
from omnivision.twod.dino import DTYPES, Precision
from omnivision.twod.extractors import PRECISIONS, load_extractor
from omnivision.twod.features import TwoDError, extract_all, input_size_for, upsample


def test_dinov3_tokens_split_into_cls_registers_and_patch_grid(tiny_dinov3):
    extractor = load_extractor(str(tiny_dinov3), short_side=64, device="cpu")
    assert (extractor.dim, extractor.stride) == (32, 16)
    images = [torch.rand(120, 200, 3), torch.rand(120, 200, 3)]
    feats = extractor.extract(images)
    assert feats.input_size == (64, 112) and feats.image_size == (120, 200)
    assert feats.patches.shape == (2, 4, 7, 32)
    assert feats.registers is not None and feats.registers.shape == (2, 4, 32)
    assert feats.cls is not None and feats.cls.shape == (2, 32)
    # Patch features depend on the image: the same image gives the same features, another does not.
    again = extractor.extract([images[0]])
    torch.testing.assert_close(again.patches[0], feats.patches[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(feats.patches[0], feats.patches[1])


def test_dinov2_fallback_has_no_registers(tiny_dinov2):
    extractor = load_extractor(str(tiny_dinov2), short_side=56, device="cpu")
    feats = extractor.extract([torch.rand(100, 100, 3)])
    assert extractor.stride == 14 and feats.patches.shape == (1, 4, 4, 32)
    assert feats.registers is None


def test_extract_all_keeps_order_over_mixed_sizes():
    extractor = ColourTextureExtractor(short_side=64)
    images = [torch.rand(60, 80, 3), torch.rand(80, 60, 3), torch.rand(60, 80, 3)]
    feats = extract_all(extractor, images, batch_size=2)
    assert [f.image_size for f in feats] == [(60, 80), (80, 60), (60, 80)]
    torch.testing.assert_close(feats[2].patches, extractor.extract([images[2]]).patches)


def test_missing_hub_weights_say_how_to_get_them():
    with pytest.raises(TwoDError, match="gated.*--backbone dinov2-base.*--backbone colour"):
        load_extractor("dinov3-vits16")


def test_missing_weights_hint_names_the_callers_flag():
    """lift picks its backbone with --features, not --backbone: the hint says so."""
    with pytest.raises(TwoDError) as err:
        load_extractor("dinov3-vits16", flag="--features")
    assert "use --features dinov2-base" in str(err.value) and "--features colour" in str(err.value)
    assert "--backbone" not in str(err.value)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", ["dinov3", "dinov2"])
def test_every_offered_precision_loads_and_agrees_with_fp32(request, family, precision):
    """Each precision load_extractor offers runs on CPU, keeps the weights in that dtype, returns
    float32 features, and they point where fp32's do."""
    assert set(typing.get_args(Precision)) == set(PRECISIONS)  # nothing offered goes untested
    folder = request.getfixturevalue(f"tiny_{family}")
    image = torch.rand(70, 90, 3, generator=torch.Generator().manual_seed(0))
    reference = load_extractor(str(folder), short_side=56, device="cpu").extract([image])
    extractor = load_extractor(str(folder), short_side=56, device="cpu", precision=precision)
    assert next(extractor.model.parameters()).dtype == DTYPES[precision]  # type: ignore[attr-defined]
    feats = extractor.extract([image])
    assert feats.patches.dtype == torch.float32 and feats.patches.shape == reference.patches.shape
    cosine = torch.nn.functional.cosine_similarity(feats.patches, reference.patches, dim=-1)
    assert cosine.min() > 0.98


def test_unknown_precision_is_refused():
    with pytest.raises(TwoDError, match="precision 'int4': want one of fp32, bf16, fp16"):
        load_extractor("colour", precision="int4")  # type: ignore[arg-type]


def test_folder_of_another_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(
        TwoDError, match="config.json: model_type 'bert' is not a DINOv3 or DINOv2 model"
    ):
        load_extractor(str(tmp_path))


def test_unknown_backbone_name():
    with pytest.raises(TwoDError, match="unknown backbone 'resnet50'"):
        load_extractor("resnet50")


def test_input_size_keeps_aspect_and_patch_multiple():
    assert input_size_for((480, 640), 448, 16) == (448, 592)
    assert input_size_for((1063, 780), 448, 14) == (616, 448)


def test_guided_upsampling_snaps_features_to_image_edges():
    """A feature that is a step at the image's edge: joint bilateral upsampling recovers it better."""
    image = torch.zeros(1, 64, 64, 3)
    image[:, :, 29:] = 1.0  # vertical edge at x = 29, not on the 8-pixel patch grid
    truth = image[..., :1]
    feats = ColourTextureExtractor(short_side=64).extract([image[0]])
    step = feats.patches[..., :1].clone()
    step[...] = 0.0
    step[:, :, 4:] = 1.0  # patch-level step: patches 0-3 left (x < 32), 4-7 right
    feats.patches = step
    plain = upsample(feats)
    guided = upsample(feats, guide=image)
    assert plain.shape == guided.shape == (1, 64, 64, 1)
    err_plain = (plain - truth).abs().mean()
    err_guided = (guided - truth).abs().mean()
    assert err_guided < 0.5 * err_plain
