"""`omnivision-lift` as a user runs it: outputs, manifest, up-to-date runs, shards, errors. One test
starts the console script as a process; the rest run it in this process (tests/cli_run.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_run import lift_process
from cli_run import omnivision_lift as lift

from omnivision.lift.store import load_features


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


def test_refine_with_shard_is_refused_before_any_work(demo_dir, tmp_path):
    """A shard writes sums over its views; refinement needs every view: refused, one line."""
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    out = lift(str(scene), "--shard", "0/2", "--refine", "5")
    assert out.returncode == 2
    assert "--refine 5 cannot go with --shard 0/2" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not list(scene.glob("omnivision/partial_*"))


def test_merge_records_what_the_merged_file_holds(demo_dir, tmp_path):
    """Partial files whose request says refine (as older versions wrote them, the refinement
    dropped) merge into features whose manifest says refine 0."""
    from omnivision.lift.aggregate import FeatureSums
    from omnivision.lift.store import save_partial

    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene, ignore=shutil.ignore_patterns("omnivision"))
    n = 29298
    request = {"features": "rgb", "refine": 7, "views": [0, 1]}
    for k in range(2):
        sums = FeatureSums(torch.rand(n, 3), torch.rand(n) + 0.1, 1)
        save_partial(scene / "omnivision", "rgb", (k, 2), sums, [k], None, request)
    merged = lift("merge", str(scene), "--features", "rgb")
    assert merged.returncode == 0, merged.stderr
    entry = json.loads((scene / "omnivision" / "manifest.json").read_text())["features"]["rgb"]
    assert entry["request"]["refine"] == 0 and entry["views"] == [0, 1]


def test_features_of_another_scene_with_as_many_gaussians_are_refused(tmp_path):
    from conftest import random_scene

    from omnivision.lift.store import file_hash, save_features, write_manifest_entry
    from omnivision.scenes.errors import SceneError
    from omnivision.scenes.io_ply import write_ply

    lifted_from, other = tmp_path / "a.ply", tmp_path / "b.ply"
    write_ply(random_scene(50, seed=0), lifted_from)
    write_ply(random_scene(50, seed=1), other)
    out = tmp_path / "omnivision"
    ones = torch.ones(50, dtype=torch.bool)
    save_features(out, "rgb", torch.rand(50, 3), torch.ones(50), ones, None, False)
    request = {"scene_file": "a.ply", "scene_hash": file_hash(lifted_from)}
    write_manifest_entry(out, "rgb", {"request": request})
    assert load_features(out, "rgb", scene_file=lifted_from).features.shape == (50, 3)
    assert load_features(out, "rgb").features.shape == (50, 3)  # no scene given: not checked
    with pytest.raises(SceneError) as err:
        load_features(out, "rgb", scene_file=other)
    message = str(err.value)
    assert "features_rgb.safetensors: lifted from another scene file (a.ply" in message
    assert f"not {other}" in message


def test_missing_dino_weights_hint_names_lifts_own_flag(demo_dir):
    out = lift(str(demo_dir), "--features", "dinov3-vits16")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "use --features dinov2-base" in out.stderr and "--backbone" not in out.stderr


def test_missing_clip_weights_are_one_line_naming_lifts_flags(demo_dir):
    """open_clip logs its own ERROR:root: line before raising; only ours reaches stderr (of the
    console script's own process)."""
    out = lift_process(str(demo_dir), "--features", "clip-pyramid")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "weights not available offline" in out.stderr and "--features dinov2-base" in out.stderr
    assert "ERROR:root" not in out.stderr and "--bridge" not in out.stderr


def test_precision_reaches_the_backbone_and_the_manifest(demo_dir, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14
    )
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene, ignore=shutil.ignore_patterns("omnivision"))
    out = lift(
        str(scene), "--features", str(tmp_path / "dino"), "--precision", "fp16",
        "--views", "0", "4", "--max-side", "96", "--short-side", "56",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    manifest = json.loads((scene / "omnivision" / "manifest.json").read_text())
    (entry,) = manifest["features"].values()
    assert entry["request"]["precision"] == "fp16" and entry["dims"] == 32


def test_merge_refuses_shards_of_another_scene_or_of_two_runs(demo_dir, tmp_path, capsys):
    from omnivision.cli import lift_main

    scene = tmp_path / "scene"
    shutil.copytree(demo_dir, scene)
    common = ["--features", "rgb", "--views", "0", "9", "--max-side", "64"]
    for k in range(2):
        assert lift_main([str(scene), *common, "--shard", f"{k}/2"]) == 0
    out = scene / "omnivision"
    # a stale shard of a 3-shard run beside the 2-shard one: the sums would not add up
    stale = out / "partial_rgb_0-of-3.safetensors"
    shutil.copy(out / "partial_rgb_0-of-2.safetensors", stale)
    capsys.readouterr()
    assert lift_main(["merge", str(scene), "--features", "rgb"]) == 2
    err = capsys.readouterr().err
    assert "from runs of 2 and 3 shards" in err and len(err.strip().splitlines()) == 1
    stale.unlink()
    # the scene file changed since the shards ran (another scene with as many Gaussians)
    ply = scene / "point_cloud.ply"
    ply.write_bytes(ply.read_bytes() + b"\n")
    assert lift_main(["merge", str(scene), "--features", "rgb"]) == 2
    err = capsys.readouterr().err
    assert "lifted from another scene than" in err and str(ply) in err
    assert not (out / "features_rgb.safetensors").exists()
