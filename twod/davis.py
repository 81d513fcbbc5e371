"""The DAVIS layout: index PNGs of object ids, and the folders of a DAVIS root.

```
ROOT/JPEGImages/480p/SEQ/00000.jpg ...     frames
ROOT/Annotations/480p/SEQ/00000.png ...    palette PNGs, pixel = object id (0 = background)
```
Masks are read as the stored indices (a palette "P" PNG) or values (an 8-bit grey "L" PNG), never
through the palette's colours, and written as palette PNGs with `DAVIS_PALETTE`, as the DAVIS
tools do. Used by `omnivision track` (writes a prediction folder) and `omnivision eval davis`
(reads both). Bad input is a `TwoDError`: one line naming the file or folder and the problem.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import TwoDError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def _pascal_palette() -> bytes:
    """The PASCAL VOC / DAVIS colour map: the bits of the index spread over R, G, B from the top."""
    palette = bytearray()
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += bytes((r, g, b))
    return bytes(palette)


DAVIS_PALETTE: bytes = _pascal_palette()
"""256 RGB triples (768 bytes): 0 black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), ..."""


def read_index_png(path: str | os.PathLike[str]) -> np.ndarray:
    """uint8 (H, W) object ids: the indices of a palette PNG, or the values of an 8-bit grey PNG.

    RGB, 16-bit, or any other mode is a TwoDError naming the file and its mode.
    """
    path = Path(path)
    if not path.is_file():
        raise TwoDError(f"{path}: no such mask file")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise TwoDError(
                    f"{path}: mode {im.mode}; want an 8-bit palette or grey PNG of object ids"
                )
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise TwoDError(f"{path}: not a readable image ({err})") from None


def write_index_png(path: str | os.PathLike[str], ids: np.ndarray) -> Path:
    """Write object ids (H, W), integers in 0..255, as a palette PNG with DAVIS_PALETTE.

    Written to a temporary file in the same folder (created if missing) and renamed into place.
    """
    path = Path(path)
    ids = np.asarray(ids)
    if ids.ndim != 2 or not (ids.dtype == np.bool_ or np.issubdtype(ids.dtype, np.integer)):
        raise TwoDError(
            f"{path}: want integer object ids of shape (H, W), got {ids.dtype} {ids.shape}"
        )
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 255):
        raise TwoDError(f"{path}: object ids must lie in 0..255, got {ids.min()}..{ids.max()}")
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(DAVIS_PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise TwoDError(f"{path}: no such folder ({what})")
    return path


def davis_sequences(root: str | os.PathLike[str], resolution: str = "480p") -> list[str]:
    """The sequence names of a DAVIS root: the folders of ROOT/JPEGImages/RES, sorted.

    ROOT/Annotations/RES must exist too (the first-frame masks come from there).
    """
    root = Path(root)
    frames = _folder(root / "JPEGImages" / resolution, "a DAVIS root holds JPEGImages/RES/SEQ/")
    _folder(root / "Annotations" / resolution, "a DAVIS root holds Annotations/RES/SEQ/")
    names = sorted(p.name for p in frames.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise TwoDError(f"{frames}: no sequence folders")
    return names


def sequence_frames(root: str | os.PathLike[str], seq: str, resolution: str = "480p") -> list[Path]:
    """ROOT/JPEGImages/RES/SEQ/* frames (.jpg, .jpeg, .png), sorted by name."""
    folder = _folder(Path(root) / "JPEGImages" / resolution / seq, f"frames of sequence {seq!r}")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise TwoDError(f"{folder}: no frames (.jpg, .jpeg, .png)")
    return frames


def index_pngs(folder: str | os.PathLike[str]) -> list[Path]:
    """The *.png masks of one sequence folder, sorted by name; a missing or empty folder is an error."""
    folder = _folder(Path(folder), "a sequence folder of index PNGs")
    masks = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not masks:
        raise TwoDError(f"{folder}: no .png masks")
    return masks


def sequence_annotations(
    root: str | os.PathLike[str], seq: str, resolution: str = "480p"
) -> list[Path]:
    """ROOT/Annotations/RES/SEQ/*.png, sorted by name."""
    return index_pngs(Path(root) / "Annotations" / resolution / seq)
