"""`omnivision-lift` as a user runs it: outputs, manifest, up-to-date runs, shards, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch

from omnivision.lift.store import load_features


def lift(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from omnivision.cli import lift_main; sys.exit(lift_main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )


def test_lift_writes_features_and_manifest_then_is_up_to_date(demo_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    first = lift(str(scene), "--views", "0", "4", "13", "--max-side", "160")
    assert first.returncode == 0, first.stderr
    assert "coverage" in first.stdout and "3 views" in first.stdout
    lifted = load_features(scene / "omnivision", "colour")
    assert lifted.features.shape[0] == 29298 and lifted.seen.float().mean() > 0.9
    manifest = json.loads((scene / "omnivision" / "manifest.json").read_text())
    entry = manifest["features"]["colour"]
    assert entry["views"] == [0, 4, 13] and entry["request"]["scene_hash"]
    again = lift(str(scene), "--views", "0", "4", "13", "--max-side", "160")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_shards_merge_to_the_same_features(demo_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    common = ["--features", "rgb", "--views", "0", "5", "9", "14", "--max-side", "160", "--no-fp16"]
    direct = lift(str(scene), *common, "--out", str(tmp_path / "direct"))
    assert direct.returncode == 0, direct.stderr
    for k in range(2):
        part = lift(str(scene), *common, "--shard", f"{k}/2")
        assert part.returncode == 0 and "merge with" in part.stdout, part.stderr
    merged = lift("merge", str(scene), "--features", "rgb", "--no-fp16")
    assert merged.returncode == 0, merged.stderr
    a = load_features(tmp_path / "direct", "rgb").features
    b = load_features(scene / "omnivision", "rgb").features
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_missing_label_maps_fail_cleanly_without_output(demo_dir, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    (tmp_path / "labels").mkdir()
    out = lift(str(scene), "--features", f"masks:{tmp_path / 'labels'}")
    assert out.returncode == 2
    assert (
        "no label PNG for view 'view_000'" in out.stderr
        and len(out.stderr.strip().splitlines()) == 1
    )
    assert not (scene / "omnivision").exists() or not list(
        (scene / "omnivision").glob("*.safetensors")
    )


def test_bad_shard_and_views(demo_dir):
    out = lift(str(demo_dir), "--shard", "3/2")
    assert out.returncode == 2 and "need 0 <= k < n" in out.stderr
    out = lift(str(demo_dir), "--views", "99")
    assert out.returncode == 2 and "views [99] out of range" in out.stderr
