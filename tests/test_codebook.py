"""The codebook form of lifted features (`omnivision-lift --codebook K`): k-means, the file and
its manifest through the real CLI, phrases scored per entry, bad input, and what it costs on the
synthetic benchmark."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from omnivision.cli import lift_main
from omnivision.lift.codebook import (
    Codebook,
    CodebookConfig,
    assign,
    assign_reference,
    fit_codebook,
    kmeans,
)
from omnivision.lift.store import load_features
from omnivision.query.queries import PhraseIndex, phrase_relevancy, relevancy_threshold
from omnivision.query.selection import Selection
from omnivision.scenes.errors import SceneError
from omnivision.twod.clip_dense import relevancy

pytestmark = pytest.mark.usefixtures("one_thread")

LIFT = ["--views", "0", "9", "--max-side", "96"]
"""A small colour lift of the demo scene: two views, 96 px (about 90% of the Gaussians seen)."""
K = 16


def clustered(seed: int = 0, sizes=(300, 120, 60, 200, 40, 80), dim: int = 24):
    """Rows around well-separated centres (spread 0.3, centres ~35 apart): (x, labels, centres)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), dim, generator=g) * 5
    truth = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    x = centres[truth] + 0.3 * torch.randn(len(truth), dim, generator=g)
    return x, truth, centres


def test_kmeans_recovers_separated_clusters_of_unequal_sizes():
    x, truth, centres = clustered()
    result = kmeans(x, 6)
    # one label per true cluster, all different: the partition is the truth's
    mapping = {int(t): set(result.labels[truth == t].tolist()) for t in truth.unique()}
    assert all(len(labels) == 1 for labels in mapping.values())
    assert len({next(iter(labels)) for labels in mapping.values()}) == 6
    for t, labels in mapping.items():
        found = result.centres[next(iter(labels))]
        torch.testing.assert_close(found, x[truth == t].mean(0), atol=1e-4, rtol=0)
    # near the true centres (a 40-row mean in 24 dims is ~0.2 off; centres are ~35 apart)
    assert result.centres.sub(centres[:, None]).norm(dim=-1).min(1).values.max() < 0.5
    # deterministic for a seed
    again = kmeans(x, 6)
    assert torch.equal(again.labels, result.labels) and torch.equal(again.centres, result.centres)


def test_weighted_kmeans_entries_are_weighted_means_and_zero_weights_are_ignored():
    x, truth, _ = clustered(1, sizes=(100, 100, 100))
    weights = torch.rand(len(x), generator=torch.Generator().manual_seed(2))
    weights[truth == 2] = 0  # a cluster of weight 0 does not pull an entry
    result = kmeans(x, 2, weights)
    for t in (0, 1):
        label = int(result.labels[truth == t][0])
        assert bool((result.labels[truth == t] == label).all())
        w = weights[truth == t]
        expected = (x[truth == t] * w[:, None]).sum(0) / w.sum()
        torch.testing.assert_close(result.centres[label], expected, atol=1e-4, rtol=0)


def test_blocked_assignment_equals_its_cdist_twin():
    g = torch.Generator().manual_seed(3)
    x, centres = torch.randn(5000, 40, generator=g), torch.randn(300, 40, generator=g)
    labels, dist = assign(x, centres)
    ref_labels, ref_dist = assign_reference(x, centres)
    assert (labels == ref_labels).float().mean() > 0.999  # float ties aside
    torch.testing.assert_close(dist, ref_dist, atol=1e-3, rtol=1e-4)


def test_featureless_gaussians_keep_a_zero_entry_and_score_neutral():
    x, _, _ = clustered(4)
    features = torch.cat([x, torch.zeros(5, x.shape[1])])
    weights = torch.cat([torch.ones(len(x)), torch.zeros(5)])
    fit = fit_codebook(features, weights, CodebookConfig(6))
    codebook = fit.codebook
    assert fit.zero_entry and codebook.entries.shape == (7, x.shape[1])
    assert bool((codebook.index[-5:] == 6).all()) and bool((codebook.entries[6] == 0).all())
    assert int(codebook.index[:-5].max()) < 6
    scores = PhraseIndex(codebook).relevancy(torch.randn(x.shape[1]), torch.randn(3, x.shape[1]))
    assert bool((scores[-5:] == 0.5).all())
    assert fit.inertia / fit.energy < 0.01  # separated clusters: the entries keep the features


