"""Open-vocabulary semantic segmentation (ADE20K-150/847, Pascal Context 59/459): mIoU as
mmsegmentation scores it.

Follows `mmseg.evaluation.metrics.IoUMetric` (`intersect_and_union`, `total_area_to_metrics`):

- **Ignored pixels.** GT pixels equal to the ignore index (255; 65535 for the 16-bit maps of the
  459- and 847-class sets) are left out, whatever the prediction says there.
- **One confusion over the dataset.** Per class, the intersection, the predicted area, the GT
  area and the union (pred + GT - intersection) are summed over all images; IoU = intersection /
  union and Acc = intersection / GT area over the whole dataset (not per image, then averaged).
- **Absent classes.** A class in neither the GT nor the prediction has union 0: its IoU is NaN
  and it is left out of mIoU (nanmean). A class only in the prediction has IoU 0 and counts. Acc
  is NaN where the GT has no pixel of the class; mAcc = nanmean of Acc.
- **aAcc** = total intersection / total GT pixels (the pixel accuracy over all valid pixels).
- **Predicted ids outside 0..N-1** (torch.histc's range) belong to no class: wrong wherever the
  GT is valid, in no class's predicted area. They are counted and reported.
- **reduce_zero_label** (ADE20K and mmseg's Pascal Context 59 store 0 as unlabelled and class k
  as k + 1): 0 becomes the ignore index, every other id but the ignore index drops by one.

Here the per-class areas come from one bincount of `gt * (N + 1) + pred` per image (the last
column: ids outside 0..N-1); `intersect_and_union_reference` is the per-class twin with boolean
masks. Bad input (an empty class list or a repeated name, a GT id beyond the class list, a
missing prediction, a prediction of another size than its GT, an unreadable or RGB PNG) is an
error naming the file; nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from omnivision.scenes.errors import SceneError
from omnivision.twod.segdata import (
    BUILTIN_CLASSES,
    SegLayout,
    SegSample,
    class_list,
    find_layout,
    read_label_map,
)

IGNORE_INDEX = 255
"""mmseg's default ignore index; 65535 (`IGNORE_INDEX_16`) where there are more than 255 classes."""
IGNORE_INDEX_16 = 65535
BENCHMARK_BY_CLASSES = {
    150: "ade20k-150",
    847: "ade20k-847",
    59: "pascal-context-59",
    60: "pascal-context-60",
    459: "pascal-context-459",
}
"""The benchmark a run is filed under, from the number of classes (`--benchmark` overrides)."""
TITLES = {
    "ade20k-150": "ADE20K-150",
    "ade20k-847": "ADE20K-847",
    "pascal-context-59": "PASCAL-Context-59",
    "pascal-context-60": "PASCAL-Context-60",
    "pascal-context-459": "PASCAL-Context-459",
    "ovss": "Open-vocabulary semantic segmentation",
}
PROTOCOL_NOTE = (
    "mmsegmentation IoUMetric: per-class areas summed over all images, IoU = intersection /"
    " union over the dataset; classes absent from both GT and prediction left out of mIoU"
)


# ---------------------------------------------------------------------------------------------
# The measures (pure functions on label maps)


