"""Instance selection: "this object" rather than "everything like it".

A pick's scores (N,) say how much each Gaussian is *like* the clicked one: every copy of an object,
and any surface of similar appearance, scores high. The instance is the part of that selection
*connected to the seed* (the clicked Gaussian) on the kNN graph of the centres, through edges
between Gaussians of similar colour. The graph is `lift.diffusion.adjacency(graph, W, normalise=
False)`: A = (W + W^T) / 2, W the kNN edge weights (`lift.diffusion.edge_weights`, by default on
the Gaussians' own SH DC colours, which are sharp where lifted 2D features are blurred by the
model's patches), built once per scene (`instance_adjacency`). An edge joins one instance when
a_ij >= `min_edge_weight`.

- `component`: the seed's connected piece of the Gaussians above the threshold (seeds always in).
- `graphcut`: that piece is refined by GaussianCut's energy (Jain et al., NeurIPS 2024),
  minimised exactly by one max-flow (PyMaxflow's Boykov-Kolmogorov solver),

      E(x) = sum_i D_i(x_i) + lambda * sum_{i<j} a_ij [x_i != x_j],   x_seed = 1 (hard-linked),

  D_i(1) = max(t - s_i, 0) / std(s), D_i(0) = max(s_i - t, 0) / std(s) (the unary: scores s
  against the threshold t, in units of their spread; the pairwise term: a boundary through
  similar neighbours costs). It takes back a Gaussian whose score fell just under the threshold
  when its similar neighbours are in, and drops specks. The cut runs on the piece and `rings`
  rings of joined neighbours around it (the rest stays background: edges into it are sink
  links), then the seed's connected piece of the cut is kept.

The cut alone is not instance-aware (two identical mugs both score high, so both want in);
connectivity is. Both methods walk out from the seed (a breadth-first search over A's rows), so
a click costs what its instance has, not what everything like it has. Pure functions on tensors,
no I/O; `seed_component_reference` (a BFS in Python over the kNN lists) and `graph_cut_reference`
(all 2^n labellings) are the slow twins (tests/test_instance.py).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.lift.diffusion import KnnGraph, adjacency, edge_weights

from .selection import Selection

InstanceMethod = Literal["graphcut", "component"]
INSTANCE_METHODS: tuple[InstanceMethod, ...] = ("graphcut", "component")
EdgeSource = Literal["colour", "features", "both"]


@dataclass(frozen=True)
class InstanceConfig:
    """How an instance is cut from a pick's scores."""

    method: InstanceMethod = "graphcut"
    """graphcut: GaussianCut's energy (scores vs threshold + lambda x edge weights) by max-flow on
    the seed's piece, then its connected piece; component: the seed's connected piece of the
    Gaussians above the threshold (cheaper, no smoothing)."""
    threshold: float | None = None
    """Score above which a Gaussian is like the seed (None: Otsu's threshold of the scores, as
    `Selection.from_scores`)."""
    pairwise: float = 1.0
    """lambda, the graph cut's pairwise weight: what a boundary through an edge of weight 1 costs,
    in units of the scores' standard deviation (0: the cut is the plain threshold). Larger fills
    holes and drops specks more eagerly (noisy scores), smaller follows the scores."""
    min_edge_weight: float = 0.1
    """An edge joins two Gaussians of one instance when a_ij is at least this (the kernel
    exp(-d^2 / 2 sigma^2), sigma the median edge distance: 0.1 is about 2.1 sigma apart)."""
    edges: EdgeSource = "colour"
    """What the edge weights compare: the Gaussians' colours (SH DC; sharp, one per Gaussian),
    their lifted features (blurred by the 2D model's patches), or both (product)."""
    rings: int = 2
    """graphcut: the cut runs on the seed's piece and this many rings of joined neighbours around
    it; the others stay background."""


