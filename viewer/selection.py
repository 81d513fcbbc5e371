"""`LiveSelection`: the selection of the edited scene, with the live query result it came from.

The selection is `ops(mode(base, cut))`: a query's per-Gaussian `scores` are cut at `threshold`
(for an instance pick: the cut's piece connected to the clicked Gaussian), combined with the
`base` (the selection before that query) by the combine `mode` the query was made with, then the
selection ops applied since (invert, grow, shrink) run in order. Moving the threshold re-cuts
and re-runs them, so the slider keeps working after invert / grow / shrink. A new query commits
the current selection as its base; `clear` and any change of which Gaussians exist drop the live
result (the threshold has nothing to cut: the app disables the slider).

Pure torch on `query.Selection`; the kNN graph and the instance cut come in as functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from omnivision.lift.diffusion import KnnGraph
from omnivision.query.selection import Selection

from .modes import COMBINE_MODES, SELECTION_OPS, CombineMode, SelectionOp, ViewerError, check_choice

InstanceCut = Callable[[Tensor, Tensor, float], Selection]
"""(scores (N,), seed Gaussians (S,), threshold) -> the cut's piece connected to the seeds."""


def combine(base: Selection, result: Selection, mode: CombineMode) -> Selection:
    """`result` joined to `base`: replace, add (|), subtract (-) or intersect (&)."""
    if mode == "replace":
        return result
    if mode == "add":
        return base | result
    if mode == "subtract":
        return base - result
    return base & result


class LiveSelection:
    """The committed `base`, the live query (`scores`, `threshold`, `mode`, `kind`, instance
    `seeds`) and the ops applied since; `selection` is what they give (cached)."""

    def __init__(self, n: int, knn: Callable[[], KnnGraph], instance: InstanceCut) -> None:
        self._knn, self._instance_cut = knn, instance
        self.base = Selection.empty(n)
        self.scores: Tensor | None = None
        self.threshold = 0.0
        self.mode: CombineMode = "replace"
        self.kind = ""
        self.seeds: Tensor | None = None
        self.ops: list[tuple[SelectionOp, int]] = []
        self._cut: tuple[float, Selection] | None = None  # (threshold, instance) last cut
        self._selection: Selection | None = None
        self._count: int | None = None
        self._range = (0.0, 1.0)

    # -- reading ------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Whether a query result is live (the threshold re-cuts it)."""
        return self.scores is not None

    @property
    def result(self) -> Selection | None:
        """The live query's scores cut at `threshold` (an instance pick: the piece connected to
        its seed), before combining; None when no query is live."""
        if self.scores is None:
            return None
        if self.seeds is None:
            return Selection.from_scores(self.scores, self.threshold)
        if self._cut is None or self._cut[0] != self.threshold:
            self._cut = (
                self.threshold,
                self._instance_cut(self.scores, self.seeds, self.threshold),
            )
        return self._cut[1]

    @property
    def selection(self) -> Selection:
        if self._selection is None:
            result = self.result
            selection = self.base if result is None else combine(self.base, result, self.mode)
            for op, steps in self.ops:
                selection = self._apply(selection, op, steps)
            self._selection, self._count = selection, None
        return self._selection

    @property
    def count(self) -> int:
        """How many Gaussians `selection` holds (counted once per change)."""
        if self._selection is None or self._count is None:
            self._count = self.selection.count
        return self._count

    @property
    def score_range(self) -> tuple[float, float]:
        """(min, max) of the live scores, (0, 1) when none are live."""
        return self._range if self.scores is not None else (0.0, 1.0)

    def describe(self) -> str:
        """How the selection was made: "phrase 'mug', add, threshold 0.5, then invert"."""
        if self.scores is None:
            return ""
        text = f"{self.kind}, {self.mode}, threshold {self.threshold:.3g}"
        if self.ops:
            text += ", then " + ", ".join(op for op, _ in self.ops)
        return text

    # -- changing -----------------------------------------------------------------------------
    def start(
        self,
        scores: Tensor,
        kind: str,
        threshold: float,
        mode: CombineMode,
        seeds: Tensor | None = None,
    ) -> Selection:
        """Commit the current selection as the base and make `scores` the live query."""
        check_choice(mode, COMBINE_MODES, "combine mode")
        base = Selection.from_mask(self.selection.mask)
        self.base, self.scores, self.threshold = base, scores.detach().float().cpu(), threshold
        if self.scores.numel():
            self._range = (float(self.scores.min()), float(self.scores.max()))
        else:
            self._range = (0.0, 1.0)
        self.mode, self.kind, self.seeds, self.ops = mode, kind, seeds, []
        self._cut = self._selection = None
        return self.selection

    def set_threshold(self, threshold: float) -> Selection:
        """Re-cut the live scores (and re-run the ops since); the threshold must lie within the
        scores' range."""
        value = float(threshold)
        if self.scores is None:
            raise ViewerError("no live query: the threshold cuts a query's scores (run one)")
        lo, hi = self.score_range
        tolerance = 1e-6 * max(1.0, abs(lo), abs(hi))
        if not math.isfinite(value) or not lo - tolerance <= value <= hi + tolerance:
            raise ViewerError(
                f"threshold {threshold!r} is outside the live scores' range [{lo:.4g}, {hi:.4g}]"
            )
        if value != self.threshold:
            self.threshold = value
            self._selection = None
        return self.selection

    def apply(self, op: SelectionOp, steps: int = 1) -> Selection:
        """invert / grow / shrink (kNN graph, `steps` rings) the selection, or clear it (which
        also ends the live query)."""
        check_choice(op, SELECTION_OPS, "selection op")
        if op == "clear":
            self.reset(len(self.base))
        elif self.scores is None:
            self.base = self._apply(self.selection, op, steps)
            self._selection = None
        else:
            self.ops.append((op, steps))
            self._selection = None
        return self.selection

    def reset(self, n: int) -> None:
        """Nothing selected, no live query (after a clear, or when the Gaussians changed)."""
        self.base = Selection.empty(n)
        self.scores, self.seeds, self.kind, self.ops = None, None, "", []
        self._cut = self._selection = None

    def _apply(self, selection: Selection, op: SelectionOp, steps: int) -> Selection:
        if op == "invert":
            return ~selection
        if op == "grow":
            return selection.grow(self._knn(), steps)
        if op == "shrink":
            return selection.shrink(self._knn(), steps)
        return Selection.empty(len(selection))
