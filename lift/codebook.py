"""A codebook form of lifted features: K global entries (K, D) and one uint16 index per Gaussian.

`omnivision-lift --codebook K` stores lifted features this way: 2 bytes a Gaussian instead of
2·D (1 KB for 512-dim CLIP in fp16), and a phrase's relevancy is computed once per entry and
gathered by index (`query.queries.PhraseIndex`), so it costs K·D, not N·D, plus an N-element gather.

The entries are weighted k-means (Lloyd's algorithm, k-means++ seeding, a fixed seed) of the
per-Gaussian features, each Gaussian weighted by its lifted weight sum (how much of the training
views it covers) unless `weighted` is off: the entries then fit best the Gaussians that dominate
the rendered views, and each entry is the weighted mean of its Gaussians, as a lifted feature is
the weighted mean of its pixels. Euclidean, not cosine, k-means: the norm of a lifted feature (how
much its views agree) weighs it when features are rendered. Gaussians whose features are all zero
(no view saw them and nothing filled them) keep a zero entry of their own, appended as entry K, so
they score as they did (LERF's neutral 0.5). Hence K ≤ 65535: the index fits uint16.

Pure tensor functions; files are `lift.store`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

MAX_ENTRIES = 65535
"""K at most this: with the zero entry, indices 0..65535 fit uint16."""


@dataclass
class Codebook:
    """Lifted features as `entries[index]`: entries (K, D) (K fitted, plus a zero row when some
    Gaussians have no feature), index (N,) int32 in memory (uint16 on disk)."""

    entries: Float[Tensor, "K D"]
    index: Int[Tensor, "N"]

    def __len__(self) -> int:
        return self.index.shape[0]

    @property
    def dims(self) -> int:
        return self.entries.shape[1]

    def decode(self) -> Float[Tensor, "N D"]:
        """The (N, D) features the codebook stands for, in the entries' dtype."""
        return self.entries.index_select(0, self.index.to(self.entries.device))

    def select(self, rows: Tensor) -> Codebook:
        """The codebook of a subset (or reordering) of the Gaussians: same entries, `index[rows]`."""
        return Codebook(self.entries, self.index[rows.to(self.index.device)])

    def to(self, device: torch.device | str) -> Codebook:
        return Codebook(self.entries.to(device), self.index.to(device))


@dataclass(frozen=True)
class CodebookConfig:
    entries: int
    """K, the number of fitted entries (1..65535)."""
    weighted: bool = True
    """Weight each Gaussian by its lifted weight sum (False: every Gaussian with a feature counts once)."""
    iterations: int = 25
    """At most this many Lloyd iterations (faiss's default)."""
    tolerance: float = 1e-5
    """Stop when an iteration lowers the weighted inertia by less than this fraction."""
    samples_per_entry: int = 256
    """Fit the entries on at most K times this many Gaussians, drawn uniformly (faiss's
    max_points_per_centroid); all Gaussians are then assigned. An iteration costs samples x K x D."""
    seed: int = 0


@dataclass
class KMeansResult:
    centres: Float[Tensor, "K D"]
    labels: Int[Tensor, "M"]
    """Nearest centre of each input row (int64)."""
    inertia: float
    """Σ w · ‖x − centre‖² over the rows, for the returned centres and labels."""
    iterations: int


