"""`ViewerState`: what the web app shows and edits, as a state machine with no web code.

One `ViewerState` holds what every connected browser shares: the scene being edited (an
`EditHistory`), the lifted features, the selection with its live query (`LiveSelection`,
selection.py) and how the splats are coloured. What one browser has to itself (click mode, the
combine mode and pick scope of its next selection, SAM points, an uploaded photo, its status
line) is a `ClientSession` (session.py), passed to the events that use it (default: `local`,
the session of a caller without a browser: tests, benchmarks). Each GUI event of the app is one
method call here; `display_colors()` is what the splats should look like afterwards.

Indices: the edited scene carries `extras[SOURCE_INDEX]`, each Gaussian's row in the loaded scene,
so features (loaded per original Gaussian) and the display (one splat per original Gaussian) stay
aligned through delete/isolate and their undo. The field is dropped on export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omnivision.lift.diffusion import KnnGraph, knn_graph
from omnivision.lift.store import LiftedFeatures
from omnivision.query.edits import (
    HIDDEN_FIELD,
    EditHistory,
    delete,
    export,
    hide,
    isolate,
    recolor,
    show,
)
from omnivision.query.instance import InstanceConfig, instance_adjacency, instance_selection
from omnivision.query.queries import (
    PhraseIndex,
    cosine_scores,
    pick_gaussian,
    relevancy_threshold,
    rendered_feature,
)
from omnivision.query.selection import Selection
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.load import Scene
from omnivision.twod.features import FeatureExtractor

from .display import (
    DisplayColors,
    colour_bar_html,
    dc_rgb,
    feature_pca_rgb,
    highlight,
    relevancy_limits,
    relevancy_rgb,
    scatter_opacity,
)
from .geometry import (
    circle_polygon,
    crop_camera,
    inside_volume,
    nearest_to_ray,
    point_on_ray,
    ray_camera,
)
from .modes import (
    COLOUR_MODES,
    ColourMode,
    CombineMode,
    PickScope,
    SelectionOp,
    ViewerError,
    check_choice,
)
from .prompts import (
    Progress,
    PromptSegmenter,
    lasso_mask,
    load_segmenter,
    rect_mask,
    reference_scores,
    sam_scores,
)
from .selection import LiveSelection
from .session import ClientSession

SOURCE_INDEX = "viewer_source_index"
"""Extra field on the edited scene: each Gaussian's row in the loaded scene (dropped on export)."""

TextEncoder = Callable[[Sequence[str]], Tensor]
"""Phrases -> L2-normalised embeddings (Q, E), e.g. `ClipModel.encode_text`."""


