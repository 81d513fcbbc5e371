"""`ClientSession`: what one browser has to itself.

Each browser connected to the viewer has its own click mode, the combine mode and pick scope
its next selection uses, its in-progress prompts (SAM points, lasso corners, the brush radius,
the selection volume, an uploaded reference photo) and the status line of its own actions. The scene, its edit history, the selection and the display
are shared by every browser (`ViewerState`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.scenes.cameras import Cameras

from .geometry import same_camera
from .modes import (
    CLICK_MODES,
    COMBINE_MODES,
    PICK_SCOPES,
    VOLUME_SHAPES,
    ClickMode,
    CombineMode,
    PickScope,
    ViewerError,
    VolumeShape,
    check_choice,
)


@dataclass(frozen=True)
class SamPrompt:
    """Points clicked on one rendered view: `camera` (one view), `points` (P, 2) xy pixels,
    `labels` (P,) 1 include / 0 exclude, `world` (P, 3) where each click met the scene (for the
    markers; NaN where the click met nothing)."""

    camera: Cameras
    points: Float[Tensor, "P 2"]
    labels: Tensor
    world: Float[np.ndarray, "P 3"]


@dataclass(frozen=True)
class LassoPrompt:
    """Lasso corners clicked on one view: `camera`, `points` (P, 2) xy pixels, `world` (P, 3)
    where each click met the scene (NaN where it met nothing)."""

    camera: Cameras
    points: np.ndarray
    world: np.ndarray


@dataclass(frozen=True)
class Volume:
    """A box (half extents `size` along its axes) or a sphere (radius `size[0]`) at `centre`
    with rotation `wxyz`, in scene units."""

    shape: VolumeShape = "box"
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    size: tuple[float, float, float] = (0.1, 0.1, 0.1)


@dataclass
class ClientSession:
    """One browser's own state (see the module docstring)."""

    click_mode: ClickMode = "off"
    mode: CombineMode = "replace"
    """Combine mode for this browser's *next* selection."""
    pick_scope: PickScope = "semantic"
    sam_prompt: SamPrompt | None = None
    reference_photo: tuple[str, Tensor] | None = None
    """(file name, (H, W, 3) float image in [0, 1]) uploaded for `find_reference`."""
    lasso: LassoPrompt | None = None
    brush_radius: float = 20.0
    """Brush dab radius in pixels of the browser's view."""
    volume: Volume = Volume()
    status: str = ""
    """The last message of this browser's own actions."""

    def set_click_mode(self, mode: ClickMode) -> None:
        check_choice(mode, CLICK_MODES, "click mode")
        self.click_mode = mode

    def set_mode(self, mode: CombineMode) -> None:
        check_choice(mode, COMBINE_MODES, "combine mode")
        self.mode = mode

    def set_pick_scope(self, scope: PickScope) -> None:
        check_choice(scope, PICK_SCOPES, "pick scope")
        self.pick_scope = scope

    def add_sam_point(
        self,
        camera: Cameras,
        xy: tuple[float, float],
        positive: bool,
        world: np.ndarray | None = None,
    ) -> int:
        """Add a SAM prompt point on `camera`'s view (`world`: where it met the scene); a click
        on a different view starts a new prompt. Returns how many points the prompt has."""
        prompt = self.sam_prompt
        point = torch.tensor([[float(xy[0]), float(xy[1])]])
        label = torch.tensor([1 if positive else 0])
        where = np.full((1, 3), np.nan) if world is None else np.asarray(world, float).reshape(1, 3)
        if prompt is None or not same_camera(prompt.camera, camera):
            self.sam_prompt = SamPrompt(camera, point, label, where)
        else:
            self.sam_prompt = SamPrompt(
                camera,
                torch.cat([prompt.points, point]),
                torch.cat([prompt.labels, label]),
                np.concatenate([prompt.world, where]),
            )
        return len(self.sam_prompt.labels)

    def clear_sam_points(self) -> None:
        self.sam_prompt = None

    def add_lasso_point(
        self, camera: Cameras, xy: tuple[float, float], world: np.ndarray | None = None
    ) -> int:
        """Add a lasso corner on `camera`'s view (a different view starts a new lasso); returns
        how many corners the lasso has."""
        point = np.asarray([xy], np.float64)
        where = np.full((1, 3), np.nan) if world is None else np.asarray(world, float).reshape(1, 3)
        lasso = self.lasso
        if lasso is None or not same_camera(lasso.camera, camera):
            self.lasso = LassoPrompt(camera, point, where)
        else:
            self.lasso = LassoPrompt(
                camera,
                np.concatenate([lasso.points, point]),
                np.concatenate([lasso.world, where]),
            )
        return len(self.lasso.points)

    def set_volume(self, **changes: object) -> Volume:
        """Change the volume's shape / centre / wxyz / size (sizes must be positive)."""
        volume = replace(self.volume, **changes)  # type: ignore[arg-type]
        check_choice(volume.shape, VOLUME_SHAPES, "volume shape")
        size = tuple(float(v) for v in volume.size)
        if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
            raise ViewerError(f"volume size {volume.size} must be three positive numbers")
        self.volume = replace(volume, size=size)  # type: ignore[arg-type]
        return self.volume

    def set_reference_photo(self, name: str, data: bytes) -> tuple[int, int]:
        """Keep an uploaded photo (any format PIL reads) for `find_reference`; its (W, H)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError):
            raise ViewerError(f"{name}: not an image (png, jpg, ...)") from None
        self.reference_photo = (name, torch.from_numpy(rgb))
        return rgb.shape[1], rgb.shape[0]