def test_fit_codebook_rejects_bad_sizes():
    x, _, _ = clustered(5, sizes=(10, 10))
    for k in (0, 65536):
        with pytest.raises(ValueError, match="1 <= K <= 65535"):
            fit_codebook(x, torch.ones(len(x)), CodebookConfig(k))
    weights = torch.ones(len(x))
    weights[:15] = 0
    with pytest.raises(ValueError, match=r"more entries \(6\) than the 5 seen Gaussians"):
        fit_codebook(x, weights, CodebookConfig(6))


@pytest.mark.parametrize("with_pca", [False, True])
def test_phrase_over_a_codebook_equals_the_phrase_over_its_decoded_features(with_pca):
    """Relevancy per entry, gathered, is the relevancy of entries[index] (its slow twin): the
    same scores to float rounding, the same selection, in a session of phrases too."""
    from omnivision.lift.aggregate import PCA

    g = torch.Generator().manual_seed(6)
    dim, d = 64, 12
    entries = torch.randn(50, d if with_pca else dim, generator=g)
    codebook = Codebook(entries, torch.randint(0, 50, (4000,), generator=g, dtype=torch.int32))
    pca = None
    if with_pca:
        components, _ = torch.linalg.qr(torch.randn(dim, d, generator=g))
        pca = PCA(torch.randn(dim, generator=g) * 0.1, components)
    texts = torch.nn.functional.normalize(torch.randn(9, dim, generator=g), dim=-1)
    session = PhraseIndex(codebook, pca)
    for step in range(4):
        query, negatives = texts[step], texts[5:]
        got = session.relevancy(query, negatives)
        decoded = codebook.decode()
        full = decoded @ pca.components.T + pca.mean if pca is not None else decoded
        expected = relevancy(full, query, negatives)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        cut = relevancy_threshold(expected)
        assert torch.equal(Selection.from_scores(got, cut).mask, expected > cut)
    one_shot = phrase_relevancy(codebook, lambda t: texts[[0, 5, 6, 7, 8]], "a", ["n"] * 4, pca=pca)
    torch.testing.assert_close(one_shot, session.relevancy(texts[0], texts[5:]))


# -- the real CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lifts(demo_dir, tmp_path_factory):
    """The demo scene lifted twice by `omnivision-lift`: full features in SCENE/omnivision, and
    with --codebook 16 into another folder. (scene, full folder, codebook folder)."""
    root = tmp_path_factory.mktemp("codebook")
    scene = root / "scene"
    shutil.copytree(demo_dir, scene)
    assert lift_main([str(scene), *LIFT]) == 0
    assert lift_main([str(scene), *LIFT, "--codebook", str(K), "--out", str(root / "cb")]) == 0
    return scene, scene / "omnivision", root / "cb"