class ViewerState:
    """The scene a viewer edits, its features, the selection and its live query, the display.

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
        self.local = ClientSession()
        """The session of callers without a browser (tests, benchmarks, scripts)."""
        self.instance_config = InstanceConfig()
        self.live = LiveSelection(n, self.knn, self._instance_cut)
        self.colour_mode: ColourMode = "rgb"
        self.highlight = True
        """Whether selected splats are drawn magenta (off: the edit's result shows as it is)."""
        self.picked = -1
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

    @property
    def hidden_count(self) -> int:
        """Gaussians of the edited scene that are hidden (opacity stored by `hide`)."""
        stored = self.current.extras.get(HIDDEN_FIELD)
        return 0 if stored is None else int((~torch.isnan(stored)).sum())

    @property
    def visible_count(self) -> int:
        return len(self.current) - self.hidden_count

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

    def _instance_cut(self, scores: Tensor, seeds: Tensor, threshold: float) -> Selection:
        config = replace(self.instance_config, threshold=threshold)
        return instance_selection(scores, seeds, self.instance_matrix(), config)

    # -- selection ------------------------------------------------------------------------------
    @property
    def result(self) -> Selection | None:
        """The live query's scores cut at `threshold` (None when no query is live); for an
        instance pick, the cut's piece connected to the picked Gaussian."""
        return self.live.result

    @property
    def selection(self) -> Selection:
        return self.live.selection

    @property
    def count(self) -> int:
        return self.live.count

    @property
    def threshold(self) -> float:
        return self.live.threshold

    @property
    def result_kind(self) -> str:
        """What made the live query ("phrase 'red mug'", "rectangle", ...; "" when none)."""
        return self.live.kind

    @property
    def score_range(self) -> tuple[float, float]:
        """(min, max) of the live query's scores, for the threshold slider."""
        return self.live.score_range

    def _set_result(
        self,
        scores: Tensor,
        kind: str,
        threshold: float | None = None,
        seed: int | None = None,
        session: ClientSession | None = None,
    ) -> Selection:
        """Commit the current selection as the base and make `scores` the live query, cut at
        `threshold` (default: Otsu's threshold of the scores) and combined by the session's
        combine mode; with a `seed` Gaussian and the session's "instance" pick scope, only the
        cut's piece connected to it."""
        from omnivision.twod.localize import otsu_threshold

        session = session or self.local
        scores = scores.detach().float().cpu()
        if threshold is None:
            threshold = otsu_threshold(scores) if scores.numel() else 0.0
        instance = seed is not None and session.pick_scope == "instance"
        return self.live.start(
            scores,
            f"{kind}, instance" if instance else kind,
            float(threshold),
            session.mode,
            torch.tensor([seed]) if instance else None,
        )

    def set_pick_scope(self, scope: PickScope, session: ClientSession | None = None) -> None:
        """What the session's next 3D pick or exemplar click selects (`PICK_SCOPES`)."""
        (session or self.local).set_pick_scope(scope)

    def set_mode(self, mode: CombineMode, session: ClientSession | None = None) -> None:
        """How the session's *next* selection joins the current one; the current selection is
        left as it is."""
        (session or self.local).set_mode(mode)

    def set_threshold(self, threshold: float) -> int:
        """Re-cut the live query (and re-run the selection ops made since); returns the count.
        The threshold must lie within the live scores' range."""
        self.live.set_threshold(threshold)
        return self.live.count

    def selection_op(self, op: SelectionOp, steps: int = 1) -> int:
        """invert / grow / shrink (kNN graph, `steps` rings) / clear the selection."""
        self.live.apply(op, steps)
        return self.live.count

    def _reset_selection_if_structure_changed(self) -> None:
        index = self.index
        if index is not self._index_seen:
            self._index_seen = index
            self.live.reset(len(index))
            self.picked = -1

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

    def query_phrase(
        self, phrase: str, negatives: Sequence[str], session: ClientSession | None = None
    ) -> int:
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
        kind = f"phrase {phrase.strip()!r}"
        self._set_result(scores, kind, relevancy_threshold(scores), session=session)
        return self.count

    def query_exemplar(
        self, camera: Cameras, xy: tuple[float, float], session: ClientSession | None = None
    ) -> int:
        """Gaussians whose lifted feature is like the rendered feature under pixel `xy` of `camera`."""
        session = session or self.local
        features = self.current_features()
        crop, _ = crop_camera(camera, (xy[0] - 4.5, xy[1] - 4.5, xy[0] + 4.5, xy[1] + 4.5))
        query = rendered_feature(self.current, crop, 0, features, xy=(4, 4))
        if float(query.norm()) < 1e-8:
            raise ViewerError("nothing under the click: click on the scene")
        seed = None
        if session.pick_scope == "instance":  # the Gaussian under the click
            seed = pick_gaussian(self.current, crop, 0, (4, 4))
            if seed < 0:
                raise ViewerError("nothing under the click: click on the scene")
        self._set_result(cosine_scores(features, query), "exemplar", seed=seed, session=session)
        return self.count

    def ray_hit(self, ray_origin: Sequence[float], ray_direction: Sequence[float]) -> int:
        """The Gaussian a click along the ray lands on: the largest blending weight along it (or
        the nearest centre within 3 scales of it); -1 when it meets nothing."""
        current = self.current
        hit = pick_gaussian(current, ray_camera(ray_origin, ray_direction), 0, (4, 4))
        return hit if hit >= 0 else nearest_to_ray(current, ray_origin, ray_direction)

    def surface_point(
        self, ray_origin: Sequence[float], ray_direction: Sequence[float]
    ) -> np.ndarray | None:
        """Where a click along the ray meets the scene (the ray's point nearest the hit
        Gaussian's centre), None when it meets nothing."""
        hit = self.ray_hit(ray_origin, ray_direction)
        if hit < 0:
            return None
        return point_on_ray(ray_origin, ray_direction, self.current.means[hit])

    def pick(
        self,
        ray_origin: Sequence[float],
        ray_direction: Sequence[float],
        session: ClientSession | None = None,
    ) -> int:
        """3D pick: the Gaussian the ray lands on (`ray_hit`); the result is the Gaussians like
        it (feature cosine), or, without features, those near it (with the session's pick scope
        "instance": only its object). Returns the picked index in the edited scene."""
        current = self.current
        picked = self.ray_hit(ray_origin, ray_direction)
        if picked < 0:
            raise ViewerError("no Gaussian under the click")
        self.picked = picked
        if self.features is not None:
            features = self.current_features()
            scores = cosine_scores(features, features[picked])
            self._set_result(scores, "3D pick", seed=picked, session=session)
        else:
            sigma = 10 * float(current.scales[picked].max())
            dist = (current.means - current.means[picked]).norm(dim=-1)
            scores = torch.exp(-dist / max(sigma, 1e-12))
            self._set_result(scores, "3D pick", threshold=0.5, seed=picked, session=session)
        return picked

    def select_rect(
        self,
        camera: Cameras,
        xyxy: tuple[float, float, float, float],
        visible_only: bool = True,
        max_side: int = 256,
        session: ClientSession | None = None,
    ) -> int:
        """The Gaussians in the rectangle `xyxy` of `camera` (`prompts.rect_mask`: only the
        visible ones when `visible_only`)."""
        inside = rect_mask(self.current, camera, xyxy, visible_only, max_side)
        self._set_result(inside.float(), "rectangle", threshold=0.5, session=session)
        return self.count

    def close_lasso(self, session: ClientSession | None = None, visible_only: bool = True) -> int:
        """Select the visible Gaussians inside the session's lasso (`prompts.lasso_mask`); the
        lasso is used up."""
        session = session or self.local
        lasso = session.lasso
        if lasso is None or len(lasso.points) < 3:
            have = 0 if lasso is None else len(lasso.points)
            raise ViewerError(f"click at least 3 lasso points on the scene first ({have} so far)")
        inside = lasso_mask(self.current, lasso.camera, lasso.points, visible_only)
        self._set_result(inside.float(), "lasso", threshold=0.5, session=session)
        session.lasso = None
        return self.count

    def brush(
        self, camera: Cameras, xy: tuple[float, float], session: ClientSession | None = None
    ) -> int:
        """One brush dab: the visible Gaussians within the session's brush radius (pixels) of
        `xy`, joined by the session's combine mode."""
        session = session or self.local
        circle = circle_polygon(xy, session.brush_radius)
        inside = lasso_mask(self.current, camera, circle)
        self._set_result(inside.float(), "brush", threshold=0.5, session=session)
        return self.count

    def select_volume(self, session: ClientSession | None = None) -> int:
        """The Gaussians whose centres are inside the session's box or sphere."""
        session = session or self.local
        volume = session.volume
        means = self.current.means
        inside = inside_volume(means, volume.shape, volume.centre, volume.wxyz, volume.size)
        self._set_result(inside.float(), volume.shape, threshold=0.5, session=session)
        return self.count

    def add_sam_point(
        self,
        camera: Cameras,
        xy: tuple[float, float],
        positive: bool,
        session: ClientSession | None = None,
        world: np.ndarray | None = None,
    ) -> int:
        """Add a SAM prompt point to the session's prompt (see `ClientSession.add_sam_point`)."""
        return (session or self.local).add_sam_point(camera, xy, positive, world)

    def clear_sam_points(self, session: ClientSession | None = None) -> None:
        (session or self.local).clear_sam_points()

    def _segmenter(self) -> PromptSegmenter:
        if self.segmenter is None:
            self.segmenter = load_segmenter(self.sam, self.sam_config)
        return self.segmenter

    def run_sam(
        self,
        refine_views: int = 4,
        max_side: int = 512,
        progress: Progress | None = None,
        session: ClientSession | None = None,
    ) -> int:
        """Select what the session's SAM prompt shows (`prompts.sam_scores`: the prompt view's
        mask refined in `refine_views` scene cameras); the prompt is used up."""
        session = session or self.local
        prompt = session.sam_prompt
        if prompt is None:
            raise ViewerError("click SAM +point / -point on the scene first")
        if not bool((prompt.labels == 1).any()):
            raise ViewerError("add at least one SAM +point on the object")
        report = progress or (lambda fraction, what: None)
        report(0.05, "loading SAM 2")
        segment = self._segmenter()
        scores = sam_scores(
            self.current, prompt, self.cameras, segment, refine_views, max_side, report
        )
        self._set_result(scores, "SAM prompt", threshold=0.5, session=session)
        session.sam_prompt = None
        report(1.0, "done")
        return self.count

    def set_reference_photo(
        self, name: str, data: bytes, session: ClientSession | None = None
    ) -> tuple[int, int]:
        """Keep an uploaded photo for the session's `query_reference`; its (W, H)."""
        return (session or self.local).set_reference_photo(name, data)

    def query_reference(
        self,
        box: str,
        max_views: int = 12,
        max_side: int = 512,
        extractor: FeatureExtractor | None = None,
        progress: Progress | None = None,
        session: ClientSession | None = None,
    ) -> int:
        """Select the object boxed on the session's reference photo (`box` "X0,Y0,X1,Y1", photo
        pixels) as `omnivision query --ref` does (`prompts.reference_scores`); cut at 0.5."""
        session = session or self.local
        if session.reference_photo is None:
            raise ViewerError("upload a reference photo first")
        report = progress or (lambda fraction, what: None)
        scores = reference_scores(
            self.current,
            self.cameras,
            session.reference_photo,
            box,
            max_views,
            max_side,
            extractor,
            report,
        )
        name = session.reference_photo[0]
        self._set_result(scores, f"reference {name}", threshold=0.5, session=session)
        report(1.0, "done")
        return self.count

    # -- edits (each returns a line saying what it did) --------------------------------------------
    def _selected(self) -> Selection:
        selection = self.selection
        if selection.count == 0:
            raise ViewerError("nothing selected")
        return selection

    def _edit(self, name: str, fn: Callable[..., GaussianScene], *args: object) -> None:
        self.history.apply(name, fn, *args)
        self._reset_selection_if_structure_changed()

    def hide(self) -> str:
        selected = self._selected().count
        self._edit("hide", hide, self.selection)
        return f"hidden {selected:,}; {self.visible_count:,} visible"

    def show_all(self) -> str:
        hidden = self.hidden_count
        everything = Selection.from_mask(torch.ones(len(self.current), dtype=torch.bool))
        self._edit("show", show, everything)
        return f"shown {hidden:,}; {self.visible_count:,} visible"

    def delete(self) -> str:
        selected = self._selected().count
        self._edit("delete", delete, self.selection)
        return f"deleted {selected:,}; {len(self.current):,} left"

    def isolate(self) -> str:
        before, selected = len(self.current), self._selected().count
        self._edit("isolate", isolate, self.selection)
        return f"isolated {selected:,}; {before - selected:,} deleted"

    def recolor(self, rgb: Sequence[float]) -> str:
        selected = self._selected().count
        self._edit("recolor", recolor, self.selection, [float(c) for c in rgb])
        return f"recoloured {selected:,}"

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
        """Write the edited scene by the end of `path`'s name (`query.edits.export`)."""
        try:
            return export(self.edited_scene(), path)
        except ValueError as err:
            raise ViewerError(str(err)) from None

    # -- display ----------------------------------------------------------------------------------
    def set_colour_mode(self, mode: ColourMode) -> None:
        """What the splats show (`COLOUR_MODES`); "feature PCA" needs lifted features."""
        check_choice(mode, COLOUR_MODES, "colour mode")
        if mode == "feature PCA" and self.features is None:
            raise ViewerError(
                f"feature PCA needs lifted features: run omnivision-lift {self.scene.root}"
            )
        self.colour_mode = mode

    def feature_pca_colors(self) -> np.ndarray:
        """(N0, 3) the loaded features' first three principal components as RGB (computed once)."""
        features = self.features
        if features is None:
            raise ViewerError(f"no lifted features: run omnivision-lift {self.scene.root}")
        return self._cached("pca_rgb", (features,), lambda: feature_pca_rgb(features))  # type: ignore[return-value]

    def display_colors(self) -> DisplayColors:
        """Per loaded Gaussian: the colour mode's colour (SH DC, the live query's relevancy
        colour map, or the feature PCA), the selection mixed towards magenta when `highlight` is
        on (not over the relevancy map), and the opacity (0 for hidden and deleted ones)."""
        current, index, n0 = self.current, self.index, self.num_loaded
        base_rgb = self._cached("rgb", (current.sh, index), lambda: dc_rgb(current, index, n0))
        opacity = self._cached(
            "opacity",
            (current.opacity_logits, index),
            lambda: scatter_opacity(current, index, n0),
        )
        assert isinstance(base_rgb, np.ndarray) and isinstance(opacity, np.ndarray)
        idx = index.numpy()
        scores = self.live.scores
        if self.colour_mode == "relevancy" and scores is not None:
            rgb = base_rgb.copy()
            rgb[idx] = relevancy_rgb(scores.numpy(), self.threshold)
            return DisplayColors(rgb, opacity)
        if self.colour_mode == "feature PCA" and self.features is not None:
            rgb = base_rgb.copy()
            rgb[idx] = self.feature_pca_colors()[idx]
            base_rgb = rgb
        mask = self.selection.mask.numpy()
        if not self.highlight or not mask.any():
            return DisplayColors(base_rgb, opacity)
        return DisplayColors(highlight(base_rgb, idx[mask]), opacity)

    def colour_bar(self) -> str:
        """The relevancy colour bar (HTML) while relevancy colours show a live query, else ""."""
        scores = self.live.scores
        if self.colour_mode != "relevancy" or scores is None:
            return ""
        lo, hi = relevancy_limits(scores.numpy(), self.threshold)
        return colour_bar_html(lo, hi, self.threshold)

    def summary(self) -> str:
        """One line: how many are selected, of how many, and by what."""
        text = f"{self.count:,} of {len(self.current):,} Gaussians selected"
        if self.live.live:
            text += f" ({self.live.describe()})"
        return text


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