def instance_edge_weights(
    graph: KnnGraph,
    colours: Float[Tensor, "N 3"],
    features: Float[Tensor, "N D"] | None = None,
    edges: EdgeSource = "colour",
) -> Float[Tensor, "N K"]:
    """The kNN edge weights W instance selection uses (`lift.diffusion.edge_weights`: a Gaussian
    kernel on the L2-normalised colours and/or features, bandwidth the median edge distance)."""
    if edges == "colour":
        return edge_weights(graph, colours)
    if features is None:
        raise ValueError(f"edges={edges!r} needs lifted features")
    by_features = edge_weights(graph, features)
    return by_features if edges == "features" else by_features.mul_(edge_weights(graph, colours))


def instance_adjacency(
    graph: KnnGraph,
    colours: Float[Tensor, "N 3"],
    features: Float[Tensor, "N D"] | None = None,
    edges: EdgeSource = "colour",
) -> Tensor:
    """A = (W + W^T) / 2 as a sparse CSR tensor (N, N) (`lift.diffusion.adjacency`, not
    normalised): what `instance_selection` walks and cuts. Build it once per scene."""
    weights = instance_edge_weights(graph, colours, features, edges)
    return adjacency(graph, weights, normalise=False).cpu()


def instance_selection(
    scores: Float[Tensor, "N"],
    seeds: Tensor | int | list[int],
    matrix: Tensor,
    config: InstanceConfig | None = None,
) -> Selection:
    """The instance of the seed Gaussian(s) in a pick's `scores`, on the adjacency `matrix`
    (`instance_adjacency`): `config.method`'s mask, connected to a seed through edges of weight
    >= `config.min_edge_weight`. The selection keeps the given scores (for display and ranking);
    its mask is the instance."""
    from omnivision.twod.localize import otsu_threshold

    config = config or InstanceConfig()
    if config.method not in INSTANCE_METHODS:
        raise ValueError(f"instance method {config.method!r} is not one of {INSTANCE_METHODS}")
    scores = torch.as_tensor(scores).detach().float().flatten().cpu()
    if tuple(matrix.shape) != (scores.shape[0],) * 2:
        raise ValueError(f"scores ({scores.shape[0]},) and adjacency {tuple(matrix.shape)}")
    seed_ids = _seed_ids(seeds, scores.shape[0])
    threshold = config.threshold
    if threshold is None:
        threshold = float(otsu_threshold(scores)) if scores.numel() else 0.0
    above = scores > threshold
    above[seed_ids] = True
    piece = seed_component(above, seed_ids, matrix, config.min_edge_weight)
    if config.method == "graphcut":
        band = seed_component(None, piece, matrix, config.min_edge_weight, steps=config.rings)
        cut = graph_cut(scores, seed_ids, matrix, threshold, config.pairwise, band | piece)
        piece = seed_component(cut, seed_ids, matrix, config.min_edge_weight)
    return Selection(scores, piece)


def seed_component(
    mask: Bool[Tensor, "N"] | None,
    seeds: Tensor,
    matrix: Tensor,
    min_edge_weight: float = 0.0,
    steps: int | None = None,
) -> Bool[Tensor, "N"]:
    """The Gaussians of `mask` (None: all) reached from the seeds in it (a mask (N,) or indices)
    through entries of `matrix` (A's, which are > 0) with a_ij >= `min_edge_weight` between
    Gaussians of `mask`: a breadth-first search over the CSR rows, `steps` rings at most (None:
    until nothing new). It reads only the rows of the piece it returns."""
    indptr, columns, values = _csr(matrix)
    n = indptr.shape[0] - 1
    allowed = np.ones(n, dtype=bool) if mask is None else mask.cpu().numpy().astype(bool)
    start = seeds.cpu().numpy()
    start = np.flatnonzero(start) if start.dtype == bool else start.astype(np.int64)
    frontier = np.unique(start[allowed[start]])
    reached = np.zeros(n, dtype=bool)
    reached[frontier] = True
    step = 0
    while frontier.size and (steps is None or step < steps):
        positions = _row_positions(indptr, frontier)
        neighbours = columns[positions]
        joined = (values[positions] >= min_edge_weight) & allowed[neighbours]
        frontier = np.unique(neighbours[joined & ~reached[neighbours]])
        reached[frontier] = True
        step += 1
    return torch.from_numpy(reached)


