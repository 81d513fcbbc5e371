"""Non-parametric video label propagation (semi-supervised video object segmentation).

The DINOv3 paper's "video segmentation tracking" evaluation, which is the label propagation of
DINO's `eval_video_segmentation.py` and of the space-time correspondence papers (CRW/STC):

- every frame → L2-normalised patch features (any `FeatureExtractor`: DINOv3, DINOv2, `colour`);
- context = the first frame with its given labels + the last `context` (7) frames with their
  predicted soft labels;
- for each patch of the current frame, the candidates are the context patches within a circle of
  `radius` (12) patches around the same position, in every context frame;
- the `topk` (5) most similar candidates over all context frames are kept (all candidates tied
  with the k-th similarity too, as the reference `sim >= k-th` threshold does), weighted by
  exp(sim / `temperature`) normalised (softmax, temperature 0.2);
- the patch's soft labels (channel 0 background, one channel per object) are the weighted mean
  of theirs; they are stored at patch resolution for later frames, upsampled bilinearly to the
  frame size and argmax-ed into object ids.

Where this differs from the reference code, and why:
- The given masks go to the patch grid by area averaging of their one-hot (boundary patches get
  soft labels); DINO resizes the label map with nearest neighbour, the DINOv3 notebook with
  `nearest-exact`.
- No per-channel min-max rescaling before the argmax by default (DINO's `norm_mask`, the DINOv3
  notebook's `postprocess_probs`): it turns the faint leftover probability of a fully occluded
  object into a false positive. `PropagateConfig.rescale=True` restores it.
- DINO (v1) uses a square window and temperature 0.1; this follows DINOv3 (circle, 0.2).
- Objects introduced later (YouTube-VOS, Cutie's examples), which the protocol does not cover:
  `LabelPropagator.add_mask` pastes the given mask over the prediction of that frame, and the
  frame then stays in the context for good, as the first frame does ("anchor" frames). Those
  objects are propagated from the frames from there on only (`propagate_groups`): earlier frames
  were never told about them, and their "background" there would outvote the new mask (on
  Cutie's judo it did: every person given later vanished on the next frame).
- Short side 480 by default (`PropagateConfig.short_side`), not the paper's 960: DAVIS and Cutie
  frames are 480p, so 480 keeps them at native resolution (DINO v1's setting too); 960 doubles
  both sides (4x the tokens and ~16x the attention cost of the backbone), a GPU setting.

`propagate_step` is the vectorised core (row chunks bound its memory); `propagate_step_reference`
its slow per-patch twin.
"""

from __future__ import annotations

import copy
import functools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from .features import FeatureExtractor, TwoDError

MASK_SIZE_SLACK = 2
"""Masks up to this many pixels off the frame size (per dimension) are resized (nearest)."""


@dataclass
class PropagateConfig:
    """Label propagation settings; the defaults are the DINOv3 paper's (short side aside)."""

    radius: int = 12
    """Neighbourhood radius in patches: candidates lie within this Euclidean distance of the
    query patch's position (a circle), in every context frame."""
    topk: int = 5
    """Most similar candidates (over all context frames) whose labels are averaged."""
    temperature: float = 0.2
    """Weights are exp(similarity / temperature), normalised over the top-k."""
    context: int = 7
    """Previous frames (with their predicted soft labels) kept as context besides the first."""
    short_side: int | None = 480
    """Short side the backbone sees (the paper: 960, a GPU setting); None keeps the extractor's."""
    rescale: bool = False
    """Rescale each channel to [0, 1] (min-max) before the argmax, as DINO's and the DINOv3
    notebook's code do; off by default since it revives fully occluded objects."""
    chunk_mb: float = 1.0
    """Bound on the similarity block of one context frame (a chunk of query rows x the context
    patches within reach, float32) in MiB: query rows go in chunks that fit, so a step holds
    about T (context frames) times this, and the chunks do not depend on T."""

    def __post_init__(self) -> None:
        if self.radius < 0:
            raise TwoDError(f"radius {self.radius}: want >= 0 (patches)")
        if self.topk < 1:
            raise TwoDError(f"topk {self.topk}: want >= 1")
        if not self.temperature > 0:
            raise TwoDError(f"temperature {self.temperature}: want > 0")
        if self.context < 0:
            raise TwoDError(f"context {self.context}: want >= 0 previous frames")
        if self.short_side is not None and self.short_side < 1:
            raise TwoDError(f"short_side {self.short_side}: want a positive number of pixels")
        if not self.chunk_mb > 0:
            raise TwoDError(f"chunk_mb {self.chunk_mb}: want > 0")


