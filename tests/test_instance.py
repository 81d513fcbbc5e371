"""Instance selection (query/instance.py): a pick selects the object under it, not everything of
similar appearance. On the demo scene with the offline colour features (lifted as tests/test_query.py
lifts them), a scene with two copies of the mug, the slow twins, `omnivision query --instance` and
the viewer's pick scope."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import random_scene

from omnivision.cli import main
from omnivision.lift.diffusion import adjacency, knn_graph
from omnivision.lift.store import save_features, write_manifest_entry
from omnivision.query.edits import duplicate_translate
from omnivision.query.instance import (
    InstanceConfig,
    cut_energy,
    graph_cut,
    graph_cut_reference,
    instance_adjacency,
    instance_selection,
    seed_component,
    seed_component_reference,
)
from omnivision.query.queries import click_scores, pick_gaussian
from omnivision.query.selection import Selection
from omnivision.scenes.demo import render_object_ids
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.io_ply import read_ply

pytestmark = pytest.mark.usefixtures("one_thread")

TABLE, MUG, CAN = 0, 1, 6
MUG_OFFSET = (0.75, -0.16, 0.0)  # the copy stands at (0.45, 0.02), clear of the box and cone

# IoU with the picked object, measured (deterministic: fixed scene, lift, graph and pick):
# graph cut: table 0.940, every object 1.000; component: table 0.934, every object 1.000
# (semantic, today's pick: table 0.798, mug 0.942, box 0.900, ball 0.952, cone 0.845, torus 0.885,
# can 0.100, plate 0.672). Asserted: measured - 0.02, rounded down to 2 decimals.
GRAPHCUT_MIN = {TABLE: 0.92, **dict.fromkeys(range(1, 8), 0.98)}
COMPONENT_MIN = {TABLE: 0.91, **dict.fromkeys(range(1, 8), 0.98)}


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def pixel_on(scene: GaussianScene, cameras, view: int, ids: torch.Tensor, obj: int):
    """The pixel of `view` showing object `obj` nearest the projection of its centre."""
    centre = scene.means[ids == obj].mean(0)
    w2c, K = cameras.world_to_camera[view], cameras.K[view]
    cam = w2c[:3, :3] @ centre + w2c[:3, 3]
    u, v = (K @ cam)[:2] / cam[2]
    labelled = GaussianScene(
        scene.means, scene.quats, scene.log_scales, scene.opacity_logits, scene.sh,
        {"object_id": ids},
    )  # fmt: skip
    shown = render_object_ids(labelled, cameras, view, int(ids.max()) + 1)
    ys, xs = torch.nonzero(shown == obj, as_tuple=True)
    assert len(xs), f"object {obj} is not in view {view}"
    k = torch.argmin((xs + 0.5 - u) ** 2 + (ys + 0.5 - v) ** 2)
    return float(xs[k]) + 0.5, float(ys[k]) + 0.5


@pytest.fixture(scope="module")
def lifted(demo_colour_lift):
    """The demo scene, its colour features (the session's, as test_query.py's) and the instance
    adjacency (16-NN graph, colour-similarity edge weights)."""
    scene, features = demo_colour_lift
    graph = knn_graph(scene.gaussians.means, 16)
    return scene, features, instance_adjacency(graph, scene.gaussians.rgb_dc)


# -- the demo scene ------------------------------------------------------------------------------
@pytest.mark.parametrize("obj", range(8))
def test_instance_pick_selects_the_picked_object(lifted, obj):
    """A 3D click on each object (and the table) in view 0: the graph cut and the component select
    that object. With these features the semantic pick on the can also takes the wooden table
    (similar colour histograms): the instance must not."""
    scene, features, matrix = lifted
    ids = scene.gaussians.extras["object_id"].long()
    truth = ids == obj
    xy = pixel_on(scene.gaussians, scene.cameras, 0, ids, obj)
    picked, scores = click_scores(scene.gaussians, scene.cameras, 0, xy, features)
    assert int(ids[picked]) == obj
    semantic = Selection.from_scores(scores)
    cut = instance_selection(scores, picked, matrix, InstanceConfig("graphcut"))
    component = instance_selection(scores, picked, matrix, InstanceConfig("component"))
    print(
        f"object {obj}: IoU semantic {iou(semantic.mask, truth):.3f} ({semantic.count} selected), "
        f"graph cut {iou(cut.mask, truth):.3f} ({cut.count}), "
        f"component {iou(component.mask, truth):.3f} ({component.count}), truth {int(truth.sum())}"
    )
    assert torch.equal(cut.scores, semantic.scores)  # the scores stay, the mask is the instance
    assert iou(cut.mask, truth) >= GRAPHCUT_MIN[obj]
    assert iou(component.mask, truth) >= COMPONENT_MIN[obj]
    if obj == CAN:  # the bug: 15,223 selected, IoU 0.10
        assert iou(semantic.mask, truth) < 0.2


# Noisy scores (Gaussian noise of std 0.3 added to the pick's cosine scores, fixed seeds): IoU
# measured graph cut mug 1.000, box 1.000, torus 1.000, can 1.000; component 0.982, 0.985, 0.989,
# 0.930. Asserted: the graph cut >= 0.98 and above the component on each object.
@pytest.mark.parametrize("obj", (1, 2, 5, 6))
def test_graph_cut_fills_what_noisy_scores_leave_out(lifted, obj):
    """The cut's pairwise term keeps a Gaussian whose score fell under the threshold when its
    similar-coloured neighbours are in; the plain threshold's component loses it."""
    scene, features, matrix = lifted
    ids = scene.gaussians.extras["object_id"].long()
    xy = pixel_on(scene.gaussians, scene.cameras, 0, ids, obj)
    picked, scores = click_scores(scene.gaussians, scene.cameras, 0, xy, features)
    noisy = scores + 0.3 * torch.randn(scores.shape, generator=torch.Generator().manual_seed(obj))
    cut = instance_selection(noisy, picked, matrix, InstanceConfig("graphcut"))
    component = instance_selection(noisy, picked, matrix, InstanceConfig("component"))
    truth = ids == obj
    print(
        f"object {obj}, noisy: IoU graph cut {iou(cut.mask, truth):.3f}, "
        f"component {iou(component.mask, truth):.3f}"
    )
    assert iou(cut.mask, truth) >= 0.98
    assert iou(cut.mask, truth) > iou(component.mask, truth)