def graph_cut(
    scores: Float[Tensor, "N"],
    seeds: Tensor,
    matrix: Tensor,
    threshold: float,
    pairwise: float = 1.0,
    band: Bool[Tensor, "N"] | None = None,
) -> Bool[Tensor, "N"]:
    """The labelling x (True = selected) minimising GaussianCut's energy (module docstring) on the
    adjacency `matrix` (A, sparse CSR), with the seeds fixed to 1 and the Gaussians outside `band`
    (default: none) fixed to 0: one max-flow over the band (PyMaxflow's Boykov-Kolmogorov
    solver). An edge between the band and the rest is a sink link of its band end."""
    try:
        import maxflow
    except ImportError as err:  # a dependency, but say what to do if an environment lacks it
        raise ImportError("instance graph cut needs PyMaxflow: pip install PyMaxflow") from err

    s = scores.detach().cpu().double().numpy()
    n = s.shape[0]
    seed_ids = seeds.cpu().numpy()
    inside = np.ones(n, dtype=bool) if band is None else band.cpu().numpy().astype(bool)
    inside[seed_ids] = True
    nodes = np.flatnonzero(inside)
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(nodes.size)
    unary = (s[nodes] - threshold) / max(float(s.std()), 1e-12)
    indptr, columns, values = _csr(matrix)
    positions = _row_positions(indptr, nodes)
    rows = np.repeat(np.arange(nodes.size), indptr[nodes + 1] - indptr[nodes])  # local row
    cols = local[columns[positions]]  # -1: outside the band
    cost = pairwise * values[positions].astype(np.float64)
    pair = rows < cols  # A is symmetric: each pair inside the band once
    to_rest = np.bincount(rows[cols < 0], cost[cols < 0], minlength=nodes.size)
    source_cap = np.maximum(unary, 0.0)  # paid when x_i = 0
    sink_cap = np.maximum(-unary, 0.0) + to_rest  # paid when x_i = 1
    # hard link: more than the whole energy of any labelling, so the seeds stay selected
    source_cap[local[seed_ids]] = 1.0 + np.abs(unary).sum() + cost.sum()
    cut = maxflow.Graph[float](nodes.size, int(pair.sum()))
    ids = cut.add_nodes(nodes.size)
    if pair.any():
        cut.add_edges(rows[pair], cols[pair], cost[pair], cost[pair])
    cut.add_grid_tedges(ids, source_cap, sink_cap)
    cut.maxflow()
    selected = np.zeros(n, dtype=bool)
    selected[nodes] = ~cut.get_grid_segments(ids)  # get_grid_segments: True on the sink side
    return torch.from_numpy(selected)


# -- slow twins -------------------------------------------------------------------------------------
def cut_energy(
    labels: Bool[Tensor, "N"],
    scores: Float[Tensor, "N"],
    graph: KnnGraph,
    weights: Float[Tensor, "N K"],
    threshold: float,
    pairwise: float,
) -> float:
    """GaussianCut's energy E(x) of a labelling, written plainly on the kNN lists: the unary of
    each Gaussian's label, plus lambda * w_ij / 2 for each directed kNN edge whose ends differ
    (a pair joined both ways then costs lambda * (w_ij + w_ji) / 2 = lambda * a_ij)."""
    s, x = scores.double(), labels.bool()
    unary = (s - threshold) / s.std(unbiased=False).clamp_min(1e-12)
    energy = torch.where(x, (-unary).clamp_min(0), unary.clamp_min(0)).sum()
    differ = x[:, None] != x[graph.indices]
    return float(energy + pairwise / 2 * (weights.double() * differ).sum())


