"""`ViewerState`: what the web app shows and edits, as a state machine with no web code.

One `ViewerState` serves every connected browser: the scene being edited (an `EditHistory`), the
lifted features, the live query result and the selection. Each GUI event of the app is one method
call here; `display_colors()` is what the splats should look like afterwards.

Selection model: a query (phrase, exemplar click, 3D pick, rectangle, SAM prompt) gives a *result*
(per-Gaussian scores cut at `threshold`; with `pick_scope` "instance", a 3D pick or an exemplar
click keeps only the cut's piece connected to the clicked Gaussian, `query.instance`). The
*selection* is the result combined with the *base* (the selection before that query) by `mode`:
replace (the result), add (base | result), subtract (base - result) or intersect (base & result).
Moving the threshold or changing the mode re-cuts or re-combines the live result; the next query
first commits the current selection as its base. `selection_op` (invert, grow, shrink, clear) acts
on the selection and commits it. Edits act on the selection.

Indices: the edited scene carries `extras[SOURCE_INDEX]`, each Gaussian's row in the loaded scene,
so features (loaded per original Gaussian) and the display (one splat per original Gaussian) stay
aligned through delete/isolate and their undo. The field is dropped on export.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.lift.diffusion import KnnGraph, knn_graph
from omnivision.lift.store import LiftedFeatures
from omnivision.query.edits import EditHistory, delete, export, hide, isolate, recolor, show
from omnivision.query.instance import InstanceConfig, instance_adjacency, instance_selection
from omnivision.query.queries import (
    PhraseIndex,
    cosine_scores,
    mask_prompt_scores,
    pick_gaussian,
    relevancy_threshold,
    rendered_feature,
)
from omnivision.query.selection import Selection
from omnivision.scenes.cameras import Cameras, intrinsics_from_fov, look_at
from omnivision.scenes.gaussians import GaussianScene, quats_to_rotmats, sh_dc_to_rgb
from omnivision.scenes.load import Scene
from omnivision.scenes.render import RenderConfig, render
from omnivision.twod.features import FeatureExtractor

SOURCE_INDEX = "viewer_source_index"
"""Extra field on the edited scene: each Gaussian's row in the loaded scene (dropped on export)."""

CombineMode = Literal["replace", "add", "subtract", "intersect"]
SelectionOp = Literal["invert", "grow", "shrink", "clear"]
ClickMode = Literal["off", "exemplar", "pick", "sam+", "sam-"]
COMBINE_MODES: tuple[CombineMode, ...] = ("replace", "add", "subtract", "intersect")
CLICK_MODES: tuple[ClickMode, ...] = ("off", "exemplar", "pick", "sam+", "sam-")
PickScope = Literal["semantic", "instance"]
PICK_SCOPES: tuple[PickScope, ...] = ("semantic", "instance")
"""What a 3D pick or an exemplar click selects: everything like the clicked Gaussian, or only the
object it belongs to (the piece connected to it, `query.instance`)."""

TextEncoder = Callable[[Sequence[str]], Tensor]
"""Phrases -> L2-normalised embeddings (Q, E), e.g. `ClipModel.encode_text`."""
PromptSegmenter = Callable[
    [Tensor, Tensor | None, Tensor | None, tuple[float, float, float, float] | None], Tensor
]
"""(image (H, W, 3) in [0, 1], points (P, 2) xy pixels or None, labels (P,) 1/0 or None, box
xyxy or None) -> mask bool (H, W): SAM 2 prompted with clicks and/or a box."""
Progress = Callable[[float, str], None]
"""(fraction done in [0, 1], what is happening) for long operations."""

HIGHLIGHT_RGB = (1.0, 0.0, 1.0)
HIGHLIGHT_MIX = 0.7
"""Selected splats are drawn as (1 - mix) * colour + mix * magenta."""


class ViewerError(ValueError):
    """Something the user can fix (no features, nothing selected, a click on the background):
    the app shows the message on its status line."""

    exit_code = 2


@dataclass(frozen=True)
class DisplayColors:
    """What the splats look like, one row per Gaussian of the *loaded* scene (deleted ones have
    opacity 0): `rgb` (N0, 3) float32 in [0, 1], `opacity` (N0,) float32 in [0, 1]."""

    rgb: Float[np.ndarray, "N 3"]
    opacity: Float[np.ndarray, "N"]


