"""DAVIS-2017 semi-supervised video object segmentation: region J and boundary F, as published.

Follows the official evaluation, github.com/davisvideochallenge/davis2017-evaluation, read for
this module: `davis2017/metrics.py`, `evaluation.py` and `davis.py` at commit 30b698a, and
`davis2017/utils.py`, `results.py` and `evaluation_method.py` as forks of it carry them:

- **Objects.** The ids 1..max of each sequence's *first* annotation (255, void, counts as
  background), each scored as its own binary mask, whether or not an id between is present.
- **Frames.** The first and the last frame of every sequence are not scored (the semi-supervised
  task gives the first; `all_gt_masks[:, 1:-1]`), so a prediction for them is not read. Every
  other annotated frame needs a prediction `SEQ/<frame>.png` of the annotation's size.
- **J** (`db_eval_iou`): |pred & gt| / |pred | gt|, and 1 when both are empty.
- **F** (`db_eval_boundary` / `f_measure`): one-pixel boundary maps (`_seg2bmap`: a pixel differs
  from its right, lower or lower-right neighbour), a tolerance of
  ceil(bound_th * image diagonal) pixels for bound_th = 0.008 (8 px at 854x480), matched by
  dilating each boundary with a disk (x^2 + y^2 <= r^2, skimage's `disk`); precision = matched
  predicted boundary / predicted boundary, recall likewise for the GT; F = 2PR / (P + R), with
  P = R = 1 when neither has a boundary, (P, R) = (1, 0) when only the GT has one, (0, 1) when only
  the prediction has one. Here the disk dilation is computed as a Euclidean distance transform
  cut at r (the same set: a pixel within distance r of a boundary pixel), on the bounding box of
  the two boundaries (every pixel it counts lies there).
- **Per object** (`db_statistics`, over the scored frames): mean; recall = the fraction of frames
  above 0.5; decay = mean of the first bin minus mean of the last of four bins whose edges are
  round(linspace(1, T, 5) + 1e-10) - 1, each bin running to the next edge *inclusive* (so
  neighbouring bins share a frame; with T = 8 the first bin is frames 0-2 and the last 5-7).
  This is not np.array_split.
- **Global** (`evaluation_method.py`): J-Mean, J-Recall, J-Decay, F-... are means over all objects
  of all sequences (not per sequence first); J&F-Mean = (J-Mean + F-Mean) / 2.

Where this differs from the official code: it stops (sys.exit) when a prediction's highest id is
below the number of objects; here the missing objects score as empty predictions. Its decay bin
edges are cast to uint8 (overflowing from 256 scored frames on; DAVIS sequences have at most 104
frames); here to int. Bad input (a missing prediction frame, a prediction of another size than
its annotation, an id above the number of objects, an RGB or 16-bit PNG) is an error naming the
file; nothing is written.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro
from scipy.ndimage import distance_transform_edt

from omnivision.scenes.errors import SceneError
from omnivision.twod.davis import index_pngs, read_index_png

BOUND_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (official default)."""
PROTOCOL_NOTE = (
    "first and last frame of each sequence not scored (official semi-supervised protocol,"
    " davis2017-evaluation); objects: ids 1..max of each sequence's first annotation"
)
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


