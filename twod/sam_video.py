"""SAM 2 video tracking, streamed over a `VideoFrames` one frame at a time.

`load_sam2_video(...)` builds `sam2.sam2_video_predictor.SAM2VideoPredictor` from its yaml as
`load_sam2` builds the image model (no postprocessing overrides, no bf16 autocast on CPU).
`Sam2Video.start(frames)` then prompts (`add_points`, `add_box`, `add_mask`, any object id, any
frame not yet tracked), then `track()` yields a `FrameResult` per frame in order: the masks of every
object prompted so far at the frame's own size and their scores.

Streaming. sam2's `init_state` decodes the whole video; `start` builds the same inference state
around `ModelFrames`, which decodes, resizes and normalises frame i when sam2 asks for it and keeps
only the last `keep` (2) model inputs. Prompts wait in a queue until tracking reaches their frame,
so what happens on frame t depends on frames <= t only (no conditioning on future frames, as a
camera feed would have it). A prompt on a frame not yet tracked is a conditioning frame for its
object; a new object may join on any frame (sam2 1.1.0 adds objects after tracking started,
no `reset_state`), and has no mask on the frames before. After each frame the state keeps, per object:
- every conditioning output (one per prompted frame: grows with the prompts, not the video),
- the last `memory_frames` = max(r * num_maskmem, max_obj_ptrs_in_encoder) non-conditioning outputs
  (16 for the SAM 2.1 configs: the 6 mask memories and 15 object pointers `track_step` reads);
  older ones are dropped, which changes nothing sam2 reads when tracking forward,
- sam2's own cache of the last frame's backbone features.
So memory is bounded in the length of the video (~0.8 MB per kept frame and object at 1024 px).
Tracking backwards (sam2's `reverse=True`) is not offered.

Scores are the sigmoid of SAM 2's object-score logit: the model's belief that the object is
visible on the frame (its mask is empty when the logit is negative).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from PIL import Image
from torch import Tensor

from .features import TwoDError
from .sam import ArrayLike, _array, _build_model, _check_boxes, _check_points
from .video import VideoFrames

VIDEO_PREDICTOR = "sam2.sam2_video_predictor.SAM2VideoPredictor"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FrameResult:
    """One tracked frame: a mask and a score per object prompted on this frame or before."""

    frame_index: int
    name: str
    """The frame's name in its `VideoFrames` (file stem or `%05d`)."""
    masks: dict[int, Bool[Tensor, "H W"]] = field(default_factory=dict)
    """Object id -> bool mask at the frame's original size (empty when the object is not seen)."""
    scores: dict[int, float] = field(default_factory=dict)
    """Object id -> sigmoid of SAM 2's object-score logit (> 0.5: the model sees the object)."""
    prompted: tuple[int, ...] = ()
    """Objects whose prompts were applied on this frame."""


@dataclass(frozen=True)
class Prompt:
    """A prompt for `Sam2Video.add`: clicks (`points` (P, 2) (x, y) pixels, `labels` 1/0), a
    `box` xyxy pixels (with optional clicks), or a `mask` bool (H, W) at the frame size."""

    frame_index: int
    obj_id: int
    points: ArrayLike = None
    labels: ArrayLike = None
    box: ArrayLike = None
    mask: ArrayLike = None


class ModelFrames:
    """What sam2 reads as `inference_state["images"]`: frame i as a (3, S, S) float tensor (PIL
    bicubic resize to the model's `image_size` S, /255, ImageNet mean/std: sam2's own
    preprocessing), made on access from a `VideoFrames`; only the last `keep` are held."""

    def __init__(self, frames: VideoFrames, image_size: int, keep: int = 2) -> None:
        self.frames = frames
        self.image_size = image_size
        self.keep = max(1, keep)
        self.loads = 0
        """Frames converted so far."""
        self.max_held = 0
        """The most model inputs held at once (at most `keep`)."""
        self._held: OrderedDict[int, Tensor] = OrderedDict()
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Float[Tensor, "3 S S"]:
        image = self._held.get(index)
        if image is None:
            s = self.image_size
            resized = Image.fromarray(self.frames[index]).resize((s, s), Image.Resampling.BICUBIC)
            image = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255.0
            image = (image - self._mean) / self._std
            self.loads += 1
            self._held[index] = image
            while len(self._held) > self.keep:
                self._held.popitem(last=False)
            self.max_held = max(self.max_held, len(self._held))
        self._held.move_to_end(index)
        return image

    @property
    def held(self) -> int:
        return len(self._held)