# ---------------------------------------------------------------------------------------------
# Labels: (H, W) maps of object ids <-> soft one-hot channels (L = 1 + objects, 0 = background)


def check_object_ids(object_ids: Iterable[int]) -> list[int]:
    """Object ids as a list: distinct, in 1..255 (0 is background; outputs are uint8 maps)."""
    ids = [int(i) for i in object_ids]
    bad = [i for i in ids if not 1 <= i <= 255]
    if bad:
        raise TwoDError(f"object ids {bad}: want 1..255 (0 is background)")
    if len(set(ids)) != len(ids):
        raise TwoDError(f"object ids {ids}: each id once")
    return ids


def labels_to_onehot(mask: np.ndarray, object_ids: Sequence[int]) -> Float[Tensor, "L H W"]:
    """One-hot labels of an (H, W) map of object ids: channel 0 background, channel c the object
    `object_ids[c - 1]`. Ids of the map that are not in `object_ids` count as background; ids of
    `object_ids` absent from the map get an empty channel."""
    ids = check_object_ids(object_ids)
    label_map = _label_values(mask, "mask")
    lookup = torch.zeros(256, dtype=torch.long)
    lookup[ids] = torch.arange(1, len(ids) + 1)
    channels = lookup[torch.from_numpy(label_map.astype(np.int64))]
    return F.one_hot(channels, len(ids) + 1).permute(2, 0, 1).float()


def downsample_labels(
    labels: Float[Tensor, "L H W"], grid: tuple[int, int]
) -> Float[Tensor, "L h w"]:
    """Soft labels on the patch grid: each patch averages the labels of the pixels it covers
    (area pooling; patch (i, j) covers the (i, j) cell of an h x w division of the frame, as
    `prepare_batch` maps the whole frame onto the grid). Channels still sum to 1."""
    return F.adaptive_avg_pool2d(labels[None].float(), grid)[0]


def upsample_labels(
    labels: Float[Tensor, "L h w"], size: tuple[int, int]
) -> Float[Tensor, "L H W"]:
    """Soft labels at frame size (bilinear, pixel centres aligned as in `F.interpolate`)."""
    return F.interpolate(labels[None], size=size, mode="bilinear", align_corners=False)[0]


def rescale_channels(labels: Float[Tensor, "L H W"]) -> Float[Tensor, "L H W"]:
    """Each channel min-max rescaled to [0, 1] (constant channels become 0): DINO's `norm_mask`."""
    flat = labels.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low)[:, None, None]
    return torch.where(span > 0, (labels - low[:, None, None]) / span.clamp_min(1e-12), 0.0)


def paste_labels(
    labels: Float[Tensor, "L h w"], given: Float[Tensor, "L h w"], channels: Sequence[int]
) -> Float[Tensor, "L h w"]:
    """`labels` with the objects of `given` (its `channels`, soft masks) pasted on top: where
    they cover a fraction m, the other channels keep (1 - m) of their mass; a pasted object's
    own mass outside its given mask goes to background (the new mask says where it is)."""
    channels = list(channels)
    covered = given[channels].sum(0).clamp(0, 1)
    out = labels * (1 - covered)
    out[0] += out[channels].sum(0)
    out[channels] = given[channels]
    return out


# ---------------------------------------------------------------------------------------------
# The propagation step


