"""`omnivision eval report`: our figures as labelled percentages, the published rows beside them,
the mean over scenes, the CSVs, one figure per LERF-OVS frame, and bad input that writes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivision.eval.report import CSV_COLUMNS, build_report, report_main
from omnivision.scenes.errors import SceneError

TABLE_HEADER = "| source | method | protocol | path | metric | scene | value (%) | n | chance (%) | reference |"
FIELDS = [c.strip() for c in TABLE_HEADER.strip("|").split("|")]

LERF_ROWS = {
    # scene: {(protocol, path, metric): value}
    "figurines": {
        ("2d", "features", "accuracy"): 0.75,
        ("2d", "features", "miou"): 0.4321,
        ("2d", "scalar", "accuracy"): 0.5,
        ("2d", "scalar", "miou"): 0.3812,
        ("3d", "-", "miou"): 0.2934,
        ("3d", "-", "macc@0.25"): 0.5,
    },
    "ramen": {
        ("2d", "features", "accuracy"): 0.6,
        ("2d", "features", "miou"): 0.5012,
        ("2d", "scalar", "accuracy"): 0.4,
        ("2d", "scalar", "miou"): 0.2218,
        ("3d", "-", "miou"): 0.3577,
        ("3d", "-", "macc@0.25"): 0.6,
    },
}
NVOS_ROWS = {("-", "-", "miou"): 0.9123, ("-", "-", "pixel_accuracy"): 0.9761}
FRAMES = {"figurines": 2, "ramen": 1}


def write_maps(path: Path, categories: list[str], seed: int, height: int = 24, width: int = 32):
    """One maps/FRAME.npz exactly as eval/DESIGN.md gives it."""
    rng = np.random.default_rng(seed)
    q = len(categories)
    relevancy = rng.random((q, height, width)).astype(np.float16)
    argmax = np.array(
        [np.unravel_index(np.argmax(r), r.shape)[::-1] for r in relevancy], dtype=np.int64
    )
    boxes = {c: [[4.0 + k, 3.0, 20.0 + k, 15.0]] for k, c in enumerate(categories)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        categories=np.array(categories),
        relevancy=relevancy,
        argmax=argmax,
        masks=relevancy > 0.6,
        boxes=np.array(json.dumps(boxes)),
    )


def write_run(folder: Path, benchmark: str, scene: str, features: str, rows: dict, **extra) -> Path:
    folder.mkdir(parents=True)
    metrics = {
        "benchmark": benchmark,
        "scene": scene,
        "features": features,
        "settings": {"short_side": 448},
        "rows": [
            {"protocol": p, "path": a, "metric": m, "value": v, "count": 5}
            for (p, a, m), v in rows.items()
        ],
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "per_query.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "category", "protocol", "path", "iou", "hit"])
        writer.writerow(["frame_00001", "cup", "2d", "features", 0.41, True])
        writer.writerow(["frame_00001", "bear", "2d", "features", 0.12, False])
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    folders = []
    for k, (scene, rows) in enumerate(LERF_ROWS.items()):
        folder = write_run(
            root / f"lerf-{scene}",
            "lerf-ovs",
            scene,
            "clip-pyramid",
            rows,
            chance={"accuracy": 0.1},
        )
        for f in range(FRAMES[scene]):
            write_maps(
                folder / "maps" / f"frame_{f:05d}.npz", ["cup", "teddy bear"], seed=10 * k + f
            )
        folders.append(folder)
    folders.append(write_run(root / "nvos-horns", "nvos", "horns", "dinov3-vitb16", NVOS_ROWS))
    return folders


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "results" / "report.md"
    assert report_main([*map(str, runs), "--out", str(out)], prog="omnivision eval report") == 0
    return out


def table_rows(markdown: str) -> list[dict[str, str]]:
    """Every row of the report's result tables, as {column: cell}."""
    rows, inside = [], False
    for line in markdown.splitlines():
        if line == TABLE_HEADER:
            inside = True
        elif inside and line.startswith("|---"):
            continue
        elif inside and line.startswith("| "):
            cells = [c.strip() for c in line.strip()[1:-1].split(" | ")]
            rows.append(dict(zip(FIELDS, cells, strict=True)))
        else:
            inside = False
    return rows


