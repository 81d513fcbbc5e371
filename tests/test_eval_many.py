"""`omnivision eval lerf-scenes`: LERF-OVS over several scenes, then one report; each scene's rows
equal a one-scene `omnivision eval lerf` with the same options."""

from __future__ import annotations

import json

import pytest

from omnivision.eval.many import find_scenes
from omnivision.scenes.errors import SceneError


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


def test_two_scenes_score_as_the_one_scene_runs(synthetic_bench, tmp_path, capsys):
    """In this process (the Ray branch runs the same argv through `lift.distributed.run_on_ray`,
    which tests/test_lift_ray.py drives on a local Ray instance)."""
    from omnivision.cli import main

    folder, runs = synthetic_bench
    (tmp_path / "scenes").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("left", "right"):  # the same lifted scene twice, by link
        (tmp_path / "scenes" / name).symlink_to(folder / "scene")
        (tmp_path / "labels" / name).symlink_to(folder / "lerf_labels")
    out = tmp_path / "runs"
    args = ["eval", "lerf-scenes", str(tmp_path / "scenes"), "--labels", str(tmp_path / "labels")]
    options = ["--features", "clip-pyramid", "--smooth", "10", "--no-3d", "--paths", "features"]
    assert main([*args, "--out", str(out), *options]) == 0
    assert "scored 2 of 2 scenes" in capsys.readouterr().out and (out / "report.md").is_file()
    # the synthetic benchmark's own pyramid run: same scene, labels, features and smoothing
    expected = {
        (r["protocol"], r["path"], r["metric"]): r["value"] for r in runs["pyramid"]["rows"]
    }
    for name in ("left", "right"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["scene"] == name
        rows = {(r["protocol"], r["path"], r["metric"]): r["value"] for r in metrics["rows"]}
        assert set(rows) == {k for k in expected if k[:2] == ("2d", "features")}
        for key, value in rows.items():
            assert value == pytest.approx(expected[key], abs=1e-9), key
        assert name in (out / "report.md").read_text()
