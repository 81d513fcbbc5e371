"""Semantic segmentation datasets: label maps, class lists, and the ADE20K / Pascal Context layouts.

```
ADEChallengeData2016/annotations/validation/NAME.png   labels, 0 = "other", class k stored as k + 1
ADEChallengeData2016/images/validation/NAME.jpg        images
VOC2010/SegmentationClassContext/NAME.png              Pascal Context (mmseg's layout; 59 classes
VOC2010/ImageSets/SegmentationContext/val.txt          stored 1..59 over 0 = background)
VOC2010/JPEGImages/NAME.jpg
FOLDER/NAME.png | NAME.tif                             any other layout: a folder of label maps
                                                       (e.g. the 459-class Pascal Context maps)
```
A label map holds one class id per pixel: the indices of a palette PNG or the values of an 8-bit
grey PNG, or a 16-bit grey PNG / TIFF where there are more than 255 classes (459, 847), never
read through a palette's colours. Class lists are one name per line, or `id: name` lines (ids
0..N-1, each once); `ADE20K_150` and `PASCAL_CONTEXT_59` ship here (mmsegmentation's
`ADE20KDataset` and `PascalContextDataset59` class names). Used by `omnivision eval ovss`.
Imports only the standard library, numpy and PIL; bad input is a `TwoDError` naming the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from .davis import write_index_png
from .errors import TwoDError

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# mmsegmentation ADE20KDataset.METAINFO["classes"] (its "bed " carries a trailing space; the
# names here are stripped). Label k + 1 in ADEChallengeData2016 is class k; 0 is "other".
ADE20K_150: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# mmsegmentation PascalContextDataset59.METAINFO["classes"]: alphabetical, background dropped
# (label k + 1 in SegmentationClassContext is class k; 0 is background).
PASCAL_CONTEXT_59: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)  # fmt: skip

BUILTIN_CLASSES: dict[str, tuple[str, ...]] = {
    "ade20k-150": ADE20K_150,
    "pascal-context-59": PASCAL_CONTEXT_59,
}
"""Class lists known by name (`--classes ade20k-150`)."""

_ID_LINE = re.compile(r"^(\d+)\s*:\s*(.*)$")


# ---------------------------------------------------------------------------------------------
# Class lists


def parse_class_list(text: str, source: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names in id order from one name per line, or `id: name` lines (ids 0..N-1 each
    once, any order). Blank lines and lines starting with '#' are skipped; names are stripped.
    An empty list, a repeated name or id, a gap in the ids, or a mix of the two forms is a
    TwoDError naming `source` and the line."""
    entries: list[tuple[int, int | None, str]] = []  # (line number, id or None, name)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ID_LINE.match(line)
        if match:
            entries.append((number, int(match.group(1)), match.group(2).strip()))
        else:
            entries.append((number, None, line))
    if not entries:
        raise TwoDError(f"{source}: empty class list (want one name per line, or `id: name`)")
    with_ids = [e for e in entries if e[1] is not None]
    if with_ids and len(with_ids) != len(entries):
        plain = next(e for e in entries if e[1] is None)
        raise TwoDError(
            f"{source}: line {plain[0]}: {plain[2]!r} has no id, but line {with_ids[0][0]} has"
            " one (use one name per line, or `id: name` on every line)"
        )
    seen_name: dict[str, int] = {}
    seen_id: dict[int, int] = {}
    for number, class_id, name in entries:
        if not name:
            raise TwoDError(f"{source}: line {number}: empty class name")
        if name in seen_name:
            raise TwoDError(
                f"{source}: line {number}: duplicate class name {name!r}"
                f" (also on line {seen_name[name]})"
            )
        seen_name[name] = number
        if class_id is not None:
            if class_id in seen_id:
                raise TwoDError(
                    f"{source}: line {number}: duplicate class id {class_id}"
                    f" (also on line {seen_id[class_id]})"
                )
            seen_id[class_id] = number
    if not with_ids:
        return tuple(name for _, _, name in entries)
    count = len(entries)
    beyond = sorted(i for i in seen_id if i >= count)
    if beyond:
        raise TwoDError(
            f"{source}: line {seen_id[beyond[0]]}: class id {beyond[0]}, but {count} classes"
            f" have ids 0..{count - 1} (each once)"
        )
    by_id = {class_id: name for _, class_id, name in entries}
    return tuple(by_id[i] for i in range(count))


