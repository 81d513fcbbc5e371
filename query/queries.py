"""Queries: each returns per-Gaussian scores (N,) that a `Selection` thresholds.

- phrase, CLIP features: LERF relevancy against canonical negatives;
- phrase, DINO features: text bridge -> cosine;
- exemplar: the rendered lifted feature under a pixel (or the mean over a box) -> cosine;
- 3D click: the Gaussian with the largest blending weight along the camera ray, then the
  Gaussians whose lifted features match it;
- 2D mask / SAM prompt on a rendered view: mask lifting with optional multi-view refinement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from omnivision.lift.aggregate import PCA, FeatureSums, accumulate_view
from omnivision.lift.codebook import Codebook
from omnivision.lift.diffusion import KnnGraph, adjacency, diffuse, edge_weights
from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.render import RenderConfig, blend_weights, render
from omnivision.twod.clip_dense import CANONICAL_NEGATIVES, relevancy_texts, text_dots
from omnivision.twod.referring import mask_box


def phrase_relevancy(
    features: Float[Tensor, "N E"] | Codebook,
    text: Callable[[Sequence[str]], Tensor],
    phrase: str,
    negatives: Sequence[str] = CANONICAL_NEGATIVES,
    tau: float = 10.0,
    pca: PCA | None = None,
) -> Float[Tensor, "N"]:
    """LERF relevancy of lifted CLIP features to `phrase`; `text` embeds phrases (ClipModel.encode_text).

    With `pca`, `features` are the lift's PCA coefficients (N, d) and the relevancy is that of
    the reconstructed features `coeffs @ components.T + mean` in CLIP's space, computed exactly
    in d dims (`pca_relevancy`) without building the (N, E) reconstruction. A `Codebook` (a lift
    stored with --codebook K) is scored per entry and gathered (`codebook_relevancy`). For many
    phrases over the same features, keep a `PhraseIndex`."""
    return PhraseIndex(features, pca).phrase(text, phrase, negatives, tau)


class PhraseIndex:
    """Repeated phrase queries over one set of lifted features, one matrix-vector product each.

    LERF relevancy is sigmoid(tau * (phi.q - max_j phi.n_j) / |phi|) for unit texts q, n_j. Per
    Gaussian, |phi| and max_j phi.n_j depend only on the features and the negatives: the first
    query computes them along with its own dots in one pass (as `relevancy` does) and keeps them
    (2 floats per Gaussian, for one tau); later queries with the same negatives read the features once, in
    their stored dtype (`torch.mv` on fp16 accumulates in fp32), and do an elementwise tail.
    PCA-stored features go through `pca_relevancy`, which already reads only d numbers a row. A
    `Codebook` (a lift stored with --codebook K) keeps an index of its K entries, scores them as
    above and gathers by each Gaussian's entry: a phrase costs K x E plus an N-element gather."""

    def __init__(self, features: Float[Tensor, "N E"] | Codebook, pca: PCA | None = None):
        self.features, self.pca = features, pca
        self._entries = (
            None if not isinstance(features, Codebook) else PhraseIndex(features.entries, pca)
        )
        self._negatives: Tensor | None = None
        self._tau = 0.0
        self._scale = self._offset = torch.empty(0)

    def phrase(
        self,
        text: Callable[[Sequence[str]], Tensor],
        phrase: str,
        negatives: Sequence[str] = CANONICAL_NEGATIVES,
        tau: float = 10.0,
    ) -> Float[Tensor, "N"]:
        """Relevancy of `phrase` against `negatives`, embedding both with `text`."""
        if not phrase.strip():
            raise ValueError("the phrase is empty")
        embeddings = text([phrase, *negatives])
        return self.relevancy(embeddings[0], embeddings[1:], tau)

    def relevancy(
        self, query: Float[Tensor, "E"], negatives: Float[Tensor, "K E"], tau: float = 10.0
    ) -> Float[Tensor, "N"]:
        """`twod.clip_dense.relevancy(features, query, negatives, tau)`, with the negatives' part kept."""
        if isinstance(self.features, Codebook):
            assert self._entries is not None
            per_entry = self._entries.relevancy(query, negatives, tau)
            return per_entry.index_select(0, self.features.index.to(per_entry.device))
        if self.pca is not None:
            return pca_relevancy(self.features, self.pca, query, negatives, tau)
        texts = relevancy_texts(query.cpu(), negatives.cpu(), self.features.shape[-1], tau)
        if (
            self._tau != tau
            or self._negatives is None
            or not torch.equal(self._negatives, texts[1:])
        ):
            # one pass gives this query's dots and the negatives' part, kept scaled by tau:
            # tau / |phi| and -tau * max_j cos(phi, n_j)
            dots, norms = text_dots(self.features, texts)
            self._scale = norms.clamp_min_(1e-12).reciprocal_().mul_(tau)
            self._offset = dots[:, 1:].amax(dim=1).mul_(self._scale).neg_()
            self._negatives, self._tau = texts[1:], tau
            return torch.addcmul(self._offset, dots[:, 0], self._scale).sigmoid_()
        q = texts[0].to(self.features.device, self.features.dtype)
        # two elementwise passes after the product (each parallel region costs on busy cores)
        return torch.addcmul(self._offset, torch.mv(self.features, q), self._scale).sigmoid_()


