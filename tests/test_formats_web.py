# ruff: noqa: F811  (pytest fixtures imported from test_formats, taken as test parameters)
"""The other web formats: glTF with KHR_gaussian_splatting (read and write), .sog (write), .ksplat
(read). Our round trips with the loss per column, and interop with independent implementations:
PlayCanvas splat-transform (writes .glb, reads .sog and .ksplat), trimesh (reads glTF), and
GaussianSplats3D's own encoder (writes .ksplat; tests/tools/create_ksplat.mjs calls it)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_scene
from test_formats import (
    CACHE,
    assert_within,
    by_position,
    column_losses,
    convert,
    read_ply_columns,
    splat_transform,  # noqa: F401  (the fixture; test parameters of that name shadow it)
)

from omnivision.scenes.errors import SceneError
from omnivision.scenes.io_gltf import read_gltf, write_gltf
from omnivision.scenes.io_ksplat import read_ksplat
from omnivision.scenes.io_ply import write_ply
from omnivision.scenes.io_sog import read_sog, write_sog
from omnivision.scenes.load import load_scene

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- glTF ----------------------------------------------------------------------------------------
# float32 throughout (measured on random_scene(2000, sh_degree=3), ours -> ours and splat-transform's
# .glb of the same scene -> ours): positions, log-scales, colours and SH exact; rotations 7.6e-6
# deg and opacity 1.2e-7 (float32 rounding of the quaternion and the sigmoid). Asserted: 2x each.
GLTF_LIMITS = dict(
    positions=0.0, log_scales=0.0, rotations_deg=1.5e-5, colours=0.0, sh_rest=0.0, opacity=2.4e-7
)


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
def test_gltf_round_trip_is_float32_exact_and_keeps_extras(tmp_path, suffix):
    scene = random_scene(2000, sh_degree=3)
    scene.extras = {"object_id": torch.randint(0, 9, (2000,)), "selected": torch.rand(2000) > 0.5}
    back = read_gltf(write_gltf(scene, tmp_path / f"s{suffix}"))
    assert len(back) == 2000 and back.sh_degree == 3
    assert_within(column_losses(scene, back), GLTF_LIMITS, suffix)
    assert torch.equal(back.extras["object_id"], scene.extras["object_id"])
    assert back.extras["object_id"].dtype == torch.int64
    assert torch.equal(back.extras["selected"], scene.extras["selected"])
    assert len(load_scene(tmp_path / f"s{suffix}").gaussians) == 2000  # detected by load_scene
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"s{suffix}"]  # nothing else left


def test_trimesh_reads_our_glb_as_a_coloured_point_cloud(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    scene = random_scene(500, sh_degree=1)
    loaded = trimesh.load(write_gltf(scene, tmp_path / "s.glb"), force="scene")
    clouds = [g for g in loaded.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert len(clouds) == 1 and len(clouds[0].vertices) == 500
    # The file's axes are glTF's (y up): the scene turned a half turn about z.
    np.testing.assert_allclose(clouds[0].vertices, scene.means.numpy() * [-1, -1, 1], atol=1e-6)
    colours = np.asarray(clouds[0].colors)[:, :3] / 255.0  # COLOR_0: the diffuse colour
    assert np.abs(colours - scene.rgb_dc.numpy()).max() <= 0.5 / 255 + 1e-6


def test_we_read_the_glb_splat_transform_writes(splat_transform, tmp_path):
    scene = random_scene(1000, sh_degree=3)
    ply = write_ply(scene, tmp_path / "scene.ply")
    glb = convert(splat_transform, ply, tmp_path / "st.glb")
    back = read_gltf(glb)
    assert len(back) == 1000 and back.sh_degree == 3
    assert_within(column_losses(by_position(scene, back), back), GLTF_LIMITS, "splat-transform glb")


def _glb_with(json_text: str) -> bytes:
    body = json_text.encode() + b" " * (-len(json_text) % 4)
    return (
        struct.pack("<III", 0x46546C67, 2, 20 + len(body))
        + struct.pack("<II", len(body), 0x4E4F534A)
        + body
    )


def test_bad_gltf_files_are_named_with_the_problem(tmp_path):
    good = write_gltf(random_scene(50), tmp_path / "good.glb").read_bytes()
    cases = {
        "cut.glb": (good[: len(good) // 2], "accessor"),
        "text.glb": (b"hello world", "not a binary glTF"),
        "plain.glb": (
            _glb_with('{"asset": {"version": "2.0"}, "meshes": []}'),
            "no mesh primitive carries",
        ),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SceneError) as err:
            read_gltf(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and message in str(err.value), str(
            err.value
        )
        assert "\n" not in str(err.value)


# -- SOG write -----------------------------------------------------------------------------------
# Our writer + reader on random_scene(3000, sh_degree=3) (measured): positions 4.35e-5 (16 bits of
# the log range), log_scales 6.16e-3 and colours 2.30e-3 (256-entry codebooks; splat-transform's
# own .sog of random_scene(1000): 6.1e-3 and 1.5e-3), rotations 0.723 deg (8 bits of each of the
# smallest three), opacity 1.96e-3 (half of 1/255), sh_rest 1.09 (a 2048-entry palette for 3000
# Gaussians of random SH: k-means over noise). Asserted with ~10% margin.
SOG_WRITE_LIMITS = dict(
    positions=4.8e-5,
    log_scales=6.8e-3,
    rotations_deg=0.8,
    colours=2.6e-3,
    sh_rest=1.2,
    opacity=2e-3,
)


def test_sog_round_trip_loss_per_column(tmp_path):
    scene = random_scene(3000, sh_degree=3)
    back = read_sog(write_sog(scene, tmp_path / "s.sog"))
    assert len(back) == 3000 and back.sh_degree == 3
    assert_within(column_losses(scene, back), SOG_WRITE_LIMITS, "sog")
    # A palette as large as the scene holds every Gaussian's SH up to the 8-bit codebook.
    exact = read_sog(write_sog(scene.subset(torch.arange(300)), tmp_path / "p.sog", palette=300))
    assert (
        column_losses(scene.subset(torch.arange(300)), exact)["sh_rest"] < 0.01
    )  # measured 0.0090


def test_splat_transform_reads_the_sog_we_write(splat_transform, tmp_path):
    scene = random_scene(1000, sh_degree=2)
    ours = write_sog(scene, tmp_path / "ours.sog")
    theirs = read_ply_columns(convert(splat_transform, ours, tmp_path / "back.ply"))
    same = column_losses(by_position(read_sog(ours), theirs), theirs)
    assert max(same.values()) < 1e-5, same  # they decode our file as we do


# -- ksplat read ---------------------------------------------------------------------------------
GAUSSIAN_SPLATS_3D = "@mkkellogg/gaussian-splats-3d@0.4.7"


@pytest.fixture(scope="module")
def create_ksplat() -> Path:
    """GaussianSplats3D 0.4.7's ES module (its encoder), installed once with npm beside
    splat-transform in ~/.cache/omnivision. Skips without node/npm; under CI it fails instead."""
    folder = CACHE / "gaussian-splats-3d-0.4.7"
    module = (
        folder / "node_modules/@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js"
    )
    if not module.exists():
        if shutil.which("node") is None or shutil.which("npm") is None:
            message = "node/npm not installed: cannot run GaussianSplats3D's encoder"
            pytest.fail(message) if CI else pytest.skip(message)
        folder.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "i", "-E", "--no-audit", "--no-fund", "--prefix", str(folder)]
        done = subprocess.run(
            [*npm, GAUSSIAN_SPLATS_3D, "three@0.170.0"], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0 or not module.exists():
            message = f"npm could not install {GAUSSIAN_SPLATS_3D}: {done.stderr.strip()[-300:]}"
            pytest.fail(message) if CI else pytest.skip(message)
    return module


TOOL = Path(__file__).parent / "tools" / "create_ksplat.mjs"


def make_ksplat(library: Path, ply: Path, out: Path, level: int, sh_degree: int) -> Path:
    """`ply` encoded by GaussianSplats3D (tests/tools/create_ksplat.mjs calls its encoder)."""
    args = [str(library), str(ply), str(out), str(level), str(sh_degree)]
    run = subprocess.run(["node", str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and out.is_file(), run.stderr[-500:]
    return out


# Measured on random_scene(3000, sh_degree=2) through GaussianSplats3D's encoder and our reader
# (2999 splats: its default alpha threshold drops one below 1/255): level 0 floats exact, colours
# 3.92e-3 and opacity 3.92e-3 (8 bits, floored); level 1 positions 3.8e-5 (16 bits of a 5-unit
# bucket block), log_scales and sh_rest 9.73e-4 (float16), rotations 0.0463 deg (float16); level 2
# sh_rest 9.43e-3 (8 bits over [-1.5, 1.5]). Asserted with ~10% margin.
KSPLAT_LIMITS = {
    0: dict(
        positions=1e-7,
        log_scales=1e-6,
        rotations_deg=1e-3,
        colours=4.3e-3,
        sh_rest=1e-7,
        opacity=4.3e-3,
    ),
    1: dict(
        positions=4.2e-5,
        log_scales=1.07e-3,
        rotations_deg=0.051,
        colours=4.3e-3,
        sh_rest=1.07e-3,
        opacity=4.3e-3,
    ),
    2: dict(
        positions=4.2e-5,
        log_scales=1.07e-3,
        rotations_deg=0.051,
        colours=4.3e-3,
        sh_rest=1.04e-2,
        opacity=4.3e-3,
    ),
}


@pytest.mark.parametrize("level", [0, 1, 2])
def test_we_read_the_ksplat_gaussian_splats_3d_writes(
    create_ksplat, splat_transform, tmp_path, level
):
    scene = random_scene(3000, sh_degree=2)
    ply = write_ply(scene, tmp_path / "scene.ply")
    path = make_ksplat(create_ksplat, ply, tmp_path / f"l{level}.ksplat", level, 2)
    back = read_ksplat(path)
    assert len(back) == 2999 and back.sh_degree == 2  # one splat under its alpha threshold
    assert_within(
        column_losses(by_position(scene, back), back), KSPLAT_LIMITS[level], f"level {level}"
    )
    assert len(load_scene(path).gaussians) == 2999  # detected by load_scene
    # splat-transform's .ksplat reader decodes the same file to the same values.
    theirs = read_ply_columns(convert(splat_transform, path, tmp_path / f"l{level}.ply"))
    same = column_losses(by_position(back, theirs), theirs)
    assert max(same.values()) < 1e-4, same


def test_bad_ksplat_files_are_named_with_the_problem(create_ksplat, tmp_path):
    ply = write_ply(random_scene(500, sh_degree=0), tmp_path / "scene.ply")
    good = make_ksplat(create_ksplat, ply, tmp_path / "good.ksplat", 1, 0).read_bytes()
    cases = {
        "short.ksplat": (good[:100], "100 bytes: too short for a .ksplat"),
        "cut.ksplat": (good[: len(good) - 500], "section 0 reaches past the end of the file"),
        "version.ksplat": (
            bytes([7, 0]) + good[2:],
            "not a .ksplat this reader knows (version 7.0)",
        ),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SceneError) as err:
            read_ksplat(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: {message}"), str(err.value)


def test_export_command_writes_sog_and_gltf_with_their_object_ids(tmp_path):
    from omnivision.scenes.cli import export_main

    scene = random_scene(400, sh_degree=1)
    scene.extras = {"object_id": torch.arange(400) % 7}
    source = write_ply(scene, tmp_path / "in.ply")
    for name in ("out.sog", "out.glb", "out.gltf"):
        assert export_main([str(source), str(tmp_path / name)], "omnivision export") == 0
        back = load_scene(tmp_path / name).gaussians
        assert len(back) == 400
        # .glb/.gltf carry them as `_OBJECT_ID` attributes, .sog in a sidecar beside it; both in
        # the file's order, which for these writers is the scene's.
        assert torch.equal(back.extras["object_id"].long(), scene.extras["object_id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.ply",
        "out.glb",
        "out.gltf",
        "out.sog",
        "out.sog.semantics.json",
        "out.sog.semantics.safetensors",
    ]
