"""Readers of the published NVOS and SPIn-NeRF layouts (described, with their sources, in
`seg3d.py`). Standard library, numpy and PIL only; bad input raises `SceneError` naming the file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnivision.scenes.errors import SceneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledView:
    """A GT mask of the view whose image is called `name`, read from `path`."""

    name: str
    path: Path
    mask: np.ndarray
    """bool (H, W)"""


@dataclass(frozen=True)
class NvosLabels:
    """One NVOS scene: scribbles on the reference view, GT masks on the target views."""

    scene: str
    reference: str
    """The reference image's file name (as in `reference_image/<scene>/`)."""
    reference_path: Path
    positive: np.ndarray
    """bool (H, W): union of the positive scribbles."""
    negative: np.ndarray
    positive_paths: tuple[Path, ...]
    negative_paths: tuple[Path, ...]
    targets: tuple[LabelledView, ...]


@dataclass(frozen=True)
class SpinnerfLabels:
    """One SPIn-NeRF scene: GT masks of one object on several views (sorted by name)."""

    scene: str
    folder: Path
    views: tuple[LabelledView, ...]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _array(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError as err:
        raise SceneError(path, f"not a readable image ({err})") from None


def read_mask(path: Path) -> np.ndarray:
    """bool (H, W) of a GT mask: 0/1 labels (SPIn-NeRF) are > 0, 8-bit masks (NVOS 0/255) are
    > 127; of RGB(A) masks the largest colour channel counts, palette images by their index."""
    arr = _array(path)
    if arr.ndim == 3:
        arr = arr[..., : min(3, arr.shape[-1])].max(-1) if arr.shape[-1] != 2 else arr[..., 0]
    return arr > (0 if arr.size == 0 or arr.max() <= 1 else 127)


def read_scribble(path: Path) -> np.ndarray:
    """bool (H, W): every non-zero pixel, any channel (as SA3D reads NVOS scribbles)."""
    arr = _array(path)
    return arr.reshape(*arr.shape[:2], -1).astype(np.int64).sum(-1) > 0


def _image_size(folder: Path) -> tuple[int, int] | None:
    from PIL import Image

    images = _images(folder)
    if not images:
        return None
    with Image.open(images[0]) as im:
        return im.size


def _layout_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SceneError(path, f"{what} folder not found")
    return path


def _choose_scene(root: Path, folder: Path, scene_name: str | None, fallback: str | None) -> str:
    """The scene to read: `scene_name`, else the only one, else `fallback` when present."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise SceneError(folder, "no scene folders")
    if scene_name is not None:
        if scene_name not in names:
            raise SceneError(
                folder / scene_name, f"scene not found; scenes here: {', '.join(names) or 'none'}"
            )
        return scene_name
    if len(names) == 1:
        return names[0]
    if fallback in names:
        return fallback  # type: ignore[return-value]
    raise SceneError(root, f"several scenes ({', '.join(names)}): pass --scene-name")


def read_nvos(
    root: str | Path, scene_name: str | None = None, fallback: str | None = None
) -> NvosLabels:
    """Read one scene of the NVOS layout under `root` (or `root/labels/llff`)."""
    root = Path(root)
    if not (root / "masks").is_dir() and (root / "labels" / "llff" / "masks").is_dir():
        root = root / "labels" / "llff"
    masks = _layout_folder(root / "masks", "NVOS masks")
    scene = _choose_scene(root, masks, scene_name, fallback)
    reference_dir = _layout_folder(root / "reference_image" / scene, "NVOS reference_image")
    scribble_dir = _layout_folder(root / "scribbles" / scene, "NVOS scribbles")
    references = _images(reference_dir)
    if len(references) != 1:
        raise SceneError(reference_dir, f"want one reference image, found {len(references)}")
    targets = tuple(
        LabelledView(p.stem.removesuffix("_mask"), p, read_mask(p))
        for p in _images(masks / scene)
        if p.stem.endswith("_mask")
    )
    if not targets:
        raise SceneError(masks / scene, "no *_mask image (the target view's GT mask)")
    scribbles = _images(scribble_dir)
    pos = tuple(p for p in scribbles if p.name.lower().startswith("pos"))
    neg = tuple(p for p in scribbles if p.name.lower().startswith("neg"))
    for paths, kind in ((pos, "pos"), (neg, "neg")):
        if not paths:
            raise SceneError(scribble_dir, f"no {kind}_*.png scribble")
    positive, negative = (_union(paths) for paths in (pos, neg))
    for paths, scribble, kind in ((pos, positive, "positive"), (neg, negative, "negative")):
        if not scribble.any():
            raise SceneError(paths[0], f"the {kind} scribble is empty (no non-zero pixel)")
    return NvosLabels(
        scene, references[0].name, references[0], positive, negative, pos, neg, targets
    )


def _union(paths: Sequence[Path]) -> np.ndarray:
    masks = [read_scribble(p) for p in paths]
    for path, mask in zip(paths, masks, strict=True):
        if mask.shape != masks[0].shape:
            raise SceneError(path, f"scribble size differs from {paths[0].name}'s")
    return np.logical_or.reduce(masks)


def read_spinnerf(
    root: str | Path,
    scene_name: str | None = None,
    fallback: str | None = None,
    size: tuple[int, int] | None = None,
) -> SpinnerfLabels:
    """Read one scene of the SPIn-NeRF layout under `root`: `<scene>/images*/label/*.png` (of
    several such folders the first whose masks are `size` (W, H), else the first by name), else
    `<scene>/*.png` (the multiview-segmentation release)."""
    root = _layout_folder(Path(root), "SPIn-NeRF")
    scene = _choose_scene(root, root, scene_name, fallback)
    labels = sorted(p / "label" for p in (root / scene).glob("images*") if (p / "label").is_dir())
    labels.sort(key=lambda folder: _image_size(folder) != size)
    folder = labels[0] if labels else root / scene
    paths = [
        p
        for p in _images(folder)
        if labels or not any(word in p.name.lower() for word in ("cutout", "pseudo"))
    ]
    if len(paths) < 2:
        raise SceneError(
            folder, f"want GT masks of at least 2 views (images*/label/*.png), found {len(paths)}"
        )
    return SpinnerfLabels(
        scene, folder, tuple(LabelledView(p.stem, p, read_mask(p)) for p in paths)
    )


__all__ = [
    "LabelledView",
    "NvosLabels",
    "SpinnerfLabels",
    "read_mask",
    "read_nvos",
    "read_scribble",
    "read_spinnerf",
]