def pca_relevancy(
    coeffs: Float[Tensor, "N d"],
    pca: PCA,
    query: Float[Tensor, "E"],
    negatives: Float[Tensor, "K E"],
    tau: float = 10.0,
    chunk: int = 16384,
) -> Float[Tensor, "N"]:
    """`relevancy` of x = coeffs @ C.T + m (C (E, d) orthonormal columns, m the mean) from the
    coefficients alone: x.t = coeffs.(C.T t) + m.t and |x|^2 = |coeffs|^2 + 2 coeffs.(C.T m) + |m|^2,
    so a query over N Gaussians reads N x d numbers, not N x E."""
    texts = relevancy_texts(query.cpu(), negatives.cpu(), pca.components.shape[0], tau)
    components, mean = pca.components.float(), pca.mean.float()
    # rows: C.T t for each text, then C.T m (for the norm); offsets m.t and |m|^2. MKL multiplies
    # a tall block by the transposed view of this small contiguous matrix fastest.
    projection = torch.cat([texts @ components, (mean @ components)[None]]).to(coeffs.device)
    offsets, mean_sq = (texts @ mean).to(coeffs.device), float(mean @ mean)
    out = torch.empty(coeffs.shape[0], device=coeffs.device)
    for start in range(0, coeffs.shape[0], chunk):
        block = coeffs[start : start + chunk].float()
        dots = torch.mm(block, projection.T)
        norm_sq = torch.linalg.vector_norm(block, dim=1).square_()
        norm_sq.add_(dots[:, -1], alpha=2.0).add_(mean_sq).clamp_min_(1e-24)
        cos = dots[:, :-1].add_(offsets)
        margin = cos[:, 0] - cos[:, 1:].amax(1)
        torch.sigmoid(margin.mul_(tau).div_(norm_sq.sqrt_()), out=out[start : start + chunk])
    return out


def codebook_relevancy(
    codebook: Codebook,
    query: Float[Tensor, "E"],
    negatives: Float[Tensor, "K E"],
    tau: float = 10.0,
    pca: PCA | None = None,
) -> Float[Tensor, "N"]:
    """`relevancy` of the features `codebook.entries[codebook.index]`, computed once per entry
    (K x E dots; `pca_relevancy` for PCA-coefficient entries) and gathered by index: a query over
    N Gaussians costs K x E plus an N-element gather. Equal to scoring `codebook.decode()` (its
    slow twin; tests/test_codebook.py)."""
    return PhraseIndex(codebook, pca).relevancy(query, negatives, tau)


RELEVANCY_FLOOR = 0.5
"""Relevancy above 0.5: nearer the phrase than every negative (LERF)."""