@dataclass
class Sam2Video:
    """A SAM 2 video predictor and one video's tracking state. Build with `load_sam2_video`;
    `start(frames)`, add prompts, iterate `track()`. Prompts may be added between the frames that
    `track()` yields (they go on frames not yet tracked, and `track()` applies them on arrival);
    `track()` called again resumes at the next untracked frame."""

    model: Any = field(repr=False)
    """The `sam2.sam2_video_predictor.SAM2VideoPredictor`, in eval mode."""
    name: str
    """Hub id or checkpoint path it was loaded from."""
    frames: VideoFrames | None = field(default=None, repr=False)
    state: dict | None = field(default=None, repr=False)
    """sam2's inference state of the current video (None before `start`)."""
    next_frame: int = 0
    """The first frame not yet tracked: prompts go on this frame or later ones."""
    _pending: dict[int, dict[int, Prompt]] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def memory_frames(self) -> int:
        """Non-conditioning outputs kept per object: all that tracking forward reads."""
        m = self.model
        return max(m.memory_temporal_stride_for_eval * m.num_maskmem, m.max_obj_ptrs_in_encoder)

    @property
    def object_ids(self) -> list[int]:
        """Objects tracked so far (prompted on a frame already reached), in the order added."""
        return [] if self.state is None else list(self.state["obj_ids"])

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 on CUDA as SAM 2's notebooks do; never on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def start(self, frames: VideoFrames, keep: int = 2) -> None:
        """Begin tracking `frames` (forgetting any previous video and prompts). Nothing is decoded
        until `track()` reaches the first prompted frame; `keep` model inputs are held."""
        device = self.device
        self.frames, self.next_frame, self._pending = frames, 0, {}
        h, w = frames.size
        # the keys of SAM2VideoPredictor.init_state (sam2 1.1.0), with lazy images
        self.state = {
            "images": ModelFrames(frames, self.model.image_size, keep),
            "num_frames": len(frames),
            "offload_video_to_cpu": True,
            "offload_state_to_cpu": False,
            "video_height": h,
            "video_width": w,
            "device": device,
            "storage_device": device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }

    def _check_target(self, frame_index: int, obj_id: int) -> tuple[str, tuple[int, int]]:
        """The frame's description for messages and its (H, W); TwoDError for a bad frame/id."""
        if self.frames is None:
            raise TwoDError("no video: call start(frames) before adding prompts")
        n = len(self.frames)
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise TwoDError(f"object ids are integers, got {obj_id!r}")
        if not isinstance(frame_index, (int, np.integer)) or not 0 <= frame_index < n:
            raise TwoDError(f"frame {frame_index} is not in the video (frames 0..{n - 1})")
        if frame_index < self.next_frame:
            raise TwoDError(
                f"frame {frame_index} is already tracked: prompts go on frames "
                f">= {self.next_frame} (tracking streams forward)"
            )
        return f"frame {frame_index} ({self.frames.names[frame_index]})", self.frames.size

    def add(self, prompt: Prompt) -> None:
        """Queue `prompt` (replacing an earlier one for the same object and frame)."""
        where, hw = self._check_target(prompt.frame_index, prompt.obj_id)
        try:
            if prompt.mask is not None:
                if prompt.points is not None or prompt.box is not None:
                    raise TwoDError("a mask prompt takes no clicks or box")
                mask = _array(prompt.mask).astype(bool)
                if mask.shape != hw:
                    raise TwoDError(f"mask is {mask.shape}, the frame {hw} (H, W)")
                if not mask.any():
                    raise TwoDError("mask is empty")
                checked = Prompt(prompt.frame_index, prompt.obj_id, mask=mask)
            else:
                if prompt.points is None and prompt.box is None:
                    raise TwoDError("a prompt needs clicks, a box or a mask")
                pts, lab = (None, None)
                if prompt.points is not None:
                    pts, lab = _check_points(prompt.points, prompt.labels, hw)
                box = None
                if prompt.box is not None:
                    box = _check_boxes(prompt.box, hw)
                    if len(box) != 1:
                        raise TwoDError(f"one box per object and frame, got {len(box)}")
                    box = box[0]
                checked = Prompt(prompt.frame_index, prompt.obj_id, pts, lab, box)
        except TwoDError as err:
            raise TwoDError(f"{where}, object {prompt.obj_id}: {err}") from None
        self._pending.setdefault(int(prompt.frame_index), {})[int(prompt.obj_id)] = checked

    def add_points(
        self, frame_index: int, obj_id: int, points: ArrayLike, labels: ArrayLike = None
    ) -> None:
        """Clicks (P, 2) (x, y) pixels with labels 1 (include) / 0 (exclude), default all 1."""
        self.add(Prompt(frame_index, obj_id, points=points, labels=labels))

    def add_box(
        self,
        frame_index: int,
        obj_id: int,
        box: ArrayLike,
        points: ArrayLike = None,
        labels: ArrayLike = None,
    ) -> None:
        """A box xyxy pixels, optionally with clicks (SAM 2 takes them together)."""
        self.add(Prompt(frame_index, obj_id, points=points, labels=labels, box=box))

    def add_mask(self, frame_index: int, obj_id: int, mask: ArrayLike) -> None:
        """A bool (H, W) mask at the frame size."""
        self.add(Prompt(frame_index, obj_id, mask=mask))

    def _apply_prompts(self, frame_index: int) -> tuple[int, ...]:
        prompts = self._pending.pop(frame_index, {})
        for obj_id, p in prompts.items():
            with self._autocast():
                if p.mask is not None:
                    self.model.add_new_mask(
                        self.state, frame_index, obj_id, torch.from_numpy(p.mask)
                    )
                else:
                    self.model.add_new_points_or_box(
                        self.state, frame_index, obj_id, points=p.points, labels=p.labels, box=p.box
                    )  # fmt: skip
        return tuple(sorted(prompts))

    def _result(
        self, frame_index: int, obj_ids: list, video_masks: Tensor, prompted: tuple[int, ...]
    ) -> FrameResult:
        state = self.state
        assert state is not None and self.frames is not None
        masks, scores = {}, {}
        for k, obj_id in enumerate(obj_ids):
            outputs = state["output_dict_per_obj"][k]
            out = outputs["cond_frame_outputs"].get(frame_index)
            out = out if out is not None else outputs["non_cond_frame_outputs"][frame_index]
            masks[obj_id] = (video_masks[k, 0] > 0.0).cpu()
            scores[obj_id] = float(torch.sigmoid(out["object_score_logits"].float()).max())
        return FrameResult(frame_index, self.frames.names[frame_index], masks, scores, prompted)

    def _forget(self, frame_index: int) -> None:
        """Drop the non-conditioning outputs that tracking frame_index + 1 onwards never reads."""
        assert self.state is not None
        oldest = frame_index + 1 - self.memory_frames
        for outputs, tracked in zip(
            self.state["output_dict_per_obj"].values(),
            self.state["frames_tracked_per_obj"].values(),
            strict=True,
        ):
            old = outputs["non_cond_frame_outputs"]
            for t in [t for t in old if t < oldest]:
                del old[t]
            for t in [t for t in tracked if t < oldest]:
                del tracked[t]

    def track(self) -> Iterator[FrameResult]:
        """Track from `next_frame` to the end, one `FrameResult` per frame in order. Frames before
        the first prompt come back without masks (and are not decoded)."""
        if self.state is None or self.frames is None:
            raise TwoDError("no video: call start(frames), add prompts, then track()")
        state, n = self.state, len(self.frames)
        while self.next_frame < n:
            t = self.next_frame
            prompted = self._apply_prompts(t)
            if not state["obj_ids"]:
                self.next_frame = t + 1
                yield FrameResult(t, self.frames.names[t])
                continue
            # one sam2 propagation up to the next queued prompt; restarted there to apply it
            stop = min((f for f in self._pending if f > t), default=n)
            steps = self.model.propagate_in_video(
                state, start_frame_idx=t, max_frame_num_to_track=stop - t - 1
            )
            try:
                while True:
                    with self._autocast():  # only around sam2's work, never around our yield
                        step = next(steps, None)
                    if step is None:
                        break
                    frame_index, obj_ids, video_masks = step
                    result = self._result(frame_index, obj_ids, video_masks, prompted)
                    prompted = ()
                    self._forget(frame_index)
                    self.next_frame = frame_index + 1
                    yield result
                    if self.next_frame in self._pending:  # queued while we were suspended
                        break
            finally:
                steps.close()


def load_sam2_video(
    name_or_checkpoint: str | Path,
    config: str | Path | None = None,
    device: str | torch.device | None = None,
    overrides: Sequence[str] = (),
) -> Sam2Video:
    """A `Sam2Video` from a hub id (`facebook/sam2.1-hiera-tiny|small|base-plus|large`) or a local
    `{"model": state_dict}` .pt plus its `config`, as `load_sam2` loads them; the config's model is
    instantiated as `SAM2VideoPredictor` (sam2's `build_sam2_video_predictor` does the same,
    here without its postprocessing overrides). `overrides` edit the config (dotlist)."""
    overrides = (f"model._target_={VIDEO_PREDICTOR}", *overrides)
    model = _build_model(name_or_checkpoint, config, device, overrides)
    return Sam2Video(model, str(name_or_checkpoint))
