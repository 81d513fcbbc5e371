"""Command-line edge of twod's language tools: `omnivision train-bridge` and `omnivision phrase`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro

from .clip import DEFAULT_CLIP, DEFAULT_PRETRAINED
from .dino import Precision
from .features import TwoDError


def _local_or_name(name: str) -> str:
    """A local folder as an absolute path (so a saved bridge finds it from anywhere), else as is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


@dataclass
class TrainBridgeCommand:
    pairs: Path | None = None
    """JSON lines {"image": "rel/path.jpg", "phrase": "...", "box": [x0, y0, x1, y1]} (or "polygon": [[x, y], ...])."""
    images: Path | None = None
    """Folder the pairs' image paths are relative to (default: the pairs file's folder; for --refcoco the COCO
    train2014 folder; for --flickr30k ROOT/flickr30k-images)."""
    val_pairs: Path | None = None
    """Held-out JSON lines, scored every epoch (pointing accuracy, mIoU)."""
    refcoco: Path | None = None
    """A RefCOCO/RefCOCO+/RefCOCOg folder (refs(unc|umd|google).p + instances.json) instead of --pairs."""
    flickr30k: Path | None = None
    """A Flickr30k Entities folder (Annotations/, Sentences/, train.txt, val.txt) instead of --pairs."""
    split: str = "train"
    """Training split of --refcoco / --flickr30k."""
    val_split: str | None = "val"
    """Held-out split of --refcoco / --flickr30k (none: no evaluation)."""
    split_by: str | None = None
    """RefCOCO refs file: unc, umd or google (default: the first present)."""
    backbone: str = "dinov3-vitb16"
    """Patch features the bridge maps into: a DINOv3/DINOv2 short name, hub id, local folder, or `colour`."""
    clip: str = DEFAULT_CLIP
    """Frozen OpenCLIP text encoder: an architecture (with --pretrained), hf-hub:ORG/NAME, or a local folder."""
    pretrained: str | None = DEFAULT_PRETRAINED
    """OpenCLIP pretrained tag (ignored for a local folder)."""
    out: Path = Path("bridge")
    """Output folder: bridge.json + bridge.safetensors, and the checkpoint (training state, feature cache)."""
    epochs: int = 10
    """Total epochs (with --resume: up to this many)."""
    batch_size: int = 64
    steps_per_epoch: int | None = None
    """Default: one pass over the pairs."""
    lr: float = 1e-3
    patches_per_image: int = 64
    """Patches sampled per image (once) as extra negatives; memory: images x this x D halves."""
    hidden: int = 512
    """Width of the MLP's hidden layer."""
    temperature: float = 0.07
    """Initial contrastive temperature."""
    fixed_temperature: bool = False
    """Keep the temperature fixed instead of learning it."""
    short_side: int = 448
    """Short side (pixels) the backbone sees."""
    precision: Precision = "fp32"
    """dtype of the DINO backbone's weights and activations (bf16/fp16 halve its memory)."""
    sam: str = "none"
    """SAM 2 for the held-out mIoU (masks from the heatmap's peak box): hub id, checkpoint .pt (with --sam-config)
    or `none` (mIoU of the thresholded heatmap)."""
    sam_config: str | None = None
    resume: bool = False
    """Continue from the checkpoint in --out (weights, optimizer state, step count)."""
    seed: int = 0
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""


TRAIN_DESCRIPTION = """Train a text bridge: CLIP text -> the backbone's patch-feature space, so `omnivision phrase --bridge`
finds phrases with DINO features. Region features are computed once per image and cached in --out.

examples:
  omnivision train-bridge --pairs pairs.jsonl --images photos/ --val-pairs val.jsonl --out bridge/
  omnivision train-bridge --refcoco data/refcoco --images data/coco/train2014 --epochs 20 --out bridge/
  omnivision train-bridge --flickr30k data/flickr30k_entities --out bridge/ --resume   # after an interruption
  omnivision train-bridge --pairs pairs.jsonl --backbone colour --clip tiny_clip/ --out bridge/   # offline demo
"""


