"""Graph diffusion on Gaussians (LUDVIG eq. 2-3).

A kNN graph on Gaussian centres; edge weights

    A_ij = 1[j ∈ kNN(i)] · S_f(f_i, f_j) · sqrt(P(f_i) P(f_j)),

with S_f a Gaussian kernel on the distance of L2-normalised features (bandwidth relative to the
median edge distance) and P an optional unary score in [0, 1]. Diffusion is power iteration
g <- Â g with the row-normalised Â (each step a weighted neighbour average), optionally with a
restart towards g_0. Sparse CSR matrices throughout: 1M Gaussians x k=16 is 16M edges (~200 MB).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

CHUNK = 1 << 16


@dataclass
class KnnGraph:
    """For each Gaussian its k nearest other Gaussians (by centre) and their distances."""

    indices: Int[Tensor, "N K"]
    distances: Float[Tensor, "N K"]

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def knn_graph(
    points: Float[Tensor, "N 3"],
    k: int = 16,
    backend: Literal["auto", "scipy", "torch-cluster", "torch"] = "auto",
) -> KnnGraph:
    """k nearest neighbours (self excluded). auto: torch-cluster on CUDA when installed, else
    scipy's cKDTree on all cores. `torch` is the brute-force slow twin (small N only)."""
    n = points.shape[0]
    k = min(k, n - 1)
    if backend == "auto":
        backend = "scipy"
        if points.is_cuda:
            try:
                import torch_cluster  # noqa: F401

                backend = "torch-cluster"
            except ImportError:
                pass
    if backend == "torch":
        d = torch.cdist(points.float(), points.float())
        d.fill_diagonal_(float("inf"))
        dist, idx = torch.topk(d, k, largest=False)
        return KnnGraph(idx, dist)
    if backend == "torch-cluster":
        from torch_cluster import knn

        edge = knn(points, points, k + 1)  # includes self
        target = edge[1].reshape(n, k + 1)[:, 1:]
        dist = (points[:, None] - points[target]).norm(dim=-1)
        return KnnGraph(target, dist)
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]

    pts = points.detach().cpu().double().numpy()
    dist, idx = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    return KnnGraph(
        torch.from_numpy(idx[:, 1:].astype(np.int64)), torch.from_numpy(dist[:, 1:]).float()
    )


def edge_weights(
    graph: KnnGraph,
    features: Float[Tensor, "N D"] | None = None,
    unary: Float[Tensor, "N"] | None = None,
    bandwidth: float = 1.0,
) -> Float[Tensor, "N K"]:
    """A_ij on the kNN edges: feature similarity kernel (1 without features) x sqrt(P_i P_j)."""
    n, k = graph.indices.shape
    weights = torch.ones(n, k)
    if features is not None:
        f = F.normalize(features.float(), dim=-1)
        dist = torch.empty(n, k)
        for start in range(0, n, CHUNK):  # (chunk, K, D) at a time, not (N, K, D)
            rows = slice(start, start + CHUNK)
            dist[rows] = (f[rows, None, :] - f[graph.indices[rows]]).norm(dim=-1)
        sigma = bandwidth * dist.median().clamp_min(1e-6)
        weights = torch.exp(-(dist**2) / (2 * sigma**2))
    if unary is not None:
        p = unary.float().clamp(0, 1)
        weights = weights * torch.sqrt(p[:, None] * p[graph.indices])
    return weights


def adjacency(graph: KnnGraph, weights: Float[Tensor, "N K"], normalise: bool = True) -> Tensor:
    """Row-normalised sparse CSR matrix Â (N, N) of the weighted kNN graph, symmetrised."""
    n, k = graph.indices.shape
    rows = torch.arange(n).repeat_interleave(k)
    cols = graph.indices.reshape(-1)
    vals = weights.reshape(-1).float()
    # Symmetrise: an edge in either direction connects both Gaussians.
    coo = torch.sparse_coo_tensor(
        torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
        torch.cat([vals, vals]) / 2,
        (n, n),
        check_invariants=False,
    ).coalesce()
    if normalise:
        degree = torch.sparse.sum(coo, dim=1).to_dense().clamp_min(1e-12)
        idx = coo.indices()
        coo = torch.sparse_coo_tensor(
            idx, coo.values() / degree[idx[0]], (n, n), check_invariants=False
        )
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it works, and it is fast
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


def diffuse(
    values: Float[Tensor, "N C"],
    matrix: Tensor,
    iterations: int = 20,
    restart: float = 0.0,
    anchored: Bool[Tensor, "N"] | None = None,
) -> Float[Tensor, "N C"]:
    """Power iteration g <- (1 - restart) Â g + restart g_0; with `anchored`, only those rows
    restart (the rest, e.g. Gaussians no view saw, are free and settle to the weighted mean of
    their neighbours)."""
    g0 = values.float()
    g = g0
    for _ in range(iterations):
        g = matrix @ g
        if restart > 0 and anchored is None:
            g = (1 - restart) * g + restart * g0
        elif restart > 0:
            g[anchored] = (1 - restart) * g[anchored] + restart * g0[anchored]
    return g


def diffuse_reference(
    values: Tensor, graph: KnnGraph, weights: Tensor, iterations: int, restart: float = 0.0
) -> Tensor:
    """Slow twin of `adjacency` + `diffuse`: dense matrix, explicit symmetrisation, a loop."""
    n = values.shape[0]
    dense = torch.zeros(n, n)
    for i in range(n):
        for j, w in zip(graph.indices[i].tolist(), weights[i].tolist(), strict=True):
            dense[i, j] += w / 2
            dense[j, i] += w / 2
    dense = dense / dense.sum(1, keepdim=True).clamp_min(1e-12)
    g0 = values.float()
    g = g0
    for _ in range(iterations):
        g = (1 - restart) * (dense @ g) + restart * g0 if restart > 0 else dense @ g
    return g


def fill_unseen(
    values: Float[Tensor, "N C"], seen: Bool[Tensor, "N"], graph: KnnGraph, max_iterations: int = 50
) -> tuple[Float[Tensor, "N C"], int]:
    """Give Gaussians no view saw the average of their filled neighbours, spreading inward from
    the seen ones; returns the values and how many stayed unfilled (isolated clusters)."""
    out = values.clone().float()
    known = seen.clone()
    for _ in range(max_iterations):
        if bool(known.all()):
            break
        nb_known = known[graph.indices].float()  # (N, K)
        count = nb_known.sum(1)
        update = ~known & (count > 0)
        if not bool(update.any()):
            break
        rows = torch.nonzero(update).squeeze(1)
        nb = graph.indices[rows]
        out[rows] = (out[nb] * nb_known[rows, :, None]).sum(1) / count[rows, None]
        known = known | update
    return out, int((~known).sum())
