"""Per-Gaussian classes from lifted segment features (`omnivision-lift --features segment:...`).

A segment lift stores, per Gaussian, the weighted mean over views of the per-pixel class
probabilities (K channels, the class names in the manifest entry's `classes`, channel order).
A Gaussian's class is the argmax channel; a Gaussian with no probability mass (unseen, or seen
only where no class was given) has none (-1). `omnivision query --classes` selects the Gaussians
whose class is among the names, paints them in the palette of `omnivision segment`'s label
PNGs (class k: palette index k), and an exported scene carries `class_id` per Gaussian
(`extras["class_id"]`, int32, -1 = none; written by `scenes.io_ply` as a vertex property).
Pure functions on tensors, except `class_labels`, which reads a `LiftedFeatures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from omnivision.scenes.gaussians import GaussianScene

from .selection import Selection

CLASS_FIELD = "class_id"
"""The extras field (and .ply vertex property) of a scene's per-Gaussian class ids."""


class ClassQueryError(ValueError):
    """Bad --classes input (an empty list, a repeated or unknown name, features that are not
    segment features): one line, exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class ClassLabels:
    """Lifted class probabilities and the class each Gaussian takes."""

    classes: tuple[str, ...]
    probabilities: Float[Tensor, "N K"]
    ids: Int[Tensor, "N"]
    """argmax class per Gaussian (int64), -1 where the probabilities are all zero."""


def argmax_classes(probabilities: Float[Tensor, "N K"]) -> Int[Tensor, "N"]:
    """The highest-probability class of each row (ties: the lower id), -1 for an all-zero row."""
    best, ids = probabilities.float().max(dim=1)
    return torch.where(best > 0, ids, torch.full_like(ids, -1))


def class_labels(lifted: Any, feature_name: str) -> ClassLabels:
    """The class names (the manifest entry's `classes`) and probabilities of lifted segment
    features; other features are a ClassQueryError naming them."""
    names = lifted.entry.get("classes") or lifted.entry.get("request", {}).get("classes")
    if not names:
        raise ClassQueryError(
            f"features {feature_name!r} are not segment features (no class names in the "
            "manifest): lift some with omnivision-lift SCENE_DIR --features segment:CLASSES"
        )
    probabilities = lifted.features.float().cpu()
    if probabilities.shape[1] != len(names):
        raise ClassQueryError(
            f"features {feature_name!r} have {probabilities.shape[1]} channels but the manifest "
            f"names {len(names)} classes: lift them again (--force)"
        )
    classes = tuple(str(n) for n in names)
    return ClassLabels(classes, probabilities, argmax_classes(probabilities))


def default_class_features(out_dir: str | Path) -> str | None:
    """The segment features to use when none is named: `segment` before `segment-labels`."""
    from omnivision.lift.store import available_features

    names = available_features(out_dir)
    return next((n for n in ("segment", "segment-labels") if n in names), None)


def pick_classes(requested: Sequence[str], classes: Sequence[str]) -> tuple[int, ...]:
    """Class ids of the names in `requested` (items may hold comma lists: "mug,box"); no
    names at all means every class. A name given empty, twice, or not among `classes` is a
    ClassQueryError listing the lifted classes."""
    if not requested:
        return tuple(range(len(classes)))
    names = [n.strip() for item in requested for n in item.split(",")]
    if not any(names):
        raise ClassQueryError(
            "--classes: empty class list (give names, e.g. --classes 'mug,box', or --classes "
            "alone for every class)"
        )
    index = {name: k for k, name in enumerate(classes)}
    ids: list[int] = []
    for k, name in enumerate(names, start=1):
        if not name:
            raise ClassQueryError(f"--classes: name {k} is empty")
        if name not in index:
            raise ClassQueryError(
                f"--classes: unknown class {name!r}; the lifted classes are: {', '.join(classes)}"
            )
        if index[name] in ids:
            raise ClassQueryError(f"--classes: duplicate class {name!r}")
        ids.append(index[name])
    return tuple(ids)


def class_selection(labels: ClassLabels, picked: Sequence[int]) -> Selection:
    """The Gaussians whose class is one of `picked`; scores: their summed probability of the
    picked classes (for the heatmap; the mask is the argmax, not a cut of the scores)."""
    chosen = torch.tensor(list(picked), dtype=torch.long)
    mask = torch.isin(labels.ids, chosen)
    scores = labels.probabilities[:, chosen].sum(1)
    return Selection(scores, mask)


def class_counts(labels: ClassLabels, picked: Sequence[int]) -> dict[str, int]:
    """How many Gaussians take each picked class, in the order given."""
    counts = torch.bincount(labels.ids[labels.ids >= 0], minlength=len(labels.classes))
    return {labels.classes[k]: int(counts[k]) for k in picked}


def palette_colours(ids: Int[Tensor, "N"]) -> Float[Tensor, "N 3"]:
    """RGB in [0, 1] of class ids in the palette of `omnivision segment`'s label PNGs and
    overlays (`twod.davis.DAVIS_PALETTE`, index = class id mod 256); -1 -> grey."""
    from omnivision.twod.davis import DAVIS_PALETTE

    palette = torch.from_numpy(
        np.frombuffer(DAVIS_PALETTE, np.uint8).reshape(-1, 3).astype(np.float32) / 255
    )
    colours = palette[ids.clamp_min(0) % 256]
    colours[ids < 0] = 0.5
    return colours


def with_class_ids(scene: GaussianScene, ids: Int[Tensor, "N"]) -> GaussianScene:
    """The scene with `extras["class_id"]` (int32, -1 = none); the input is not changed."""
    if len(ids) != len(scene):
        raise ValueError(f"{len(ids)} class ids for a scene of {len(scene)} Gaussians")
    extras = {**scene.extras, CLASS_FIELD: ids.to(torch.int32).to(scene.device)}
    return GaussianScene(
        means=scene.means, quats=scene.quats, log_scales=scene.log_scales,
        opacity_logits=scene.opacity_logits, sh=scene.sh, extras=extras,
    )  # fmt: skip


def paint_classes(
    scene: GaussianScene, ids: Int[Tensor, "N"], selection: Selection
) -> GaussianScene:
    """The selected Gaussians recoloured by class (`palette_colours`, view-independent: their
    SH rest zeroed, as `edits.recolor` does); the others unchanged."""
    from .edits import recolor

    painted = scene
    chosen = selection.mask.cpu() & (ids.cpu() >= 0)
    for k in ids[chosen].unique().tolist():
        colour = palette_colours(torch.tensor([k]))[0]
        painted = recolor(painted, Selection.from_mask(chosen & (ids.cpu() == k)), colour)
    return painted


@dataclass(frozen=True)
class ClassQuery:
    """`omnivision query --classes`: the lifted labels, the picked class ids and the selection."""

    labels: ClassLabels
    picked: tuple[int, ...]
    selection: Selection

    def labelled(self, scene: GaussianScene) -> GaussianScene:
        """`scene` carrying every Gaussian's class id (what an export writes)."""
        return with_class_ids(scene, self.labels.ids)

    def painted(self, scene: GaussianScene) -> GaussianScene:
        """`scene` with the selected Gaussians coloured by class (`--then paint`)."""
        return paint_classes(scene, self.labels.ids, self.selection)


def classes_query(requested: Sequence[str], lifted: Any, feature_name: str) -> ClassQuery:
    """The --classes query on lifted features (names checked against the manifest's classes);
    prints the Gaussians per picked class."""
    labels = class_labels(lifted, feature_name)
    picked = pick_classes(requested, labels.classes)
    counts = class_counts(labels, picked)
    print("classes: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return ClassQuery(labels, picked, class_selection(labels, picked))
