"""`omnivision query SCENE --ref PHOTO (--ref-box X0,Y0,X1,Y1 | --ref-click X,Y)`: the edge of
`query.reference` (read and check the photo, pick the views' images, load the extractor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from omnivision.twod.errors import TwoDError

from .cli import QueryError


@dataclass(frozen=True)
class ReferencePhoto:
    """The --ref photo (H, W, 3) in [0, 1] and the clicks or the box on it (pixels, checked)."""

    image: Tensor
    clicks: list[tuple[float, float]]
    box: tuple[float, float, float, float] | None


def read_reference(cmd: Any) -> ReferencePhoto | None:
    """--ref's photo with its --ref-box or --ref-click (exactly one, inside the photo); None
    without --ref. Bad input raises QueryError (one line, exit 2) before the scene loads."""
    from omnivision.twod.cli import exemplar

    if cmd.ref is None:
        if cmd.ref_box is not None or cmd.ref_click:
            raise QueryError("--ref-box / --ref-click mark the object on a photo: give --ref PHOTO")
        return None
    try:
        image, clicks, box = exemplar(
            cmd.ref, list(cmd.ref_click), cmd.ref_box, ("--ref-click", "--ref-box")
        )
    except TwoDError as err:
        raise QueryError(str(err)) from None
    return ReferencePhoto(image, clicks, box)


def reference_scores(
    cmd: Any,
    photo: ReferencePhoto,
    scene: Any,
    cameras: Any,
    device: str,
    features: Tensor | None = None,
) -> tuple[int, Tensor]:
    """The photo's object localized in every view (the scene's photos when it has them, else
    renders) and lifted (diffused with --diffuse); returns the view where it looks largest (for
    the preview) and the scores (N,)."""
    from omnivision.lift.diffusion import knn_graph
    from omnivision.lift.pipeline import view_image
    from omnivision.twod.extractors import load_extractor

    from .reference import ReferenceConfig, find_reference

    extractor = load_extractor(cmd.backbone, device=device, flag="--backbone")

    def image(view: int) -> Tensor:
        return view_image(scene, cameras, view, use_photos=True)

    with torch.no_grad():
        result = find_reference(
            scene,
            cameras,
            extractor,
            photo.image,
            photo.clicks,
            photo.box,
            images=image,
            config=ReferenceConfig(iterations=max(cmd.diffuse, 1)),
            graph=knn_graph(scene.means.cpu(), 16) if cmd.diffuse > 0 else None,
            features=None if features is None or cmd.diffuse == 0 else features.cpu(),
            progress=True,
        )
    found = sum(bool(mask[0].any()) for mask in result.masks.values())
    print(f"--ref {cmd.ref.name}: found in {found} of {len(cameras)} views")
    return result.best_view(), result.scores[0]
