"""`omnivision-lift --ray`: the view shards as Ray tasks on a local 2-CPU instance, then the merge;
equal to a one-process lift. Ray is an optional extra (`omnivision[dist]`, installed by make)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

from omnivision.cli import lift_main
from omnivision.lift.distributed import strip_ray_flags
from omnivision.lift.store import load_features

pytest.importorskip("ray", reason="Ray is the optional extra omnivision[dist] (make installs it)")


def lift(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from omnivision.cli import lift_main; sys.exit(lift_main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )


def test_ray_flags_are_stripped_from_the_shard_command():
    argv = ["s/", "--ray", "--address", "h:1", "--views", "0", "1", "--ray-tasks=3", "--pca", "4"]
    assert strip_ray_flags(argv) == ["s/", "--views", "0", "1", "--pca", "4"]


def test_ray_lift_equals_the_one_process_lift(demo_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    common = ["--features", "rgb", "--views", "0", "5", "9", "14", "--max-side", "96", "--no-fp16"]
    direct = lift(str(scene), *common, "--out", str(tmp_path / "direct"))
    assert direct.returncode == 0, direct.stderr
    ray_run = lift(str(scene), *common, "--ray", "--ray-tasks", "2")
    assert ray_run.returncode == 0, ray_run.stderr
    assert "ran 2 shards on Ray" in ray_run.stdout
    out = scene / "omnivision"
    a = load_features(tmp_path / "direct", "rgb")
    b = load_features(out, "rgb", scene_file=scene / "point_cloud.ply")
    # the same per-view sums added in another order: float32 rounding only
    torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.seen, b.seen)
    assert not list(out.glob("partial_*"))  # the shards' files are cleared after the merge
    entry = json.loads((out / "manifest.json").read_text())["features"]["rgb"]
    assert entry["views"] == [0, 5, 9, 14] and entry["request"]["refine"] == 0
    again = lift(str(scene), *common, "--ray", "--ray-tasks", "2")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr


def test_a_ray_address_that_does_not_answer_is_one_line(demo_dir, tmp_path, capsys):
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    start = time.monotonic()
    code = lift_main([str(scene), "--features", "rgb", "--ray", "--address", "127.0.0.1:9"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "cannot reach Ray at 127.0.0.1:9" in lines[0]
    assert not list((scene / "omnivision").glob("*.safetensors"))
    assert time.monotonic() - start < 60  # not Ray's minutes of retries (measured: ~1 s)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "--shard", "0/2"], "--ray runs the shards itself"),
        (["--ray", "--refine", "2"], "--ray runs the shards itself"),
        (["--address", "h:1"], "--address and --ray-tasks go with --ray"),
        (["--ray", "--ray-tasks", "0"], "--ray-tasks 0: want at least 1"),
    ],
)
def test_bad_ray_options_are_one_line(demo_dir, extra, message, capsys):
    code = lift_main([str(demo_dir), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
