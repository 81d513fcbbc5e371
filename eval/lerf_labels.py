"""The LERF-OVS label layout published with LangSplat (`lerf_ovs/label/<scene>/frame_*.json`).

One JSON per evaluated frame, in labelme style:

    {"info": {"name": "frame_00041.jpg", "width": 985, "height": 729},
     "objects": [{"category": "jake", "bbox": [x1, y1, x2, y2],
                  "segmentation": [[x, y], [x, y], ...]}, ...]}

`bbox` is in pixels (corners in any order, as LangSplat's evaluation takes min/max);
`segmentation` is one polygon of pixel vertices. Objects of one category are merged: their masks
are OR-ed and their boxes kept as a list (a localization hit in any box counts). Polygons are
filled as LangSplat fills them (cv2.fillPoly on int32 vertices; here PIL's polygon fill on the
same integer vertices). Imports only the standard library, numpy and PIL.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class LabelError(ValueError):
    """A label file that does not follow the layout: names the file, frame, object and problem."""

    exit_code = 2


@dataclass
class CategoryLabel:
    """All objects of one category in one frame."""

    boxes: list[tuple[float, float, float, float]]
    """xyxy pixels, x0 <= x1 and y0 <= y1."""
    polygons: list[list[tuple[float, float]]]

    def mask(self, height: int, width: int) -> np.ndarray:
        """bool (H, W): the union of the category's polygons."""
        return polygons_mask(self.polygons, height, width)


@dataclass
class LabelFrame:
    """One evaluated frame: its image name, size and the labelled categories (file order)."""

    path: Path
    name: str
    """`info.name`, e.g. frame_00041.jpg."""
    width: int
    height: int
    categories: dict[str, CategoryLabel] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def polygons_mask(polygons: list[list[tuple[float, float]]], height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon([(int(x), int(y)) for x, y in polygon], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_label_file(path: str | Path) -> LabelFrame:
    """One `frame_*.json`; `LabelError` naming the file, frame and object index on any problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise LabelError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LabelError(f"{path}: expected an object with 'info' and 'objects'")
    info = data.get("info")
    if not isinstance(info, dict):
        raise LabelError(f"{path}: missing 'info' (name, width, height)")
    name = info.get("name")
    if not isinstance(name, str) or not name:
        raise LabelError(f"{path}: 'info.name' must be the frame's image name")
    width, height = info.get("width"), info.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise LabelError(
            f"{path}: frame {name}: 'info.width'/'info.height' must be positive integers"
        )
    if "objects" not in data:
        raise LabelError(f"{path}: frame {name}: missing 'objects'")
    objects = data["objects"]
    if not isinstance(objects, list):
        raise LabelError(f"{path}: frame {name}: 'objects' must be a list")
    frame = LabelFrame(path, name, width, height)
    for index, obj in enumerate(objects):
        where = f"{path}: frame {name}, object {index}"
        if not isinstance(obj, dict):
            raise LabelError(f"{where}: not an object")
        category = obj.get("category")
        if not isinstance(category, str) or not category.strip():
            raise LabelError(f"{where}: 'category' must be a non-empty string")
        bbox = obj.get("bbox")
        flat = np.asarray(bbox, dtype=object).reshape(-1) if isinstance(bbox, list) else None
        numbers = [_number(v) for v in flat] if flat is not None else []
        if len(numbers) != 4 or any(v is None for v in numbers):
            raise LabelError(f"{where} ({category!r}): 'bbox' must be 4 numbers [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (float(v) for v in numbers)  # type: ignore[arg-type]
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        segmentation = obj.get("segmentation")
        polygon = _polygon(segmentation)
        if polygon is None:
            raise LabelError(f"{where} ({category!r}): 'segmentation' must be [[x, y], ...]")
        if len(polygon) < 3:
            raise LabelError(
                f"{where} ({category!r}): a polygon needs at least 3 points, got {len(polygon)}"
            )
        label = frame.categories.setdefault(category.strip(), CategoryLabel([], []))
        label.boxes.append(box)
        label.polygons.append(polygon)
    return frame


def _polygon(segmentation: object) -> list[tuple[float, float]] | None:
    if not isinstance(segmentation, list):
        return None
    # labelme writes [[x, y], ...]; accept one level of extra nesting ([[[x, y], ...]]) as well
    first = segmentation[0] if len(segmentation) == 1 else None
    if isinstance(first, list) and first and isinstance(first[0], list):
        segmentation = first
    points = []
    for point in segmentation:  # type: ignore[union-attr]
        if not isinstance(point, list | tuple) or len(point) != 2:
            return None
        x, y = _number(point[0]), _number(point[1])
        if x is None or y is None:
            return None
        points.append((x, y))
    return points


def read_labels(folder: str | Path) -> list[LabelFrame]:
    """Every `*.json` of a scene's label folder (LangSplat names them frame_*.json), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelError(f"{folder}: label folder not found")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise LabelError(f"{folder}: no label files (*.json, LERF-OVS layout)")
    frames = [read_label_file(p) for p in files]
    empty = [f.path.name for f in frames if not f.categories]
    if len(empty) == len(frames):
        raise LabelError(f"{folder}: no labelled objects in any frame")
    return [f for f in frames if f.categories]


def write_label_file(path: str | Path, frame: LabelFrame) -> None:
    """Write a frame in the same layout (one object per polygon); used by the synthetic benchmark."""
    objects = []
    for category, label in frame.categories.items():
        for box, polygon in zip(label.boxes, label.polygons, strict=True):
            objects.append(
                {
                    "category": category,
                    "bbox": [round(v, 2) for v in box],
                    "segmentation": [[round(x, 2), round(y, 2)] for x, y in polygon],
                }
            )
    data = {"info": {"name": frame.name, "width": frame.width, "height": frame.height}}
    Path(path).write_text(json.dumps({**data, "objects": objects}, indent=1))
