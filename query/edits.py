"""Edits on a `GaussianScene` as pure functions `(scene, selection, ...) -> new scene`.

No edit mutates its input: each returns a new `GaussianScene`. Tensors an edit does not change
may be shared between the input and the output, so treat scenes as immutable values.

Hiding is reversible bit-for-bit: `hide` sets the selected opacity logits to `HIDDEN_LOGIT` and
keeps the originals in `extras["hidden_opacity"]` (NaN where a Gaussian is not hidden); `show`
puts them back and drops the field once nothing is hidden, so `show(hide(s, sel), sel)` equals `s`.
The field travels with `delete`/`extract` and is written to .ply like any extra (a hidden
Gaussian stays hidden, and can be shown again, after a round trip through a file).

`export` is the only function here that touches files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from omnivision.scenes.gaussians import GaussianScene, rgb_to_sh_dc, sh_dc_to_rgb
from omnivision.scenes.load import write_gaussians

from .selection import Selection

HIDDEN_LOGIT = -30.0
"""Opacity logit of a hidden Gaussian: sigmoid(-30) ~ 1e-13, below every rasteriser's 1/255 cut."""

HIDDEN_FIELD = "hidden_opacity"


def _mask(scene: GaussianScene, selection: Selection) -> Tensor:
    if len(selection) != len(scene):
        raise ValueError(
            f"selection is over {len(selection)} Gaussians but the scene has {len(scene)}"
        )
    return selection.mask.to(scene.device)


def _replace(
    scene: GaussianScene,
    opacity_logits: Tensor | None = None,
    sh: Tensor | None = None,
    means: Tensor | None = None,
    extras: dict[str, Tensor] | None = None,
) -> GaussianScene:
    return GaussianScene(
        means=scene.means if means is None else means,
        quats=scene.quats,
        log_scales=scene.log_scales,
        opacity_logits=scene.opacity_logits if opacity_logits is None else opacity_logits,
        sh=scene.sh if sh is None else sh,
        extras=dict(scene.extras) if extras is None else extras,
    )


def hide(scene: GaussianScene, selection: Selection) -> GaussianScene:
    """Make the selected Gaussians invisible, remembering their opacity (see module docstring)."""
    mask = _mask(scene, selection)
    stored = scene.extras.get(HIDDEN_FIELD)
    if stored is None:
        stored = torch.full_like(scene.opacity_logits, float("nan"))
    newly = mask & torch.isnan(stored)  # already-hidden Gaussians keep their first original
    stored = torch.where(newly, scene.opacity_logits, stored)
    opacity = torch.where(
        mask, torch.full_like(scene.opacity_logits, HIDDEN_LOGIT), scene.opacity_logits
    )
    return _replace(scene, opacity_logits=opacity, extras={**scene.extras, HIDDEN_FIELD: stored})


def show(scene: GaussianScene, selection: Selection) -> GaussianScene:
    """Restore the stored opacity of the selected hidden Gaussians; others are unchanged."""
    mask = _mask(scene, selection)
    stored = scene.extras.get(HIDDEN_FIELD)
    if stored is None:
        return _replace(scene)
    restore = mask & ~torch.isnan(stored)
    opacity = torch.where(restore, stored, scene.opacity_logits)
    stored = torch.where(restore, torch.full_like(stored, float("nan")), stored)
    extras = {k: v for k, v in scene.extras.items() if k != HIDDEN_FIELD}
    if not bool(torch.isnan(stored).all()):
        extras[HIDDEN_FIELD] = stored
    return _replace(scene, opacity_logits=opacity, extras=extras)


def delete(scene: GaussianScene, selection: Selection) -> GaussianScene:
    """Drop the selected Gaussians (the others keep their order)."""
    return scene.subset(~_mask(scene, selection))


def extract(scene: GaussianScene, selection: Selection) -> GaussianScene:
    """The selected Gaussians as a new scene (in their original order, with their extras)."""
    return scene.subset(_mask(scene, selection))


def isolate(scene: GaussianScene, selection: Selection) -> GaussianScene:
    """Delete everything but the selection (as an edit; the same Gaussians as `extract`)."""
    return extract(scene, selection)