def test_codebook_file_round_trip_through_the_cli(lifts):
    scene, full_dir, cb_dir = lifts
    full = load_features(full_dir, "colour", scene_file=scene / "point_cloud.ply")
    lifted = load_features(cb_dir, "colour", scene_file=scene / "point_cloud.ply")
    codebook = lifted.codebook
    assert codebook is not None and full.codebook is None
    # on disk: fp16 entries (K fitted + the zero entry of the unseen), a uint16 index, seen bits
    with safe_open(str(cb_dir / "features_colour.safetensors"), "pt") as f:
        assert set(f.keys()) == {"codebook", "codebook_index", "seen_bits"}
        assert f.get_slice("codebook_index").get_dtype() == "U16"
        assert f.get_slice("codebook").get_shape() == [K + 1, 38]
        assert f.get_slice("seen_bits").get_shape() == [(29298 + 7) // 8]
    assert lifted.num_gaussians == full.num_gaussians == 29298 and lifted.dims == 38
    # the unseen Gaussians (all-zero features, no diffusion) sit on the zero entry
    assert torch.equal(lifted.seen, full.seen)
    assert bool((codebook.index[~full.seen] == K).all()) and not bool(codebook.entries[K].any())
    # no weight sums are kept: 1 where seen (the packed bits), 0 elsewhere
    seen = full.seen
    assert torch.equal(lifted.weight_sums, seen.float())
    # every seen Gaussian holds its nearest entry (to the fp16 rounding of the stored entries)
    w = full.weight_sums[seen]
    nearest, _ = assign(full.features[seen], codebook.entries[:K])
    assert (nearest == codebook.index[seen]).float().mean() > 0.999
    # `features` decodes; the codebook keeps most of the colour features' energy
    assert torch.equal(lifted.features, codebook.entries[codebook.index.long()])
    error = (lifted.features - full.features)[seen].square().sum(1)
    assert float((w * error).sum() / (w * full.features[seen].square().sum(1)).sum()) < 0.05


def test_codebook_manifest_says_what_the_file_holds(lifts):
    scene, full_dir, cb_dir = lifts
    full_entry = json.loads((full_dir / "manifest.json").read_text())["features"]["colour"]
    entry = json.loads((cb_dir / "manifest.json").read_text())["features"]["colour"]
    assert full_entry["form"] == "full" and "codebook" not in full_entry["request"]
    assert full_entry["bytes_per_gaussian"] == 38 * 2 + 5
    assert entry["form"] == "codebook" and entry["bytes_per_gaussian"] == 2.125
    assert entry["request"]["codebook"] == {"entries": K, "weighted": True}
    assert entry["request"]["scene_hash"] == full_entry["request"]["scene_hash"]
    record = entry["codebook"]
    size = (cb_dir / "features_colour.safetensors").stat().st_size
    assert record["entries"] == K + 1 and record["fitted_entries"] == K and record["zero_entry"]
    assert record["codebook_bytes"] == (K + 1) * 38 * 2 and record["file_bytes"] == size
    assert size < 2.125 * 29298 + 1 + record["codebook_bytes"] + 1024  # + the header
    assert record["bytes_per_gaussian_with_codebook"] == pytest.approx(
        2.125 + (K + 1) * 76 / 29298, abs=1e-3
    )
    assert 0 < record["relative_squared_error"] < 0.05 and record["weighted"]


def test_quantizing_a_full_lift_gives_the_same_codebook_then_is_up_to_date(lifts, tmp_path, capsys):
    scene, full_dir, cb_dir = lifts
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)
    capsys.readouterr()
    assert lift_main([str(copy), *LIFT, "--codebook", str(K)]) == 0
    assert "quantized the full colour features" in capsys.readouterr().out
    direct = load_features(cb_dir, "colour").codebook
    quantized = load_features(copy / "omnivision", "colour").codebook
    assert direct is not None and quantized is not None
    assert torch.equal(direct.entries, quantized.entries)
    assert torch.equal(direct.index, quantized.index)
    assert lift_main([str(copy), *LIFT, "--codebook", str(K)]) == 0
    assert "up to date" in capsys.readouterr().out
    # the scene hash check still refuses features lifted from another scene file
    other = tmp_path / "other.ply"
    other.write_bytes((copy / "point_cloud.ply").read_bytes() + b"\n")
    with pytest.raises(SceneError, match="lifted from another scene file"):
        load_features(copy / "omnivision", "colour", scene_file=other)


def test_phrase_on_the_codebook_file_selects_what_its_decoded_features_select(lifts):
    """Through `phrase_relevancy` as `omnivision query --text` calls it (`lifted.queryable`):
    the codebook's answer is the decoded features' answer, Gaussian for Gaussian."""
    scene, _, cb_dir = lifts
    lifted = load_features(cb_dir, "colour", scene_file=scene / "point_cloud.ply")
    assert lifted.codebook is not None
    g = torch.Generator().manual_seed(7)
    for entry in range(4):  # phrases near four of the entries
        texts = torch.cat([lifted.codebook.entries[entry][None], torch.randn(4, 38, generator=g)])
        texts[0] += 0.1 * torch.randn(38, generator=g)

        def encode(asked, texts=texts):
            return texts[: len(asked)]

        fast = phrase_relevancy(lifted.queryable, encode, "phrase", ["n"] * 4)
        slow = phrase_relevancy(lifted.codebook.decode(), encode, "phrase", ["n"] * 4)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
        cut = relevancy_threshold(slow)
        assert torch.equal(Selection.from_scores(fast, cut).mask, slow > cut)
        assert 0 < int((slow > cut).sum()) < lifted.num_gaussians