def value(row: dict[str, str]) -> str:
    return row["value (%)"].strip("*")


def test_our_figures_are_percentages_labelled_with_protocol_and_path(report):
    rows = table_rows(report.read_text())
    ours = [r for r in rows if r["source"] == "ours"]
    assert ours and all(r["protocol"] and r["path"] for r in ours)
    [row] = [
        r
        for r in ours
        if r["scene"] == "figurines"
        and r["metric"] == "localization accuracy"
        and r["path"].startswith("features")
    ]
    assert row["protocol"] == "2D protocol (rendered relevancy)" and value(row) == "75.0"
    assert row["chance (%)"] == "10.0"
    [row] = [r for r in ours if r["scene"] == "ramen" and r["metric"] == "mAcc@0.25"]
    assert row["protocol"] == "3D protocol (selected Gaussians rendered)" and value(row) == "60.0"
    [row] = [r for r in ours if r["scene"] == "horns" and r["metric"] == "pixel accuracy"]
    assert value(row) == "97.6" and row["method"] == "dinov3-vitb16"
    # 2D and 3D never share a table: each table holds one protocol of ours.
    for table in report.read_text().split("### ")[1:]:
        protocols = {r["protocol"] for r in table_rows(table) if r["source"] == "ours"}
        assert len(protocols) == 1, table.splitlines()[0]


def test_published_rows_sit_beside_ours_with_their_paper(report):
    rows = table_rows(report.read_text())
    published = [r for r in rows if r["source"] == "published"]
    assert published and all(
        "et al." in r["reference"] or "arXiv" in r["reference"] for r in published
    )
    langsplat = {
        r["scene"]: value(r)
        for r in published
        if r["method"] == "LangSplat" and r["metric"] == "localization accuracy"
    }
    assert langsplat["mean"] == "84.3" and langsplat["waldo_kitchen"] == "95.5"
    assert all(
        "LangSplat, CVPR 2024" in r["reference"] for r in published if r["method"] == "LangSplat"
    )
    [og] = [
        r
        for r in published
        if r["method"] == "OpenGaussian" and r["metric"] == "mIoU" and r["scene"] == "mean"
    ]
    assert og["protocol"].startswith("3D") and value(og) == "38.4"
    assert any(r["method"] == "SA3D" and value(r) == "90.3" for r in published)
    # A published 3D-protocol row never lands in a 2D table, nor the reverse.
    for table in report.read_text().split("### ")[1:]:
        heading = table.splitlines()[0]
        for r in table_rows(table):
            if "2D protocol" in heading or "3D protocol" in heading:
                assert r["protocol"].split()[0] == heading.split(" · ")[1].split()[0]


def test_mean_row_is_the_mean_of_the_scene_rows(report):
    rows = table_rows(report.read_text())
    for key in LERF_ROWS["figurines"]:
        protocol, path, metric = key
        expected = 100 * np.mean([LERF_ROWS[s][key] for s in LERF_ROWS])
        [mean] = [
            r
            for r in rows
            if r["source"] == "ours"
            and r["scene"] == "mean"
            and r["protocol"].lower().startswith(protocol)
            and r["metric"].lower().replace("localization ", "") == metric
            and (path == "-" or r["path"].startswith(path))
        ]
        assert value(mean) == f"{expected:.1f}", key
        assert mean["n"] == "10"