@dataclass(frozen=True)
class SamPrompt:
    """Points clicked on one rendered view: `camera` (one view), `points` (P, 2) xy pixels,
    `labels` (P,) 1 include / 0 exclude."""

    camera: Cameras
    points: Float[Tensor, "P 2"]
    labels: Tensor


# -- cameras a browser gives us --------------------------------------------------------------
def pinhole_camera(
    position: Sequence[float] | np.ndarray,
    wxyz: Sequence[float] | np.ndarray,
    fov_y: float,
    width: int,
    height: int,
) -> Cameras:
    """One OpenCV camera at `position` with camera-to-world rotation `wxyz` (x right, y down,
    z forward), vertical field of view `fov_y` radians, square pixels, centred principal point."""
    rot = quats_to_rotmats(torch.as_tensor(np.asarray(wxyz, dtype=np.float64))[None])[0]
    center = torch.as_tensor(np.asarray(position, dtype=np.float64))
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = rot.T
    w2c[:3, 3] = -rot.T @ center
    f = 0.5 * height / math.tan(0.5 * fov_y)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    return Cameras(w2c[None].float(), K[None].float(), [int(width)], [int(height)], ["client"])


def ray_camera(
    origin: Sequence[float] | Tensor, direction: Sequence[float] | Tensor, fov_deg: float = 0.5
) -> Cameras:
    """A 9x9-pixel camera at `origin` looking along `direction`: its centre pixel (4, 4) is the ray."""
    o = torch.as_tensor(origin, dtype=torch.float64).reshape(1, 3)
    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=torch.float64), dim=0)
    up = torch.tensor([0.0, 0.0, 1.0] if abs(float(d[2])) <= 0.9 else [1.0, 0.0, 0.0])
    w2c = look_at(o, o + d, up)
    return Cameras(w2c, intrinsics_from_fov(fov_deg, 9, 9)[None], [9], [9], ["ray"])


def crop_camera(
    camera: Cameras, xyxy: tuple[float, float, float, float], max_side: int | None = None
) -> tuple[Cameras, float]:
    """The part `xyxy` of a one-view camera's image as a camera of its own, scaled down so its
    long side is at most `max_side`; returns it and the scale (crop pixels per image pixel)."""
    x0, y0, x1, y1 = xyxy
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    s = 1.0 if max_side is None else min(1.0, max_side / max(w, h))
    K = camera.K[0].clone().double()
    K[0, 0] *= s
    K[1, 1] *= s
    K[0, 2] = (K[0, 2] - x0) * s
    K[1, 2] = (K[1, 2] - y0) * s
    width, height = max(1, math.ceil(w * s)), max(1, math.ceil(h * s))
    crop = Cameras(camera.world_to_camera[:1].clone(), K[None].float(), [width], [height], ["crop"])
    return crop, s


def _capped(camera: Cameras, max_side: int) -> Cameras:
    """A one-view camera resized (same view) so its long side is at most `max_side` pixels."""
    w, h = camera.widths[0], camera.heights[0]
    s = min(1.0, max_side / max(w, h))
    return camera if s >= 1.0 else camera.resized(max(1, round(w * s)), max(1, round(h * s)))


def _same_camera(a: Cameras, b: Cameras) -> bool:
    return (
        a.widths == b.widths
        and a.heights == b.heights
        and torch.allclose(a.world_to_camera, b.world_to_camera, atol=1e-5)
        and torch.allclose(a.K, b.K, atol=1e-3)
    )