def _read_pairs(cfg: TrainBridgeCommand):
    from .bridge import read_flickr30k_entities, read_pairs_jsonl, read_refcoco

    sources = [s for s in (cfg.pairs, cfg.refcoco, cfg.flickr30k) if s is not None]
    if len(sources) != 1:
        raise TwoDError(
            "give the training pairs as one of --pairs FILE, --refcoco ROOT, --flickr30k ROOT"
        )
    if cfg.pairs is not None:
        held_out = read_pairs_jsonl(cfg.val_pairs, cfg.images) if cfg.val_pairs else []
        return read_pairs_jsonl(cfg.pairs, cfg.images), held_out
    if cfg.refcoco is not None:

        def read(split: str):
            return read_refcoco(cfg.refcoco, split, cfg.images, cfg.split_by)  # type: ignore[arg-type]
    else:

        def read(split: str):
            return read_flickr30k_entities(cfg.flickr30k, split, cfg.images)  # type: ignore[arg-type]

    if cfg.val_pairs is not None:
        return read(cfg.split), read_pairs_jsonl(cfg.val_pairs, cfg.images)
    return read(cfg.split), (read(cfg.val_split) if cfg.val_split else [])


def train_bridge_main(argv: list[str], prog: str) -> int:
    from .bridge import BridgeConfig, TextBridge, TrainConfig, train_bridge
    from .clip import load_clip
    from .extractors import load_extractor

    cfg: TrainBridgeCommand = tyro.cli(
        TrainBridgeCommand, args=argv, prog=prog, description=TRAIN_DESCRIPTION
    )
    pairs, held_out = _read_pairs(cfg)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip_name = _local_or_name(cfg.clip)
    pretrained = (
        None if Path(clip_name).is_dir() or clip_name.startswith("hf-hub:") else cfg.pretrained
    )
    clip = load_clip(clip_name, pretrained, device=device)
    backbone = _local_or_name(cfg.backbone)
    extractor = load_extractor(
        backbone, short_side=cfg.short_side, device=device, precision=cfg.precision
    )
    config = BridgeConfig.for_models(
        clip,
        extractor,
        clip_model=clip_name,
        clip_pretrained=pretrained,
        backbone_source=backbone,
        hidden_dim=cfg.hidden,
        temperature=cfg.temperature,
        learn_temperature=not cfg.fixed_temperature,
    )
    sam = None
    if held_out and cfg.sam.lower() != "none":
        from .sam import load_sam2

        sam = load_sam2(cfg.sam, config=cfg.sam_config, device=device)
    torch.manual_seed(cfg.seed)
    bridge = TextBridge(clip, config)
    train = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.steps_per_epoch,
        lr=cfg.lr,
        patches_per_image=cfg.patches_per_image,
        seed=cfg.seed,
        resume=cfg.resume,
        device=device,
    )
    result = train_bridge(
        bridge, pairs, extractor, train, held_out, True, cfg.out / "checkpoint", sam
    )
    result.bridge.save(cfg.out)
    summary = f"trained {result.steps} steps on {len(pairs)} pairs"
    if result.final is not None:
        summary += (
            f"; held-out pointing accuracy {result.final.pointing_accuracy:.3f} "
            f"(chance {result.final.chance:.3f}), mIoU {result.final.miou:.3f} on {result.final.pairs} pairs"
        )
    print(f"{summary}; wrote {cfg.out}/ ({cfg.out / 'bridge.json'}, bridge.safetensors)")
    return 0