def test_one_csv_per_table_and_they_parse(report):
    markdown = report.read_text()
    csvs = sorted(report.parent.glob("report_*.csv"))
    assert (
        len(csvs) == markdown.count("\n### ") == 6
    )  # lerf: 2D acc, 2D mIoU, 3D mIoU, 3D mAcc; nvos: 2
    for path in csvs:
        assert f"]({path.name})" in markdown
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
            rows = list(reader)
        assert rows and all(r["protocol"] and r["path"] for r in rows)
        assert all(0 <= float(r["value_percent"]) <= 100 for r in rows)
    with open(report.parent / "report_lerf-ovs_2d_miou.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "ours" and r["path"] == "features"]
    scenes = {r["scene"]: float(r["value_percent"]) for r in rows}
    assert scenes == {"figurines": 43.2, "ramen": 50.1, "mean": 46.7}


def test_one_valid_png_per_lerf_frame_linked_from_the_report(report):
    pngs = sorted((report.parent / "figures").glob("*.png"))
    assert len(pngs) == sum(FRAMES.values())
    markdown = report.read_text()
    for png in pngs:
        assert f"(figures/{png.name})" in markdown
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert not list(report.parent.glob(".*"))  # no staging left behind


def test_without_published_rows(runs, tmp_path):
    out = build_report(runs[2:], tmp_path / "nvos.md")
    assert any(r["source"] == "published" for r in table_rows(out.read_text()))
    assert report_main([str(runs[2]), "--out", str(tmp_path / "b.md"), "--no-published"], "x") == 0
    rows = table_rows((tmp_path / "b.md").read_text())
    assert rows and {r["source"] for r in rows} == {"ours"}


def test_a_repeated_scene_is_kept_apart_not_averaged(tmp_path):
    first = write_run(tmp_path / "a", "nvos", "fern", "rgb", NVOS_ROWS)
    again = write_run(tmp_path / "b", "nvos", "fern", "rgb", {("-", "-", "miou"): 0.5})
    rows = table_rows(build_report([first, again], tmp_path / "r.md").read_text())
    means = {r["method"]: value(r) for r in rows if r["source"] == "ours" and r["scene"] == "mean"}
    assert means == {"rgb": "97.6", "rgb [b]": "50.0"} or means["rgb [b]"] == "50.0"
    assert {r["method"] for r in rows if r["source"] == "ours" and r["metric"] == "mIoU"} == {
        "rgb",
        "rgb [b]",
    }


def _no_metrics(folder: Path) -> Path:
    (folder / "metrics.json").unlink()
    return folder / "metrics.json"


def _malformed(folder: Path) -> Path:
    (folder / "metrics.json").write_text('{"benchmark": "nvos", "rows": [')
    return folder / "metrics.json"


def _out_of_range(folder: Path) -> Path:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["rows"][0]["value"] = 91.2
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def _broken_maps(folder: Path) -> Path:
    path = folder / "maps" / "frame_00000.npz"
    np.savez_compressed(path, image=np.zeros((4, 4, 3), np.uint8), categories=np.array(["cup"]))
    return path


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_no_metrics, "no metrics.json"),
        (_malformed, "not valid JSON"),
        (_out_of_range, "outside [0, 1]"),
        (_broken_maps, "missing relevancy"),
    ],
)
def test_bad_input_names_the_file_and_writes_nothing(runs, tmp_path, spoil, problem):
    good = write_run(tmp_path / "good", "nvos", "fern", "rgb", NVOS_ROWS)
    bad = write_run(tmp_path / "bad", "lerf-ovs", "teatime", "rgb", LERF_ROWS["ramen"])
    write_maps(bad / "maps" / "frame_00001.npz", ["cup"], seed=3)
    named = spoil(bad)
    out = tmp_path / "fresh" / "report.md"
    with pytest.raises(SceneError) as err:
        report_main([str(good), str(bad), "--out", str(out)], prog="omnivision eval report")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{named}:") and problem in message
    assert not (tmp_path / "fresh").exists()
    # Into an existing folder: still nothing (no report, CSV, figure or staging folder).
    before = set(tmp_path.iterdir())
    with pytest.raises(SceneError):
        build_report([good, bad], tmp_path / "report.md")
    assert set(tmp_path.iterdir()) == before