def graph_cut_reference(
    scores: Float[Tensor, "N"],
    seeds: Tensor,
    graph: KnnGraph,
    weights: Float[Tensor, "N K"],
    threshold: float,
    pairwise: float,
    free: Bool[Tensor, "N"] | None = None,
) -> tuple[Bool[Tensor, "N"], float]:
    """Slow twin of `graph_cut`: of every labelling with the seeds selected and only the `free`
    Gaussians (default: all; `graph_cut`'s band) otherwise selectable, the one of least
    `cut_energy`, and that energy (tiny N only: 2^N labellings)."""
    n = scores.shape[0]
    fixed = set(seeds.tolist())
    can_vary = [i for i in range(n) if i not in fixed and (free is None or bool(free[i]))]
    best, best_energy = torch.zeros(n, dtype=torch.bool), float("inf")
    for bits in itertools.product((False, True), repeat=len(can_vary)):
        labels = torch.zeros(n, dtype=torch.bool)
        labels[list(fixed)] = True
        labels[can_vary] = torch.tensor(bits, dtype=torch.bool)
        energy = cut_energy(labels, scores, graph, weights, threshold, pairwise)
        if energy < best_energy:
            best, best_energy = labels, energy
    return best, best_energy


def seed_component_reference(
    mask: Tensor, seeds: Tensor, graph: KnnGraph, weights: Tensor, min_edge_weight: float = 0.0
) -> Tensor:
    """Slow twin of `seed_component`: a_ij = (w_ij + w_ji) / 2 summed from the kNN lists (edges
    of weight 0 are no edges, as in the sparse A), then a breadth-first search in Python from the
    seeds in `mask`."""
    n = mask.shape[0]
    a: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j, w in zip(graph.indices[i].tolist(), weights[i].tolist(), strict=True):
            for pair in ((i, j), (j, i)):
                a[pair] = a.get(pair, 0.0) + w / 2
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for (i, j), weight in a.items():
        if mask[i] and mask[j] and weight >= min_edge_weight and weight > 0:
            neighbours[i].append(j)
    reached = torch.zeros(n, dtype=torch.bool)
    queue = deque(int(s) for s in seeds.tolist() if mask[int(s)])
    for s in queue:
        reached[s] = True
    while queue:
        i = queue.popleft()
        for j in neighbours[i]:
            if not reached[j]:
                reached[j] = True
                queue.append(j)
    return reached


# -- helpers -----------------------------------------------------------------------------------------
def _csr(matrix: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, columns, values) of a sparse CSR tensor, as numpy views."""
    if matrix.layout != torch.sparse_csr:
        raise ValueError(f"want a sparse CSR adjacency (instance_adjacency), got {matrix.layout}")
    matrix = matrix.cpu()
    return (
        matrix.crow_indices().numpy(),
        matrix.col_indices().numpy(),
        matrix.values().float().numpy(),
    )


def _row_positions(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions in a CSR's column/value arrays of all entries of `rows`, row after row."""
    starts = indptr[rows].astype(np.int64)
    counts = indptr[rows + 1].astype(np.int64) - starts
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return offsets + np.arange(int(counts.sum()))


def _seed_ids(seeds: Tensor | int | list[int], n: int) -> Tensor:
    ids = torch.as_tensor(seeds, dtype=torch.int64).flatten().cpu()
    if ids.numel() == 0:
        raise ValueError("instance selection needs at least one seed Gaussian")
    if bool((ids < 0).any()) or bool((ids >= n).any()):
        raise ValueError(f"seed Gaussians {ids.tolist()} are not all in 0..{n - 1}")
    return ids


__all__ = [
    "INSTANCE_METHODS",
    "EdgeSource",
    "InstanceConfig",
    "InstanceMethod",
    "cut_energy",
    "graph_cut",
    "graph_cut_reference",
    "instance_adjacency",
    "instance_edge_weights",
    "instance_selection",
    "seed_component",
    "seed_component_reference",
]