@dataclass
class PhraseCommand:
    text: str
    """The phrase to find, e.g. "red backpack"."""
    image: Path
    """An image, or a folder of images (processed with a progress bar)."""
    out: Path = Path("phrase_out")
    """Output folder: <name>_overlay.png, <name>_heatmap.png, <name>_mask_<k>.png, detections.json (COCO)."""
    negative: list[str] = field(default_factory=list)
    """Phrases the answer is not (repeat: --negative sky floor); with --clip added to the canonical negatives."""
    bridge: Path | None = None
    """A text bridge folder (omnivision train-bridge): text -> DINO space, cosine over the backbone's patches."""
    clip: str | None = None
    """An OpenCLIP model for dense CLIP relevancy instead of a bridge: architecture, hf-hub id or local folder."""
    pretrained: str | None = DEFAULT_PRETRAINED
    """OpenCLIP pretrained tag for --clip (ignored for a local folder)."""
    dense: Literal["lerf", "langsplat"] = "lerf"
    """Dense CLIP features for --clip: multi-scale crops (lerf) or SAM 2 masks (langsplat; needs --sam)."""
    backbone: str | None = None
    """With --bridge: the backbone (default: the one the bridge was trained on)."""
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 for masks: a hub id, a local checkpoint .pt (with --sam-config), or `none` (heatmap components)."""
    sam_config: str | None = None
    """SAM 2 config (name like configs/sam2.1/sam2.1_hiera_t.yaml or a yaml path) for a local checkpoint."""
    threshold: float | None = None
    """Heatmap threshold (cosine for --bridge, relevancy for --clip); default per image: Otsu's cut
    over the values above the median (the background)."""
    short_side: int | None = None
    """Short side (pixels) the backbone sees (default: the bridge's)."""
    precision: Precision = "fp32"
    """With --bridge: dtype of the DINO backbone's weights and activations (bf16/fp16 halve its memory)."""
    top_k: int = 20
    """Most instances kept per image."""
    batch_size: int = 32
    """CLIP crops per batch (--clip)."""
    cache_dir: Path | None = None
    """Where dense CLIP features are cached between runs (--clip)."""
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""


PHRASE_DESCRIPTION = """Find what a phrase names in images: a heatmap, boxes and masks.

With --bridge the phrase is mapped into DINO's patch-feature space by a trained text bridge; with --clip dense CLIP
features are scored by relevancy against canonical negatives (and --negative).

examples:
  omnivision phrase --text "red backpack" --image photos/ --bridge bridge/ --out found/
  omnivision phrase --text "mug" --negative "table" --image kitchen.jpg --clip ViT-B-16 --sam none
  omnivision phrase --text "red square" --image shapes.png --bridge tiny_bridge/ --backbone colour --sam none   # offline
"""


def _check_text(cfg: PhraseCommand) -> None:
    if not cfg.text.strip():
        raise TwoDError("--text is empty: give the phrase to find, e.g. --text 'red backpack'")
    for negative in cfg.negative:
        if not negative.strip():
            raise TwoDError(
                "--negative is empty: give phrases the answer is not, e.g. --negative sky"
            )
    if (cfg.bridge is None) == (cfg.clip is None):
        raise TwoDError(
            "give one of --bridge DIR (a trained text bridge) or --clip MODEL (dense CLIP)"
        )
    if cfg.clip is not None and cfg.backbone is not None:
        raise TwoDError("--backbone goes with --bridge; --clip scores CLIP's own dense features")


class _BridgeScorer:
    """Phrase -> (coarse cosine heatmap, grid) over the backbone's patches, negatives suppressed."""

    def __init__(self, cfg: PhraseCommand, device: str) -> None:
        from .bridge import TextBridge, read_bridge_config
        from .extractors import load_extractor

        assert cfg.bridge is not None
        saved = read_bridge_config(cfg.bridge)
        backbone = (
            _local_or_name(cfg.backbone)
            if cfg.backbone
            else saved.backbone_source or saved.backbone
        )
        # Another backbone than the bridge's is refused before any model loads.
        self.bridge = TextBridge.load(cfg.bridge, expect_backbone=backbone, device=device)
        short_side = cfg.short_side or saved.short_side
        self.extractor = load_extractor(
            backbone, short_side=short_side, device=device, precision=cfg.precision
        )
        with torch.no_grad():
            self.queries = self.bridge([cfg.text, *cfg.negative]).cpu()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from .bridge import text_heatmap

        heat = text_heatmap(self.queries, self.extractor.extract([image]))
        target = heat[0]
        if len(heat) > 1:  # a patch closer to a negative than to the phrase is not the phrase
            beaten = heat[1:].max(0).values > target
            target = torch.where(beaten, target.min(), target)
        return target


class _ClipScorer:
    """Phrase -> (coarse relevancy map in [0, 1]) from dense CLIP features."""

    def __init__(self, cfg: PhraseCommand, device: str, sam) -> None:
        from . import clip_dense
        from .clip import load_clip

        assert cfg.clip is not None
        name = _local_or_name(cfg.clip)
        self.clip = load_clip(
            name, cfg.pretrained, device=device, fallback="or use --bridge DIR instead of --clip"
        )
        self.cfg, self.sam = cfg, sam
        if cfg.dense == "langsplat" and sam is None:
            raise TwoDError(
                "--dense langsplat needs SAM 2 masks: drop --sam none or use --dense lerf"
            )
        embeddings = self.clip.encode_text(
            [cfg.text, *clip_dense.CANONICAL_NEGATIVES, *cfg.negative]
        )
        self.query, self.negatives = embeddings[0], embeddings[1:]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from . import clip_dense

        if self.cfg.dense == "langsplat":
            dense = clip_dense.langsplat_features(
                self.clip,
                image,
                sam=self.sam,
                batch_size=self.cfg.batch_size,
                cache_dir=self.cfg.cache_dir,
            )
        else:
            dense = clip_dense.lerf_features(
                self.clip, image, batch_size=self.cfg.batch_size, cache_dir=self.cfg.cache_dir
            )
        relevancy = clip_dense.relevancy(dense.maps.float(), self.query, self.negatives)
        return relevancy.amax(0)  # (L, h, w) -> the best scale per position


def phrase_main(argv: list[str], prog: str) -> int:
    from tqdm import tqdm

    from .features import joint_bilateral_upsample
    from .io import CocoWriter, list_images, read_image, save_detections
    from .localize import LocalizeConfig
    from .referring import detect_in_heatmap, morph_radius

    cfg: PhraseCommand = tyro.cli(
        PhraseCommand, args=argv, prog=prog, description=PHRASE_DESCRIPTION
    )
    _check_text(cfg)
    images = list_images(cfg.image)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sam = None
    if cfg.sam.lower() != "none":
        from .sam import load_sam2

        sam = load_sam2(cfg.sam, config=cfg.sam_config, device=device)
    scorer = _BridgeScorer(cfg, device) if cfg.bridge is not None else _ClipScorer(cfg, device, sam)
    config = LocalizeConfig(threshold=cfg.threshold, top_k=cfg.top_k)
    coco = CocoWriter(category=cfg.text.strip())
    total = 0
    for path in tqdm(images, desc="phrase", unit="img", disable=len(images) == 1):
        image = read_image(path)
        size = (image.shape[0], image.shape[1])
        coarse = scorer(image).float().cpu()
        # Edge-aware upsampling: the heatmap's borders follow the image's (as localize does).
        guided = joint_bilateral_upsample(coarse[None, :, :, None], image[None], 0.8, 0.12)
        heatmap = guided[0, ..., 0]
        radius = morph_radius(config, size, tuple(coarse.shape))  # type: ignore[arg-type]
        found = detect_in_heatmap(heatmap, config, radius, image=image, sam=sam)
        # heatmap_rgb's scale is cosine's [-1, 1]; relevancy lives in [0, 1].
        shown = heatmap if cfg.bridge is not None else 2 * heatmap - 1
        total += save_detections(cfg.out, path, image, found, shown, coco)
    coco.write(cfg.out / "detections.json")
    print(
        f"found {total} instance(s) of {cfg.text.strip()!r} in {len(images)} image(s); "
        f"wrote {cfg.out}/ (overlays, heatmaps, masks, detections.json)"
    )
    return 0