def read_class_list(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """A class-list file (see `parse_class_list`)."""
    path = Path(path)
    if not path.is_file():
        raise TwoDError(f"{path}: no such class-list file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TwoDError(f"{path}: not a readable text file ({err})") from None
    return parse_class_list(text, path)


def class_list(spec: str) -> tuple[str, ...]:
    """A class-list file, or the name of a built-in list (`ade20k-150`, `pascal-context-59`)."""
    if spec in BUILTIN_CLASSES and not Path(spec).exists():
        return BUILTIN_CLASSES[spec]
    if not Path(spec).is_file():
        raise TwoDError(
            f"{spec}: no such class-list file (or a built-in list: {', '.join(BUILTIN_CLASSES)})"
        )
    return read_class_list(spec)


# ---------------------------------------------------------------------------------------------
# Label maps


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Class ids (H, W): uint8 from a palette ("P", its indices) or 8-bit grey ("L") image,
    uint16 from a 16-bit grey PNG or TIFF. RGB or any other mode is a TwoDError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TwoDError(f"{path}: no such label map")
    try:
        with Image.open(path) as im:
            mode = im.mode
            ids = np.array(im) if mode in ("P", "L", "I;16", "I;16L", "I;16B", "I") else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise TwoDError(f"{path}: not a readable image ({err})") from None
    if ids is None:
        raise TwoDError(
            f"{path}: mode {mode}; want a palette or grey PNG of class ids (8 or 16 bits)"
        )
    if mode in ("P", "L"):
        return ids.astype(np.uint8)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > 65535):
        raise TwoDError(f"{path}: values {ids.min()}..{ids.max()}; class ids lie in 0..65535")
    return ids.astype(np.uint16)


def write_label_map(path: str | os.PathLike[str], ids: np.ndarray) -> Path:
    """Write class ids (H, W) as a PNG, atomically: a palette PNG (the PASCAL palette) when they
    fit in 0..255, else a 16-bit grey PNG (up to 65535)."""
    path = Path(path)
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise TwoDError(
            f"{path}: want integer class ids of shape (H, W), got {ids.dtype} {ids.shape}"
        )
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < 0 or high > 65535:
        raise TwoDError(f"{path}: class ids must lie in 0..65535, got {low}..{high}")
    if high <= 255:
        return write_index_png(path, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(ids.astype(np.uint16)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# Layouts

LayoutKind = Literal["ade20k", "pascal-context", "folder"]


@dataclass(frozen=True)
class SegSample:
    name: str
    """The file stem: predictions are NAME.png."""
    label: Path
    image: Path | None
    """The image beside it in the layout, when there is one."""


@dataclass(frozen=True)
class SegLayout:
    kind: LayoutKind
    label_dir: Path
    split: str
    """The ADE20K split folder, the Pascal Context split file's stem, or the folder's name."""
    samples: tuple[SegSample, ...]


def _label_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in LABEL_SUFFIXES and path.name[0] != ".":
            if path.stem in files:
                raise TwoDError(
                    f"{path}: a second label map for {path.stem!r} ({files[path.stem]})"
                )
            files[path.stem] = path
    return files


def _read_names(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TwoDError(f"{path}: not a readable text file ({err})") from None
    names = list(dict.fromkeys(n.strip() for n in lines if n.strip()))
    if not names:
        raise TwoDError(f"{path}: empty split file (want one image name a line)")
    return names


def _image(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    return next(
        (folder / (name + s) for s in IMAGE_SUFFIXES if (folder / (name + s)).is_file()), None
    )


def find_layout(root: str | os.PathLike[str], split: str | None = None) -> SegLayout:
    """The label maps under `root`: an ADE20K root (ADEChallengeData2016/ or its parent: labels
    in annotations/SPLIT, default "validation"), a Pascal Context VOC2010 folder
    (SegmentationClassContext/, names from ImageSets/SegmentationContext/SPLIT.txt, default
    "val", when present), or a folder of label maps. `split` may also be a file of names, one a
    line, for any layout. Samples are sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise TwoDError(f"{root}: no such folder (want label maps)")
    names_file = Path(split) if split is not None and Path(split).is_file() else None
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    kind: LayoutKind
    images: Path | None
    if (root / "annotations").is_dir():
        kind, folder = "ade20k", (split if split and names_file is None else "validation")
        label_dir, images = root / "annotations" / folder, root / "images" / folder
        if not label_dir.is_dir():
            raise TwoDError(f"{label_dir}: no such folder (an ADE20K root holds annotations/SPLIT)")
        split_name = folder
    elif (root / "SegmentationClassContext").is_dir():
        kind, label_dir, images = (
            "pascal-context",
            root / "SegmentationClassContext",
            root / "JPEGImages",
        )
        split_name = split if split and names_file is None else "val"
        if names_file is None:
            candidate = root / "ImageSets" / "SegmentationContext" / f"{split_name}.txt"
            if candidate.is_file():
                names_file = candidate
            elif split is not None:
                raise TwoDError(f"{candidate}: no such split file")
    else:
        if split is not None and names_file is None:
            raise TwoDError(f"{split}: no such split file (a folder of label maps has no splits)")
        kind, label_dir, images, split_name = "folder", root, None, root.name
    images = images if images is not None and images.is_dir() else None
    files = _label_files(label_dir)
    if names_file is not None:
        split_name = names_file.stem
        names = _read_names(names_file)
        for name in names:
            if name not in files:
                raise TwoDError(
                    f"{label_dir / (name + '.png')}: no label map for {name!r}, listed in {names_file}"
                )
    else:
        names = list(files)
    if not names:
        raise TwoDError(f"{label_dir}: no label maps (.png, .tif)")
    samples = tuple(SegSample(n, files[n], _image(images, n)) for n in sorted(names))
    return SegLayout(kind, label_dir, split_name, samples)