def relevancy_threshold(scores: Float[Tensor, "N"]) -> float:
    """The default cut of a phrase query: Otsu's threshold of the relevancy, never below 0.5, so
    a selected Gaussian is nearer the phrase than every negative and the cut still adapts when
    many Gaussians are only slightly above 0.5 (features unlike any text score about 0.5)."""
    from omnivision.twod.localize import otsu_threshold

    otsu = otsu_threshold(scores.float()) if scores.numel() else RELEVANCY_FLOOR
    return max(float(otsu), RELEVANCY_FLOOR)


def cosine_scores(features: Float[Tensor, "N D"], query: Float[Tensor, "D"]) -> Float[Tensor, "N"]:
    return F.normalize(features.float(), dim=-1) @ F.normalize(query.float(), dim=0)


def feature_image(
    scene: GaussianScene, cameras: Cameras, view: int, features: Float[Tensor, "N D"]
) -> tuple[Float[Tensor, "H W D"], Float[Tensor, "H W"]]:
    """Per-Gaussian values alpha-blended into `view` and divided by alpha, so a pixel shows the
    value of what covers it; and the alpha."""
    out = render(scene, cameras[view], features, RenderConfig(rgb=False))
    assert out.features is not None
    alpha = out.alpha[0]
    return out.features[0] / alpha[..., None].clamp_min(1e-6), alpha


def rendered_feature(
    scene: GaussianScene,
    cameras: Cameras,
    view: int,
    features: Float[Tensor, "N D"],
    xy: tuple[float, float] | None = None,
    box: tuple[float, float, float, float] | None = None,
) -> Float[Tensor, "D"]:
    """The lifted features rendered into `view`, read at pixel `xy` or averaged over `box` (xyxy)."""
    image, _ = feature_image(scene, cameras, view, features)
    h, w = image.shape[:2]
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        region = image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
        if region.numel() == 0:
            raise ValueError(f"box {box} is outside the {w}x{h} view")
        return region.reshape(-1, image.shape[-1]).mean(0)
    if xy is None:
        raise ValueError("give a pixel or a box")
    x, y = int(xy[0]), int(xy[1])
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"pixel ({x}, {y}) is outside the {w}x{h} view")
    return image[y, x]


def exemplar_scores(scene, cameras, view, features, xy=None, box=None) -> Float[Tensor, "N"]:
    """Cosine similarity of every Gaussian's lifted feature to the rendered feature under the click."""
    return cosine_scores(features, rendered_feature(scene, cameras, view, features, xy, box))


def pick_gaussian(
    scene: GaussianScene, cameras: Cameras, view: int, xy: tuple[float, float]
) -> int:
    """The Gaussian with the largest alpha-blending weight at pixel `xy` of `view` (-1 if none)."""
    w, h = cameras.widths[view], cameras.heights[view]
    x, y = int(xy[0]), int(xy[1])
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"pixel ({x}, {y}) is outside the {w}x{h} view")
    weights = blend_weights(scene, cameras, view)
    at = weights.pixel_ids == y * w + x
    if not bool(at.any()):
        return -1
    return int(weights.gaussian_ids[at][torch.argmax(weights.weights[at])])


def click_scores(
    scene, cameras, view, xy, features: Tensor | None = None
) -> tuple[int, Float[Tensor, "N"]]:
    """3D click: the picked Gaussian and scores for its neighbourhood: feature cosine to it when
    features are given, else closeness of centres (1 at the pick, falling with distance)."""
    picked = pick_gaussian(scene, cameras, view, xy)
    if picked < 0:
        return picked, torch.zeros(len(scene))
    if features is not None:
        return picked, cosine_scores(features, features[picked])
    dist = (scene.means - scene.means[picked]).norm(dim=-1)
    return picked, torch.exp(-dist / dist.median().clamp_min(1e-9))


Segmenter = Callable[[int, Tensor, tuple[float, float, float, float]], Tensor]
"""(view, rendered image (H, W, 3), box xyxy) -> mask bool (H, W): e.g. a SAM 2 box prompt."""