def neighbourhood_mask(
    width: int, radius: int, query_rows: tuple[int, int], context_rows: tuple[int, int]
) -> Bool[Tensor, "Q K"]:
    """mask[q, k]: context patch k lies within `radius` patches (Euclidean) of query patch q, for
    the patches of rows [start, stop) of a grid `width` wide, row-major. Cached: it depends only
    on the rows' relative placement, so all interior row chunks share one mask."""
    return _relative_mask(
        width,
        radius,
        query_rows[1] - query_rows[0],
        context_rows[0] - query_rows[0],
        context_rows[1] - context_rows[0],
    )


@functools.lru_cache(maxsize=64)
def _relative_mask(
    width: int, radius: int, query_rows: int, context_offset: int, context_rows: int
) -> Tensor:
    qy, qx = torch.meshgrid(torch.arange(query_rows), torch.arange(width), indexing="ij")
    ky, kx = torch.meshgrid(
        torch.arange(context_offset, context_offset + context_rows),
        torch.arange(width),
        indexing="ij",
    )
    dy = qy.reshape(-1, 1) - ky.reshape(1, -1)
    dx = qx.reshape(-1, 1) - kx.reshape(1, -1)
    return dy * dy + dx * dx <= radius * radius


@functools.lru_cache(maxsize=64)
def _far_bias(
    width: int, radius: int, query_rows: int, context_offset: int, context_rows: int, device: str
) -> Tensor:
    """0 within the radius, -inf outside (added to similarities), on `device`."""
    near = _relative_mask(width, radius, query_rows, context_offset, context_rows)
    return torch.zeros(near.shape, device=device).masked_fill_(~near.to(device), -torch.inf)


def rows_per_chunk(h: int, w: int, radius: int, chunk_mb: float) -> int:
    """Most query rows whose similarity block with one context frame (rows * w queries x the
    patches of the rows within `radius`) fits in `chunk_mb` MiB of float32; at least 1."""
    budget = chunk_mb * 2**20 / 4
    for rows in range(h, 0, -1):
        if rows * w * min(h, rows + 2 * radius) * w <= budget:
            return rows
    return 1


def propagate_step(
    query: Float[Tensor, "h w D"],
    context_features: Float[Tensor, "T h w D"],
    context_labels: Float[Tensor, "T L h w"],
    cfg: PropagateConfig,
) -> Float[Tensor, "L h w"]:
    """Soft labels of one frame from T context frames (features L2-normalised, cosine meant).

    For each query patch: the context patches within `cfg.radius` of its position (in every
    context frame) are the candidates; those with a cosine similarity >= the `cfg.topk`-th
    largest are weighted by softmax(sim / `cfg.temperature`) and their labels averaged. Query rows
    go in chunks (and only the context rows within the radius of a chunk are compared), so one
    similarity block stays under T x `cfg.chunk_mb`.
    """
    h, w, dim = query.shape
    if context_features.ndim != 4 or context_features.shape[0] == 0:
        raise TwoDError(
            f"context features: want (T>=1, h, w, D), got {tuple(context_features.shape)}"
        )
    if tuple(context_features.shape[1:]) != (h, w, dim):
        raise TwoDError(
            f"context features {tuple(context_features.shape[1:])} do not match the query's "
            f"{(h, w, dim)} (same grid and dimension needed)"
        )
    frames, channels = context_labels.shape[:2]
    if tuple(context_labels.shape) != (frames, channels, h, w) or frames != len(context_features):
        raise TwoDError(
            f"context labels {tuple(context_labels.shape)}: want ({len(context_features)}, L, {h}, {w})"
        )
    radius = cfg.radius
    rows = rows_per_chunk(h, w, radius, cfg.chunk_mb)
    labels = context_labels.permute(0, 2, 3, 1)  # T h w L
    out = query.new_empty(h * w, channels)
    for q0 in range(0, h, rows):
        q1 = min(h, q0 + rows)
        k0, k1 = max(0, q0 - radius), min(h, q1 + radius)
        queries = query[q0:q1].reshape(-1, dim)
        sims = queries @ context_features[:, k0:k1].reshape(-1, dim).T  # Q, T*K
        far = _far_bias(w, radius, q1 - q0, k0 - q0, k1 - k0, str(sims.device))
        sims.view(len(queries), frames, -1).add_(far[:, None, :])  # -inf outside the radius
        top = sims.topk(min(cfg.topk, sims.shape[1]), dim=1).values
        # The candidates at or above the k-th similarity (ties included), as sparse pairs.
        pair_query, pair_context = (sims >= top[:, -1:]).nonzero(as_tuple=True)
        weight = ((sims[pair_query, pair_context] - top[pair_query, 0]) / cfg.temperature).exp()
        total = weight.new_zeros(len(queries)).index_add_(0, pair_query, weight)
        pair_labels = labels[:, k0:k1].reshape(-1, channels)[pair_context]
        mixed = out.new_zeros(len(queries), channels).index_add_(
            0, pair_query, weight[:, None] * pair_labels
        )
        out[q0 * w : q1 * w] = mixed / total[:, None]
    return out.reshape(h, w, channels).permute(2, 0, 1)


