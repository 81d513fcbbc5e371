"""DINOv3 / DINOv2 patch features through Hugging Face transformers.

`load_dino("facebook/dinov3-vitb16-pretrain-lvd1689m")` or a local folder saved with
`save_pretrained`. Tokens of DINOv3 are [CLS, registers, patches row-major]; DINOv2 has no
registers (the `-reg` variants have 4). The number of registers is read from the config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor

from .features import PatchFeatures, TwoDError, hub_unavailable, prepare_batch

DEFAULT_DINOV3 = "facebook/dinov3-vitb16-pretrain-lvd1689m"
DINOV3_SIZES = {
    "dinov3-vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
    "dinov3-vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
    "dinov3-vitl16": "facebook/dinov3-vitl16-pretrain-lvd1689m",
    "dinov3-vith16plus": "facebook/dinov3-vith16plus-pretrain-lvd1689m",
    "dinov3-vit7b16": "facebook/dinov3-vit7b16-pretrain-lvd1689m",
}
DINOV2_SIZES = {f"dinov2-{s}": f"facebook/dinov2-{s}" for s in ("small", "base", "large", "giant")}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Precision = Literal["fp32", "bf16", "fp16"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_model_id(name: str) -> str:
    """Short names (`dinov3-vitb16`, `dinov2-small`) to hub ids; hub ids and folders pass through."""
    return DINOV3_SIZES.get(name) or DINOV2_SIZES.get(name) or name


def _family(model_id: str) -> Literal["dinov3", "dinov2"]:
    config = Path(model_id) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type", "")
        if model_type.startswith("dinov3"):
            return "dinov3"
        if model_type.startswith("dinov2"):
            return "dinov2"
        raise TwoDError(f"{config}: model_type {model_type!r} is not a DINOv3 or DINOv2 model")
    if "dinov3" in model_id.lower():
        return "dinov3"
    if "dinov2" in model_id.lower():
        return "dinov2"
    raise TwoDError(
        f"unknown backbone {model_id!r}: use a DINOv3/DINOv2 hub id, a local folder, or 'colour'"
    )


def missing_weights_message(model_id: str, flag: str = "--backbone") -> str:
    """One line: how to get the weights, and the fallbacks as the calling command spells them
    (`flag` is its option that picks the backbone: --backbone, or --features for lift)."""
    if "dinov3" in model_id.lower():
        return (
            f"{model_id}: weights not available offline. DINOv3 is gated: accept its licence on the Hugging "
            f"Face page, run `hf auth login` and `hf download {model_id}` once, or pass a local folder; "
            f"without it use {flag} dinov2-base (Apache-2.0) or {flag} colour (weight-free demo)"
        )
    return (
        f"{model_id}: weights not available offline. Download once with network access "
        f"(`hf download {model_id}`) or pass a local folder; or use {flag} colour"
    )


@dataclass
class DinoExtractor:
    """A DINO backbone as a `FeatureExtractor`. Use `load_dino` to build one."""

    model: torch.nn.Module
    name: str
    dim: int
    stride: int
    num_registers: int
    short_side: int = 448
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    @torch.inference_mode()
    def extract(self, images: Sequence[Tensor]) -> PatchFeatures:
        batch, input_size, image_size = prepare_batch(
            images, self.short_side, self.stride, self.mean, self.std
        )
        batch = batch.to(self.device, self.dtype)
        tokens = self.model(pixel_values=batch).last_hidden_state
        h, w = input_size[0] // self.stride, input_size[1] // self.stride
        first = 1 + self.num_registers
        if tokens.shape[1] != first + h * w:
            raise TwoDError(
                f"{self.name}: got {tokens.shape[1]} tokens, expected {first} + {h}x{w} patches"
            )
        patches = tokens[:, first:].reshape(tokens.shape[0], h, w, -1).float().cpu()
        registers = tokens[:, 1:first].float().cpu() if self.num_registers else None
        return PatchFeatures(
            patches, self.stride, input_size, image_size, tokens[:, 0].float().cpu(), registers
        )


def load_dino(
    name: str = DEFAULT_DINOV3,
    short_side: int = 448,
    device: str | None = None,
    precision: Precision = "fp32",
    flag: str = "--backbone",
) -> DinoExtractor:
    """Load a DINOv3/DINOv2 backbone from a hub id (cached/offline as the environment allows) or
    a local folder, its weights and activations in `precision` (features come back float32).
    `flag` names the caller's backbone option in the missing-weights hint."""
    if precision not in DTYPES:
        raise TwoDError(f"precision {precision!r}: want one of {', '.join(DTYPES)}")
    model_id = resolve_model_id(name)
    family = _family(model_id)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not Path(model_id).exists() and hub_unavailable(model_id):
        raise TwoDError(missing_weights_message(model_id, flag))
    kwargs: dict = {"dtype": DTYPES[precision]}
    try:
        if family == "dinov3":
            from transformers import DINOv3ViTModel

            model = cast(Any, DINOv3ViTModel).from_pretrained(model_id, **kwargs)
        else:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(model_id, **kwargs)
    except OSError as err:
        if Path(model_id).exists():
            raise TwoDError(f"{model_id}: not a loadable model folder ({err})") from None
        raise TwoDError(missing_weights_message(model_id, flag)) from None
    config: Any = model.config
    mean, std = _normalisation(model_id)
    return DinoExtractor(
        model=model.to(device).eval(),
        name=Path(model_id).name if Path(model_id).exists() else model_id.split("/")[-1],
        dim=int(config.hidden_size),
        stride=int(config.patch_size),
        num_registers=int(getattr(config, "num_register_tokens", 0) or 0),
        short_side=short_side,
        mean=mean,
        std=std,
        device=device,
        dtype=DTYPES[precision],
    )


def _normalisation(model_id: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Mean/std from a local preprocessor_config.json when there is one, else ImageNet's."""
    path = Path(model_id) / "preprocessor_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(cfg["image_mean"]), tuple(cfg["image_std"])  # type: ignore[return-value]
    return IMAGENET_MEAN, IMAGENET_STD
