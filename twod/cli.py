"""Command-line edge of twod: `omnivision localize`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

from .dino import Precision
from .features import TwoDError


def parse_point(text: str, flag: str = "--click") -> tuple[float, float]:
    m = re.fullmatch(r"\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*", text)
    if not m:
        raise TwoDError(f"{flag} {text!r}: expected X,Y in pixels, e.g. {flag} 120,80")
    return float(m.group(1)), float(m.group(2))


def parse_box(text: str, flag: str = "--box") -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise TwoDError(f"{flag} {text!r}: expected X1,Y1,X2,Y2 in pixels") from None
    if x1 <= x0 or y1 <= y0:
        raise TwoDError(f"{flag} {text!r}: X2 must exceed X1 and Y2 exceed Y1")
    return x0, y0, x1, y1


def check_inside(
    path: Path, size: tuple[int, int], points: list[tuple[float, float]], what: str
) -> None:
    h, w = size
    for x, y in points:
        if not (0 <= x < w and 0 <= y < h):
            raise TwoDError(f"{path}: {what} ({x:g}, {y:g}) is outside the {w}x{h} image")


def exemplar(
    path: Path, clicks: list[str], box: str | None, flags: tuple[str, str] = ("--click", "--box")
) -> tuple[torch.Tensor, list[tuple[float, float]], tuple[float, float, float, float] | None]:
    """The exemplar image and the clicks or the box on it (one of them), parsed and checked to
    lie inside it; `flags` name the caller's options in the messages."""
    from .io import read_image

    if bool(clicks) == bool(box):
        raise TwoDError(
            f"give the reference as {flags[0]} X,Y ... or as {flags[1]} X1,Y1,X2,Y2 (one of them)"
        )
    image = read_image(path)
    points = [parse_point(c, flags[0]) for c in clicks]
    parsed = parse_box(box, flags[1]) if box else None
    corners = (
        [] if parsed is None else [(parsed[0], parsed[1]), (parsed[2] - 1e-3, parsed[3] - 1e-3)]
    )
    check_inside(path, (image.shape[0], image.shape[1]), points or corners, "reference point")
    return image, points, parsed


@dataclass
class LocalizeCommand:
    ref: Path
    """Reference image: the example of what to find."""
    target: Path
    """Target image, or a folder of images (processed with a progress bar)."""
    out: Path = Path("localize_out")
    """Output folder: <name>_overlay.png, <name>_heatmap.png, <name>_mask_<k>.png, detections.json (COCO)."""
    click: list[str] = field(default_factory=list)
    """Points on the reference image, X,Y pixels (repeat: --click 10,20 30,40)."""
    box: str | None = None
    """A box on the reference image, X1,Y1,X2,Y2 pixels (instead of --click)."""
    backbone: str = "dinov3-vitb16"
    """Patch features: dinov3-vits16|vitb16|vitl16|..., dinov2-small|base|..., a hub id, a local folder, or
    `colour` (weight-free demo backend)."""
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 for masks: a hub id, a local checkpoint .pt (with --sam-config), or `none` (heatmap components)."""
    sam_config: str | None = None
    """SAM 2 config (name like configs/sam2.1/sam2.1_hiera_t.yaml or a yaml path) for a local checkpoint."""
    threshold: float | None = None
    """Cosine similarity threshold; default: Otsu's threshold per image."""
    short_side: int = 448
    """Short side (pixels) the backbone sees."""
    precision: Precision = "fp32"
    """dtype of the DINO backbone's weights and activations (bf16/fp16 halve its memory)."""
    top_k: int = 20
    """Most instances kept per image."""
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""


DESCRIPTION = """Find everything in the target that looks like the clicked (or boxed) part of the reference.

examples:
  omnivision localize --ref ref.jpg --click 520,380 --target photos/ --out found/
  omnivision localize --ref ref.jpg --box 425,600,700,875 --target truck.jpg --backbone dinov2-small --sam none
  omnivision localize --ref crop.png --box 0,0,64,64 --target shelf.jpg --backbone colour --sam none   # offline
"""


def localize_main(argv: list[str], prog: str) -> int:
    from tqdm import tqdm

    from .extractors import load_extractor
    from .io import CocoWriter, list_images, read_image, save_detections
    from .localize import LocalizeConfig, localize, reference_vector

    cfg: LocalizeCommand = tyro.cli(LocalizeCommand, args=argv, prog=prog, description=DESCRIPTION)
    ref_image, clicks, box = exemplar(cfg.ref, cfg.click, cfg.box)
    targets = list_images(cfg.target)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    extractor = load_extractor(
        cfg.backbone, short_side=cfg.short_side, device=device, precision=cfg.precision
    )
    sam = None
    if cfg.sam.lower() != "none":
        from .sam import load_sam2

        sam = load_sam2(cfg.sam, config=cfg.sam_config, device=device)
    reference = reference_vector(extractor.extract([ref_image]), clicks, box)
    config = LocalizeConfig(threshold=cfg.threshold, top_k=cfg.top_k)
    coco = CocoWriter(category=f"like {cfg.ref.name}")
    total = 0
    for path in tqdm(targets, desc="localize", unit="img", disable=len(targets) == 1):
        image = read_image(path)
        found = localize(reference, extractor.extract([image]), config, image=image, sam=sam)
        total += save_detections(cfg.out, path, image, found, found.heatmap, coco)
    coco.write(cfg.out / "detections.json")
    print(
        f"found {total} instance(s) in {len(targets)} image(s); wrote {cfg.out}/ (overlays, heatmaps, masks, detections.json)"
    )
    return 0