def recolor(
    scene: GaussianScene,
    selection: Selection,
    rgb: Sequence[float] | Tensor,
    mode: Literal["set", "tint"] = "set",
    keep_sh_rest: bool = False,
) -> GaussianScene:
    """Recolour the selection's DC term: `set` to `rgb`, or `tint` (multiply the DC colour by `rgb`).

    The view-dependent SH coefficients of the selection are zeroed (so the colour is the same from
    every direction) unless `keep_sh_rest`. Other Gaussians are untouched.
    """
    mask = _mask(scene, selection)
    color = torch.as_tensor(rgb, dtype=scene.sh.dtype, device=scene.device)
    if color.shape != (3,):
        raise ValueError(f"rgb has shape {tuple(color.shape)}, want (3,)")
    if mode == "set":
        new_dc = rgb_to_sh_dc(color).expand(len(scene), 3)
    elif mode == "tint":
        new_dc = rgb_to_sh_dc(sh_dc_to_rgb(scene.sh[:, 0]) * color)
    else:
        raise ValueError(f"mode {mode!r} is not one of 'set', 'tint'")
    sh = scene.sh.clone()
    sh[mask, 0] = new_dc[mask]
    if not keep_sh_rest:
        sh[mask, 1:] = 0
    return _replace(scene, sh=sh)


def duplicate_translate(
    scene: GaussianScene, selection: Selection, offset: Sequence[float] | Tensor
) -> GaussianScene:
    """Append copies of the selected Gaussians moved by `offset` (3,) after the originals."""
    copies = extract(scene, selection)
    shift = torch.as_tensor(offset, dtype=scene.means.dtype, device=scene.device)
    if shift.shape != (3,):
        raise ValueError(f"offset has shape {tuple(shift.shape)}, want (3,)")
    return GaussianScene.concat([scene, _replace(copies, means=copies.means + shift)])


def export(scene: GaussianScene, path: str | Path) -> Path:
    """Write the scene by the end of its name (`scenes.load.write_gaussians`): `.ply` (exact,
    integer extras as properties), `.glb`/`.gltf` (float32 glTF, extras as attributes), or lossy
    `.splat`, `.spz`, `.compressed.ply`, `.sog` (integer extras in a sidecar beside the file).
    Another name: SceneError (a ValueError) naming the file and the endings it takes."""
    return write_gaussians(scene, path)


class EditHistory:
    """The scene a user is editing, with undo and redo.

    Each step stores a whole scene snapshot: simple and obviously correct, at the cost of memory
    (tensors an edit leaves unchanged are shared between snapshots, so e.g. `hide` costs one
    opacity column, but `delete` copies the scene). A long session on a large scene would want
    diffs instead.
    """

    def __init__(self, scene: GaussianScene) -> None:
        self._current = scene
        self._undo: list[tuple[str, GaussianScene]] = []  # (edit name, scene before it)
        self._redo: list[tuple[str, GaussianScene]] = []  # (edit name, scene after it)

    @property
    def current(self) -> GaussianScene:
        return self._current

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def log(self) -> list[str]:
        """Names of the edits that make up the current scene, oldest first."""
        return [name for name, _ in self._undo]

    def apply(
        self, name: str, fn: Callable[..., GaussianScene], *args: object, **kwargs: object
    ) -> GaussianScene:
        """Run `fn(current, *args, **kwargs)`, make its result current, and clear the redo stack."""
        result = fn(self._current, *args, **kwargs)
        if not isinstance(result, GaussianScene):
            raise TypeError(f"edit {name!r} returned {type(result).__name__}, not a GaussianScene")
        self._undo.append((name, self._current))
        self._redo.clear()
        self._current = result
        return result

    def undo(self) -> GaussianScene:
        if not self._undo:
            raise IndexError("nothing to undo")
        name, before = self._undo.pop()
        self._redo.append((name, self._current))
        self._current = before
        return before

    def redo(self) -> GaussianScene:
        if not self._redo:
            raise IndexError("nothing to redo")
        name, after = self._redo.pop()
        self._undo.append((name, self._current))
        self._current = after
        return after


__all__ = [
    "HIDDEN_LOGIT",
    "EditHistory",
    "delete",
    "duplicate_translate",
    "export",
    "extract",
    "hide",
    "isolate",
    "recolor",
    "show",
]