def reduce_zero_label(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's reduce_zero_label, int64 (H, W): 0 -> ignore_index, k -> k - 1, ignore_index kept."""
    labels = np.asarray(labels)
    reduced = labels.astype(np.int64) - 1
    reduced[labels == 0] = ignore_index
    reduced[labels == ignore_index] = ignore_index
    return reduced


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Pixel counts int64 (N, N + 1) of two label maps (H, W): row = GT class, column = predicted
    class, the last column = predicted ids outside 0..N-1. GT pixels equal to ignore_index are
    left out; every other GT id must lie in 0..N-1 (ValueError)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: {gt.shape} and {pred.shape}")
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if g.size and (int(g.min()) < 0 or int(g.max()) >= num_classes):
        bad = int(g.max()) if int(g.max()) >= num_classes else int(g.min())
        raise ValueError(f"GT class id {bad} outside 0..{num_classes - 1}")
    p = np.where((p >= 0) & (p < num_classes), p, num_classes)
    counts = np.bincount(g * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


@dataclass(frozen=True)
class SegAreas:
    """Per-class pixel counts, int64 (N,) each (mmseg's total_area_intersect / union / pred_label
    / label)."""

    intersect: np.ndarray
    union: np.ndarray
    pred: np.ndarray
    """Predicted pixels of the class on valid GT pixels."""
    label: np.ndarray
    """GT pixels of the class."""

    def __add__(self, other: SegAreas) -> SegAreas:
        return SegAreas(
            self.intersect + other.intersect,
            self.union + other.union,
            self.pred + other.pred,
            self.label + other.label,
        )


def areas_from_confusion(confusion: np.ndarray) -> SegAreas:
    """SegAreas of a confusion matrix (N, N + 1) (see `confusion_matrix`)."""
    num_classes = confusion.shape[0]
    intersect = np.diagonal(confusion).copy()
    pred = confusion[:, :num_classes].sum(axis=0)
    label = confusion.sum(axis=1)
    return SegAreas(intersect, pred + label - intersect, pred, label)


def intersect_and_union(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> SegAreas:
    """Per-class areas of one image, by one bincount (`confusion_matrix`)."""
    return areas_from_confusion(confusion_matrix(gt, pred, num_classes, ignore_index))


def intersect_and_union_reference(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> SegAreas:
    """The slow twin of `intersect_and_union`: one boolean mask per class."""
    valid = np.asarray(gt) != ignore_index
    areas = np.zeros((4, num_classes), np.int64)
    for c in range(num_classes):
        in_gt = valid & (gt == c)
        in_pred = valid & (pred == c)
        areas[:, c] = (in_gt & in_pred).sum(), (in_gt | in_pred).sum(), in_pred.sum(), in_gt.sum()
    return SegAreas(*areas)


@dataclass(frozen=True)
class SegScores:
    """mmseg's IoUMetric results, fractions (the per-class values are NaN where undefined)."""

    iou: np.ndarray
    """(N,) intersection / union; NaN where the union is empty (class in neither GT nor pred)."""
    acc: np.ndarray
    """(N,) intersection / GT area; NaN where the GT has no pixel of the class."""
    miou: float
    """nanmean of iou."""
    macc: float
    """nanmean of acc."""
    aacc: float
    """Total intersection / total GT pixels."""
    areas: SegAreas

    @property
    def classes_in_miou(self) -> int:
        return int(np.isfinite(self.iou).sum())

    @property
    def classes_in_macc(self) -> int:
        return int(np.isfinite(self.acc).sum())


def seg_scores(areas: SegAreas) -> SegScores:
    """IoU, Acc, mIoU, mAcc and aAcc from dataset-wide areas (at least one GT pixel)."""
    total = int(areas.label.sum())
    if total == 0:
        raise ValueError("no labelled GT pixels to score")
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(areas.union > 0, areas.intersect / areas.union, np.nan)
        acc = np.where(areas.label > 0, areas.intersect / areas.label, np.nan)
    return SegScores(
        iou=iou,
        acc=acc,
        miou=float(np.nanmean(iou)),
        macc=float(np.nanmean(acc)),
        aacc=int(areas.intersect.sum()) / total,
        areas=areas,
    )


# ---------------------------------------------------------------------------------------------
# Folders


def default_ignore_index(num_classes: int) -> int:
    return IGNORE_INDEX if num_classes <= IGNORE_INDEX else IGNORE_INDEX_16


def prediction_files(samples: Sequence[SegSample], pred: Path) -> list[Path]:
    """PRED/NAME.png for each GT sample (else PRED/<the GT file's name>); a missing one is a
    SceneError naming it, raised before any map is read."""
    pred = Path(pred)
    if not pred.is_dir():
        raise SceneError(pred, "no such prediction folder")
    files = []
    for sample in samples:
        path = pred / f"{sample.name}.png"
        if not path.is_file() and (pred / sample.label.name).is_file():
            path = pred / sample.label.name
        if not path.is_file():
            raise SceneError(path, f"missing prediction for the GT map {sample.label}")
        files.append(path)
    return files


@dataclass
class OvssResult:
    classes: tuple[str, ...]
    scores: SegScores
    images: int
    ignore_index: int
    outside: int
    """Predicted pixels (on valid GT pixels) with an id outside 0..N-1: wrong, in no class."""

    @property
    def pixels(self) -> int:
        """Valid (scored) GT pixels."""
        return int(self.scores.areas.label.sum())


def _gt_ids(sample: SegSample, num_classes: int, ignore_index: int, reduce: bool) -> np.ndarray:
    stored = read_label_map(sample.label)
    gt = reduce_zero_label(stored, ignore_index) if reduce else stored
    valid = gt != ignore_index
    top = int(gt[valid].max()) if valid.any() else -1
    if top >= num_classes:
        stored_as = f" (stored as {top + 1})" if reduce else ""
        hint = ""
        if not reduce and top == num_classes:
            hint = (
                "; labels stored 1..N over 0 = unlabelled (ADE20K, Pascal Context 59) need"
                " --reduce-zero-label"
            )
        raise SceneError(
            sample.label,
            f"class id {top}{stored_as}, but the class list has {num_classes} classes"
            f" (ids 0..{num_classes - 1}; {ignore_index} is ignored){hint}",
        )
    return gt


def evaluate_ovss(
    layout: SegLayout,
    pred: Path,
    classes: Sequence[str],
    reduce_zero_label_gt: bool = False,
    reduce_zero_label_pred: bool = False,
    ignore_index: int | None = None,
    progress: bool = False,
) -> OvssResult:
    """Score a folder of predicted label maps against a layout's GT maps. Every prediction is
    checked to exist before any map is read."""
    from tqdm import tqdm

    num_classes = len(classes)
    ignore = default_ignore_index(num_classes) if ignore_index is None else ignore_index
    if 0 <= ignore < num_classes:
        raise SceneError(
            layout.label_dir, f"the ignore index {ignore} is a class id (0..{num_classes - 1})"
        )
    preds = prediction_files(layout.samples, pred)
    confusion = np.zeros((num_classes, num_classes + 1), np.int64)
    pairs = list(zip(layout.samples, preds, strict=True))
    for sample, pred_path in tqdm(pairs, desc="ovss", unit="img", disable=not progress or None):
        gt = _gt_ids(sample, num_classes, ignore, reduce_zero_label_gt)
        stored = read_label_map(pred_path)
        if stored.shape != gt.shape:
            raise SceneError(
                pred_path,
                f"{stored.shape[1]}x{stored.shape[0]} pixels, but the GT map {sample.label} is"
                f" {gt.shape[1]}x{gt.shape[0]}",
            )
        ids = reduce_zero_label(stored, ignore) if reduce_zero_label_pred else stored
        confusion += confusion_matrix(gt, ids, num_classes, ignore)
    areas = areas_from_confusion(confusion)
    if int(areas.label.sum()) == 0:
        raise SceneError(
            layout.label_dir, f"no labelled pixels: every GT pixel is the ignore index {ignore}"
        )
    outside = int(confusion[:, num_classes].sum())
    return OvssResult(tuple(classes), seg_scores(areas), len(pairs), ignore, outside)


# ---------------------------------------------------------------------------------------------
# Tables and the run folder


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.2f}"


def format_table(result: OvssResult) -> str:
    """Markdown: the per-class table and the summary, in percent with two decimals (as mmseg
    prints them); "-" where a class is absent (left out of the means)."""
    s = result.scores
    lines = ["| id | class | IoU | Acc |", "|---:|---|---:|---:|"]
    for k, name in enumerate(result.classes):
        cell = name.replace("|", "\\|")
        lines.append(f"| {k} | {cell} | {_pct(s.iou[k])} | {_pct(s.acc[k])} |")
    n = len(result.classes)
    lines += [
        "",
        "| aAcc | mIoU | mAcc | images | classes in mIoU |",
        "|---:|---:|---:|---:|---:|",
        f"| {_pct(s.aacc)} | {_pct(s.miou)} | {_pct(s.macc)} | {result.images}"
        f" | {s.classes_in_miou} of {n} |",
        "",
        f"Percent. {PROTOCOL_NOTE} ({result.images} images, {result.pixels} scored pixels;"
        f' GT {result.ignore_index} ignored). "-": IoU of a class in neither GT nor prediction,'
        " Acc of a class not in the GT.",
    ]
    if result.outside:
        lines.append(
            f"{result.outside} predicted pixels carry an id outside 0..{n - 1}: wrong, in no class."
        )
    return "\n".join(lines)


def run_metrics(
    result: OvssResult, benchmark: str, method: str, scene: str, settings: dict
) -> dict:
    """metrics.json (eval/DESIGN.md): rows miou, pixel_accuracy (aAcc) and macc, fractions."""
    s = result.scores
    rows = [
        {"protocol": "-", "path": "-", "metric": metric, "value": value, "count": count}
        for metric, value, count in (
            ("miou", s.miou, s.classes_in_miou),
            ("pixel_accuracy", s.aacc, result.images),
            ("macc", s.macc, s.classes_in_macc),
        )
    ]
    return {
        "benchmark": benchmark,
        "scene": scene,
        "features": method,
        "settings": settings,
        "rows": rows,
        "global_results": {"aAcc": s.aacc, "mIoU": s.miou, "mAcc": s.macc},
    }


def _fraction(value: float) -> float | str:
    return round(float(value), 6) if np.isfinite(value) else ""


def per_class_rows(result: OvssResult) -> list[dict]:
    """per_query.csv: one row per class; iou / accuracy empty where undefined."""
    s, a = result.scores, result.scores.areas
    return [
        {
            "class_id": k, "class": name, "iou": _fraction(s.iou[k]),
            "accuracy": _fraction(s.acc[k]), "gt_pixels": int(a.label[k]),
            "pred_pixels": int(a.pred[k]), "intersection": int(a.intersect[k]),
            "union": int(a.union[k]),
        }
        for k, name in enumerate(result.classes)
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# omnivision eval ovss


@dataclass
class OvssCommand:
    pred: Path
    """Predicted label maps: a folder of NAME.png, one per GT map and named like it, holding class
    ids 0..N-1 (palette or grey PNG; 16-bit grey for more than 255 classes)."""
    gt: Path
    """Ground truth: an ADE20K root (ADEChallengeData2016/annotations/SPLIT/*.png), a Pascal
    Context VOC2010 folder (SegmentationClassContext/, ImageSets/SegmentationContext/SPLIT.txt),
    or a folder of label maps (.png, .tif)."""
    classes: str
    """Class list: a file (one name per line, or `id: name`), or a built-in list: ade20k-150,
    pascal-context-59."""
    out: Path
    """Run folder to write (metrics.json, per_query.csv with one row per class, ovss.md)."""
    reduce_zero_label: bool = False
    """The GT stores 0 as unlabelled and class k as k + 1 (ADE20K, Pascal Context 59 in mmseg's
    layout): 0 is ignored, the other ids drop by one (mmseg's reduce_zero_label)."""
    pred_reduce_zero_label: bool = False
    """The predictions are stored that way too (ADE20K's submission format)."""
    ignore_index: int | None = None
    """GT value left out of scoring (default 255; 65535 with more than 255 classes)."""
    split: str | None = None
    """ADE20K: the annotations/ folder (validation); Pascal Context: ImageSets/SegmentationContext/
    SPLIT.txt (val); or a file of image names, one a line, for any layout."""
    benchmark: str | None = None
    """Benchmark name in the run and the report (default from the number of classes: 150
    ade20k-150, 847 ade20k-847, 59 pascal-context-59, 459 pascal-context-459; else ovss)."""
    method: str | None = None
    """Method name in the run and the report (default: the prediction folder's name)."""
    scene_name: str | None = None
    """Name of the scored set in the run and the report (default: the split's name)."""


DESCRIPTION = """Open-vocabulary semantic segmentation (ADE20K-150/847, Pascal Context 59/459), as
mmsegmentation's IoUMetric scores it: per class, intersection and union summed over all images
(ignore index 255, or 65535 above 255 classes); IoU per class over the whole set; mIoU and mAcc
are nanmeans (a class absent from both GT and prediction is left out; one only in the
prediction scores 0); aAcc = correct / valid pixels. Prints the per-class table; writes
RUN/metrics.json (rows miou, pixel_accuracy = aAcc, macc), per_query.csv (one row per class:
IoU, Acc, pixel counts) and ovss.md (the table).

examples:
  omnivision eval ovss --pred preds/ade --gt ADEChallengeData2016 --classes ade20k-150 --reduce-zero-label --out runs/ade150
  omnivision eval ovss --pred preds/pc59 --gt VOCdevkit/VOC2010 --classes pascal-context-59 --reduce-zero-label --out runs/pc59
  omnivision eval ovss --pred preds/pc459 --gt pc459_val/ --classes pc459.txt --out runs/pc459
"""


def ovss_main(argv: list[str], prog: str) -> int:
    from .runs import write_run

    cmd: OvssCommand = tyro.cli(OvssCommand, args=argv, prog=prog, description=DESCRIPTION)
    classes = class_list(cmd.classes)
    layout = find_layout(cmd.gt, cmd.split)
    result = evaluate_ovss(
        layout,
        cmd.pred,
        classes,
        reduce_zero_label_gt=cmd.reduce_zero_label,
        reduce_zero_label_pred=cmd.pred_reduce_zero_label,
        ignore_index=cmd.ignore_index,
        progress=True,
    )
    if cmd.benchmark is not None:
        benchmark = cmd.benchmark
    elif cmd.classes in BUILTIN_CLASSES and not Path(cmd.classes).exists():
        benchmark = cmd.classes
    else:
        benchmark = BENCHMARK_BY_CLASSES.get(len(classes), "ovss")
    method = cmd.method or Path(cmd.pred).resolve().name
    scene = cmd.scene_name or layout.split
    settings = {
        "gt": str(cmd.gt),
        "pred": str(cmd.pred),
        "layout": layout.kind,
        "classes": cmd.classes,
        "num_classes": len(classes),
        "reduce_zero_label": cmd.reduce_zero_label,
        "pred_reduce_zero_label": cmd.pred_reduce_zero_label,
        "ignore_index": result.ignore_index,
        "images": result.images,
        "pixels_scored": result.pixels,
        "pred_pixels_outside_classes": result.outside,
        "protocol": PROTOCOL_NOTE,
    }
    metrics = run_metrics(result, benchmark, method, scene, settings)
    table = format_table(result)
    title = f"{TITLES.get(benchmark, benchmark)} · {method} · {scene}"

    def extra(folder: Path) -> None:
        (folder / "ovss.md").write_text(f"# {title}\n\n{table}\n", encoding="utf-8")

    write_run(cmd.out, metrics, per_class_rows(result), extra)
    print(title)
    print(table)
    print(f"wrote {cmd.out}/metrics.json, per_query.csv, ovss.md")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ovss_main(sys.argv[1:], "omnivision eval ovss"))
