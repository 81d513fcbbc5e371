"""Command-line edge of `omnivision segment`: open-vocabulary semantic segmentation of images.

Per image NAME: NAME.png (class ids as a palette PNG, `segdata.write_label_map`; what
`omnivision eval ovss` scores), NAME_overlay.png (the image tinted by class, a legend of the
classes present), NAME.json (the fraction of pixels per class); plus classes.txt (the class
list in id order, for `eval ovss --classes`). The folder is built aside and renamed into place:
bad input or a failure leaves no half-written output.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from .clip import DEFAULT_PRETRAINED
from .dino import Precision
from .errors import TwoDError
from .segment import TEMPLATES, SegmentConfig


@dataclass
class SegmentCommand:
    image: Path
    """An image, or a folder of images (processed with a progress bar)."""
    out: Path
    """Output folder: NAME.png (class ids, palette PNG), NAME_overlay.png, NAME.json, classes.txt."""
    classes: str | None = None
    """Class names, comma-separated ("chair,table,floor"), or a built-in list: ade20k-150,
    pascal-context-59."""
    classes_file: Path | None = None
    """A class-list file instead: one name per line, or `id: name` lines."""
    bridge: Path | None = None
    """A text bridge folder (omnivision train-bridge): class texts -> the backbone's space."""
    clip: str | None = None
    """An OpenCLIP model for dense CLIP features instead of a bridge: architecture, hf-hub id or
    local folder."""
    pretrained: str | None = DEFAULT_PRETRAINED
    """OpenCLIP pretrained tag for --clip (ignored for a local folder)."""
    features: str | None = None
    """With --bridge: the patch features (dinov3-..., dinov2-..., a folder, or colour); default the
    bridge's backbone."""
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))
    """Prompt templates, each with {} for the class name; a class's embeddings are averaged."""
    global_local: bool = True
    """Global-local ensemble: add the view's CLS (or whole-view CLIP) score of each class."""
    global_weight: float = 0.3
    """Weight of that global term: (1 - w) * patch + w * global."""
    guided: bool = True
    """Early refinement: guided (joint bilateral) upsampling of the scores; else bilinear."""
    regions: bool = True
    """Late refinement: average the scores inside SAM 2's automatic masks (needs --sam)."""
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 for the regions: a hub id, a local checkpoint .pt (with --sam-config), or none."""
    sam_config: str | None = None
    """SAM 2 config (configs/sam2.1/sam2.1_hiera_t.yaml or a yaml path) for a local checkpoint."""
    points_per_side: int = 16
    """SAM 2 automatic masks: prompt grid per side."""
    local_global: bool = True
    """Local-global inference: overlapping crops plus the resized whole image; else the whole only."""
    crop: int = 384
    """Crop side, pixels."""
    stride: int = 256
    """Step between crops, pixels."""
    whole: int = 640
    """Short side the whole image is seen at."""
    precision: Precision = "fp32"
    """dtype of the DINO backbone's weights and activations."""
    batch_size: int = 32
    """CLIP crops per batch (--clip)."""
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""


DESCRIPTION = """Open-vocabulary semantic segmentation: every pixel gets one of the class names.

Class names go through prompt templates (embeddings averaged) into DINO space by a text bridge
(--bridge) or stay in CLIP space for dense CLIP features (--clip). Scores of overlapping crops and
the whole image are averaged (--no-local-global: whole image only), a global CLS term added
(--no-global-local), upsampled guided by the image (--no-guided: bilinear) and averaged inside
SAM 2's automatic masks (--no-regions, or --sam none) before the argmax.

examples:
  omnivision segment --image room.jpg --classes "chair,table,floor,wall" --bridge bridge/ --out seg/
  omnivision segment --image ade/images/validation --classes ade20k-150 --bridge bridge/ --out preds/
  omnivision segment --image shapes.png --classes-file names.txt --clip ViT-B-16 --sam none --out seg/
"""


def read_classes(classes: str | None, classes_file: Path | None) -> tuple[str, ...]:
    """The class list of --classes (comma-separated, or a built-in list's name) or --classes-file."""
    from .segdata import BUILTIN_CLASSES, read_class_list
    from .segment import check_classes

    if (classes is None) == (classes_file is None):
        raise TwoDError("give one of --classes 'a,b,c' (or a built-in list) or --classes-file F")
    if classes_file is not None:
        return check_classes(read_class_list(classes_file), str(classes_file))
    assert classes is not None
    if classes.strip() in BUILTIN_CLASSES:
        return BUILTIN_CLASSES[classes.strip()]
    return check_classes(classes.split(","), "--classes")


