"""`omnivision eval lerf-scenes`: LERF-OVS over several scenes, one Ray task each, then one report;
each scene's rows equal a one-scene `omnivision eval lerf` with the same options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from omnivision.eval.many import find_scenes
from omnivision.scenes.errors import SceneError

pytest.importorskip("ray", reason="Ray is the optional extra omnivision[dist] (make installs it)")


def test_scenes_are_the_folders_with_labels(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / "scenes" / name).mkdir(parents=True)
    for name in ("a", "c", "z"):
        (tmp_path / "labels" / name).mkdir(parents=True)
    assert find_scenes(tmp_path / "scenes", tmp_path / "labels", None) == ["a", "c"]
    assert find_scenes(tmp_path / "scenes", tmp_path / "labels", "c") == ["c"]
    with pytest.raises(SceneError, match="no label folder for scene 'b'"):
        find_scenes(tmp_path / "scenes", tmp_path / "labels", "a,b")
    with pytest.raises(SceneError, match="no such scene folder"):
        find_scenes(tmp_path / "scenes", tmp_path / "labels", "z")


def test_two_scenes_as_ray_tasks_score_as_the_one_scene_runs(synthetic_bench, tmp_path):
    folder, runs = synthetic_bench
    (tmp_path / "scenes").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("left", "right"):  # the same lifted scene twice, by link
        (tmp_path / "scenes" / name).symlink_to(folder / "scene")
        (tmp_path / "labels" / name).symlink_to(folder / "lerf_labels")
    out = tmp_path / "runs"
    code = "import sys; from omnivision.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["eval", "lerf-scenes", str(tmp_path / "scenes"), "--labels", str(tmp_path / "labels")]
    options = ["--features", "clip-pyramid", "--smooth", "10", "--no-3d", "--ray"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scored 2 of 2 scenes" in done.stdout and (out / "report.md").is_file()
    # the synthetic benchmark's own pyramid run: same scene, labels, features and smoothing
    expected = {
        (r["protocol"], r["path"], r["metric"]): r["value"] for r in runs["pyramid"]["rows"]
    }
    for name in ("left", "right"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["scene"] == name
        rows = {(r["protocol"], r["path"], r["metric"]): r["value"] for r in metrics["rows"]}
        assert set(rows) == {k for k in expected if k[0] == "2d"}
        for key, value in rows.items():
            assert value == pytest.approx(expected[key], abs=1e-9), key
    assert name in (out / "report.md").read_text()