# ---------------------------------------------------------------------------------------------
# The measures (pure functions on masks)


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray) -> np.ndarray:
    """J of bool masks (..., H, W) -> (...): intersection over union; 1 where the union is empty."""
    annotation, segmentation = annotation.astype(bool), segmentation.astype(bool)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"shapes differ: {annotation.shape} and {segmentation.shape}")
    inter = np.sum(annotation & segmentation, axis=(-2, -1))
    union = np.sum(annotation | segmentation, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """bool (H, W) boundary map, one pixel wide: pixels that differ from their right, lower or
    lower-right neighbour (offset half a pixel towards the origin); on the last row only the
    right neighbour counts, on the last column only the lower one, the corner never."""
    seg = seg.astype(bool)
    east, south, south_east = (np.zeros_like(seg) for _ in range(3))
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def bound_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> float:
    """The tolerance in pixels: bound_th itself when >= 1 (whole pixels), else
    ceil(bound_th * the diagonal of an (H, W) image)."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a whole number of pixels, got {bound_th}")
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def _within(target: np.ndarray, source: np.ndarray, radius: float) -> np.ndarray:
    """Pixels of `target` within `radius` of a pixel of `source` (both non-empty, same shape):
    `target & dilate(source, disk(radius))`, on the bounding box of the two."""
    rows = np.flatnonzero((target | source).any(axis=1))
    cols = np.flatnonzero((target | source).any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    distance = np.asarray(distance_transform_edt(~source[box]))
    return target[box] & (distance <= radius)


def f_measure(foreground: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F of a predicted mask against a GT mask, both bool (H, W)."""
    radius = bound_pixels(foreground.shape, bound_th)
    fg_boundary, gt_boundary = seg2bmap(foreground), seg2bmap(gt)
    n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
    if n_fg == 0 or n_gt == 0:
        precision, recall = (1.0 if n_fg == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    else:
        precision = int(_within(fg_boundary, gt_boundary, radius).sum()) / n_fg
        recall = int(_within(gt_boundary, fg_boundary, radius).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_eval_boundary(
    annotation: np.ndarray, segmentation: np.ndarray, bound_th: float = BOUND_TH
) -> np.ndarray:
    """F per frame of bool masks (T, H, W) -> (T,) (or (H, W) -> a 0-d array)."""
    if annotation.shape != segmentation.shape:
        raise ValueError(f"shapes differ: {annotation.shape} and {segmentation.shape}")
    if annotation.ndim == 2:
        return np.asarray(f_measure(segmentation, annotation, bound_th))
    return np.array(
        [f_measure(s, a, bound_th) for a, s in zip(annotation, segmentation, strict=True)]
    )


@dataclass(frozen=True)
class Statistics:
    """Per-object summary of per-frame values (fractions; decay may be negative)."""

    mean: float
    recall: float
    """Fraction of frames above 0.5."""
    decay: float
    """Mean of the first quarter of the frames minus mean of the last (the official bins)."""


def db_statistics(per_frame: Sequence[float] | np.ndarray) -> Statistics:
    """Mean, recall and decay of one object's per-frame J or F (at least one frame)."""
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"want per-frame values (T,) with T >= 1, got shape {values.shape}")
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(4)]
    return Statistics(
        mean=float(np.nanmean(values)),
        recall=float(np.nanmean(values > 0.5)),
        decay=float(np.nanmean(bins[0]) - np.nanmean(bins[3])),
    )


def score_objects(
    gt: np.ndarray, pred: np.ndarray, n_objects: int, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F per object and frame, (n_objects, T) each, from object-id maps uint8 (T, H, W):
    object k (1..n_objects) is `ids == k` in both; 255 in the GT is background."""
    gt = np.where(gt == 255, 0, gt)
    j = np.zeros((n_objects, len(gt)))
    f = np.zeros((n_objects, len(gt)))
    for k in range(n_objects):
        gt_k, pred_k = gt == k + 1, pred == k + 1
        j[k] = db_eval_iou(gt_k, pred_k)
        f[k] = db_eval_boundary(gt_k, pred_k, bound_th)
    return j, f


@dataclass
class ObjectScores:
    """One object of one sequence: J and F on each scored frame, and their statistics."""

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    """The scored frames (file stems), first and last of the sequence excluded."""
    j: np.ndarray
    """J per scored frame (T,)."""
    f: np.ndarray
    """F per scored frame (T,)."""
    j_stats: Statistics = field(init=False)
    f_stats: Statistics = field(init=False)

    def __post_init__(self) -> None:
        self.j_stats = db_statistics(self.j)
        self.f_stats = db_statistics(self.f)

    @property
    def name(self) -> str:
        """The official per-sequence CSV's name: SEQ_K."""
        return f"{self.sequence}_{self.object_id}"


@dataclass(frozen=True)
class DavisSummary:
    """The official global results: means over all objects of all sequences."""

    j_and_f: float
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    objects: int
    sequences: int
    frames: int
    """Scored frames, summed over sequences."""

    def values(self) -> tuple[float, ...]:
        """In GLOBAL_COLUMNS order."""
        return (self.j_and_f, self.j_mean, self.j_recall, self.j_decay, self.f_mean,
                self.f_recall, self.f_decay)  # fmt: skip


def summarize(objects: Sequence[ObjectScores]) -> DavisSummary:
    if not objects:
        raise ValueError("no objects to summarize")
    j = [o.j_stats for o in objects]
    f = [o.f_stats for o in objects]
    j_mean = float(np.nanmean([s.mean for s in j]))
    f_mean = float(np.mean([s.mean for s in f]))
    frames = {o.sequence: len(o.frames) for o in objects}
    return DavisSummary(
        j_and_f=(j_mean + f_mean) / 2,
        j_mean=j_mean,
        j_recall=float(np.nanmean([s.recall for s in j])),
        j_decay=float(np.nanmean([s.decay for s in j])),
        f_mean=f_mean,
        f_recall=float(np.mean([s.recall for s in f])),
        f_decay=float(np.mean([s.decay for s in f])),
        objects=len(objects),
        sequences=len(frames),
        frames=sum(frames.values()),
    )


# ---------------------------------------------------------------------------------------------
# Folders: a DAVIS root (Annotations/RES/SEQ/*.png) or a folder of SEQ/*.png


def mask_root(folder: Path, resolution: str = "480p") -> Path:
    """FOLDER/Annotations/RES when FOLDER has Annotations/, else FOLDER (holding SEQ/*.png)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(folder, "no such folder")
    if (folder / "Annotations").is_dir():
        root = folder / "Annotations" / resolution
        if not root.is_dir():
            raise SceneError(root, f"no such folder (a DAVIS root at resolution {resolution!r})")
        return root
    return folder


def list_sequences(root: Path) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise SceneError(root, "no sequence folders (want SEQ/00000.png ...)")
    return names


def read_imageset(gt: Path, imageset: str) -> list[str]:
    """Sequence names, one a line: the file `imageset`, or GT/ImageSets/2017/IMAGESET.txt."""
    path = Path(imageset)
    if not path.is_file():
        path = Path(gt) / "ImageSets" / "2017" / f"{imageset}.txt"
    if not path.is_file():
        raise SceneError(path, "no such image set (a file, or a name under GT/ImageSets/2017/)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise SceneError(path, "empty image set")
    return names


@dataclass
class SequenceFiles:
    name: str
    first: Path
    """The first annotation: its ids 1..max are the objects."""
    gt: list[Path]
    """The scored annotations (first and last frame excluded)."""
    pred: list[Path]


def sequence_files(gt_root: Path, pred_root: Path, name: str) -> SequenceFiles:
    """The files one sequence is scored from; a missing prediction frame is a SceneError."""
    gt_folder = gt_root / name
    if not gt_folder.is_dir():
        raise SceneError(gt_folder, f"no such sequence in the ground truth {gt_root}")
    annotations = index_pngs(gt_folder)
    if len(annotations) < 3:
        raise SceneError(
            gt_folder,
            f"{len(annotations)} annotated frames; the first and last are not scored,"
            " so a sequence needs at least 3",
        )
    pred_folder = pred_root / name
    if not pred_folder.is_dir():
        raise SceneError(pred_folder, f"no predictions for sequence {name!r}")
    scored = annotations[1:-1]
    pred = [pred_folder / f"{a.stem}.png" for a in scored]
    for path in pred:
        if not path.is_file():
            raise SceneError(
                path, "missing prediction frame (every frame but the first and last is scored)"
            )
    return SequenceFiles(name, annotations[0], scored, pred)


def score_sequence(files: SequenceFiles, bound_th: float = BOUND_TH) -> list[ObjectScores]:
    """Read one sequence's masks, check them, and score each object."""
    first = read_index_png(files.first)
    first = np.where(first == 255, 0, first)
    n_objects = int(first.max())
    if n_objects == 0:
        raise SceneError(files.first, "no objects (ids 1..254) in the first annotation")
    height, width = first.shape
    gt = np.empty((len(files.gt), height, width), np.uint8)
    pred = np.empty_like(gt)
    for t, (gt_path, pred_path) in enumerate(zip(files.gt, files.pred, strict=True)):
        gt[t] = _sized(read_index_png(gt_path), gt_path, first.shape, files.first)
        pred[t] = _sized(read_index_png(pred_path), pred_path, first.shape, gt_path)
        top = int(pred[t].max())
        if top > n_objects:
            raise SceneError(
                pred_path,
                f"object id {top}, but the sequence has {n_objects} objects"
                f" (ids 1..{n_objects} of {files.first.name})",
            )
    j, f = score_objects(gt, pred, n_objects, bound_th)
    frames = tuple(p.stem for p in files.gt)
    return [ObjectScores(files.name, k + 1, frames, j[k], f[k]) for k in range(n_objects)]


def _sized(ids: np.ndarray, path: Path, shape: tuple[int, ...], reference: Path) -> np.ndarray:
    if ids.shape != shape:
        raise SceneError(
            path,
            f"{ids.shape[1]}x{ids.shape[0]} pixels, but {reference} is {shape[1]}x{shape[0]}",
        )
    return ids


@dataclass
class DavisResult:
    objects: list[ObjectScores]
    summary: DavisSummary


def evaluate_davis(
    gt: Path,
    pred: Path,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
    bound_th: float = BOUND_TH,
    progress: bool = False,
) -> DavisResult:
    """Score a prediction folder against DAVIS annotations (each a DAVIS root or a folder of
    SEQ/*.png); `sequences` default: every GT sequence. All files are checked to exist first."""
    from tqdm import tqdm

    gt_root, pred_root = mask_root(gt, resolution), mask_root(pred, resolution)
    names = list(dict.fromkeys(sequences)) if sequences else list_sequences(gt_root)
    files = [sequence_files(gt_root, pred_root, name) for name in names]
    objects: list[ObjectScores] = []
    for seq in tqdm(files, desc="davis", unit="seq", disable=not progress or None):
        objects += score_sequence(seq, bound_th)
    return DavisResult(objects, summarize(objects))


# ---------------------------------------------------------------------------------------------
# Tables and the run folder


def format_table(result: DavisResult) -> str:
    """Per object and the global row, in percent (decay in points)."""
    width = max([8, *(len(o.sequence) for o in result.objects)])
    head = ("J-mean", "J-recall", "J-decay", "F-mean", "F-recall", "F-decay")
    lines = [f"  {'sequence':<{width}}  object" + "".join(f"{h:>10}" for h in head)]
    for o in result.objects:
        values = (o.j_stats.mean, o.j_stats.recall, o.j_stats.decay,
                  o.f_stats.mean, o.f_stats.recall, o.f_stats.decay)  # fmt: skip
        lines.append(
            f"  {o.sequence:<{width}}  {o.object_id:>6}"
            + "".join(f"{100 * v:>10.1f}" for v in values)
        )
    s = result.summary
    lines += [
        "",
        "  " + "".join(f"{c:>10}" for c in GLOBAL_COLUMNS),
        "  " + "".join(f"{100 * v:>10.1f}" for v in s.values()),
        "",
        f"  {PROTOCOL_NOTE}; J&F-Mean = (J-Mean + F-Mean) / 2; means over all"
        f" {_count(s.objects, 'object')} of {_count(s.sequences, 'sequence')}"
        f" ({_count(s.frames, 'frame')} scored); percent",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def davis_csv(result: DavisResult) -> str:
    """The official global and per-sequence results in one table (fractions, 3 decimals):
    a `global` row, then one row per object named SEQ_K."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Sequence", *GLOBAL_COLUMNS])
    writer.writerow(["global", *(f"{v:.3f}" for v in result.summary.values())])
    for o in result.objects:
        j, f = o.j_stats, o.f_stats
        values = ((j.mean + f.mean) / 2, j.mean, j.recall, j.decay, f.mean, f.recall, f.decay)
        writer.writerow([o.name, *(f"{v:.3f}" for v in values)])
    return buffer.getvalue()


def run_metrics(result: DavisResult, method: str, scene: str, settings: dict) -> dict:
    """metrics.json (eval/DESIGN.md): rows hold fractions in [0, 1]; the decays, which may be
    negative, and the official global row go under "global_results"."""
    s = result.summary
    rows = [
        {"protocol": "-", "path": "-", "metric": metric, "value": value, "count": s.objects}
        for metric, value in (
            ("j&f", s.j_and_f), ("j-mean", s.j_mean), ("j-recall", s.j_recall),
            ("f-mean", s.f_mean), ("f-recall", s.f_recall),
        )
    ]  # fmt: skip
    return {
        "benchmark": "davis-2017",
        "scene": scene,
        "features": method,
        "settings": settings,
        "rows": rows,
        "global_results": dict(zip(GLOBAL_COLUMNS, s.values(), strict=True)),
    }


def per_object_rows(result: DavisResult) -> list[dict]:
    rows = []
    for o in result.objects:
        j, f = o.j_stats, o.f_stats
        rows.append({
            "sequence": o.sequence, "object": o.object_id, "frames": len(o.frames),
            "j&f-mean": (j.mean + f.mean) / 2, "j-mean": j.mean, "j-recall": j.recall,
            "j-decay": j.decay, "f-mean": f.mean, "f-recall": f.recall, "f-decay": f.decay,
        })  # fmt: skip
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


# ---------------------------------------------------------------------------------------------
# omnivision eval davis


@dataclass
class DavisCommand:
    pred: Path
    """Predicted masks: a folder of SEQ/00000.png ... (as `omnivision track` writes), or a DAVIS-like
    root with Annotations/RES/SEQ/."""
    gt: Path
    """Ground truth: a DAVIS root (Annotations/RES/SEQ/*.png), or a folder of SEQ/*.png."""
    out: Path
    """Run folder to write (metrics.json, per_query.csv, davis.csv)."""
    sequences: str | None = None
    """Comma-separated sequences to score (default: every GT sequence, or --imageset's)."""
    imageset: str | None = None
    """Sequences one a line: a file, or a name read from GT/ImageSets/2017/NAME.txt (val)."""
    resolution: str = "480p"
    """Resolution folder of a DAVIS root (480p, Full-Resolution)."""
    method: str | None = None
    """Method name in the run and the report (default: the prediction folder's name)."""
    scene_name: str | None = None
    """Name of the scored set in the run and the report (default: the --imageset name, else
    "all" or the sequence names)."""


DESCRIPTION = """DAVIS-2017 semi-supervised video object segmentation, as the official
davis2017-evaluation scores it: J (region IoU) and F (boundary F-measure, tolerance
ceil(0.008 x diagonal) px) per object and frame; per object mean, recall and decay;
J&F-Mean = (J-Mean + F-Mean) / 2 over all objects of all sequences. Objects are the ids 1..max of each
sequence's first annotation; the first and last frame of each sequence are not scored (so their
predictions are not needed). Writes RUN/metrics.json, per_query.csv (one row per sequence and
object) and davis.csv (the official global and per-object results).

examples:
  omnivision eval davis --pred runs/track --gt DAVIS --imageset val --out runs/davis-val
  omnivision eval davis --pred out/ --gt DAVIS/Annotations/480p --sequences bike-packing,dogs-jump --out runs/d
"""


def davis_main(argv: list[str], prog: str) -> int:
    from .runs import write_run

    cmd: DavisCommand = tyro.cli(DavisCommand, args=argv, prog=prog, description=DESCRIPTION)
    if cmd.sequences is not None and cmd.imageset is not None:
        raise SceneError(cmd.out, "give --sequences or --imageset, not both")
    sequences = None
    if cmd.sequences is not None:
        sequences = [s.strip() for s in cmd.sequences.split(",") if s.strip()]
        if not sequences:
            raise SceneError(cmd.out, "--sequences names no sequence")
    elif cmd.imageset is not None:
        sequences = read_imageset(cmd.gt, cmd.imageset)
    result = evaluate_davis(cmd.gt, cmd.pred, sequences, cmd.resolution, progress=True)
    names = list(dict.fromkeys(o.sequence for o in result.objects))
    scene = cmd.scene_name or (
        Path(cmd.imageset).stem
        if cmd.imageset
        else (
            "all"
            if cmd.sequences is None
            else ",".join(names)
            if len(names) <= 3
            else f"{len(names)} sequences"
        )
    )
    settings = {
        "gt": str(cmd.gt),
        "pred": str(cmd.pred),
        "resolution": cmd.resolution,
        "sequences": names,
        "bound_th": BOUND_TH,
        "frames_scored": result.summary.frames,
        "protocol": PROTOCOL_NOTE,
    }
    method = cmd.method or Path(cmd.pred).resolve().name
    metrics = run_metrics(result, method, scene, settings)

    def extra(folder: Path) -> None:
        (folder / "davis.csv").write_text(davis_csv(result), encoding="utf-8")

    write_run(cmd.out, metrics, per_object_rows(result), extra)
    print(f"DAVIS-2017 semi-supervised · {method} · {scene}")
    print(format_table(result))
    print(f"wrote {cmd.out}/metrics.json, per_query.csv, davis.csv")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(davis_main(sys.argv[1:], "omnivision eval davis"))
