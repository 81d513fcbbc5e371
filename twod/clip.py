"""OpenCLIP models: loading (hub tag or local folder), text and image embeddings, a tiny test model.

`load_clip("ViT-B-16", "laion2b_s34b_b88k")` uses open_clip's `pretrained=` path (cache or
network); `load_clip("path/to/folder")` loads `open_clip_config.json` +
`open_clip_model.safetensors` through open_clip's `local-dir:` schema. Embeddings are returned
L2-normalised (cosine is meant).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@contextmanager
def _open_clip_logs_silenced() -> Iterator[None]:
    """open_clip reports a failed download with `logging.error` on the root logger (and, when
    nothing configured logging, `basicConfig` first, so an `ERROR:root:` line reaches stderr);
    our TwoDError says it in one line. Drop open_clip's root-logger records while it loads."""
    root = logging.getLogger()

    def not_open_clip(record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname

    guard = logging.NullHandler()  # a handler on root: logging.error() skips basicConfig()
    root.addHandler(guard)
    root.addFilter(not_open_clip)
    try:
        yield
    finally:
        root.removeFilter(not_open_clip)
        root.removeHandler(guard)


def load_clip(
    name: str = DEFAULT_CLIP,
    pretrained: str | None = DEFAULT_PRETRAINED,
    device: str | None = None,
    fallback: str | None = None,
) -> ClipModel:
    """An OpenCLIP model by architecture + pretrained tag, `hf-hub:` id, or local folder. A local
    folder or `hf-hub:` id carries its own weights: `pretrained` is ignored for them, so callers
    can pass a recorded tag unconditionally. `fallback` ends the missing-weights error with what
    the calling command offers instead, in its own flags (e.g. "or use --bridge DIR instead")."""
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
        with _open_clip_logs_silenced():
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
    except (RuntimeError, OSError, ValueError) as err:
        if local:
            raise TwoDError(f"{model_name}: not a loadable OpenCLIP folder ({err})") from None
        raise TwoDError(
            f"OpenCLIP {name} ({pretrained}): weights not available offline ({type(err).__name__}); download "
            "them once with network access (they are cached) or pass a local folder"
            + (f"; {fallback}" if fallback else "")
        ) from None
    normalize = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")  # type: ignore[attr-defined]
    visual: Any = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    return ClipModel(
        model=model.eval(),
        tokenizer=open_clip.get_tokenizer(model_name),
        name=name if not local else Path(model_name.removeprefix("local-dir:")).name,
        embed_dim=_text_embed_dim(model),
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


def _text_embed_dim(model: Any) -> int:
    """Width of the text embeddings: the projection matrix's columns, or a Linear's outputs
    (OpenCLIP configs with `proj_bias`); 0 for a model without a text projection."""
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.nn.Linear):
        return projection.out_features
    return 0 if projection is None else int(projection.shape[1])


TINY_WHITE_TEXT_WIDTH = 256
"""Text width and embed_dim of `build_tiny_clip(whiten_text=True)`."""
TINY_PHRASE_COSINE = 0.9
"""Cosine between unrelated phrases that `build_tiny_clip(whiten_text=True)` aims for."""


def build_tiny_clip(out_dir: str | Path, seed: int = 0, whiten_text: bool = False) -> Path:
    """A tiny random OpenCLIP model saved as a local folder (config + safetensors) for tests;
    loading it goes through the same `local-dir:` path as a user's real folder.

    `whiten_text` gives a text space fit for phrase relevancy: a 256-wide, 16-token text tower
    whose `ln_final` bias and (square) text projection are set from its own pooled outputs on
    2048 random token phrases, so that embeddings are whitened (isotropic in the 255 directions
    the final LayerNorm leaves) around a shared offset along the tower's mean, sized for a
    cosine of about `TINY_PHRASE_COSINE` between unrelated phrases. Why: a raw random tower packs
    its variance into a few directions (the top 10 of 255 hold a third of it), so unrelated
    phrases are correlated by accident (cosine 0.39-0.93 between the demo's object names with the
    32-wide default) and LERF relevancy against the canonical negatives lets other objects
    outscore them. A trained CLIP's text embeddings instead sit on a shell offset from the origin
    (the modality-gap "cone") and differ in many directions. Measured on the demo scene (names
    planted as features, canonical negatives, default threshold), all 8 names reach IoU 0.9 for
    39 of 40 seeds (18 of 20 at width 128); over 5 seeds, 18 of 40 names do with the 256-wide
    tower left raw, 10 whitened without the offset, 25 offset without the whitening. Every
    weight is still a plain OpenCLIP parameter, saved and loaded as usual."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(TINY_CLIP_CONFIG)
    if whiten_text:
        config["embed_dim"] = TINY_WHITE_TEXT_WIDTH
        config["text_cfg"].update(width=TINY_WHITE_TEXT_WIDTH, heads=4, context_length=16)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config)  # type: ignore[arg-type]
    if whiten_text:
        _whiten_text_tower(model, torch.Generator().manual_seed(seed))
    saved = {
        "model_cfg": config,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(saved, indent=1))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out


def _random_phrase_tokens(
    n: int, context_length: int, vocab_size: int, generator: torch.Generator, max_words: int = 3
) -> Tensor:
    """(n, context_length) token ids of phrases of 1..max_words random BPE tokens between the
    start and end tokens (the last two ids), zero-padded as the OpenCLIP tokenizer pads."""
    start, end = vocab_size - 2, vocab_size - 1
    lengths = torch.randint(1, max_words + 1, (n,), generator=generator)
    words = torch.randint(0, start, (n, max_words), generator=generator)
    tokens = torch.zeros(n, context_length, dtype=torch.long)
    tokens[:, 0] = start
    in_phrase = torch.arange(1, max_words + 1) <= lengths[:, None]
    tokens[:, 1 : max_words + 1] = torch.where(in_phrase, words, 0)
    tokens[torch.arange(n), lengths + 1] = end
    return tokens


@torch.no_grad()
def _whiten_text_tower(model: Any, generator: torch.Generator, phrases: int = 2048) -> None:
    """Set `model`'s ln_final bias and text projection (square) so that its text embeddings of
    random phrases are whitened around a shared offset (see `build_tiny_clip`)."""
    tokens = _random_phrase_tokens(
        phrases, model.context_length, model.vocab_size, generator=generator
    )
    projection = model.text_projection
    model.text_projection = None  # encode_text then returns the pooled ln_final output
    pooled = torch.cat([model.encode_text(t) for t in tokens.split(512)]).double()
    mean = pooled.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov(pooled.T))
    keep = values > values.max() * 1e-6  # drops the direction ln_final's centring removes
    basis, values = vectors[:, keep], values[keep]
    whiten = basis @ torch.diag(values.rsqrt()) @ basis.T
    # The offset runs along the tower's own mean direction; whitened, its squared norm is
    # rho / (1 - rho) times a phrase's expected D, so unrelated phrases have cosine ~rho.
    along = basis @ (basis.T @ mean)
    rho = TINY_PHRASE_COSINE
    offset = along * (keep.sum() * rho / (1 - rho)).sqrt() / (along @ whiten).norm()
    model.ln_final.bias += (offset - mean).to(model.ln_final.bias.dtype)
    model.text_projection = torch.nn.Parameter(whiten.to(projection.dtype))
