"""OpenCLIP models: loading (hub tag or local folder), text and image embeddings, a tiny test model.

`load_clip("ViT-B-16", "laion2b_s34b_b88k")` uses open_clip's `pretrained=` path (cache or
network); `load_clip("path/to/folder")` loads `open_clip_config.json` +
`open_clip_model.safetensors` through open_clip's `local-dir:` schema. Embeddings are returned
L2-normalised (cosine is meant).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .features import TwoDError

DEFAULT_CLIP = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"


@dataclass
class ClipModel:
    """A loaded OpenCLIP model with its tokenizer and image normalisation."""

    model: Any
    tokenizer: Any
    name: str
    embed_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"

    @torch.inference_mode()
    def encode_text(self, phrases: Sequence[str]) -> Float[Tensor, "Q E"]:
        if not phrases or any(not p.strip() for p in phrases):
            raise TwoDError("phrases must be non-empty text")
        tokens = self.tokenizer(list(phrases)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    def prepare(self, crops: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 S S"]:
        """Resize RGB crops in [0, 1] to the model's square input and normalise them."""
        x = F.interpolate(
            crops.float(), size=(self.image_size, self.image_size), mode="bicubic", antialias=True
        )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x.clamp(0, 1) - mean) / std

    @torch.inference_mode()
    def encode_crops(
        self, crops: Float[Tensor, "B 3 H W"], batch_size: int = 32
    ) -> Float[Tensor, "B E"]:
        """Embeddings of image crops (any size, resized square), in batches to bound memory."""
        out = []
        for start in range(0, crops.shape[0], batch_size):
            x = self.prepare(crops[start : start + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)


def _is_local(name: str) -> bool:
    return name.startswith("local-dir:") or Path(name).is_dir()


def load_clip(
    name: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, device: str | None = None
) -> ClipModel:
    """An OpenCLIP model by architecture + pretrained tag, `hf-hub:` id, or local folder. A local
    folder or `hf-hub:` id carries its own weights: `pretrained` is ignored for them, so callers
    can pass a recorded tag unconditionally."""
    import open_clip

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    local = _is_local(name)
    model_name = name if not local or name.startswith("local-dir:") else f"local-dir:{name}"
    if local:
        folder = Path(model_name.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise TwoDError(
                f"{folder}: no open_clip_config.json (a local OpenCLIP folder needs it + weights)"
            )
        pretrained = None
    elif name not in open_clip.list_models() and not name.startswith("hf-hub:"):
        raise TwoDError(
            f"unknown OpenCLIP model {name!r}: e.g. ViT-B-16, a local folder, or hf-hub:ORG/NAME"
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
    except (RuntimeError, OSError, ValueError) as err:
        if local:
            raise TwoDError(f"{model_name}: not a loadable OpenCLIP folder ({err})") from None
        raise TwoDError(
            f"OpenCLIP {name} ({pretrained}): weights not available offline ({type(err).__name__}); download "
            "them once with network access (they are cached), pass a local folder, or use --bridge instead"
        ) from None
    normalize = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")  # type: ignore[attr-defined]
    visual: Any = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    return ClipModel(
        model=model.eval(),
        tokenizer=open_clip.get_tokenizer(model_name),
        name=name if not local else Path(model_name.removeprefix("local-dir:")).name,
        embed_dim=int(cast(Any, model).text_projection.shape[1])
        if hasattr(model, "text_projection")
        else 0,
        image_size=int(size),
        mean=tuple(normalize.mean),  # type: ignore[arg-type]
        std=tuple(normalize.std),  # type: ignore[arg-type]
        device=device,
    )


TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random OpenCLIP model saved as a local folder (config + safetensors) for tests;
    loading it goes through the same `local-dir:` path as a user's real folder."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_CLIP_CONFIG)  # type: ignore[arg-type]
    config = {
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out