# -- the state machine -----------------------------------------------------------------------
class ViewerState:
    """The scene a viewer session edits, its features, the live query result and the selection.

    Methods are GUI events; they raise `ViewerError` for things the user can fix. Not thread-safe:
    the app serialises calls.
    """

    def __init__(
        self,
        scene: Scene,
        features: LiftedFeatures | Float[Tensor, "N D"] | None = None,
        features_name: str | None = None,
        text_fn: TextEncoder | None = None,
        segmenter: PromptSegmenter | None = None,
        sam: str = "facebook/sam2.1-hiera-tiny",
        sam_config: str | None = None,
    ) -> None:
        """`features`: lifted features as read from disk (their manifest entry names the CLIP
        model for phrases, their PCA projects text embeddings) or a plain (N, D) tensor.
        `text_fn` / `segmenter` replace the CLIP text encoder / SAM 2 (loaded lazily otherwise)."""
        gaussians = scene.gaussians
        n = len(gaussians)
        lifted = features if isinstance(features, LiftedFeatures) else None
        values = features.features if isinstance(features, LiftedFeatures) else features
        if values is not None and values.shape[0] != n:
            raise ViewerError(
                f"features {features_name!r} have {values.shape[0]} rows for {n} Gaussians: "
                f"re-run omnivision-lift {scene.root}"
            )
        self.scene = scene
        self.cameras = scene.cameras_or_orbit()
        self.features = None if values is None else values.float()
        self.features_name = features_name
        self.features_entry = {} if lifted is None else lifted.entry
        self.pca = None if lifted is None else lifted.pca
        """The PCA the features were reduced with (text embeddings are projected with it)."""
        self.codebook = None if lifted is None else lifted.codebook
        """The codebook of a lift stored as one: phrases are scored per entry and gathered."""
        self.text_fn = text_fn
        self.segmenter = segmenter
        self.sam, self.sam_config = sam, sam_config
        index = torch.arange(n, dtype=torch.int64)
        self.history = EditHistory(
            GaussianScene(
                gaussians.means,
                gaussians.quats,
                gaussians.log_scales,
                gaussians.opacity_logits,
                gaussians.sh,
                {**gaussians.extras, SOURCE_INDEX: index},
            )
        )
        self.mode: CombineMode = "replace"
        self.click_mode: ClickMode = "off"
        self.pick_scope: PickScope = "semantic"
        self.instance_config = InstanceConfig()
        self.relevancy_map = False
        self.threshold = 0.0
        self.result_kind = ""
        self.picked = -1
        self.sam_prompt: SamPrompt | None = None
        self.reference_photo: tuple[str, Tensor] | None = None  # (name, (H, W, 3) image)
        self._result: Selection | None = None
        self._seeds: Tensor | None = None  # the live result is an instance of these Gaussians
        self._instance: tuple[float, Selection] | None = None  # (threshold, instance) last cut
        self._base = Selection.empty(n)
        self._index_seen = index
        self._cache: dict[str, tuple[tuple[Tensor, ...], object]] = {}

    # -- what is being edited ---------------------------------------------------------------
    @property
    def num_loaded(self) -> int:
        """N0, the Gaussians of the loaded scene (the display has one splat each)."""
        return len(self.scene.gaussians)

    @property
    def current(self) -> GaussianScene:
        """The edited scene (with `extras[SOURCE_INDEX]`)."""
        return self.history.current

    @property
    def index(self) -> Tensor:
        """(N,) row in the loaded scene of each Gaussian of the edited scene."""
        return self.current.extras[SOURCE_INDEX]

    def _cached(self, name: str, key: tuple[Tensor, ...], make: Callable[[], object]):
        """`make()`, recomputed only when one of the `key` tensors is a different object (edits
        return new tensors for what they change; the cache holds the keys, so ids stay unique)."""
        hit = self._cache.get(name)
        if hit is not None and all(a is b for a, b in zip(hit[0], key, strict=True)):
            return hit[1]
        value = make()
        self._cache[name] = (key, value)
        return value

    def current_features(self) -> Float[Tensor, "N D"]:
        if self.features is None:
            raise ViewerError(f"no lifted features: run omnivision-lift {self.scene.root}")
        features = self.features
        index = self.index
        return self._cached("features", (index,), lambda: features[index])  # type: ignore[return-value]

    def knn(self) -> KnnGraph:
        current = self.current
        return self._cached("knn", (current.means,), lambda: knn_graph(current.means, 16))  # type: ignore[return-value]

    def instance_matrix(self) -> Tensor:
        """The edited scene's kNN adjacency for instance selection (`query.instance_adjacency`:
        colour-similarity edge weights), built once per geometry and colours."""
        current, edges = self.current, self.instance_config.edges
        features = None if edges == "colour" else self.current_features()
        return self._cached(  # type: ignore[return-value]
            "instance_matrix",
            (current.means, current.sh),
            lambda: instance_adjacency(self.knn(), current.rgb_dc, features, edges),
        )

    # -- selection ------------------------------------------------------------------------------
    @property
    def result(self) -> Selection | None:
        """The live query result cut at `threshold` (None when no query is live); for an instance
        pick, the cut's piece connected to the picked Gaussian (recut when the threshold moves)."""
        if self._result is None:
            return None
        if self._seeds is None:
            return self._result.rethreshold(self.threshold)
        if self._instance is None or self._instance[0] != self.threshold:
            config = replace(self.instance_config, threshold=self.threshold)
            matrix = self.instance_matrix()
            instance = instance_selection(self._result.scores, self._seeds, matrix, config)
            self._instance = (self.threshold, instance)
        return self._instance[1]

    @property
    def selection(self) -> Selection:
        result = self.result
        if result is None:
            return self._base
        if self.mode == "replace":
            return result
        if self.mode == "add":
            return self._base | result
        if self.mode == "subtract":
            return self._base - result
        return self._base & result

    @property
    def count(self) -> int:
        return self.selection.count

    @property
    def score_range(self) -> tuple[float, float]:
        """(min, max) of the live result's scores, for the threshold slider."""
        if self._result is None or len(self._result) == 0:
            return 0.0, 1.0
        scores = self._result.scores
        return float(scores.min()), float(scores.max())

    def _set_result(
        self, scores: Tensor, kind: str, threshold: float | None = None, seed: int | None = None
    ) -> Selection:
        """Commit the current selection as the base and make `scores` the live result, cut at
        `threshold` (default: Otsu's threshold of the scores); with a `seed` Gaussian and the
        "instance" pick scope, only the cut's piece connected to it."""
        from omnivision.twod.localize import otsu_threshold

        scores = scores.detach().float().cpu()
        if threshold is None:
            threshold = otsu_threshold(scores) if scores.numel() else 0.0
        self._base = self.selection
        self._result = Selection.from_scores(scores, threshold)
        instance = seed is not None and self.pick_scope == "instance"
        self._seeds = torch.tensor([seed]) if instance else None
        self._instance = None
        self.threshold = float(threshold)
        self.result_kind = f"{kind}, instance" if instance else kind
        return self.selection

    def set_pick_scope(self, scope: PickScope) -> None:
        """What the next 3D pick or exemplar click selects (`PICK_SCOPES`)."""
        if scope not in PICK_SCOPES:
            raise ViewerError(f"pick scope {scope!r} is not one of {', '.join(PICK_SCOPES)}")
        self.pick_scope = scope

    def set_threshold(self, threshold: float) -> int:
        """Re-cut the live result; returns the selected count."""
        self.threshold = float(threshold)
        return self.count

    def set_mode(self, mode: CombineMode) -> int:
        if mode not in COMBINE_MODES:
            raise ViewerError(f"combine mode {mode!r} is not one of {', '.join(COMBINE_MODES)}")
        self.mode = mode
        return self.count

    def selection_op(self, op: SelectionOp, steps: int = 1) -> int:
        """invert / grow / shrink (kNN graph, `steps` rings) / clear the selection, and commit it."""
        selection = self.selection
        if op == "invert":
            selection = ~selection
        elif op == "grow":
            selection = selection.grow(self.knn(), steps)
        elif op == "shrink":
            selection = selection.shrink(self.knn(), steps)
        elif op == "clear":
            selection = Selection.empty(len(self.current))
        else:
            raise ViewerError(f"selection op {op!r} is not one of invert, grow, shrink, clear")
        self._base = Selection.from_mask(selection.mask)
        self._result = None
        self.result_kind = ""
        return self._base.count

    def _reset_selection_if_structure_changed(self) -> None:
        index = self.index
        if index is not self._index_seen:
            self._index_seen = index
            self._base = Selection.empty(len(index))
            self._result = None
            self.result_kind = ""
            self.picked = -1
            self.sam_prompt = None

    # -- queries ------------------------------------------------------------------------------
    def _text_encoder(self) -> TextEncoder:
        if self.text_fn is not None:
            return self.text_fn
        name = self.features_name or ""
        if not name.startswith("clip-"):
            raise ViewerError(
                f"phrase search needs CLIP-lifted features (omnivision-lift {self.scene.root} "
                f"--features clip-pyramid); the loaded features are {name or 'none'}"
            )
        from omnivision.twod.clip import load_clip

        request = self.features_entry.get("request", {})
        model = request.get("clip", "ViT-B-16")
        clip = load_clip(model, request.get("clip_pretrained"))
        self.text_fn = clip.encode_text
        return self.text_fn

    def query_phrase(self, phrase: str, negatives: Sequence[str]) -> int:
        """LERF relevancy of the lifted CLIP features to `phrase` against `negatives`."""
        features = self.current_features()
        if not phrase.strip():
            raise ViewerError("type a phrase first")
        encode = self._text_encoder()
        negatives = [n.strip() for n in negatives if n.strip()]
        try:
            # one matrix-vector product per phrase after the first (PCA-stored features: exact
            # relevancy in CLIP's space from the coefficients; a codebook lift: relevancy per
            # entry, gathered for the edited scene's Gaussians)
            codebook, rows = self.codebook, self.index

            def make_index() -> PhraseIndex:
                source = features if codebook is None else codebook.select(rows)
                return PhraseIndex(source, self.pca)

            index = self._cached("phrase", (features,), make_index)
            scores = index.phrase(encode, phrase.strip(), negatives)  # type: ignore[union-attr]
        except RuntimeError as err:  # embedding sizes differ
            raise ViewerError(
                f"the text encoder does not match the {self.features_name} features ({err})"
            ) from None
        # Otsu's cut, at least 0.5: nearer the phrase than every negative (LERF).
        self._set_result(scores, f"phrase {phrase.strip()!r}", relevancy_threshold(scores))
        return self.count

    def query_exemplar(self, camera: Cameras, xy: tuple[float, float]) -> int:
        """Gaussians whose lifted feature is like the rendered feature under pixel `xy` of `camera`."""
        features = self.current_features()
        crop, _ = crop_camera(camera, (xy[0] - 4.5, xy[1] - 4.5, xy[0] + 4.5, xy[1] + 4.5))
        query = rendered_feature(self.current, crop, 0, features, xy=(4, 4))
        if float(query.norm()) < 1e-8:
            raise ViewerError("nothing under the click: click on the scene")
        seed = None
        if self.pick_scope == "instance":  # the Gaussian under the click
            seed = pick_gaussian(self.current, crop, 0, (4, 4))
            if seed < 0:
                raise ViewerError("nothing under the click: click on the scene")
        self._set_result(cosine_scores(features, query), "exemplar", seed=seed)
        return self.count

    def pick(self, ray_origin: Sequence[float], ray_direction: Sequence[float]) -> int:
        """3D pick: the Gaussian with the largest blending weight along the ray (or the nearest
        centre within 3 scales of it); the result is the Gaussians like it (feature cosine), or,
        without features, those near it (with `pick_scope` "instance": only its object).
        Returns the picked index in the edited scene."""
        current = self.current
        picked = pick_gaussian(current, ray_camera(ray_origin, ray_direction), 0, (4, 4))
        if picked < 0:
            picked = _nearest_to_ray(current, ray_origin, ray_direction)
        if picked < 0:
            raise ViewerError("no Gaussian under the click")
        self.picked = picked
        if self.features is not None:
            features = self.current_features()
            self._set_result(cosine_scores(features, features[picked]), "3D pick", seed=picked)
        else:
            sigma = 10 * float(current.scales[picked].max())
            dist = (current.means - current.means[picked]).norm(dim=-1)
            scores = torch.exp(-dist / max(sigma, 1e-12))
            self._set_result(scores, "3D pick", threshold=0.5, seed=picked)
        return picked

    def select_rect(
        self,
        camera: Cameras,
        xyxy: tuple[float, float, float, float],
        visible_only: bool = True,
        max_side: int = 256,
    ) -> int:
        """Gaussians whose centres project into the rectangle `xyxy` (pixels of `camera`), only
        those not hidden behind a surface when `visible_only` (a depth test against a render of
        the rectangle at most `max_side` pixels wide)."""
        current = self.current
        inside, uv, depth = _project_centres(current, camera, xyxy)
        if visible_only and bool(inside.any()):
            x0, y0 = xyxy[0], xyxy[1]
            crop, s = crop_camera(camera, xyxy, max_side)
            out = render(current, crop, config=RenderConfig(rgb=False))
            ids = torch.nonzero(inside).squeeze(1)
            px = ((uv[ids, 0] - x0) * s).long().clamp(0, crop.widths[0] - 1)
            py = ((uv[ids, 1] - y0) * s).long().clamp(0, crop.heights[0] - 1)
            surface = out.depth[0][py, px]
            alpha = out.alpha[0][py, px]
            tolerance = 0.02 * surface + 3 * current.scales[ids].max(dim=-1).values
            front = (alpha < 0.5) | (depth[ids] <= surface + tolerance)
            inside = torch.zeros_like(inside)
            inside[ids[front]] = True
        self._set_result(inside.float(), "rectangle", threshold=0.5)
        return self.count

    def add_sam_point(self, camera: Cameras, xy: tuple[float, float], positive: bool) -> int:
        """Add a SAM prompt point on `camera`'s view; a different view starts a new prompt.
        Returns how many points the prompt has."""
        prompt = self.sam_prompt
        point = torch.tensor([[float(xy[0]), float(xy[1])]])
        label = torch.tensor([1 if positive else 0])
        if prompt is None or not _same_camera(prompt.camera, camera):
            self.sam_prompt = SamPrompt(camera, point, label)
        else:
            self.sam_prompt = SamPrompt(
                camera, torch.cat([prompt.points, point]), torch.cat([prompt.labels, label])
            )
        return len(self.sam_prompt.labels)

    def clear_sam_points(self) -> None:
        self.sam_prompt = None

    def _segmenter(self) -> PromptSegmenter:
        if self.segmenter is not None:
            return self.segmenter
        from omnivision.twod.features import TwoDError
        from omnivision.twod.sam import load_sam2

        try:
            sam = load_sam2(self.sam, self.sam_config)
        except TwoDError as err:
            raise ViewerError(f"no SAM 2 model: {err}") from None

        def segment(image, points, labels, box) -> Tensor:
            sam.set_image(image)
            return sam.predict(
                None if points is None else points.numpy(),
                None if labels is None else labels.numpy(),
                box,
                multimask=points is not None and box is None,
            ).masks[0]

        self.segmenter = segment
        return segment

    def run_sam(
        self, refine_views: int = 4, max_side: int = 512, progress: Progress | None = None
    ) -> int:
        """Segment the prompt's view with SAM 2 and lift the mask onto the Gaussians; then
        re-prompt SAM 2 with the selection's box in `refine_views` scene cameras (evenly spaced)
        and lift all masks together, so the sides the prompt view cannot see are selected too.
        Views are rendered at most `max_side` pixels wide."""
        prompt = self.sam_prompt
        if prompt is None:
            raise ViewerError("click SAM +point / -point on the scene first")
        if not bool((prompt.labels == 1).any()):
            raise ViewerError("add at least one SAM +point on the object")
        report = progress or (lambda fraction, what: None)
        report(0.05, "loading SAM 2")
        segment = self._segmenter()
        camera = _capped(prompt.camera, max_side)
        points = prompt.points * torch.tensor(
            [
                camera.widths[0] / prompt.camera.widths[0],
                camera.heights[0] / prompt.camera.heights[0],
            ]
        )
        report(0.15, "rendering the view")
        current = self.current
        image = render(current, camera, config=RenderConfig(background=(1.0, 1.0, 1.0))).rgb
        assert image is not None
        report(0.3, "segmenting")
        mask = segment(image[0].clamp(0, 1), points, prompt.labels, None).bool()
        if not bool(mask.any()):
            raise ViewerError("SAM 2 found no mask for these points")
        others = np.linspace(0, len(self.cameras), refine_views, endpoint=False).astype(int)
        cameras = Cameras.concat(
            [camera, *(_capped(self.cameras[int(i)], max_side) for i in others[:refine_views])]
        )
        report(0.5, f"lifting the mask (refined in {refine_views} views)")
        scores = mask_prompt_scores(
            current,
            cameras,
            0,
            mask,
            segment=lambda view, image, box: segment(image, None, None, box),
            refine_views=range(1, len(cameras)),
        )
        self._set_result(scores, "SAM prompt", threshold=0.5)
        self.sam_prompt = None
        report(1.0, "done")
        return self.count

    def set_reference_photo(self, name: str, data: bytes) -> tuple[int, int]:
        """Keep an uploaded photo (any format PIL reads) for `query_reference`; its (W, H)."""
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError):
            raise ViewerError(f"{name}: not an image (png, jpg, ...)") from None
        self.reference_photo = (name, torch.from_numpy(rgb))
        return rgb.shape[1], rgb.shape[0]

    def query_reference(
        self,
        box: str,
        max_views: int = 12,
        max_side: int = 512,
        extractor: FeatureExtractor | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Find the object boxed on the reference photo (`box` "X0,Y0,X1,Y1", photo pixels) in
        the scene, as `omnivision query --ref` does (`query.reference`): localized in up to
        `max_views` scene cameras (evenly spaced, the edited scene rendered at most `max_side`
        pixels wide) with `extractor` (default: the weight-free colour features), the masks
        lifted; the result is cut at 0.5."""
        from omnivision.query.reference import find_reference
        from omnivision.twod.cli import check_inside, parse_box
        from omnivision.twod.errors import TwoDError
        from omnivision.twod.extractors import load_extractor

        if self.reference_photo is None:
            raise ViewerError("upload a reference photo first")
        name, photo = self.reference_photo
        try:
            xyxy = parse_box(box, "box")
            corners = [(xyxy[0], xyxy[1]), (xyxy[2] - 1e-3, xyxy[3] - 1e-3)]
            check_inside(Path(name), (photo.shape[0], photo.shape[1]), corners, "box corner")
        except TwoDError as err:
            raise ViewerError(str(err)) from None
        report = progress or (lambda fraction, what: None)
        views = np.linspace(0, len(self.cameras), min(max_views, len(self.cameras)), False)
        cameras = Cameras.concat([_capped(self.cameras[int(i)], max_side) for i in views])
        report(0.1, f"finding {name} in {len(cameras)} views")
        extractor = extractor or load_extractor("colour")
        result = find_reference(self.current, cameras, extractor, photo, box=xyxy)
        self._set_result(result.scores[0], f"reference {name}", threshold=0.5)
        report(1.0, "done")
        return self.count

    # -- edits ----------------------------------------------------------------------------------
    def _selected(self) -> Selection:
        selection = self.selection
        if selection.count == 0:
            raise ViewerError("nothing selected")
        return selection

    def _edit(self, name: str, fn: Callable[..., GaussianScene], *args: object) -> int:
        self.history.apply(name, fn, *args)
        self._reset_selection_if_structure_changed()
        return len(self.current)

    def hide(self) -> int:
        return self._edit("hide", hide, self._selected())

    def show_all(self) -> int:
        current = self.current
        return self._edit(
            "show", show, Selection.from_mask(torch.ones(len(current), dtype=torch.bool))
        )

    def delete(self) -> int:
        return self._edit("delete", delete, self._selected())

    def isolate(self) -> int:
        return self._edit("isolate", isolate, self._selected())

    def recolor(self, rgb: Sequence[float]) -> int:
        return self._edit("recolor", recolor, self._selected(), [float(c) for c in rgb])

    def undo(self) -> str:
        if not self.history.can_undo:
            raise ViewerError("nothing to undo")
        name = self.history.log[-1]
        self.history.undo()
        self._reset_selection_if_structure_changed()
        return name

    def redo(self) -> str:
        if not self.history.can_redo:
            raise ViewerError("nothing to redo")
        self.history.redo()
        self._reset_selection_if_structure_changed()
        return self.history.log[-1]

    def edited_scene(self) -> GaussianScene:
        """The edited scene as a user would save it (without the viewer's index field)."""
        current = self.current
        extras = {k: v for k, v in current.extras.items() if k != SOURCE_INDEX}
        return GaussianScene(
            current.means,
            current.quats,
            current.log_scales,
            current.opacity_logits,
            current.sh,
            extras,
        )

    def export(self, path: str | Path) -> Path:
        """Write the edited scene as .ply (exact) or .splat by suffix."""
        try:
            return export(self.edited_scene(), path)
        except ValueError as err:
            raise ViewerError(str(err)) from None

    # -- display ----------------------------------------------------------------------------------
    def display_colors(self) -> DisplayColors:
        """Per loaded Gaussian: SH DC colour (or the relevancy colour map of the live result),
        the selection highlighted in magenta, and the opacity (0 for hidden and deleted ones)."""
        current, index, n0 = self.current, self.index, self.num_loaded
        base_rgb = self._cached("rgb", (current.sh, index), lambda: _dc_rgb(current, index, n0))
        opacity = self._cached(
            "opacity",
            (current.opacity_logits, index),
            lambda: _scatter_opacity(current, index, n0),
        )
        assert isinstance(base_rgb, np.ndarray) and isinstance(opacity, np.ndarray)
        idx = index.numpy()
        if self.relevancy_map and self._result is not None:
            rgb = base_rgb.copy()
            rgb[idx] = _colormap(self._result.scores.numpy(), self.threshold)
            return DisplayColors(rgb, opacity)
        mask = self.selection.mask.numpy()
        if not mask.any():
            return DisplayColors(base_rgb, opacity)
        rgb = base_rgb.copy()
        selected = idx[mask]
        rgb[selected] = rgb[selected] * (1 - HIGHLIGHT_MIX) + np.asarray(
            HIGHLIGHT_RGB, np.float32
        ) * np.float32(HIGHLIGHT_MIX)
        return DisplayColors(rgb, opacity)

    def summary(self) -> str:
        """One line: how many are selected, of how many, and by what."""
        current = len(self.current)
        text = f"{self.count:,} of {current:,} Gaussians selected"
        if self.result_kind:
            text += f" ({self.result_kind}, {self.mode}, threshold {self.threshold:.3g})"
        return text


# -- helpers ---------------------------------------------------------------------------------------
def _dc_rgb(scene: GaussianScene, index: Tensor, n0: int) -> np.ndarray:
    rgb = np.zeros((n0, 3), np.float32)
    rgb[index.numpy()] = sh_dc_to_rgb(scene.sh[:, 0].float()).clamp(0, 1).numpy()
    return rgb


def _scatter_opacity(scene: GaussianScene, index: Tensor, n0: int) -> np.ndarray:
    opacity = np.zeros(n0, np.float32)
    opacity[index.numpy()] = torch.sigmoid(scene.opacity_logits.float()).numpy()
    return opacity


_TURBO: np.ndarray | None = None


def _colormap(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Turbo colours of scores, normalised so the 1st..99th percentiles span the map."""
    global _TURBO
    if _TURBO is None:
        from matplotlib import colormaps

        _TURBO = colormaps["turbo"](np.linspace(0, 1, 256))[:, :3].astype(np.float32)
    if scores.size == 0:
        return np.zeros((0, 3), np.float32)
    lo, hi = np.percentile(scores, [1, 99])
    lo, hi = min(lo, threshold), max(hi, threshold)
    t = (scores - lo) / max(hi - lo, 1e-12)
    return _TURBO[np.clip((t * 255).astype(np.int64), 0, 255)]


def _project_centres(
    scene: GaussianScene, camera: Cameras, xyxy: tuple[float, float, float, float]
) -> tuple[Bool[Tensor, "N"], Float[Tensor, "N 2"], Float[Tensor, "N"]]:
    """Which centres project into `xyxy` in front of the camera; their pixel xy and depth."""
    w2c = camera.world_to_camera[0].to(scene.means)
    K = camera.K[0].to(scene.means)
    cam = scene.means @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    safe = torch.where(z > 1e-9, z, torch.ones_like(z))
    u = K[0, 0] * cam[:, 0] / safe + K[0, 2]
    v = K[1, 1] * cam[:, 1] / safe + K[1, 2]
    x0, y0, x1, y1 = (float(c) for c in xyxy)
    inside = (z > 1e-6) & (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
    return inside, torch.stack([u, v], dim=-1), z


def _nearest_to_ray(
    scene: GaussianScene, origin: Sequence[float], direction: Sequence[float]
) -> int:
    """The Gaussian in front of the ray origin whose centre is nearest the ray, in units of its
    largest scale, if within 3 of them (-1 otherwise)."""
    o = torch.as_tensor(origin, dtype=scene.means.dtype)
    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=scene.means.dtype), dim=0)
    rel = scene.means - o
    t = rel @ d
    dist = (rel - t[:, None] * d).norm(dim=-1) / scene.scales.max(dim=-1).values.clamp_min(1e-12)
    dist = torch.where(t > 0, dist, torch.full_like(dist, float("inf")))
    if len(dist) == 0 or float(dist.min()) > 3:
        return -1
    return int(torch.argmin(dist))


def load_viewer_state(
    scene_path: str | Path,
    features: str | None = None,
    sam: str = "facebook/sam2.1-hiera-tiny",
    sam_config: str | None = None,
) -> ViewerState:
    """Load a scene folder and its lifted features (`features` by name; default: a clip-* one so
    phrases work, else the first; none when the scene has none)."""
    from omnivision.lift.store import default_features, load_features
    from omnivision.scenes.load import load_scene

    scene = load_scene(scene_path)
    out_dir = scene.root / "omnivision"
    name = features if features is not None else default_features(out_dir)
    lifted = None if name is None else load_features(out_dir, name, scene.gaussians_file)
    return ViewerState(scene, lifted, name, sam=sam, sam_config=sam_config)