def test_merge_of_shards_writes_the_codebook_form(lifts, tmp_path, capsys):
    scene, full_dir, _ = lifts
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)
    for shard in ("0/2", "1/2"):
        assert lift_main([str(copy), *LIFT, "--shard", shard]) == 0
    capsys.readouterr()
    assert lift_main(["merge", str(copy), "--codebook", str(K)]) == 0
    assert "codebook: 16 entries" in capsys.readouterr().out
    merged = load_features(copy / "omnivision", "colour")
    entry = json.loads((copy / "omnivision" / "manifest.json").read_text())["features"]["colour"]
    assert merged.codebook is not None and entry["form"] == "codebook"
    assert entry["request"]["codebook"] == {"entries": K, "weighted": True}
    full = load_features(full_dir, "colour")  # the same views lifted at once
    assert torch.equal(merged.seen, full.seen)
    nearest, _ = assign(full.features[full.seen], merged.codebook.entries[:K])
    assert (nearest == merged.codebook.index[full.seen]).float().mean() > 0.99


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--codebook", "0"], "--codebook 0: want 1 <= K <= 65535"),
        (["--codebook", "65536"], "--codebook 65536: want 1 <= K <= 65535"),
        (["--codebook", "30000"], "more entries than the scene's 29298 Gaussians"),
        (["--codebook", "29298"], "more entries (29298) than the 2"),  # 26.6k seen of 29298
        (["--codebook", "8", "--shard", "0/2"], "--codebook goes with the merge"),
    ],
)
def test_bad_codebook_sizes_are_one_line_errors_that_write_nothing(
    lifts, tmp_path, capsys, extra, message
):
    scene, _, _ = lifts
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)  # with its full lift: a size check needs no lifting
    before = (copy / "omnivision" / "features_colour.safetensors").read_bytes()
    capsys.readouterr()
    assert lift_main([str(copy), *LIFT, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert (copy / "omnivision" / "features_colour.safetensors").read_bytes() == before
    assert not list((copy / "omnivision").glob("partial_*"))


# -- the synthetic benchmark --------------------------------------------------------------------

# (protocol, path, metric) -> (measured, threshold): its clip-masks lift quantized to 64 entries
# (bench/eval_codebook.py, 1 thread; the full features: 100 / 100, 89.3 / 87.1, 82.0, 98.3)
CODEBOOK_64_MASKS = {
    ("2d", "features", "accuracy"): (1.000, 0.95),
    ("2d", "features", "miou"): (0.894, 0.86),
    ("2d", "scalar", "accuracy"): (1.000, 0.95),
    ("2d", "scalar", "miou"): (0.870, 0.84),
    ("3d", "gaussians", "miou"): (0.810, 0.77),
    ("3d", "gaussians", "macc@0.25"): (0.983, 0.93),
}


def test_a_64_entry_codebook_scores_the_synthetic_benchmark_as_the_full_features(
    synthetic_bench, tmp_path, capsys
):
    """The benchmark's clip-masks lift quantized by the real command (4.6 bytes a Gaussian
    instead of its fp16 features) and scored by `omnivision eval lerf` as the benchmark scores
    the full features: within a point or so of them (the README's codebook table). Every
    phrase's selection through the trained CLIP is the decoded features' selection."""
    from omnivision.eval.cli import lerf_main
    from omnivision.eval.train_clip import CATEGORIES
    from omnivision.twod.clip import load_clip

    folder, runs = synthetic_bench
    scene = tmp_path / "scene"
    shutil.copytree(folder / "scene", scene, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((scene / "omnivision" / "manifest.json").read_text())
    request = manifest["features"]["clip-masks"]["request"]
    args = [str(scene), "--features", request["features"], "--clip", request["clip"],
            "--clip-pretrained", "None", "--codebook", "64"]  # fmt: skip
    assert lift_main(args) == 0
    assert "quantized the full clip-masks features" in capsys.readouterr().out
    run = tmp_path / "run"
    lerf_main(
        [str(scene), "--features", "clip-masks", "--labels", str(folder / "lerf_labels"),
         "--smooth", "10", "--scene-name", "demo", "--out", str(run)],
        "",
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    got = {(r["protocol"], r["path"], r["metric"]): r["value"] for r in metrics["rows"]}
    for key, (measured, threshold) in CODEBOOK_64_MASKS.items():
        assert got[key] >= threshold, f"{key}: {got[key]:.3f} (measured {measured})"
    full = {(r["protocol"], r["path"], r["metric"]): r["value"] for r in runs["masks"]["rows"]}
    assert all(abs(got[key] - full[key]) < 0.03 for key in CODEBOOK_64_MASKS), (got, full)

    lifted = load_features(scene / "omnivision", "clip-masks", scene_file=scene / "point_cloud.ply")
    assert lifted.codebook is not None and lifted.entry["codebook"]["fitted_entries"] == 64
    clip = load_clip(request["clip"], None, device="cpu")
    for phrase in CATEGORIES:
        fast = phrase_relevancy(lifted.queryable, clip.encode_text, phrase)
        slow = phrase_relevancy(lifted.codebook.decode(), clip.encode_text, phrase)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
        cut = relevancy_threshold(slow)
        assert torch.equal(Selection.from_scores(fast, cut).mask, slow > cut), phrase
