"""The viewer's choices (combine modes, selection ops, click modes, pick scopes, colour modes) and
its one error type: the vocabulary `selection.py`, `session.py`, `state.py` and `app.py` share."""

from __future__ import annotations

from typing import Literal

CombineMode = Literal["replace", "add", "subtract", "intersect"]
COMBINE_MODES: tuple[CombineMode, ...] = ("replace", "add", "subtract", "intersect")
"""How the next query's result joins the current selection (it never changes the current one)."""
SelectionOp = Literal["invert", "grow", "shrink", "clear"]
SELECTION_OPS: tuple[SelectionOp, ...] = ("invert", "grow", "shrink", "clear")
ClickMode = Literal["off", "exemplar", "pick", "sam+", "sam-", "lasso", "brush"]
CLICK_MODES: tuple[ClickMode, ...] = ("off", "exemplar", "pick", "sam+", "sam-", "lasso", "brush")
PickScope = Literal["semantic", "instance"]
PICK_SCOPES: tuple[PickScope, ...] = ("semantic", "instance")
"""What a 3D pick or an exemplar click selects: everything like the clicked Gaussian, or only the
object it belongs to (the piece connected to it, `query.instance`)."""
VolumeShape = Literal["box", "sphere"]
VOLUME_SHAPES: tuple[VolumeShape, ...] = ("box", "sphere")
ColourMode = Literal["rgb", "relevancy", "feature PCA"]
COLOUR_MODES: tuple[ColourMode, ...] = ("rgb", "relevancy", "feature PCA")
"""What the splats show: their own colour, the live query's scores (turbo colour map), or the
lifted features' first three principal components as RGB."""


class ViewerError(ValueError):
    """Something the user can fix (no features, nothing selected, a click on the background):
    the app shows the message on the status line of the browser that caused it."""

    exit_code = 2


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """Raise `ViewerError` naming `what` when `value` is not one of `choices`."""
    if value not in choices:
        raise ViewerError(f"{what} {value!r} is not one of {', '.join(choices)}")