def lift_masks(
    scene: GaussianScene, cameras: Cameras, masks: dict[int, Tensor]
) -> tuple[Tensor, Tensor]:
    """Mask lifting: per-Gaussian probability (weighted mean of the masks over the views that see
    it) and the weight sums."""
    sums = FeatureSums.zeros(len(scene), 1)
    for view, mask in masks.items():
        accumulate_view(sums, scene, cameras, view, mask.float()[..., None])
    return sums.features()[:, 0], sums.weights


def mask_prompt_scores(
    scene: GaussianScene,
    cameras: Cameras,
    view: int,
    mask: Bool[Tensor, "H W"],
    segment: Segmenter | None = None,
    refine_views: Sequence[int] = (),
    min_weight: float = 0.05,
    graph: KnnGraph | None = None,
    features: Float[Tensor, "N D"] | None = None,
    iterations: int = 50,
) -> Float[Tensor, "N"]:
    """Scores from a 2D mask on `view` (e.g. SAM 2's answer to a prompt on the rendered view).

    With `segment` and `refine_views`, the selection is rendered into each other view, its box
    re-prompts the segmenter there, and all masks are lifted together: the other views see the
    sides of the object the first view could not. Gaussians whose total weight is below
    `min_weight` (hidden in every view) score 0, unless a kNN `graph` is given: then the scores
    are diffused on it for `iterations` steps (`diffuse_scores`, edges weighted by `features` if
    given), the seen Gaussians anchored to their lifted scores and the unseen ones, starting
    undecided at 0.5, taking their neighbours'.
    """
    masks = {view: mask.bool()}
    probability, weights = lift_masks(scene, cameras, masks)
    if segment is not None and refine_views:
        selected = (probability > 0.5) & (weights > min_weight)
        onehot = selected.float()[:, None]
        for other in refine_views:
            out = render(scene, cameras[other], onehot, RenderConfig(background=(1.0, 1.0, 1.0)))
            assert out.features is not None and out.rgb is not None
            shown = out.features[0, ..., 0] > 0.5
            if bool(shown.any()):
                x0, y0, x1, y1 = mask_box(shown).tolist()
                masks[other] = segment(other, out.rgb[0].clamp(0, 1), (x0, y0, x1, y1)).bool()
        probability, weights = lift_masks(scene, cameras, masks)
    return unseen_filled(probability, weights, min_weight, graph, features, iterations)


def unseen_filled(
    probability: Float[Tensor, "N"],
    weights: Float[Tensor, "N"],
    min_weight: float = 0.05,
    graph: KnnGraph | None = None,
    features: Float[Tensor, "N D"] | None = None,
    iterations: int = 50,
) -> Float[Tensor, "N"]:
    """Lifted mask scores with the Gaussians no view saw (weight sum below `min_weight`) at 0, or,
    with a kNN `graph`, diffused (`diffuse_scores`): the seen ones anchored to their lifted
    score, the unseen ones starting undecided at 0.5 and taking their neighbours'."""
    seen = weights > min_weight
    if graph is None:
        return torch.where(seen, probability, torch.zeros_like(probability))
    # unseen Gaussians start undecided (0.5) and are free; seen ones stay anchored to the lift
    start = torch.where(seen, probability, torch.full_like(probability, 0.5))
    return diffuse_scores(start, graph, features, iterations, anchored=seen)


def diffuse_scores(
    scores: Float[Tensor, "N"],
    graph: KnnGraph,
    features: Float[Tensor, "N D"] | None = None,
    iterations: int = 50,
    restart: float = 0.5,
    anchored: Bool[Tensor, "N"] | None = None,
) -> Float[Tensor, "N"]:
    """LUDVIG's graph diffusion applied to a query's scores (e.g. a lifted SAM 2 mask): power
    iteration on the symmetrised, row-normalised kNN graph of the centres, edges weighted by the
    similarity of `features` when given, with restart so the lifted values stay anchored (only
    the `anchored` ones when given: the others take their neighbours' scores)."""
    matrix = adjacency(graph, edge_weights(graph, features))
    return diffuse(scores.float()[:, None], matrix, iterations, restart, anchored)[:, 0]