def propagate_step_reference(
    query: Float[Tensor, "h w D"],
    context_features: Float[Tensor, "T h w D"],
    context_labels: Float[Tensor, "T L h w"],
    cfg: PropagateConfig,
) -> Float[Tensor, "L h w"]:
    """Slow twin of `propagate_step` (float64): one query patch at a time, candidates listed by
    an explicit distance test, sorted, thresholded at the k-th, softmax-weighted."""
    h, w, _ = query.shape
    frames, channels = context_labels.shape[:2]
    query, context_features = query.double(), context_features.double()
    context_labels = context_labels.double()
    out = torch.zeros(channels, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            sims, labels = [], []
            for t in range(frames):
                for u in range(h):
                    for v in range(w):
                        if (u - i) ** 2 + (v - j) ** 2 <= cfg.radius**2:
                            sims.append(query[i, j] @ context_features[t, u, v])
                            labels.append(context_labels[t, :, u, v])
            sim = torch.stack(sims)
            kth = sim.sort(descending=True).values[min(cfg.topk, len(sim)) - 1]
            keep = sim >= kth
            weights = torch.softmax(sim[keep] / cfg.temperature, dim=0)
            out[:, i, j] = weights @ torch.stack(labels)[keep]
    return out


def propagate_groups(
    query: Float[Tensor, "h w D"],
    context_features: Float[Tensor, "T h w D"],
    context_labels: Float[Tensor, "T L h w"],
    context_frames: Sequence[int],
    groups: Sequence[tuple[int, Sequence[int]]],
    cfg: PropagateConfig,
) -> Float[Tensor, "L h w"]:
    """`propagate_step` for objects introduced on different frames.

    `groups` are (first frame, label channels) of the objects given together on that frame;
    `context_frames` the frame index of each context frame. A group is propagated from the
    context frames on or after its first frame only (earlier frames never saw its objects, their
    background there is no evidence), as its own [rest, objects...] problem; later groups are
    pasted over earlier ones (`paste_labels`), as their masks were on the frame they came with.
    One group holding every object is exactly `propagate_step`.
    """
    ordered = sorted(groups)
    channels = context_labels.shape[1]
    if len(ordered) == 1 and sorted(ordered[0][1]) == list(range(1, channels)):
        return propagate_step(query, context_features, context_labels, cfg)
    out: Tensor | None = None
    for start, group in ordered:
        group = list(group)
        use = [i for i, frame in enumerate(context_frames) if frame >= start]
        if not use:
            raise TwoDError(f"objects given on frame {start} have no context frame from there on")
        objects = context_labels[use][:, group]
        rest = (1 - objects.sum(1, keepdim=True)).clamp_min(0)
        probs = propagate_step(query, context_features[use], torch.cat([rest, objects], 1), cfg)
        spread = probs.new_zeros(channels, *probs.shape[1:])
        spread[0], spread[group] = probs[0], probs[1:]
        out = spread if out is None else paste_labels(out, spread, group)
    assert out is not None, "no object groups"
    return out


# ---------------------------------------------------------------------------------------------
# Streaming over a video


@dataclass
class PropagationResult:
    """Labels of one frame.

    `probs` (L, H, W) on the CPU: channel 0 background, channel c the object `object_ids[c - 1]`
    (summing to 1 per pixel unless `rescale`); `mask` uint8 (H, W), each pixel's object id (0
    background; the ids the masks gave, e.g. {1, 2} or {2}); `scores` (O,) the mean probability
    of each object over the pixels it takes (0 where it takes none).
    """

    frame_index: int
    object_ids: tuple[int, ...]
    probs: Float[Tensor, "L H W"]
    mask: np.ndarray
    scores: Float[Tensor, " O"]

    def object_mask(self, object_id: int) -> np.ndarray:
        """bool (H, W): the pixels labelled `object_id`."""
        if object_id not in self.object_ids:
            raise TwoDError(f"object id {object_id} is not tracked (ids: {list(self.object_ids)})")
        return self.mask == object_id


def result_from_probs(
    frame_index: int, probs: Float[Tensor, "L H W"], object_ids: Sequence[int]
) -> PropagationResult:
    """Argmax of `probs` into a map of the original object ids, and per-object scores."""
    probs = probs.float().cpu()
    # Channel by channel: argmax over a leading dim of few channels is slow on CPU.
    best = torch.zeros(probs.shape[1:], dtype=torch.long)
    top = probs[0]
    for channel in range(1, len(probs)):
        better = probs[channel] > top
        top = torch.where(better, probs[channel], top)
        best[better] = channel
    scores = probs.new_zeros(len(probs) - 1)
    for channel in range(1, len(probs)):
        taken = best == channel
        if taken.any():
            scores[channel - 1] = probs[channel][taken].mean()
    lookup = torch.tensor([0, *object_ids], dtype=torch.uint8)
    return PropagationResult(frame_index, tuple(object_ids), probs, lookup[best].numpy(), scores)


@dataclass(eq=False)
class _ContextFrame:
    index: int
    features: Float[Tensor, "h w D"]
    labels: Float[Tensor, "L h w"]


class LabelPropagator:
    """Streaming label propagation from a first-frame mask, one `step(frame)` per frame.

    Holds the features and patch labels of the anchor frames (the first, and each frame a mask
    was added to) and of the last `cfg.context` frames, never the whole video. Frames are
    (H, W, 3) RGB: uint8 numpy/tensors, or floats in [0, 1]; all of one size. Masks are (H, W)
    maps of object ids (0 background, ids 1..255, e.g. a DAVIS palette PNG as a numpy array); a
    mask at most `MASK_SIZE_SLACK` (2) pixels off the frame size per dimension (Cutie's judo
    00005.png is 853 wide for 854-wide frames) is resized to it, nearest neighbour; a larger
    mismatch is a TwoDError naming both sizes.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        first_frame: np.ndarray | Tensor,
        first_mask: np.ndarray,
        cfg: PropagateConfig | None = None,
        object_ids: Sequence[int] | None = None,
        device: str | None = None,
    ) -> None:
        """`object_ids`: the objects to track (default: every non-zero id of `first_mask`; other
        ids of the mask then count as background). `device` for the propagation math (default
        CUDA when present)."""
        self.cfg = cfg or PropagateConfig()
        self.extractor = with_short_side(extractor, self.cfg.short_side)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        frame = as_frame(first_frame)
        self.frame_size: tuple[int, int] = (frame.shape[0], frame.shape[1])
        label_map = fit_mask(first_mask, self.frame_size, "first mask")
        present = sorted(set(np.unique(label_map).tolist()) - {0})
        if not present:
            raise TwoDError("first mask has no object: every pixel is 0 (background)")
        ids = present if object_ids is None else check_object_ids(object_ids)
        missing = [i for i in ids if i not in present]
        if missing:
            raise TwoDError(f"object ids {missing} are not in the first mask (it has {present})")
        self.object_ids: list[int] = list(ids)
        features = self._features(frame)
        self.grid: tuple[int, int] = (features.shape[0], features.shape[1])
        onehot = labels_to_onehot(label_map, self.object_ids)
        first = _ContextFrame(0, features, downsample_labels(onehot, self.grid).to(self.device))
        self._anchors: list[_ContextFrame] = [first]
        self._recent: deque[_ContextFrame] = deque(maxlen=self.cfg.context)
        self._current = first
        # (first frame, label channels) of the objects given together on one frame.
        self._groups: list[tuple[int, list[int]]] = [(0, list(range(1, len(ids) + 1)))]
        self.frame_index = 0
        # The result of the latest frame (frame 0: the given mask).
        self.last = result_from_probs(0, onehot, self.object_ids)

    @property
    def context_frames(self) -> list[int]:
        """Indices of the frames whose features and labels are held: the anchors (the first
        frame and each frame a mask was added to), then the last `cfg.context` frames."""
        return [c.index for c in (*self._anchors, *self._recent)]

    def _features(self, frame: Tensor) -> Tensor:
        return self.extractor.extract([frame]).normalized()[0].to(self.device)

    def step(self, frame: np.ndarray | Tensor) -> PropagationResult:
        """Labels of the next frame, propagated from the context."""
        image = as_frame(frame)
        if (image.shape[0], image.shape[1]) != self.frame_size:
            raise TwoDError(
                f"frame {self.frame_index + 1} is {image.shape[1]}x{image.shape[0]}, the video "
                f"{self.frame_size[1]}x{self.frame_size[0]} (W x H): frames must share one size"
            )
        features = self._features(image)
        context = [*self._anchors, *self._recent]
        probs = propagate_groups(
            features,
            torch.stack([c.features for c in context]),
            torch.stack([c.labels for c in context]),
            [c.index for c in context],
            self._groups,
            self.cfg,
        )
        self.frame_index += 1
        self._current = _ContextFrame(self.frame_index, features, probs)
        self._recent.append(self._current)
        full = upsample_labels(probs, self.frame_size)
        if self.cfg.rescale:
            full = rescale_channels(full)
        self.last = result_from_probs(self.frame_index, full, self.object_ids)
        return self.last

    def add_mask(self, frame_index: int, mask: np.ndarray) -> PropagationResult:
        """Give the mask of objects on the frame just propagated (or frame 0): new ids are
        tracked from here on, ids already tracked are re-annotated (their mask replaces the
        prediction). The objects are pasted over the prediction (the mask's background keeps the
        predicted labels); the frame joins the anchors, kept in the context for good, and these
        objects are propagated from the frames from here on only (`propagate_groups`).
        Returns the frame's updated result."""
        if frame_index != self.frame_index:
            raise TwoDError(
                f"mask for frame {frame_index}: masks go with the frame just propagated (frame "
                f"{self.frame_index}); call add_mask right after that frame's step()"
            )
        label_map = fit_mask(mask, self.frame_size, f"mask of frame {frame_index}")
        ids = sorted(set(np.unique(label_map).tolist()) - {0})
        if not ids:
            raise TwoDError(f"mask of frame {frame_index} has no object: every pixel is 0")
        new = [i for i in ids if i not in self.object_ids]
        self.object_ids += new
        for frame in {id(c): c for c in (*self._anchors, *self._recent, self._current)}.values():
            frame.labels = _add_channels(frame.labels, len(new))
        channels = [self.object_ids.index(i) + 1 for i in ids]
        groups = [(start, [c for c in g if c not in channels]) for start, g in self._groups]
        same_frame = [c for start, g in groups if start == frame_index for c in g]
        self._groups = [(start, g) for start, g in groups if g and start != frame_index]
        self._groups.append((frame_index, sorted(same_frame + channels)))
        onehot = labels_to_onehot(label_map, self.object_ids)
        current = self._current
        given = downsample_labels(onehot, self.grid).to(self.device)
        current.labels = paste_labels(current.labels, given, channels)
        if not any(current is a for a in self._anchors):
            self._anchors.append(current)
            self._recent = deque((c for c in self._recent if c is not current), self.cfg.context)
        full = paste_labels(_add_channels(self.last.probs, len(new)), onehot, channels)
        self.last = result_from_probs(frame_index, full, self.object_ids)
        return self.last


def propagate_video(
    extractor: FeatureExtractor,
    frames: Iterable[np.ndarray | Tensor],
    masks: Mapping[int, np.ndarray],
    cfg: PropagateConfig | None = None,
    device: str | None = None,
) -> Iterator[PropagationResult]:
    """Results of every frame, streamed: `masks[0]` starts the tracker (its result is the mask
    itself), `masks[t]` for a later t adds (or re-annotates) objects on frame t."""
    if 0 not in masks:
        raise TwoDError("no mask for frame 0: propagation starts from a first-frame mask")
    stream = iter(frames)
    first = next(stream, None)
    if first is None:
        raise TwoDError("no frames to propagate")
    propagator = LabelPropagator(extractor, first, masks[0], cfg, device=device)
    yield propagator.last
    for index, frame in enumerate(stream, 1):
        result = propagator.step(frame)
        if index in masks:
            result = propagator.add_mask(index, masks[index])
        yield result


# ---------------------------------------------------------------------------------------------
# Input edges


def as_frame(frame: np.ndarray | Tensor) -> Float[Tensor, "H W 3"]:
    """(H, W, 3) float32 RGB in [0, 1] on the CPU, from uint8 or float numpy arrays / tensors."""
    if isinstance(frame, np.ndarray):
        writable = frame.flags.writeable and frame.flags.c_contiguous
        image = torch.from_numpy(frame if writable else np.array(frame))
    elif isinstance(frame, Tensor):
        image = frame.detach().cpu()
    else:
        raise TwoDError(f"a frame must be a numpy array or a tensor, got {type(frame).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise TwoDError(f"a frame must be (H, W, 3) RGB, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255
    if not image.is_floating_point():
        raise TwoDError(f"a frame must be uint8 or float in [0, 1], got {image.dtype}")
    return image.float()


def _label_values(mask: np.ndarray, what: str) -> np.ndarray:
    label_map = np.asarray(mask)
    if label_map.ndim != 2:
        raise TwoDError(f"{what}: want an (H, W) map of object ids, got shape {label_map.shape}")
    if label_map.dtype == bool:
        return label_map.astype(np.uint8)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise TwoDError(f"{what}: want integer object ids, got dtype {label_map.dtype}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
        raise TwoDError(
            f"{what}: ids {label_map.min()}..{label_map.max()}, want 0..255 (0 background)"
        )
    return label_map.astype(np.uint8)


def fit_mask(mask: np.ndarray, size: tuple[int, int], what: str) -> np.ndarray:
    """uint8 (H, W) id map of frame `size`: a mask at most `MASK_SIZE_SLACK` pixels off in each
    dimension is resized to it (nearest neighbour); a larger mismatch is a TwoDError."""
    from PIL import Image

    label_map = _label_values(mask, what)
    height, width = size
    if label_map.shape == size:
        return label_map
    off_h, off_w = abs(label_map.shape[0] - height), abs(label_map.shape[1] - width)
    if off_h > MASK_SIZE_SLACK or off_w > MASK_SIZE_SLACK:
        raise TwoDError(
            f"{what} is {label_map.shape[1]}x{label_map.shape[0]} but the frames are "
            f"{width}x{height} (W x H): masks must match the frame size (within "
            f"{MASK_SIZE_SLACK} pixels, which are resized)"
        )
    return np.asarray(Image.fromarray(label_map).resize((width, height), Image.Resampling.NEAREST))


def with_short_side(extractor: FeatureExtractor, short_side: int | None) -> FeatureExtractor:
    """The extractor at `short_side` (a shallow copy sharing the model; None: as it is)."""
    if short_side is None or extractor.short_side == short_side:
        return extractor
    resized = copy.copy(extractor)
    resized.short_side = short_side
    return resized


def _add_channels(labels: Tensor, count: int) -> Tensor:
    if count == 0:
        return labels
    return torch.cat([labels, labels.new_zeros(count, *labels.shape[1:])])
