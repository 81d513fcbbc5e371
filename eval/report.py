"""`omnivision eval report RUN... --out report.md`: tables and figures from run folders.

Reads each RUN folder (eval/DESIGN.md: `metrics.json`, `per_query.csv`, `maps/FRAME.npz`) and
writes, beside the report:

- `report.md`: one table per benchmark, protocol and metric; a row per scene and a row for the
  mean over scenes, for each method (our feature name) and path; then the published figures for
  the same benchmark, protocol and metric (eval/published.py), marked "published" with the paper.
  Every row carries its protocol and path: papers mix the 2D and 3D LERF-OVS protocols in one
  table, ours never do. Figures print as percentages with one decimal.
- one CSV per table (`<report stem>_<benchmark>_<protocol>_<metric>.csv`), the same rows;
- `figures/<run>_<frame>.png` for every LERF-OVS frame with maps: per category a panel with the
  image, the relevancy heatmap and its colour bar, the GT boxes, the argmax point and the
  predicted mask's outline; linked from the report.

Everything is read and checked, and the figures drawn into a temporary folder beside the report,
before anything is put in place; bad input (a RUN without metrics.json, malformed JSON, a value
outside [0, 1], a broken maps file) is a SceneError naming the file, and nothing is written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from omnivision.scenes.errors import SceneError, atomic_path

from .lerf import FrameMaps, in_boxes, read_maps
from .published import canonical_benchmark, published_for

PROTOCOL_LABELS = {
    "2d": "2D protocol (rendered relevancy)",
    "3d": "3D protocol (selected Gaussians rendered)",
    "-": "benchmark protocol",
}
PATH_LABELS = {
    "features": "features (rendered, then relevancy per pixel)",
    "scalar": "scalar (relevancy per Gaussian, rendered)",
    "gaussians": "gaussians (selection rendered)",
    "per-pair": "per pair (mean over image pairs)",
    "per-keypoint": "per keypoint (over all keypoints)",
    "-": "-",
}
PUBLISHED_PATH = "as published"
METRIC_LABELS = {
    "accuracy": "localization accuracy",
    "miou": "mIoU",
    "macc@0.25": "mAcc@0.25",
    "pixel_accuracy": "pixel accuracy",
    "pck@0.1": "PCK@0.1",
    "j&f": "J&F",
    "j-mean": "J mean",
    "f-mean": "F mean",
    "j-recall": "J recall",
    "f-recall": "F recall",
    "macc": "mAcc (mean class accuracy)",
}
BENCHMARK_TITLES = {
    "lerf-ovs": "LERF-OVS",
    "nvos": "NVOS",
    "spinnerf": "SPIn-NeRF",
    "spair": "SPair-71k",
    "davis-2017": "DAVIS-2017",
    "ade20k-847": "ADE20K-847",
    "pascal-context-459": "PASCAL-Context-459",
    "ade20k-150": "ADE20K-150",
    "pascal-context-59": "PASCAL-Context-59",
    "ovss": "Open-vocabulary semantic segmentation",
}
PROTOCOL_ORDER = {"2d": 0, "3d": 1, "-": 2}
PATH_ORDER = {"features": 0, "scalar": 1, "-": 2}
METRIC_ORDER = {m: k for k, m in enumerate(METRIC_LABELS)}
FRACTION_COLUMNS = {"iou", "miou", "accuracy", "macc@0.25", "pixel_accuracy", "pck@0.1", "chance"}
"""per_query.csv columns that hold fractions in [0, 1] (shown as percentages)."""
PER_QUERY_SHOWN = 200
CSV_COLUMNS = (
    "benchmark",
    "protocol",
    "path",
    "metric",
    "source",
    "method",
    "scene",
    "value_percent",
    "count",
    "chance_percent",
    "reference",
    "note",
)


@dataclass
class MetricRow:
    protocol: str
    path: str
    metric: str
    value: float
    """A fraction in [0, 1]."""
    count: int | None = None


@dataclass
class Run:
    """One RUN folder, read and checked."""

    folder: Path
    metrics_file: Path
    benchmark: str
    scene: str
    features: str
    settings: dict[str, Any]
    rows: list[MetricRow]
    chance: dict[str, float]
    per_query_columns: list[str] = field(default_factory=list)
    per_query: list[dict[str, str]] | None = None
    """None when the run has no per_query.csv."""
    maps: list[Path] = field(default_factory=list)
    text: str = ""
    """The text encoder, when metrics.json names one ("clip", "bridge", ...)."""
    label: str = ""
    """Unique short name (file names, the runs table)."""
    method: str = ""
    """The feature name (and text encoder); runs of one method on several scenes share it."""


@dataclass
class TableRow:
    source: str
    """"ours" or "published"."""
    method: str
    protocol: str
    path: str
    metric: str
    scene: str
    value: float
    """Percent."""
    count: int | None
    chance: float | None
    """Percent."""
    reference: str
    note: str = ""


@dataclass
class Table:
    benchmark: str
    protocol: str
    metric: str
    rows: list[TableRow]

    @property
    def title(self) -> str:
        bench = BENCHMARK_TITLES.get(self.benchmark, self.benchmark)
        return f"{bench} · {PROTOCOL_LABELS.get(self.protocol, self.protocol)} · {metric_label(self.metric)}"

    def csv_name(self, stem: str) -> str:
        protocol = {"-": "single"}.get(self.protocol, self.protocol)
        return f"{stem}_{_slug(self.benchmark)}_{_slug(protocol)}_{_slug(self.metric)}.csv"


@dataclass
class FramePlot:
    run: Run
    npz: Path
    name: str
    """File name under figures/."""


def _is_fraction_column(column: str) -> bool:
    name = column.lower()
    return name in FRACTION_COLUMNS or name.startswith("pck@")


def metric_label(metric: str) -> str:
    if metric.startswith("pck@"):
        return "PCK@" + metric[4:]
    return METRIC_LABELS.get(metric, metric)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _fraction(value: Any, where: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SceneError(where, f"{what}: {value!r} is not a number")
    if not 0.0 <= value <= 1.0:
        raise SceneError(
            where, f"{what}: {value!r} is outside [0, 1] (figures are fractions on disk)"
        )
    return float(value)


# ---------------------------------------------------------------------------------------------
# Reading run folders


def read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json, checked against eval/DESIGN.md."""
    if not path.is_file():
        raise SceneError(path, "no metrics.json here (a RUN is a folder `omnivision eval` wrote)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SceneError(path, f"not valid JSON ({err.msg}, line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SceneError(path, f"not readable ({err})") from None
    if not isinstance(data, dict):
        raise SceneError(path, "expected a JSON object with 'benchmark' and 'rows'")
    if not isinstance(data.get("benchmark"), str) or not data["benchmark"].strip():
        raise SceneError(path, "'benchmark' must be a non-empty string")
    for key in ("scene", "features", "text"):
        if key in data and not isinstance(data[key], str):
            raise SceneError(path, f"'{key}' must be a string")
    if not isinstance(data.get("settings", {}), dict):
        raise SceneError(path, "'settings' must be an object")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise SceneError(path, "'rows' must be a list of {protocol, path, metric, value, count}")
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SceneError(path, f"rows[{k}] is not an object")
        for key in ("protocol", "path", "metric"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise SceneError(path, f"rows[{k}]: '{key}' must be a non-empty string")
        _fraction(row.get("value"), path, f"rows[{k}] ({row['metric']}) value")
        count = row.get("count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise SceneError(path, f"rows[{k}]: 'count' must be a non-negative integer")
    chance = data.get("chance", {})
    if not isinstance(chance, dict):
        raise SceneError(path, "'chance' must be an object {metric: fraction}")
    for metric, value in chance.items():
        _fraction(value, path, f"chance[{metric!r}]")
    return data


def read_per_query(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """per_query.csv: a header and one row per query; fraction columns must lie in [0, 1]."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SceneError(path, f"not readable ({err})") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as err:
        raise SceneError(path, f"not a valid CSV ({err})") from None
    if not columns:
        raise SceneError(path, "empty: expected a header row")
    for line, row in enumerate(rows, start=2):
        if None in row:
            raise SceneError(path, f"line {line} has more fields than the header")
        for column in columns:
            value = row.get(column)
            if _is_fraction_column(column) and value not in (None, ""):
                try:
                    number = float(value)
                except ValueError:
                    raise SceneError(
                        path, f"line {line}, {column}: {value!r} is not a number"
                    ) from None
                _fraction(number, path, f"line {line}, {column}")
    return columns, rows


def read_run(folder: Path) -> Run:
    """One RUN folder: metrics.json (required), per_query.csv and maps/*.npz (optional)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(folder, "no such run folder")
    metrics_file = folder / "metrics.json"
    data = read_metrics(metrics_file)
    rows = [
        MetricRow(r["protocol"], r["path"], r["metric"], float(r["value"]), r.get("count"))
        for r in data["rows"]
    ]
    run = Run(
        folder=folder,
        metrics_file=metrics_file,
        benchmark=canonical_benchmark(data["benchmark"]),
        scene=data.get("scene") or "all",
        features=data.get("features") or "-",
        settings=data.get("settings") or {},
        rows=rows,
        chance={m: float(v) for m, v in data.get("chance", {}).items()},
        text=data.get("text") or "",
    )
    per_query = folder / "per_query.csv"
    if per_query.is_file():
        run.per_query_columns, run.per_query = read_per_query(per_query)
    maps = folder / "maps"
    if maps.is_dir():
        run.maps = sorted(maps.glob("*.npz"))
    return run


def _name_runs(runs: list[Run]) -> None:
    """Unique labels; the method is the feature name (and text encoder, when the run names one).

    Runs of one method on different scenes share it, so the mean is over their scenes (settings
    such as timings differ per run and do not split methods). A run that repeats another's
    benchmark, method and scene gets its label appended, so no mean mixes the two.
    """
    taken: set[str] = set()
    for run in runs:
        base = _file_safe(run.folder.resolve().name)
        label, k = base, 2
        while label in taken:
            label, k = f"{base}-{k}", k + 1
        taken.add(label)
        run.label = label
    seen: set[tuple[str, str, str]] = set()
    for run in runs:
        run.method = run.features + (f" (text: {run.text})" if run.text else "")
        if (run.benchmark, run.method, run.scene) in seen:
            run.method = f"{run.method} [{run.label}]"
        seen.add((run.benchmark, run.method, run.scene))
    for run in runs:
        keys = [(row.protocol, row.path, row.metric) for row in run.rows]
        for key in keys:
            if keys.count(key) > 1:
                raise SceneError(run.metrics_file, f"two rows for {'/'.join(key)}")


# ---------------------------------------------------------------------------------------------
# Tables


def _scene_key(scene: str) -> tuple[int, str]:
    return (1, "") if scene == "mean" else (0, scene)


def _ours(runs: list[Run], benchmark: str, protocol: str, metric: str) -> list[TableRow]:
    groups: dict[tuple[str, str], list[tuple[Run, MetricRow]]] = {}
    for run in runs:
        if run.benchmark != benchmark:
            continue
        for row in run.rows:
            if row.protocol == protocol and row.metric == metric:
                groups.setdefault((run.method, row.path), []).append((run, row))
    table = []
    for method, path in sorted(groups, key=lambda g: (g[0], PATH_ORDER.get(g[1], 9), g[1])):
        items = sorted(groups[(method, path)], key=lambda item: _scene_key(item[0].scene))
        for run, row in items:
            chance = run.chance.get(metric)
            table.append(
                TableRow(
                    "ours", method, protocol, path, metric, run.scene, 100 * row.value, row.count,
                    None if chance is None else 100 * chance, str(run.folder),
                )
            )  # fmt: skip
        counts = [row.count for _, row in items if row.count is not None]
        chances = [c for c in (run.chance.get(metric) for run, _ in items) if c is not None]
        table.append(
            TableRow(
                "ours", method, protocol, path, metric, "mean",
                100 * float(np.mean([row.value for _, row in items])),
                sum(counts) if len(counts) == len(items) else None,
                100 * float(np.mean(chances)) if len(chances) == len(items) else None,
                f"mean over {len(items)} scene{'s' if len(items) != 1 else ''}",
            )
        )  # fmt: skip
    return table


def _published(benchmark: str, protocol: str, metric: str) -> list[TableRow]:
    return [
        TableRow(
            "published", p.method, p.protocol, PUBLISHED_PATH, metric, p.scene, p.value, None,
            None, p.paper, p.note,
        )
        for p in published_for(benchmark, protocol, metric)
    ]  # fmt: skip


def build_tables(runs: Sequence[Run], published: bool = True) -> list[Table]:
    """Benchmark by benchmark (in the order runs give them), protocol by protocol, metric by metric."""
    benchmarks = list(dict.fromkeys(run.benchmark for run in runs))
    tables = []
    for benchmark in benchmarks:
        keys = {
            (row.protocol, row.metric)
            for run in runs
            if run.benchmark == benchmark
            for row in run.rows
        }
        for protocol, metric in sorted(
            keys,
            key=lambda k: (PROTOCOL_ORDER.get(k[0], 9), k[0], METRIC_ORDER.get(k[1], 99), k[1]),
        ):
            rows = _ours(list(runs), benchmark, protocol, metric)
            if published:
                rows += _published(benchmark, protocol, metric)
            tables.append(Table(benchmark, protocol, metric, rows))
    return tables


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in table.rows:
        writer.writerow([
            table.benchmark, r.protocol, r.path, r.metric, r.source, r.method, r.scene,
            _percent(r.value), "" if r.count is None else r.count, _percent(r.chance),
            r.reference, r.note,
        ])  # fmt: skip
    return buffer.getvalue()


def table_markdown(table: Table, csv_name: str) -> list[str]:
    lines = [
        f"### {table.title}",
        "",
        f"CSV: [{csv_name}]({csv_name})",
        "",
        "| source | method | protocol | path | metric | scene | value (%) | n | chance (%) | reference |",
        "|---|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in table.rows:
        reference = r.reference + (f" ({r.note})" if r.note else "")
        value = f"**{_percent(r.value)}**" if r.scene == "mean" else _percent(r.value)
        cells = [
            r.source, r.method, PROTOCOL_LABELS.get(r.protocol, r.protocol),
            PATH_LABELS.get(r.path, r.path), metric_label(r.metric), r.scene, value,
            "" if r.count is None else r.count, _percent(r.chance), reference,
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
# Figures


def draw_frame(maps: FrameMaps, title: str, png: Path) -> None:
    """Per category: image, relevancy heatmap, GT boxes, argmax, mask outline; one colour bar
    (the panels share their colour limits)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.patches import Rectangle

    image, relevancy, categories = maps.image, maps.relevancy, maps.categories
    height, width = image.shape[:2]
    finite = relevancy[np.isfinite(relevancy)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    cols = max(1, min(len(categories), 3))
    rows = max(1, math.ceil(len(categories) / cols))
    panel = 4.0
    fig = MplFigure(figsize=(cols * panel * 1.15, rows * panel * height / width + 0.8), dpi=80)
    FigureCanvasAgg(fig)
    heat = None
    for k, category in enumerate(categories):
        ax = fig.add_subplot(rows, cols, k + 1, xticks=[], yticks=[], frame_on=False)
        ax.imshow(image)
        heat = ax.imshow(relevancy[k], cmap="turbo", alpha=0.5, vmin=low, vmax=high)
        boxes = maps.boxes.get(category, [])
        for x0, y0, x1, y1 in boxes:
            corner, size = (min(x0, x1), min(y0, y1)), (abs(x1 - x0), abs(y1 - y0))
            ax.add_patch(Rectangle(corner, *size, fill=False, edgecolor="lime", linewidth=1.5))
        mask = maps.masks[k]
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.0)
        x, y = (int(v) for v in maps.argmax[k])
        hit = in_boxes((x, y), boxes)
        ax.plot(
            x, y, marker="*", markersize=12, color="lime" if hit else "red", markeredgecolor="black"
        )
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(f"{category} ({'hit' if hit else 'miss'})", fontsize=9)
    if heat is not None:  # every panel shares the colour limits: one bar for the figure
        fig.colorbar(heat, ax=fig.axes, fraction=0.046 / cols, pad=0.01, label="relevancy")
    if not categories:
        ax = fig.add_subplot(1, 1, 1, xticks=[], yticks=[], frame_on=False)
        ax.imshow(image)
        ax.set_title("no categories in this frame", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.savefig(png, format="png")


def _figures(runs: Sequence[Run]) -> list[FramePlot]:
    figures, taken = [], set()
    for run in runs:
        if run.benchmark != "lerf-ovs":
            continue
        for npz in run.maps:
            name = f"{run.label}_{_file_safe(npz.stem)}.png"
            k = 2
            while name in taken:
                name, k = f"{run.label}_{_file_safe(npz.stem)}-{k}.png", k + 1
            taken.add(name)
            figures.append(FramePlot(run, npz, name))
    return figures


def _figure_path(run: Run) -> str:
    return next((row.path for row in run.rows if row.protocol == "2d"), "-")


# ---------------------------------------------------------------------------------------------
# The report


def _runs_section(runs: Sequence[Run]) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| run | benchmark | scene | method | settings | rows | per_query.csv | maps |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for run in runs:
        settings = json.dumps(run.settings, sort_keys=True) if run.settings else ""
        queries = "absent" if run.per_query is None else str(len(run.per_query))
        cells = [
            run.folder,
            run.benchmark,
            run.scene,
            run.method,
            f"`{settings}`" if settings else "",
            len(run.rows),
            queries,
            len(run.maps),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _per_query_section(runs: Sequence[Run]) -> list[str]:
    lines = ["## Per query", ""]
    for run in runs:
        if not run.per_query:
            continue
        columns = run.per_query_columns
        shown = run.per_query[:PER_QUERY_SHOWN]
        more = len(run.per_query) - len(shown)
        lines += [
            "<details>",
            f"<summary>{_cell(run.label)}: {len(run.per_query)} queries"
            f" (fractions shown as %)</summary>",
            "",
            "| " + " | ".join(_cell(c) for c in columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for row in shown:
            cells = []
            for column in columns:
                value = row.get(column) or ""
                if _is_fraction_column(column) and value:
                    value = _percent(100 * float(value))
                cells.append(_cell(value))
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines += ["", f"... and {more} more rows in {run.folder / 'per_query.csv'}"]
        lines += ["", "</details>", ""]
    return lines if len(lines) > 2 else []


def _figures_section(figures: Sequence[FramePlot]) -> list[str]:
    if not figures:
        return []
    lines = [
        "## Figures",
        "",
        "LERF-OVS frames. Per category: the image, the relevancy heatmap with its colour bar, the"
        " GT boxes (green), the argmax point (green star: inside a box; red: outside) and the"
        " predicted mask's outline (white).",
        "",
    ]
    for fig in figures:
        path = _figure_path(fig.run)
        lines += [
            f"**{_cell(fig.run.label)} · {_cell(fig.npz.stem)}** · {PROTOCOL_LABELS['2d']}"
            f" · path: {PATH_LABELS.get(path, path)}",
            "",
            f"![{fig.run.label} {fig.npz.stem}](figures/{fig.name})",
            "",
        ]
    return lines


def report_markdown(
    runs: Sequence[Run], tables: Sequence[Table], stem: str, figures: Sequence[FramePlot]
) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}. Figures are percentages (one decimal)."
        " Each row names its protocol and path; rows marked *published* come from the paper named"
        " beside them and were measured with that paper's own setup.",
        "",
        "Protocols: **2D** (LangSplat / LUDVIG): relevancy rendered into the labelled frame;"
        " localization accuracy and mIoU. **3D** (OpenGaussian / Dr. Splat): the phrase selects"
        " Gaussians, the selection is rendered; mIoU and mAcc@0.25. Paths: *features* (the"
        " per-Gaussian features are rendered, then relevancy per pixel) or *scalar* (relevancy"
        " per Gaussian, rendered as one channel).",
        "",
        *_runs_section(runs),
    ]
    benchmark = None
    for table in tables:
        if table.benchmark != benchmark:
            benchmark = table.benchmark
            lines += [f"## {BENCHMARK_TITLES.get(benchmark, benchmark)}", ""]
        lines += table_markdown(table, table.csv_name(stem))
    lines += _figures_section(figures)
    lines += _per_query_section(runs)
    return "\n".join(lines).rstrip() + "\n"


def _first_missing(folder: Path) -> Path | None:
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


@dataclass
class Report:
    """What build_report wrote."""

    path: Path
    tables: list[Table]
    csvs: list[Path]
    figures: list[Path]


def write_report(
    runs: Sequence[Path], out: Path, *, published: bool = True, figures: bool = True
) -> Report:
    """build_report, returning what it wrote."""
    out = Path(out)
    if not runs:
        raise SceneError(out, "no RUN folders given")
    loaded = [read_run(Path(folder)) for folder in runs]
    _name_runs(loaded)
    tables = build_tables(loaded, published)
    drawn = _figures(loaded) if figures else []
    stem, parent = out.stem, out.parent
    created = _first_missing(parent)
    parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{stem}.staging.") as staging:
            for fig in drawn:
                path = _figure_path(fig.run)
                title = (
                    f"{fig.run.label} · {fig.npz.stem} · {PROTOCOL_LABELS['2d']}"
                    f" · path: {PATH_LABELS.get(path, path)}"
                )
                draw_frame(read_maps(fig.npz), title, Path(staging) / fig.name)
            markdown = report_markdown(loaded, tables, stem, drawn)
            if drawn:
                (parent / "figures").mkdir(exist_ok=True)
                for fig in drawn:
                    os.replace(Path(staging) / fig.name, parent / "figures" / fig.name)
            for table in tables:
                with atomic_path(parent / table.csv_name(stem)) as tmp:
                    tmp.write_text(table_csv(table), encoding="utf-8")
            with atomic_path(out) as tmp:
                tmp.write_text(markdown, encoding="utf-8")
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return Report(
        out,
        tables,
        [parent / table.csv_name(stem) for table in tables],
        [parent / "figures" / fig.name for fig in drawn],
    )


def build_report(runs: list[Path], out: Path) -> Path:
    """Write `out` (markdown), one CSV per table and figures/ beside it; return `out`."""
    return write_report(runs, out).path


# ---------------------------------------------------------------------------------------------
# Command line


@dataclass
class ReportCommand:
    runs: Annotated[tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """Run folders written by `omnivision eval BENCH ... --out RUN` (metrics.json, per_query.csv,
    maps/)."""
    out: Path = Path("report.md")
    """Markdown report to write; one CSV per table and figures/ go beside it."""
    published: bool = True
    """Put the published figures (marked "published", with the paper) beside ours."""
    figures: bool = True
    """Draw one PNG per LERF-OVS frame found in RUN/maps/."""


DESCRIPTION = """Tables and figures from evaluation run folders, with the published figures beside ours.

Writes OUT (markdown): per benchmark, protocol and metric a table with a row per scene and the
mean over scenes, each row labelled with its protocol (2D: rendered relevancy; 3D: selected
Gaussians rendered) and path; the published rows for the same benchmark, protocol and metric,
with their paper. Beside OUT: one CSV per table, and figures/ with one PNG per LERF-OVS frame
(image, relevancy heatmap, GT boxes, argmax point, predicted mask outline).

examples:
  omnivision eval report runs/lerf-figurines runs/lerf-ramen --out results/report.md
  omnivision eval report runs/* --out report.md --no-published
  omnivision eval report runs/nvos-* --out nvos.md --no-figures
"""


def report_main(argv: list[str], prog: str) -> int:
    cmd: ReportCommand = tyro.cli(ReportCommand, args=argv, prog=prog, description=DESCRIPTION)
    report = write_report(list(cmd.runs), cmd.out, published=cmd.published, figures=cmd.figures)
    print(f"wrote {report.path}")
    print(
        f"  {len(cmd.runs)} runs, {len(report.tables)} tables (one CSV each),"
        f" {len(report.figures)} figures in {report.path.parent / 'figures'}"
    )
    return 0
