"""Files at the edge of twod: images in, overlays / heatmaps / mask PNGs / COCO JSON out.

Every output is written to a temporary file in the target folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from .features import TwoDError

if TYPE_CHECKING:
    from .localize import Detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: str | Path) -> torch.Tensor:
    """(H, W, 3) float32 RGB in [0, 1]; a missing or unreadable file is a TwoDError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TwoDError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
    except (UnidentifiedImageError, OSError) as err:
        raise TwoDError(f"{path}: not a readable image ({err})") from None


def list_images(path: str | Path) -> list[Path]:
    """An image file, or the images of a folder in name order; an empty folder is an error."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise TwoDError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if not path.exists():
        raise TwoDError(f"{path}: no such file or folder")
    return [path]


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_folder(target: Path, build: Callable[[Path], object]) -> Path:
    """`build(tmp)` fills a folder under a temporary name beside `target`, which is then renamed
    into place (a previous `target` moved aside first and removed after): a failed build leaves
    the old folder, or nothing, never a half-written one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    try:
        tmp.mkdir()
        build(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    return write_atomically(
        path, lambda tmp: Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    )


def heatmap_rgb(heatmap: torch.Tensor, cmap: str = "turbo") -> np.ndarray:
    """A (H, W) similarity map in [-1, 1] (cosine) coloured with a fixed scale, so maps compare."""
    from matplotlib import colormaps

    values = ((heatmap.float().cpu().numpy() + 1) / 2).clip(0, 1)
    return to_uint8(colormaps[cmap](values)[..., :3])


PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.float32,
)  # fmt: skip


def overlay(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, labels: Sequence[str] = ()
) -> np.ndarray:
    """The image with each mask tinted in its own colour, its box drawn and labelled."""
    out = to_uint8(image).astype(np.float32)
    for k, mask in enumerate(masks.cpu().numpy()):
        colour = PALETTE[k % len(PALETTE)]
        out[mask] = 0.45 * out[mask] + 0.55 * colour
    canvas = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for k, box in enumerate(boxes.tolist()):
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        draw.rectangle(box, outline=colour, width=3)
        if k < len(labels):
            draw.text((box[0] + 4, box[1] + 2), labels[k], fill=colour)
    return np.asarray(canvas)


class CocoWriter:
    """Accumulates images and instance annotations (RLE masks, xywh boxes, scores) as COCO JSON."""

    def __init__(self, category: str) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.category = category

    def add(
        self,
        file_name: str,
        size: tuple[int, int],
        boxes: torch.Tensor,
        scores: torch.Tensor,
        masks: torch.Tensor,
    ):
        from pycocotools import mask as mask_utils

        image_id = len(self.images) + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]}
        )
        for box, score, mask in zip(
            boxes.tolist(), scores.tolist(), masks.cpu().numpy(), strict=True
        ):
            rle: dict = dict(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
            rle["counts"] = bytes(rle["counts"]).decode("ascii")
            x0, y0, x1, y1 = box
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(mask.sum()),
                    "segmentation": rle,
                    "score": float(score),
                    "iscrowd": 0,
                }
            )

    def write(self, path: str | Path) -> Path:
        payload = {
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": 1, "name": self.category}],
        }
        return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload)))


def save_detections(
    out_dir: Path,
    image_path: Path,
    image: torch.Tensor,
    found: Detections,
    heatmap: torch.Tensor,
    coco: CocoWriter,
) -> int:
    """One image's outputs in `out_dir`: NAME_overlay.png (masks, boxes, scores), NAME_heatmap.png
    (`heatmap` coloured on cosine's [-1, 1] scale), NAME_mask_KK.png; its instances added to
    `coco`. Returns how many instances were found."""
    stem = image_path.stem
    labels = [f"{s:.2f}" for s in found.scores.tolist()]
    save_png(out_dir / f"{stem}_overlay.png", overlay(image, found.masks, found.boxes, labels))
    save_png(out_dir / f"{stem}_heatmap.png", heatmap_rgb(heatmap))
    for k, mask in enumerate(found.masks):
        save_png(out_dir / f"{stem}_mask_{k:02d}.png", mask.numpy().astype("uint8") * 255)
    size = (image.shape[0], image.shape[1])
    coco.add(image_path.name, size, found.boxes, found.scores, found.masks)
    return len(found)
