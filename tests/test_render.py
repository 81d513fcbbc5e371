"""The torch renderer against its dense twin, gsplat's pure-torch projection/SH, and gsplat on CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import random_scene

from omnivision.scenes.cameras import orbit_cameras
from omnivision.scenes.gaussians import covariances
from omnivision.scenes.reference import render_dense_reference
from omnivision.scenes.render import RenderConfig, accumulate, blend_weights, project_view, render
from omnivision.scenes.sh import eval_sh

# float32 compositing of the same formula in a different order: differences are rounding only.
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture
def small():
    scene = random_scene(250, sh_degree=3, seed=1)
    cameras = orbit_cameras([0, 0, 0], 3.0, 4, 25.0, 72, 56, 55.0)
    features = torch.randn(250, 6, generator=torch.Generator().manual_seed(2))
    return scene, cameras, features


def assert_close(fast, ref, names=("rgb", "depth", "alpha", "features")):
    for name in names:
        a, b = getattr(fast, name), getattr(ref, name)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=name)


def test_torch_renderer_matches_dense_reference(small):
    scene, cameras, features = small
    config = RenderConfig(background=(0.2, 0.3, 0.4))
    fast = render(scene, cameras, features, config)
    ref = render_dense_reference(scene, cameras, features, config)
    assert 0.2 < fast.alpha.mean() < 0.95  # the views actually see the Gaussians
    assert_close(fast, ref)


@pytest.mark.parametrize("chunk", [256, 3000])
def test_tiny_memory_budget_gives_the_same_image(small, chunk):
    """A budget smaller than one tile forces tiles to be split in depth with carried transmittance."""
    scene, cameras, features = small
    a = render(scene, cameras, features)
    b = render(scene, cameras, features, RenderConfig(chunk_elements=chunk))
    assert_close(b, a)


def test_opaque_scene_terminates_like_the_reference():
    scene = random_scene(400, sh_degree=0, seed=5, spread=0.3)
    scene.opacity_logits.fill_(6.0)  # alpha ~0.998: pixels saturate after a few Gaussians
    cameras = orbit_cameras([0, 0, 0], 2.0, 2, 10.0, 64, 64, 60.0)
    fast = render(scene, cameras, config=RenderConfig(chunk_elements=2048))
    ref = render_dense_reference(scene, cameras)
    assert (fast.alpha > 0.999).float().mean() > 0.05  # many pixels hit the transmittance stop
    assert_close(fast, ref, ("rgb", "depth", "alpha"))


@pytest.mark.parametrize("tile_size", [8, 16])
def test_sparse_weights_give_render_and_lift(small, tile_size):
    """W·f equals the rendered features and Wᵀ·F equals the streaming accumulation."""
    scene, cameras, features = small
    config = RenderConfig(tile_size=tile_size)
    weights = blend_weights(scene, cameras, 1, config)
    W = weights.to_sparse()
    rendered = render(scene, cameras[1], features, config).features[0]
    torch.testing.assert_close(
        (W @ features).reshape(rendered.shape), rendered, atol=ATOL, rtol=RTOL
    )

    feature_map = torch.randn(cameras.heights[1], cameras.widths[1], 5)
    sums, weight_sums = accumulate(scene, cameras, 1, feature_map, config)
    torch.testing.assert_close(sums, W.t() @ feature_map.reshape(-1, 5), atol=1e-4, rtol=RTOL)
    torch.testing.assert_close(weight_sums, torch.sparse.sum(W, 0).to_dense(), atol=1e-5, rtol=RTOL)


@pytest.mark.parametrize("chunk_elements", [1 << 22, 64])
def test_features_are_differentiable_and_the_gradient_is_the_lift(small, chunk_elements):
    """d/df Σ_p render(f)(p)·F(p) = Σ_p w_i(p) F(p): the autograd view of aggregation (LUDVIG).
    With a graph the blocks are summed a batch at a time; 64 elements per block gives one block
    per Gaussian slice, so several batches (and the in-place no-graph sum must agree)."""
    scene, cameras, features = small
    config = RenderConfig(rgb=False, chunk_elements=chunk_elements)
    f = features.clone().requires_grad_(True)
    feature_map = torch.randn(cameras.heights[2], cameras.widths[2], 6)
    out = render(scene, cameras[2], f, config)
    (out.features[0] * feature_map).sum().backward()
    sums, _ = accumulate(scene, cameras, 2, feature_map)
    torch.testing.assert_close(f.grad, sums, atol=1e-4, rtol=RTOL)
    with torch.no_grad():
        plain = render(scene, cameras[2], features, config)
    torch.testing.assert_close(out.features.detach(), plain.features, atol=ATOL, rtol=RTOL)


def test_projection_matches_gsplat_pure_torch_reference(small):
    from gsplat.cuda._torch_impl import _fully_fused_projection

    scene, cameras, _ = small
    w, h = cameras.widths[0], cameras.heights[0]
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        scene.means, covariances(scene), cameras.world_to_camera[:1], cameras.K[:1], w, h
    )
    ours = project_view(scene, cameras, 0, RenderConfig())
    seen = radii[0].amax(-1) > 0
    both = seen & ours.visible
    assert both.sum() > 100
    torch.testing.assert_close(ours.means2d[both], means2d[0][both], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.depths[both], depths[0][both])
    torch.testing.assert_close(ours.conics[both], conics[0][both], atol=1e-5, rtol=1e-4)


def test_sh_matches_gsplat_pure_torch_reference():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(3)
    coeffs = torch.randn(100, 16, 3, generator=g)
    dirs = torch.randn(100, 3, generator=g)
    for degree in range(4):
        torch.testing.assert_close(
            eval_sh(degree, coeffs, dirs),
            _spherical_harmonics(degree, dirs, coeffs),
            atol=1e-5,
            rtol=1e-5,
        )


def test_depth_is_the_distance_along_the_optical_axis():
    """A single large opaque Gaussian straight ahead at z = 2 renders depth 2 at its centre."""
    scene = random_scene(1, sh_degree=0)
    scene.means[:] = torch.tensor([[0.0, 0.0, 0.0]])
    scene.log_scales[:] = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    scene.opacity_logits[:] = 5.0
    cameras = orbit_cameras([0, 0, 0], 2.0, 1, 0.0, 33, 33, 60.0)
    out = render(scene, cameras)
    assert out.depth[0, 16, 16].item() == pytest.approx(2.0, abs=1e-4)
    assert out.alpha[0, 16, 16].item() == pytest.approx(
        torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-4
    )
    assert out.alpha[0, 0, 0] < out.alpha[0, 16, 16]


def test_mixed_image_sizes_are_refused_with_advice(small):
    from omnivision.scenes.cameras import Cameras

    scene, cameras, _ = small
    mixed = Cameras.concat([cameras[0], cameras[1].resized(40, 30)])
    with pytest.raises(ValueError, match="one at a time"):
        render(scene, mixed)


@pytest.mark.gpu
def test_gsplat_backend_matches_torch_backend(small):
    scene, cameras, features = small
    cuda = scene.to("cuda")
    gs = render(cuda, cameras, features.cuda(), RenderConfig(backend="gsplat"))
    ours = render(scene, cameras, features, RenderConfig(backend="torch"))
    # gsplat caps the splat extent at 3.33σ and evaluates in a different order.
    for name in ("rgb", "alpha", "features"):
        torch.testing.assert_close(
            getattr(gs, name).cpu(), getattr(ours, name), atol=2e-3, rtol=1e-2
        )
