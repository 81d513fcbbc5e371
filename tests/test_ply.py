"""INRIA ply and .splat files: exact round trips, real exports, and bad files named in errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path, random_scene
from plyfile import PlyData, PlyElement

from omnivision.scenes.errors import SceneError
from omnivision.scenes.io_ply import read_ply, read_splat, write_ply, write_splat

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def assert_scenes_equal(a, b):
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.extras.keys() == b.extras.keys()
    for key in a.extras:
        assert torch.equal(a.extras[key], b.extras[key]), key


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    scene = random_scene(300, sh_degree=degree)
    scene.extras["object_id"] = torch.arange(300, dtype=torch.int32) % 7
    scene.extras["feature"] = torch.randn(300, 4)
    first = read_ply(write_ply(scene, tmp_path / "a.ply"))
    assert first.sh_degree == degree
    assert_scenes_equal(first, scene)
    second = read_ply(write_ply(first, tmp_path / "b.ply"))
    assert_scenes_equal(second, first)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_ply_inria_f_rest_layout_is_channel_major(tmp_path):
    """f_rest_{c*(K-1)+k} holds channel c of coefficient k+1, as the INRIA trainer writes it."""
    scene = random_scene(5, sh_degree=1)
    write_ply(scene, tmp_path / "s.ply")
    vertex = PlyData.read(str(tmp_path / "s.ply"))["vertex"]
    assert np.allclose(vertex["f_rest_0"], scene.sh[:, 1, 0].numpy())
    assert np.allclose(vertex["f_rest_1"], scene.sh[:, 2, 0].numpy())
    assert np.allclose(vertex["f_rest_3"], scene.sh[:, 1, 1].numpy())


def test_real_donut_export_loads_with_degree_0_and_unit_quaternions():
    scene = read_ply(data_path("donut", "fused.ply"))
    assert len(scene) == 45624
    assert scene.sh_degree == 0
    norms = scene.quats.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    # Values other than quaternions are kept as stored (SOURCE.md ranges).
    assert scene.means[:, 0].min().item() == pytest.approx(-0.1032, abs=1e-4)
    assert scene.log_scales[:, 0].mean().item() == pytest.approx(-7.14, abs=0.01)


def test_splat_round_trip_within_format_precision(tmp_path):
    scene = random_scene(500, sh_degree=0)
    scene.sh = scene.sh.clamp(-1.7, 1.7)  # colours the 8-bit format can hold
    back = read_splat(write_splat(scene, tmp_path / "s.splat"))
    assert (tmp_path / "s.splat").stat().st_size == 32 * 500
    # .splat reorders Gaussians (largest first); match them by position.
    order_a = torch.argsort(scene.means[:, 0])
    order_b = torch.argsort(back.means[:, 0])
    assert torch.equal(scene.means[order_a], back.means[order_b])
    assert torch.allclose(scene.scales[order_a], back.scales[order_b], rtol=1e-6)
    assert torch.allclose(scene.rgb_dc[order_a], back.rgb_dc[order_b], atol=1 / 255)
    assert torch.allclose(scene.opacities[order_a], back.opacities[order_b], atol=1 / 255)
    dots = (scene.quats[order_a] * back.quats[order_b]).sum(-1).abs()
    assert dots.min() > 0.99


def _write_vertex(path, **columns):
    n = len(next(iter(columns.values())))
    data = np.empty(n, dtype=[(k, "<f4") for k in columns])
    for k, v in columns.items():
        data[k] = v
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


def test_truncated_ply_is_named(tmp_path):
    good = write_ply(random_scene(100), tmp_path / "good.ply").read_bytes()
    bad = tmp_path / "cut.ply"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(SceneError, match=r"cut\.ply: truncated or corrupt PLY"):
        read_ply(bad)


def test_non_gaussian_ply_is_named(tmp_path):
    path = tmp_path / "points.ply"
    _write_vertex(path, x=[0.0, 1.0], y=[0.0, 1.0], z=[0.0, 1.0])
    with pytest.raises(
        SceneError, match=r"points\.ply: not a 3DGS ply: missing vertex properties f_dc_0"
    ):
        read_ply(path)


def test_real_coloured_point_cloud_is_not_a_gaussian_ply():
    with pytest.raises(SceneError, match="color.ply: not a 3DGS ply"):
        read_ply(data_path("donut", "color.ply"))


def test_missing_scale_properties_are_listed(tmp_path):
    cols = {k: np.zeros(3) for k in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]}
    cols.update({f"rot_{i}": np.ones(3) for i in range(4)})
    _write_vertex(tmp_path / "noscale.ply", **cols)
    with pytest.raises(
        SceneError, match="incomplete 3DGS ply: missing vertex properties scale_0, scale_1, scale_2"
    ):
        read_ply(tmp_path / "noscale.ply")


def test_nan_values_are_counted_and_named(tmp_path):
    scene = random_scene(50)
    scene.means[[3, 7], 1] = float("nan")
    write_ply(scene, tmp_path / "nan.ply")
    with pytest.raises(
        SceneError, match=r"nan\.ply: 2 Gaussians have NaN or infinite values in 'means'"
    ):
        read_ply(tmp_path / "nan.ply")


def test_failed_write_leaves_no_file(tmp_path):
    scene = random_scene(10)
    scene.extras["bad"] = torch.zeros(10, dtype=torch.complex64)  # plyfile cannot store complex
    with pytest.raises(Exception):  # noqa: B017 - any failure will do; the point is what remains
        write_ply(scene, tmp_path / "out.ply")
    assert list(tmp_path.iterdir()) == []
