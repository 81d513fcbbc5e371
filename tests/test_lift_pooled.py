"""Grid-pooled aggregation against its slow twin (the map upsampled to the render, per pixel):
same sums and weights to 1e-5 on the demo scene and the real donut, for maps of several grid sizes
(square, non-square, odd, one cell, the render's own size, finer than the render), label maps, and
through `lift_scene`.

Each render of these scenes costs about a second on one core whatever its size (every Gaussian is
binned and composited), so the pixel references of several maps come from one `accumulate` call:
their upsampled maps side by side as channels (the pixel path is per channel)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import data_path

from omnivision.lift import aggregate
from omnivision.lift.aggregate import LabelMap, choose_path, lift_view, resize_feature_map
from omnivision.lift.pipeline import LiftConfig, lift_scene
from omnivision.lift.pooling import bilinear_matrix, pool_weights
from omnivision.scenes.load import Scene, load_scene
from omnivision.scenes.render import accumulate

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = RTOL = 1e-5  # fp32: the same sums added in another order


@pytest.fixture(scope="module")
def demo(demo_dir):
    """The demo scene (29,298 Gaussians) at 96x72."""
    loaded = load_scene(demo_dir)
    cameras = loaded.cameras.resized(96, 72)
    return Scene(loaded.gaussians, cameras, loaded.root, loaded.gaussians_file)


@pytest.fixture(scope="module")
def donut():
    """The real donut (45,624 Gaussians), two orbit views at 80x64."""
    loaded = load_scene(data_path("donut"), orbit_views=2)
    cameras = loaded.cameras.resized(80, 64)
    return Scene(loaded.gaussians, cameras, loaded.root, loaded.gaussians_file)


def pixel_lifts(scene: Scene, view: int, maps: list[torch.Tensor]) -> list[tuple]:
    """The pixel path of every map (each resized to the render), in one `accumulate` call."""
    size = (scene.cameras.heights[view], scene.cameras.widths[view])
    resized = torch.cat([resize_feature_map(m, size) for m in maps], dim=-1)
    sums, weights = accumulate(scene.gaussians, scene.cameras, view, resized)
    return [(s, weights) for s in sums.split([m.shape[-1] for m in maps], dim=1)]


def assert_same_lift(pooled, pixel):
    torch.testing.assert_close(pooled[0], pixel[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(pooled[1], pixel[1], atol=ATOL, rtol=RTOL)
    assert int(pixel[1].gt(0).sum()) > 1000  # the view sees the scene


def random_maps(grids, channels=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*grid, channels, generator=g) for grid in grids]


@pytest.mark.parametrize(("size_in", "size_out"), [(12, 48), (7, 53), (33, 40), (5, 5), (60, 48)])
def test_taps_are_the_bilinear_resize(size_in, size_out):
    """The taps are F.interpolate's (border clamping included): resizing with them equals
    `resize_feature_map`, up, down and at the same size."""
    x = torch.randn(size_in, size_in + 3, 4, generator=torch.Generator().manual_seed(0))
    ys, xs = bilinear_matrix(size_out, size_in), bilinear_matrix(size_out + 5, size_in + 3)
    resized = torch.einsum("Yy,Xx,yxd->YXd", ys, xs, x)
    expected = resize_feature_map(x, (size_out, size_out + 5))
    torch.testing.assert_close(resized, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "view", "grids"),
    [
        ("demo", 1, [(9, 12), (7, 11), (1, 1)]),  # 8-pixel cells, odd non-square, one cell
        ("donut", 0, [(16, 20), (13, 5)]),  # 4-pixel cells, odd with cells taller than wide
    ],
)
def test_pooled_lift_equals_the_pixel_path(request, name, view, grids):
    """Grids coarser than the render take the pooled path by default, and it gives the pixel
    path's sums and weights."""
    scene = request.getfixturevalue(name)
    render_size = (scene.cameras.heights[view], scene.cameras.widths[view])
    maps = random_maps(grids)
    for feature_map, pixel in zip(maps, pixel_lifts(scene, view, maps), strict=True):
        assert choose_path(feature_map.shape[:2], render_size) == "pooled"
        assert_same_lift(lift_view(scene.gaussians, scene.cameras, view, feature_map), pixel)