@pytest.fixture(scope="module")
def two_mugs(lifted):
    """The demo with a copy of the mug moved along the table (`duplicate_translate`); the copy
    carries the mug's lifted features. Object ids: the copy is 8."""
    scene, features, _ = lifted
    g = scene.gaussians
    ids = g.extras["object_id"].long()
    mug = ids == MUG
    doubled = duplicate_translate(g, Selection.from_mask(mug), MUG_OFFSET)
    labels = torch.cat([ids, torch.full((int(mug.sum()),), 8)])
    matrix = instance_adjacency(knn_graph(doubled.means, 16), doubled.rgb_dc)
    return doubled, labels, torch.cat([features, features[mug]]), matrix


@pytest.mark.parametrize("method", ["graphcut", "component"])
def test_instance_pick_selects_one_of_two_copies(lifted, two_mugs, method):
    """Two identical mugs: a semantic pick on either selects both; an instance pick only the
    clicked one (the original from view 0, the copy from the view that shows it most)."""
    scene, _, _ = lifted
    doubled, labels, features, matrix = two_mugs
    cameras = scene.cameras
    copy = doubled.means[labels == 8].mean(0)
    copy_view = int(torch.argmin((cameras.centers - copy).norm(dim=-1)))  # the nearest camera
    both = (labels == MUG) | (labels == 8)
    for clicked, other, view in ((MUG, 8, 0), (8, MUG, copy_view)):
        xy = pixel_on(doubled, cameras, view, labels, clicked)
        picked, scores = click_scores(doubled, cameras, view, xy, features)
        assert int(labels[picked]) == clicked
        semantic = Selection.from_scores(scores)
        instance = instance_selection(scores, picked, matrix, InstanceConfig(method))
        print(
            f"{method}, click on {'the original' if clicked == MUG else 'the copy'} (view "
            f"{view}): IoU with it {iou(instance.mask, labels == clicked):.3f}, with the other "
            f"{iou(instance.mask, labels == other):.3f}; semantic IoU with both "
            f"{iou(semantic.mask, both):.3f}"
        )
        assert iou(semantic.mask, both) >= 0.9  # the semantic pick takes both mugs
        assert iou(instance.mask, labels == clicked) >= 0.9
        assert iou(instance.mask, labels == other) < 0.1


