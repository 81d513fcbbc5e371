"""Graph diffusion (lift.diffusion): each fast stage against its slow twin, on the demo tabletop's
surfaces at ~3k Gaussians (kNN k = 16, the `--diffuse` default)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omnivision.lift.diffusion import (
    adjacency,
    diffuse,
    diffuse_reference,
    edge_weights,
    fill_unseen,
    knn_graph,
)
from omnivision.scenes.demo import build_demo_gaussians


@pytest.fixture(scope="module")
def tabletop():
    """About 3,000 Gaussians on the demo's surfaces, their object ids and their kNN graph."""
    scene = build_demo_gaussians(spacing=0.017)
    return scene.means, scene.extras["object_id"].long(), knn_graph(scene.means, 16)


def formula_weights(graph, features, unary=None):
    """A_ij written out edge by edge: exp(−‖f̂_i − f̂_j‖² / 2σ²)·√(P_i P_j), σ = median distance."""
    f = F.normalize(features.float(), dim=-1)
    dist = (f[:, None, :] - f[graph.indices]).norm(dim=-1)
    sigma = dist.median().clamp_min(1e-6)
    weights = torch.exp(-(dist**2) / (2 * sigma**2))
    if unary is not None:
        weights = weights * torch.sqrt(unary[:, None] * unary[graph.indices])
    return weights


def test_knn_graph_matches_brute_force(tabletop):
    means, _, graph = tabletop
    brute = knn_graph(means, 16, backend="torch")
    assert torch.equal(graph.indices.sort(1).values, brute.indices.sort(1).values)
    torch.testing.assert_close(graph.distances, brute.distances, atol=1e-6, rtol=1e-5)
    listed = (means[:, None] - means[graph.indices]).norm(dim=-1)
    torch.testing.assert_close(graph.distances, listed, atol=1e-6, rtol=1e-5)


def test_duplicate_centres_are_each_others_neighbour_not_their_own(tabletop):
    means = tabletop[0][:500]
    graph = knn_graph(torch.cat([means, means]), 4)
    rows = torch.arange(1000)
    assert not bool((graph.indices == rows[:, None]).any())
    twin = (rows + 500) % 1000
    assert bool((graph.indices == twin[:, None]).any(1).all())
    assert bool((graph.distances[:, 0] == 0).all())


def test_edge_weights_of_smooth_features_match_the_formula(tabletop):
    """Colour-like features (each object's colour plus 1% noise): neighbours are nearly equal,
    σ² is ~1e-3, and fp32 rounding of ‖f̂_i‖² + ‖f̂_j‖² − 2 f̂_i·f̂_j would move weights by
    1e-4 (measured): to 1e-5."""
    means, ids, graph = tabletop
    g = torch.Generator().manual_seed(3)
    colours = torch.rand(8, 3, generator=g)[ids] + 0.01 * torch.randn(len(ids), 3, generator=g)
    torch.testing.assert_close(
        edge_weights(graph, colours), formula_weights(graph, colours), atol=1e-5, rtol=1e-5
    )


def test_edge_weights_match_the_formula(tabletop):
    """Random 16-dim features (σ of order 1, the fp32 path) and a unary score: to 1e-5."""
    means, _, graph = tabletop
    g = torch.Generator().manual_seed(0)
    features = torch.randn(len(means), 16, generator=g)
    unary = torch.rand(len(means), generator=g)
    torch.testing.assert_close(
        edge_weights(graph, features, unary),
        formula_weights(graph, features, unary),
        atol=1e-5,
        rtol=1e-5,
    )


def test_equal_one_hot_features_join_and_different_ones_do_not(tabletop):
    """One-hot masks: most edges join equal features, the median distance is 0 and σ its floor
    (1e-6), so the kernel is exactly 1 between equal features and 0 between different ones."""
    means, ids, graph = tabletop
    noisy = torch.where(torch.arange(len(ids)) % 10 == 0, (ids + 1) % 8, ids)
    weights = edge_weights(graph, F.one_hot(noisy, 8).float())
    assert torch.equal(weights, (noisy[:, None] == noisy[graph.indices]).float())
    assert torch.equal(weights, formula_weights(graph, F.one_hot(noisy, 8).float()))


def test_adjacency_is_the_symmetrised_row_normalised_graph(tabletop):
    means, _, graph = tabletop
    n = len(means)
    weights = torch.rand(graph.indices.shape, generator=torch.Generator().manual_seed(1))
    dense = torch.zeros(n, n)
    rows = torch.arange(n).repeat_interleave(graph.k)
    cols = graph.indices.reshape(-1)
    dense.index_put_((rows, cols), weights.reshape(-1) / 2, accumulate=True)
    dense.index_put_((cols, rows), weights.reshape(-1) / 2, accumulate=True)
    torch.testing.assert_close(adjacency(graph, weights, normalise=False).to_dense(), dense)
    normalised = adjacency(graph, weights).to_dense()
    torch.testing.assert_close(normalised, dense / dense.sum(1, keepdim=True))
    assert normalised.dtype == torch.float32


@pytest.mark.parametrize("restart, anchored", [(0.0, False), (0.5, False), (0.5, True)])
def test_sparse_diffusion_matches_the_dense_reference(tabletop, restart, anchored):
    """10 iterations (the `--diffuse` default), colour-like 3-dim edge features with a unary
    score; free, restarting and partly anchored: to 1e-5."""
    means, _, graph = tabletop
    g = torch.Generator().manual_seed(2)
    weights = edge_weights(graph, torch.rand(len(means), 3, generator=g), torch.rand(len(means)))
    values = torch.randn(len(means), 4, generator=g)
    seen = torch.rand(len(means), generator=g) > 0.3 if anchored else None
    fast = diffuse(values, adjacency(graph, weights), 10, restart, seen)
    slow = diffuse_reference(values, graph, weights, 10, restart, seen)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_fill_unseen_spreads_from_seen_neighbours():
    points = torch.stack([torch.arange(10.0), torch.zeros(10), torch.zeros(10)], 1)
    values = torch.zeros(10, 1)
    values[:5] = 2.0
    seen = torch.arange(10) < 5
    graph = knn_graph(points, 2)
    filled, left = fill_unseen(values, seen, graph)
    assert left == 0
    assert torch.allclose(filled, torch.full((10, 1), 2.0))


def test_fill_unseen_reports_isolated_clusters():
    """Two far-apart clusters, only the first seen: the second cannot be reached."""
    points = torch.cat([torch.randn(20, 3), torch.randn(20, 3) + 100.0])
    seen = torch.arange(40) < 10
    filled, left = fill_unseen(torch.ones(40, 2) * seen[:, None], seen, knn_graph(points, 4))
    assert left == 20
    assert torch.equal(filled[:20], torch.ones(20, 2))
