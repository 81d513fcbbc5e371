"""`Selection`: a per-Gaussian score and the boolean mask cut from it.

Pure functions on tensors, no I/O. The mask is authoritative: set operations combine masks
exactly, and combine scores monotonically (max for `|`, min for `&`, negation for `~`) so they stay
useful for ranking and display. Graph operations (`grow`, `shrink`, `largest_component`) treat the
kNN graph as undirected: i and j are neighbours when either is among the other's k nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.lift.diffusion import KnnGraph
from omnivision.twod.localize import otsu_threshold


@dataclass(frozen=True)
class Selection:
    """A subset of N Gaussians: `scores` (N,) float (higher = more selected) and `mask` (N,) bool."""

    scores: Float[Tensor, "N"]
    mask: Bool[Tensor, "N"]

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise ValueError(f"mask has dtype {self.mask.dtype}, want torch.bool")
        if self.mask.ndim != 1 or self.scores.shape != self.mask.shape:
            raise ValueError(
                f"scores {tuple(self.scores.shape)} and mask {tuple(self.mask.shape)} "
                "must both have shape (N,)"
            )

    # -- constructors ---------------------------------------------------------------------
    @staticmethod
    def from_scores(scores: Tensor, threshold: float | None = None) -> Selection:
        """Select Gaussians with `scores > threshold`; `threshold=None` picks it by Otsu's method."""
        scores = torch.as_tensor(scores).float().flatten()
        if threshold is None:
            threshold = otsu_threshold(scores) if scores.numel() else 0.0
        return Selection(scores, scores > threshold)

    @staticmethod
    def from_mask(mask: Tensor) -> Selection:
        mask = torch.as_tensor(mask).bool().flatten()
        return Selection(mask.float(), mask)

    @staticmethod
    def empty(n: int, device: torch.device | str | None = None) -> Selection:
        return Selection.from_mask(torch.zeros(n, dtype=torch.bool, device=device))

    # -- size -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """N, the number of Gaussians the selection is over (not how many are selected)."""
        return self.mask.shape[0]

    @property
    def count(self) -> int:
        """How many Gaussians are selected."""
        return int(self.mask.sum())

    @property
    def indices(self) -> Tensor:
        return torch.nonzero(self.mask).flatten()

    # -- set operations -------------------------------------------------------------------
    def _check(self, other: Selection) -> None:
        if len(other) != len(self):
            raise ValueError(f"selections over {len(self)} and {len(other)} Gaussians")

    def __or__(self, other: Selection) -> Selection:
        self._check(other)
        return Selection(torch.maximum(self.scores, other.scores), self.mask | other.mask)

    def __and__(self, other: Selection) -> Selection:
        self._check(other)
        return Selection(torch.minimum(self.scores, other.scores), self.mask & other.mask)

    def __sub__(self, other: Selection) -> Selection:
        self._check(other)
        return Selection(torch.minimum(self.scores, -other.scores), self.mask & ~other.mask)

    def __invert__(self) -> Selection:
        return Selection(-self.scores, ~self.mask)

    def rethreshold(self, threshold: float) -> Selection:
        """A new mask `scores > threshold` from the same scores."""
        return Selection(self.scores, self.scores > threshold)

    # -- graph operations -----------------------------------------------------------------
    def _check_graph(self, graph: KnnGraph) -> Tensor:
        if graph.indices.shape[0] != len(self):
            raise ValueError(
                f"graph has {graph.indices.shape[0]} nodes, selection {len(self)} Gaussians"
            )
        return graph.indices.to(self.mask.device).long()

    def grow(self, graph: KnnGraph, steps: int = 1) -> Selection:
        """Add every Gaussian adjacent (either kNN direction) to a selected one, `steps` times."""
        indices = self._check_graph(graph)
        mask = self.mask
        for _ in range(steps):
            reached = mask[indices].any(dim=1)  # i has a selected neighbour
            reached[indices[mask].flatten()] = True  # neighbours of selected i
            mask = mask | reached
        return Selection(self.scores, mask)

    def shrink(self, graph: KnnGraph, steps: int = 1) -> Selection:
        """Remove every selected Gaussian adjacent to an unselected one, `steps` times.

        The dual of `grow`: `shrink(g) == ~(~self).grow(g)` on the masks.
        """
        outside = Selection(self.scores, ~self.mask).grow(graph, steps)
        return Selection(self.scores, ~outside.mask)

    def largest_component(self, graph: KnnGraph) -> Selection:
        """Keep the largest connected component of the selected Gaussians, using only kNN edges
        between selected Gaussians (scipy's connected_components). Ties go to scipy's lowest label."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        indices = self._check_graph(graph)
        if self.count == 0:
            return self
        n, k = indices.shape
        mask = self.mask.cpu().numpy()
        rows = np.repeat(np.arange(n), k)
        cols = indices.cpu().numpy().reshape(-1)
        keep = mask[rows] & mask[cols]
        adjacency = coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.int8), (rows[keep], cols[keep])), shape=(n, n)
        ).tocsr()
        _, labels = connected_components(adjacency, directed=True, connection="weak")
        sizes = np.bincount(labels[mask], minlength=labels.max() + 1)
        largest = labels == int(np.argmax(sizes))
        return Selection(self.scores, torch.from_numpy(largest & mask).to(self.mask.device))


__all__ = ["Selection"]
