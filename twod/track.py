"""Tracking with re-identification: SAM 2's video tracker, plus a DINO prototype bank that brings
an object back after SAM 2 lost it (an occlusion, a cut, a fast move).

Per frame t that the tracker yields, per object:
- confidently seen (`reid.is_confident`): every `bank_every` frames, the frame's patch features
  feed the object's `PrototypeBank` (calibrated, see `reid`);
- lost (`reid.is_lost`) and known to the bank: the features of frame t + 1 are searched for it;
  if `reid.should_reprompt` accepts the best match, the tracker gets a click there on frame t + 1
  (a new conditioning frame for that object). Frames are searched while the object stays lost,
  each at most once; an object that left for good keeps matching only background and is left
  alone.
Features are extracted only for those frames (at most two per frame, usually none while every
object is tracked and `bank_every` is large).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch

from .features import FeatureExtractor, PatchFeatures
from .reid import PrototypeBank, ReidConfig, is_confident, is_lost, should_reprompt
from .sam_video import FrameResult, Prompt
from .video import VideoFrames


class VideoTracker(Protocol):
    """What `track_with_reid` drives: `Sam2Video`, or a scripted stand-in in tests."""

    def start(self, frames: VideoFrames) -> None: ...

    def add(self, prompt: Prompt) -> None: ...

    def track(self) -> Iterator[FrameResult]: ...


def frame_features(extractor: FeatureExtractor, frame: np.ndarray) -> PatchFeatures:
    """Patch features of one uint8 (H, W, 3) frame."""
    image = torch.tensor(frame, dtype=torch.float32) / 255.0
    return extractor.extract([image])


def track_with_reid(
    tracker: VideoTracker,
    frames: VideoFrames,
    extractor: FeatureExtractor,
    prompts: Iterable[Prompt],
    cfg: ReidConfig | None = None,
    bank: PrototypeBank | None = None,
) -> Iterator[FrameResult]:
    """Track `frames` from `prompts`, re-prompting lost objects where `bank` (default: a new one)
    finds them again (`cfg` default: `ReidConfig()`). Yields the tracker's `FrameResult`s in frame order; a re-prompt shows as the
    object in the next frame's `prompted`."""
    cfg = cfg or ReidConfig()
    bank = bank if bank is not None else PrototypeBank(cfg.max_prototypes)
    tracker.start(frames)
    last_prompt: dict[int, int] = {}
    for p in prompts:
        tracker.add(p)
        last_prompt[p.obj_id] = max(p.frame_index, last_prompt.get(p.obj_id, p.frame_index))
    last_fed: dict[int, int] = {}
    cached: dict[int, PatchFeatures] = {}

    def features(index: int) -> PatchFeatures:
        if index not in cached:
            found = frame_features(extractor, frames[index])
            cached.clear()  # keep at most the frame just asked for
            cached[index] = found
        return cached[index]

    for result in tracker.track():
        t = result.frame_index
        for obj, mask in result.masks.items():
            score = result.scores[obj]
            if is_confident(mask, score, cfg):
                if t - last_fed.get(obj, -cfg.bank_every) >= cfg.bank_every:
                    bank.observe(features(t), obj, mask, cfg)
                    last_fed[obj] = t
            elif is_lost(mask, score, cfg) and obj in bank and t + 1 < len(frames):
                threshold = bank.threshold(obj, cfg)
                if threshold is None:
                    continue
                since = t + 1 - last_prompt[obj] if obj in last_prompt else None
                if since is not None and since < cfg.cooldown:
                    continue
                match = bank.search(features(t + 1), obj, cfg)
                if should_reprompt(match, threshold, since, cfg):
                    tracker.add(Prompt(t + 1, obj, points=[match.point], labels=[1]))
                    last_prompt[obj] = t + 1
        yield result