# -- slow twins ----------------------------------------------------------------------------------
@pytest.mark.parametrize("min_edge_weight", [0.0, 0.15, 0.3])
def test_seed_component_equals_a_python_bfs(min_edge_weight):
    scene = random_scene(300, seed=1)
    graph = knn_graph(scene.means, 6)
    weights = torch.rand(300, 6, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(300, generator=torch.Generator().manual_seed(3)) > 0.5
    seeds = torch.tensor([1, 5, 77, int(torch.nonzero(~mask)[0])])  # one seed outside the mask
    matrix = adjacency(graph, weights, normalise=False)
    fast = seed_component(mask, seeds, matrix, min_edge_weight)
    slow = seed_component_reference(mask, seeds, graph, weights, min_edge_weight)
    print(f"min edge weight {min_edge_weight}: {int(fast.sum())} of {int(mask.sum())} reached")
    assert torch.equal(fast, slow) and 0 < int(fast.sum()) < int(mask.sum())


@pytest.mark.parametrize("seed", range(3))
def test_graph_cut_is_the_least_energy_labelling(seed):
    """Max-flow equals the minimum of GaussianCut's energy over all 2^11 labellings (12
    Gaussians, the seed fixed), to 1e-9."""
    scene = random_scene(12, seed=seed)
    graph = knn_graph(scene.means, 3)
    g = torch.Generator().manual_seed(seed)
    weights, scores = torch.rand(12, 3, generator=g), torch.rand(12, generator=g)
    seeds = torch.tensor([0])
    fast = graph_cut(scores, seeds, adjacency(graph, weights, normalise=False), 0.6, 0.7)
    slow, energy = graph_cut_reference(scores, seeds, graph, weights, 0.6, 0.7)
    assert cut_energy(fast, scores, graph, weights, 0.6, 0.7) == pytest.approx(energy, abs=1e-9)
    assert torch.equal(fast, slow) and bool(fast[0])


def test_graph_cut_on_a_band_fixes_the_rest_to_background():
    """On a band (here the Gaussians above the threshold and their neighbours) the edges into the
    rest, fixed at 0, still count: equal to the least-energy labelling with only the band free."""
    scene = random_scene(60, seed=9)
    graph = knn_graph(scene.means, 3)
    g = torch.Generator().manual_seed(9)
    weights, scores = torch.rand(60, 3, generator=g), torch.rand(60, generator=g)
    threshold, seeds = 0.93, torch.tensor([int(torch.argmax(scores))])
    band = Selection.from_scores(scores, threshold).grow(graph, 1).mask
    assert 8 <= int(band.sum()) <= 14  # small enough to enumerate, and not every Gaussian
    matrix = adjacency(graph, weights, normalise=False)
    fast = graph_cut(scores, seeds, matrix, threshold, 2.0, band)
    slow, energy = graph_cut_reference(scores, seeds, graph, weights, threshold, 2.0, free=band)
    assert cut_energy(fast, scores, graph, weights, threshold, 2.0) == pytest.approx(energy)
    assert torch.equal(fast, slow) and not bool(fast[~band].any())


def test_a_seed_under_the_threshold_is_still_selected(lifted):
    scene, _, matrix = lifted
    scores = torch.zeros(len(scene.gaussians))
    for method in ("graphcut", "component"):
        picked = instance_selection(scores, 7, matrix, InstanceConfig(method, 0.5))
        assert picked.count >= 1 and bool(picked.mask[7])
    with pytest.raises(ValueError, match="not all in"):
        instance_selection(scores, len(scores), matrix)


# -- omnivision query --instance -----------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_dir(lifted, demo_dir, tmp_path_factory):
    """A copy of the demo scene with its colour features stored as the lift stores them."""
    root = tmp_path_factory.mktemp("instance_cli") / "scene"
    shutil.copytree(demo_dir, root, ignore=shutil.ignore_patterns("omnivision"))
    _, features, _ = lifted
    n = features.shape[0]
    out = root / "omnivision"
    save_features(
        out, "colour", features, torch.ones(n), torch.ones(n, dtype=torch.bool), None, False
    )
    write_manifest_entry(
        out, "colour", {"request": {"features": "colour"}, "dims": features.shape[1]}
    )
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["query", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind,method", [("click", "graphcut"), ("exemplar", "component")])
def test_query_instance_extracts_the_can_alone(scene_dir, lifted, tmp_path, capsys, kind, method):
    scene, _, _ = lifted
    ids = scene.gaussians.extras["object_id"].long()
    x, y = (int(v) for v in pixel_on(scene.gaussians, scene.cameras, 0, ids, CAN))
    out = tmp_path / "can.ply"
    code, stdout, err = run(
        capsys, str(scene_dir), f"--{kind}", f"0:{x},{y}", "--instance", method,
        "--then", "extract", "--out", str(out), "--preview", "0", str(tmp_path / "p.png"),
    )  # fmt: skip
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if line.startswith("selected "))
    assert f"the {method} instance of Gaussian" in line
    like_it = int(line.rsplit("(", 1)[1].split()[0])
    assert like_it > 10_000  # without --instance: the can and the wooden table
    extracted = read_ply(out).extras["object_id"].long()
    hits, truth = int((extracted == CAN).sum()), int((ids == CAN).sum())
    assert hits / (len(extracted) + truth - hits) >= 0.9


@pytest.mark.parametrize("argv", [["--text", "mug"], ["--mask", "0:m.png"]])
def test_query_instance_without_a_seed_is_one_line_and_exit_2(scene_dir, capsys, argv):
    code, _, err = run(capsys, str(scene_dir), *argv, "--instance", "graphcut")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--instance needs a seed" in err and "--click, --exemplar or --sam" in err


# -- the viewer ----------------------------------------------------------------------------------
def test_viewer_pick_scope_instance_selects_the_can_alone(lifted):
    from omnivision.viewer.app import ViewerApp
    from omnivision.viewer.state import ViewerError, ViewerState

    scene, features, _ = lifted
    ids = scene.gaussians.extras["object_id"].long()
    truth = ids == CAN
    origin = scene.cameras.centers[0]
    direction = scene.gaussians.means[truth].mean(0) - origin
    state = ViewerState(scene, features, "colour")
    state.pick(origin.tolist(), direction.tolist())
    assert state.count > 10_000  # semantic (the default): the can and the wooden table
    app = ViewerApp(state, port=0)
    try:
        app.set_pick_scope("instance")  # what the Pick scope dropdown of a browser's panel runs
        assert state.local.pick_scope == "instance" and "instance" in app.status()
        app.set_click_mode("pick")
        assert app.click(
            scene.cameras[0], (0.0, 0.0), tuple(origin.tolist()), tuple(direction.tolist())
        )
        assert iou(state.selection.mask, truth) >= 0.9 and "instance" in state.summary()
        state.set_threshold(state.threshold + 0.2)  # the slider recuts the instance
        assert 0 < state.count <= int(truth.sum())
        xy = pixel_on(scene.gaussians, scene.cameras, 0, ids, CAN)
        state.query_exemplar(scene.cameras[0], xy)
        assert iou(state.selection.mask, truth) >= 0.9
        assert int(ids[pick_gaussian(scene.gaussians, scene.cameras, 0, xy)]) == CAN
        with pytest.raises(ViewerError, match="pick scope"):
            state.set_pick_scope("everything")  # type: ignore[arg-type]
    finally:
        app.stop()