def _chunk_rows(k: int, budget: int = 1 << 24) -> int:
    """Rows per block so that a block's (rows, K) distance matrix stays near `budget` floats."""
    return max(256, budget // max(k, 1))


def cluster_sums(
    x: Float[Tensor, "M D"], labels: Int[Tensor, "M"], weights: Float[Tensor, "M"], k: int
) -> tuple[Float[Tensor, "K D"], Float[Tensor, "K"]]:
    """(Σ w·x, Σ w) per label, in row blocks (no (M, D) temporary)."""
    sums = torch.zeros(k, x.shape[1], device=x.device)
    step = 1 << 15
    for start in range(0, x.shape[0], step):
        block = x[start : start + step].float() * weights[start : start + step, None]
        sums.index_add_(0, labels[start : start + step], block)
    return sums, torch.zeros(k, device=x.device).index_add_(0, labels, weights)


def nonzero_rows(x: Float[Tensor, "M D"]) -> Tensor:
    """bool (M,): rows with any non-zero value, in row blocks."""
    out = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
    step = 1 << 15
    for start in range(0, x.shape[0], step):
        out[start : start + step] = x[start : start + step].ne(0).any(dim=1)
    return out


def assign(
    x: Float[Tensor, "M D"], centres: Float[Tensor, "K D"]
) -> tuple[Int[Tensor, "M"], Float[Tensor, "M"]]:
    """(nearest centre, squared distance to it) of each row, in row blocks: ‖x‖² − 2 x·c + ‖c‖²."""
    centre_sq = centres.square().sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    dist = torch.empty(x.shape[0], device=x.device)
    step = _chunk_rows(centres.shape[0])
    for start in range(0, x.shape[0], step):
        block = x[start : start + step].float()
        scores = torch.addmm(centre_sq, block, centres.T, alpha=-2.0)  # ‖c‖² − 2 x·c
        best, arg = scores.min(dim=1)
        labels[start : start + step] = arg
        dist[start : start + step] = best.add_(block.square().sum(1)).clamp_min_(0.0)
    return labels, dist


def assign_reference(x: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Slow twin of `assign`: the full distance matrix by `torch.cdist`."""
    dist = torch.cdist(x.double(), centres.double()).square()
    best, labels = dist.min(dim=1)
    return labels, best.float()


def kmeans_plusplus(
    x: Float[Tensor, "M D"], weights: Float[Tensor, "M"], k: int, generator: torch.Generator
) -> Float[Tensor, "K D"]:
    """k-means++ seeding: each next centre drawn with probability ∝ w · (squared distance to the
    nearest centre so far). Once every row coincides with a centre, the rest are drawn ∝ w
    (duplicates; Lloyd's step then leaves them empty)."""
    m = x.shape[0]
    centres = torch.empty(k, x.shape[1], device=x.device)
    gen_device = generator.device

    def draw(mass: Tensor) -> int:
        cumulative = mass.double().cumsum(0)
        total = float(cumulative[-1])
        if total <= 0:
            cumulative = weights.double().cumsum(0)
            total = float(cumulative[-1])
        u = torch.rand(1, generator=generator, device=gen_device, dtype=torch.float64).to(x.device)
        return min(int(torch.searchsorted(cumulative, u * total)), m - 1)

    x_sq = torch.linalg.vector_norm(x, dim=1).square_()

    def dist_to(row: int) -> Tensor:  # ‖x − x_row‖², one pass over x
        return torch.mv(x, x[row]).mul_(-2.0).add_(x_sq).add_(x_sq[row]).clamp_min_(0.0)

    first = draw(weights)
    centres[0] = x[first]
    nearest = dist_to(first)
    for i in range(1, k):
        pick = draw(weights * nearest)
        centres[i] = x[pick]
        torch.minimum(nearest, dist_to(pick), out=nearest)
    return centres


SEEDING_ROWS_PER_ENTRY = 8
"""k-means++ seeds from at most K times this many rows: it makes K sequential passes over them."""


def kmeans(
    x: Float[Tensor, "M D"],
    k: int,
    weights: Float[Tensor, "M"] | None = None,
    iterations: int = 25,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> KMeansResult:
    """Weighted k-means (Lloyd's algorithm after k-means++ seeding) of the rows of `x`, rows with
    weight 0 ignored. The seeding draws from a uniform subset of at most 8·K rows of positive
    weight (it makes K passes over what it draws from), Lloyd's steps use every row.
    Deterministic for a seed on one device. An entry left empty is moved to the row with the
    largest weighted distance to its centre (when there is one not on a centre)."""
    x = x.float()
    m = x.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k-means needs 1 <= k <= rows, got k = {k} for {m} rows")
    w = torch.ones(m, device=x.device) if weights is None else weights.float().to(x.device)
    if int((w > 0).sum()) < k:
        raise ValueError(f"k-means needs k <= rows of positive weight, got k = {k}")
    generator = torch.Generator(device=x.device if x.device.type == "cuda" else "cpu")
    generator.manual_seed(seed)
    positive = (w > 0).nonzero()[:, 0]
    if len(positive) > SEEDING_ROWS_PER_ENTRY * k:
        order = torch.randperm(len(positive), generator=generator, device=generator.device)
        positive = positive[order[: SEEDING_ROWS_PER_ENTRY * k].to(x.device).sort().values]
    centres = kmeans_plusplus(x[positive], w[positive], k, generator)
    labels, dist = assign(x, centres)
    inertia = previous = float((w * dist).sum())
    done = 0
    while done < iterations:
        done += 1
        sums, mass = cluster_sums(x, labels, w, k)
        filled = mass > 0
        centres = torch.where(filled[:, None], sums / mass.clamp_min(1e-30)[:, None], centres)
        empty = (~filled).nonzero()[:, 0]
        moved = 0
        if len(empty):
            # move empty entries to the worst-fitted rows (largest w · distance), if any is off-centre
            cost = w * dist
            far = torch.topk(cost, min(len(empty), m)).indices
            far = far[cost[far] > 0]
            moved = len(far)
            centres[empty[:moved]] = x[far]
        labels, dist = assign(x, centres)
        inertia = float((w * dist).sum())
        if previous - inertia <= tolerance * max(previous, 1e-30) and not moved:
            break
        previous = inertia
    return KMeansResult(centres, labels, inertia, done)


@dataclass
class FitResult:
    codebook: Codebook
    inertia: float
    """Weighted mean squared distance of the Gaussians (of positive sample weight) to their entries."""
    iterations: int
    fitted: int
    """Gaussians the entries were fitted on (after sampling)."""
    zero_entry: bool
    energy: float
    """Weighted mean squared norm of the fitted Gaussians' features (inertia / energy: the
    share of the features' energy the codebook loses)."""


def fit_rows(features: Float[Tensor, "N D"], weights: Float[Tensor, "N"], weighted: bool) -> Tensor:
    """The sample weight of each Gaussian in the fit: its weight sum (or 1 with `weighted` off),
    0 where its feature is all zero (no view saw it, nothing filled it)."""
    has_feature = nonzero_rows(features)
    base = weights.float().clamp_min(0) if weighted else torch.ones_like(weights, dtype=torch.float)
    return torch.where(has_feature, base.to(features.device), torch.zeros_like(base))


def fit_codebook(
    features: Float[Tensor, "N D"], weights: Float[Tensor, "N"], config: CodebookConfig
) -> FitResult:
    """K entries by (weighted) k-means on at most `samples_per_entry`·K of the Gaussians with
    positive sample weight (`fit_rows`), then every Gaussian's nearest entry. Gaussians with an
    all-zero feature get a zero entry appended (index K). Raises ValueError when K is out of
    range or larger than the number of Gaussians it can be fitted on."""
    k = config.entries
    if not 1 <= k <= MAX_ENTRIES:
        raise ValueError(f"codebook size {k}: want 1 <= K <= {MAX_ENTRIES} (a uint16 index)")
    features = features.float()
    sample_weight = fit_rows(features, weights, config.weighted)
    candidates = (sample_weight > 0).nonzero()[:, 0]
    if k > len(candidates):
        what = "seen Gaussians with a feature" if config.weighted else "Gaussians with a feature"
        raise ValueError(f"more entries ({k}) than the {len(candidates)} {what}")
    samples = config.samples_per_entry * k
    if len(candidates) > samples:
        g = torch.Generator().manual_seed(config.seed)
        keep = torch.randperm(len(candidates), generator=g)[:samples]
        candidates = candidates[keep.sort().values.to(candidates.device)]
    result = kmeans(
        features[candidates],
        k,
        sample_weight[candidates],
        config.iterations,
        config.tolerance,
        config.seed,
    )
    # every Gaussian to its nearest entry (entries stay as fitted: an index is always the
    # nearest entry, and with every Gaussian in the sample each entry is its cluster's mean)
    centres = result.centres
    labels, dist = assign(features, centres)
    total = max(float(sample_weight.sum()), 1e-30)
    inertia = float((sample_weight * dist).sum()) / total
    norms = torch.linalg.vector_norm(features, dim=1).square_()
    energy = float((sample_weight * norms).sum()) / total
    zero = ~nonzero_rows(features)
    zero_entry = bool(zero.any())
    if zero_entry:
        centres = torch.cat([centres, centres.new_zeros(1, centres.shape[1])])
        labels = torch.where(zero, torch.full_like(labels, k), labels)
    codebook = Codebook(centres, labels.to(torch.int32))
    return FitResult(codebook, inertia, result.iterations, len(candidates), zero_entry, energy)