def check_readable(paths: list[Path]) -> None:
    """Every image opens and decodes (before any model loads or anything is written)."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
        except (UnidentifiedImageError, OSError) as err:
            raise TwoDError(f"{path}: not a readable image ({err})") from None


def legend_overlay(
    image: torch.Tensor, labels: np.ndarray, classes: tuple[str, ...], fractions: dict[str, float]
) -> np.ndarray:
    """The image tinted by class (the index PNG's palette colours) with a legend panel on the
    right: one swatch per class present, by area."""
    from PIL import Image, ImageDraw

    from .davis import DAVIS_PALETTE
    from .io import to_uint8

    palette = np.frombuffer(DAVIS_PALETTE, np.uint8).reshape(-1, 3).astype(np.float32)
    rgb = to_uint8(image).astype(np.float32)
    tinted = (0.45 * rgb + 0.55 * palette[labels % 256]).astype(np.uint8)
    present = sorted((k for k in range(len(classes)) if fractions[classes[k]] > 0),
                     key=lambda k: -fractions[classes[k]])  # fmt: skip
    row, width = 16, 200
    H, W = labels.shape
    canvas = Image.new("RGB", (W + width, max(H, row * len(present) + 8)), (255, 255, 255))
    canvas.paste(Image.fromarray(tinted), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, k in enumerate(present):
        y = 4 + i * row
        colour = tuple(int(c) for c in palette[k % 256])
        draw.rectangle((W + 6, y, W + 18, y + 12), fill=colour, outline=(0, 0, 0))
        text = f"{classes[k][:24]} {100 * fractions[classes[k]]:.1f}%"
        draw.text((W + 24, y), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def load_scorer(cfg: SegmentCommand, classes: tuple[str, ...], device: str):
    """The class scorer `cfg` names (--bridge on --features patches, or dense --clip), its text
    side embedded for `classes`; shared with `omnivision-lift --features segment:...`."""
    from .segment import ClipScorer, FeatureScorer, class_embeddings

    if (cfg.bridge is None) == (cfg.clip is None):
        raise TwoDError(
            "give one of --bridge DIR (a trained text bridge) or --clip MODEL (dense CLIP)"
        )
    if cfg.clip is not None:
        if cfg.features is not None:
            raise TwoDError(
                "--features goes with --bridge; --clip scores CLIP's own dense features"
            )
        from .cli_language import _local_or_name
        from .clip import load_clip

        clip = load_clip(
            _local_or_name(cfg.clip), cfg.pretrained, device=device,
            fallback="or use --bridge DIR instead of --clip",
        )  # fmt: skip
        texts = class_embeddings(clip.encode_text, classes, cfg.templates)
        return ClipScorer(clip, texts, cfg.batch_size)
    from .bridge import TextBridge, read_bridge_config
    from .cli_language import _local_or_name
    from .extractors import load_extractor

    assert cfg.bridge is not None
    saved = read_bridge_config(cfg.bridge)
    backbone = (
        _local_or_name(cfg.features) if cfg.features else saved.backbone_source or saved.backbone
    )
    bridge = TextBridge.load(cfg.bridge, expect_backbone=backbone, device=device)
    extractor = load_extractor(
        backbone, short_side=cfg.whole, device=device, precision=cfg.precision, flag="--features"
    )
    with torch.no_grad():
        clip_texts = class_embeddings(bridge.encode_phrases, classes, cfg.templates)
        texts = bridge.project(clip_texts).cpu()
    return FeatureScorer(extractor, texts)


def _load_regions(cfg: SegmentCommand, device: str):
    """SAM 2 for the late refinement, or None with a one-line note when its weights are absent."""
    if not cfg.regions or cfg.sam.lower() == "none":
        return None
    from .sam import load_sam2

    try:
        return load_sam2(cfg.sam, config=cfg.sam_config, device=device)
    except TwoDError as err:
        if Path(cfg.sam).exists():  # the user's own checkpoint is broken: that is an error
            raise
        print(f"note: no SAM 2 regions, late refinement off ({err})", file=sys.stderr)
        return None


def segment_main(argv: list[str], prog: str) -> int:
    from tqdm import tqdm

    from .io import list_images, read_image, replace_folder, save_png, write_atomically
    from .segdata import write_label_map
    from .segment import class_fractions, prompt_texts, segment_image

    cfg: SegmentCommand = tyro.cli(SegmentCommand, args=argv, prog=prog, description=DESCRIPTION)
    classes = read_classes(cfg.classes, cfg.classes_file)
    prompt_texts(classes[:1], cfg.templates)  # checks the templates
    if len(classes) > 255:
        raise TwoDError(f"{len(classes)} classes: the palette PNG holds at most 255")
    if cfg.global_weight < 0 or cfg.global_weight > 1:
        raise TwoDError(f"--global-weight {cfg.global_weight:g}: want a weight in [0, 1]")
    paths = list_images(cfg.image)
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise TwoDError(f"{cfg.image}: two images named {dup!r} (outputs are NAME.png)")
    check_readable(paths)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorer = load_scorer(cfg, classes, device)
    sam = _load_regions(cfg, device)
    config = SegmentConfig(
        global_weight=cfg.global_weight if cfg.global_local else 0.0, guided=cfg.guided,
        local_global=cfg.local_global, crop=cfg.crop, stride=cfg.stride, whole=cfg.whole,
    )  # fmt: skip
    notes: set[str] = set()

    def build(folder: Path) -> None:
        write_atomically(folder / "classes.txt", lambda t: t.write_text("\n".join(classes) + "\n"))
        for path in tqdm(paths, desc="segment", unit="img", disable=len(paths) == 1):
            image = read_image(path)
            regions = None
            if sam is not None:
                found = sam.generate(image, points_per_side=cfg.points_per_side)
                regions = found.masks.bool()
            result = segment_image(image, scorer, config, regions)
            for note in result.notes:
                if note not in notes:
                    notes.add(note)
                    print(f"note: {note}", file=sys.stderr)
            labels = result.labels.numpy()
            fractions = class_fractions(result.labels, classes)
            write_label_map(folder / f"{path.stem}.png", labels.astype(np.uint8))
            save_png(
                folder / f"{path.stem}_overlay.png",
                legend_overlay(image, labels, classes, fractions),
            )
            record = {"image": str(path), "size": list(labels.shape), "views": result.views,
                      "fractions": {k: round(v, 6) for k, v in fractions.items()}}  # fmt: skip
            text = json.dumps(record, indent=1)
            write_atomically(folder / f"{path.stem}.json", lambda t, text=text: t.write_text(text))

    replace_folder(cfg.out, build)
    print(
        f"segmented {len(paths)} image(s) into {len(classes)} classes; wrote {cfg.out}/"
        " (NAME.png class ids, NAME_overlay.png, NAME.json fractions, classes.txt)"
    )
    return 0