def test_pooled_matrix_is_the_sparse_lift_operator(donut):
    """P = Wᵀ U as a torch sparse CSR matrix: P F is the lift, P 1 the weight sums."""
    pooled = pool_weights(donut.gaussians, donut.cameras, 1, (8, 10))
    (feature_map,) = random_maps([(8, 10)], channels=4, seed=2)
    (pixel,) = pixel_lifts(donut, 1, [feature_map])
    matrix = pooled.matrix()
    sums = torch.sparse.mm(matrix, feature_map.reshape(80, 4))
    assert_same_lift((sums, pooled.weight_sums), pixel)
    row_sums = torch.sparse.mm(matrix, torch.ones(80, 1))[:, 0]
    torch.testing.assert_close(row_sums, pooled.weight_sums, atol=ATOL, rtol=RTOL)


def test_maps_at_or_above_the_render_size_take_the_pixel_path_or_match_it(demo):
    """At the render's size (or finer on an axis) auto goes per pixel; forcing the pooled path
    there still gives the same sums (identity taps, or taps that average down)."""
    maps = random_maps([(72, 96), (80, 90)], channels=3, seed=1)
    for feature_map, pixel in zip(maps, pixel_lifts(demo, 0, maps), strict=True):
        assert choose_path(feature_map.shape[:2], (72, 96)) == "pixel"
        assert_same_lift(pixel, lift_view(demo.gaussians, demo.cameras, 0, feature_map))
        pooled = lift_view(demo.gaussians, demo.cameras, 0, feature_map, path="pooled")
        assert_same_lift(pooled, pixel)


def test_label_maps_lift_as_their_one_hot_maps(demo):
    """Mask lifting: a `LabelMap` at the render's size or on a coarser grid lifts to the sums of
    its one-hot map through the pixel path, without forming the one-hot map."""
    g = torch.Generator().manual_seed(3)
    label_maps = [LabelMap(torch.randint(0, 7, s, generator=g), 9) for s in [(72, 96), (17, 23)]]
    pixels = pixel_lifts(demo, 0, [m.one_hot() for m in label_maps])
    for label_map, pixel in zip(label_maps, pixels, strict=True):
        pooled = lift_view(demo.gaussians, demo.cameras, 0, label_map)
        assert_same_lift(pooled, pixel)
        assert float(pooled[0][:, 7:].abs().max()) == 0.0  # two labels absent: zero columns


def test_lift_scene_features_are_unchanged(demo, monkeypatch):
    """The pipeline with the colour backend (a patch grid, coarser than the render): the default
    pooled aggregation gives the features, weights and coverage of the pixel path."""
    grids = []
    original = aggregate.pool_weights
    monkeypatch.setattr(
        aggregate, "pool_weights", lambda *a, **k: grids.append(a[3]) or original(*a, **k)
    )
    common = dict(features="colour", views=(0, 9), source="images", device="cpu")
    fast = lift_scene(demo, LiftConfig(**common))
    assert len(grids) == 2 and grids[0][0] < 72  # both views pooled on the patch grid
    slow = lift_scene(demo, LiftConfig(**common, aggregation="pixel"))
    torch.testing.assert_close(fast.features, slow.features, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(fast.weights, slow.weights, atol=ATOL, rtol=RTOL)
    assert torch.equal(fast.seen, slow.seen) and fast.coverage > 0.3


def test_label_map_lift_scene_and_refinement(demo):
    """masks:DIR hands the pipeline `LabelMap`s: lifted like their one-hot maps, and refined from
    them (kept as labels) with the same starting loss."""
    labels = torch.randint(0, 4, (18, 24), generator=torch.Generator().manual_seed(4))
    as_labels = (lambda _i, _v: LabelMap(labels, 4), "masks")
    as_one_hot = (lambda _i, _v: F.one_hot(labels, 4).float(), "masks")
    config = LiftConfig(views=(3,), source="images", device="cpu", refine=1)
    fast = lift_scene(demo, config, feature_fn=as_labels)
    slow = lift_scene(demo, LiftConfig(**{**config.__dict__, "aggregation": "pixel"}), as_one_hot)
    torch.testing.assert_close(fast.sums.sums, slow.sums.sums, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(fast.sums.weights, slow.sums.weights, atol=ATOL, rtol=RTOL)
    start = [float(r.notes[-1].split("loss ")[1].split(" ->")[0]) for r in (fast, slow)]
    assert start[0] == pytest.approx(start[1], rel=1e-3)
