"""Selections and edits: set/graph operations, reversible edits with undo/redo, and export."""

from __future__ import annotations

import pytest
import torch
from conftest import random_scene

from omnivision.lift.diffusion import KnnGraph, knn_graph
from omnivision.query.edits import (
    EditHistory,
    delete,
    duplicate_translate,
    export,
    extract,
    hide,
    isolate,
    recolor,
    show,
)
from omnivision.query.selection import Selection
from omnivision.scenes.gaussians import GaussianScene, sh_dc_to_rgb
from omnivision.scenes.io_ply import read_ply
from omnivision.scenes.load import load_scene

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def assert_scenes_equal(a: GaussianScene, b: GaussianScene) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert set(a.extras) == set(b.extras)
    for key in a.extras:
        assert torch.equal(a.extras[key], b.extras[key]), key


@pytest.fixture(scope="module")
def demo(demo_dir) -> GaussianScene:
    return load_scene(demo_dir).gaussians


def object_selection(scene: GaussianScene, object_id: int) -> Selection:
    return Selection.from_mask(scene.extras["object_id"] == object_id)


def masks(*bits: str) -> list[Selection]:
    return [Selection.from_mask(torch.tensor([c == "1" for c in b])) for b in bits]


# -- selections -----------------------------------------------------------------------------
def test_set_operations_truth_tables():
    a, b = masks("0011", "0101")
    assert (a | b).mask.tolist() == [False, True, True, True]
    assert (a & b).mask.tolist() == [False, False, False, True]
    assert (a - b).mask.tolist() == [False, False, True, False]
    assert (~a).mask.tolist() == [True, True, False, False]
    assert (a | b).count == 3 and len(a | b) == 4
    assert Selection.empty(5).count == 0 and len(Selection.empty(5)) == 5
    with pytest.raises(ValueError, match="4 and 3"):
        _ = a | Selection.empty(3)


def test_from_scores_otsu_splits_bimodal_scores():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(300, generator=g) * 0.2  # [0, 0.2)
    high = 0.7 + torch.rand(100, generator=g) * 0.3  # [0.7, 1)
    scores = torch.cat([low, high])[torch.randperm(400, generator=g)]
    sel = Selection.from_scores(scores)
    assert torch.equal(sel.mask, scores > 0.5)
    assert sel.count == 100
    assert Selection.from_scores(scores, threshold=0.1).count == int((scores > 0.1).sum())
    assert sel.rethreshold(-1.0).count == 400


def two_clusters() -> tuple[KnnGraph, Selection]:
    """A line of 6 points near the origin and a line of 3 far away; all 9 selected."""
    big = torch.tensor([[float(i), 0.0, 0.0] for i in range(6)])
    small = torch.tensor([[100.0 + i, 0.0, 0.0] for i in range(3)])
    points = torch.cat([big, small])
    return knn_graph(points, k=2, backend="torch"), Selection.from_mask(
        torch.ones(9, dtype=torch.bool)
    )


def test_largest_component_keeps_the_bigger_cluster():
    graph, everything = two_clusters()
    assert everything.largest_component(graph).mask.tolist() == [True] * 6 + [False] * 3
    # Edges through unselected Gaussians do not count: cutting point 2 splits the big line.
    cut = everything - Selection.from_mask(torch.arange(9) == 2)
    assert cut.largest_component(graph).mask.tolist() == [False] * 3 + [True] * 3 + [False] * 3
    assert Selection.empty(9).largest_component(graph).count == 0


def test_grow_and_shrink_on_a_line():
    points = torch.tensor([[float(i), 0.0, 0.0] for i in range(9)])
    graph = knn_graph(points, k=2, backend="torch")  # inner points: i - 1 and i + 1
    middle = Selection.from_mask(torch.arange(9) == 4)
    assert middle.grow(graph).mask.nonzero().flatten().tolist() == [3, 4, 5]
    assert middle.grow(graph, steps=2).mask.nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    block = Selection.from_mask((torch.arange(9) >= 2) & (torch.arange(9) <= 6))
    assert block.shrink(graph).mask.nonzero().flatten().tolist() == [3, 4, 5]
    assert block.shrink(graph, steps=2).mask.nonzero().flatten().tolist() == [4]
    assert middle.shrink(graph).count == 0
    assert torch.equal(middle.grow(graph).shrink(graph).mask, middle.mask)


# -- edits and history ------------------------------------------------------------------------
def test_delete_undo_redo_restore_bit_exact(demo):
    original = demo.clone()
    history = EditHistory(demo)
    chair = object_selection(demo, 3)
    history.apply("delete chair", delete, chair)
    assert len(history.current) == len(demo) - chair.count
    assert not (history.current.extras["object_id"] == 3).any()
    assert history.can_undo and not history.can_redo and history.log == ["delete chair"]

    assert history.undo() is demo
    assert_scenes_equal(history.current, original)
    assert_scenes_equal(demo, original)  # the edit did not mutate its input
    assert history.can_redo and not history.can_undo and history.log == []

    history.redo()
    assert len(history.current) == len(demo) - chair.count
    assert history.log == ["delete chair"]

    history.undo()
    history.apply("hide 1", hide, object_selection(demo, 1))
    assert not history.can_redo and history.log == ["hide 1"]
    with pytest.raises(IndexError, match="redo"):
        history.redo()


def test_hide_show_round_trip(demo):
    original = demo.clone()
    sel = object_selection(demo, 5)
    hidden = hide(demo, sel)
    assert (hidden.opacities[sel.mask] < 1e-3).all()
    assert torch.equal(hidden.opacity_logits[~sel.mask], demo.opacity_logits[~sel.mask])
    twice = hide(hidden, sel | object_selection(demo, 6))  # hiding again keeps the originals
    assert_scenes_equal(
        show(twice, Selection.from_mask(torch.ones(len(demo), dtype=torch.bool))), original
    )
    assert_scenes_equal(show(hidden, sel), original)
    assert_scenes_equal(demo, original)


def test_recolor_changes_only_the_selection():
    scene = random_scene(120, sh_degree=2, seed=1)
    sel = Selection.from_mask(torch.arange(120) % 3 == 0)
    red = recolor(scene, sel, [1.0, 0.0, 0.0])
    assert torch.equal(red.sh[~sel.mask], scene.sh[~sel.mask])
    assert torch.allclose(
        sh_dc_to_rgb(red.sh[sel.mask, 0]), torch.tensor([1.0, 0.0, 0.0]).expand(40, 3), atol=1e-6
    )
    assert (red.sh[sel.mask, 1:] == 0).all()
    kept = recolor(scene, sel, [0.2, 0.4, 0.6], keep_sh_rest=True)
    assert torch.equal(kept.sh[:, 1:], scene.sh[:, 1:])
    tinted = recolor(scene, sel, [0.5, 1.0, 2.0], mode="tint")
    want = sh_dc_to_rgb(scene.sh[sel.mask, 0]) * torch.tensor([0.5, 1.0, 2.0])
    assert torch.allclose(sh_dc_to_rgb(tinted.sh[sel.mask, 0]), want, atol=1e-5)
    assert torch.equal(tinted.sh[~sel.mask], scene.sh[~sel.mask])
    with pytest.raises(ValueError, match="mode"):
        recolor(scene, sel, [1, 1, 1], mode="paint")  # type: ignore[arg-type]


def test_extract_export_reload(demo, tmp_path):
    sel = object_selection(demo, 2)
    part = extract(demo, sel)
    assert len(part) == sel.count and (part.extras["object_id"] == 2).all()
    assert_scenes_equal(read_ply(export(part, tmp_path / "part.ply")), part)
    splat = export(part, tmp_path / "part.splat")
    assert splat.stat().st_size == 32 * sel.count
    with pytest.raises(ValueError, match="part.obj"):
        export(part, tmp_path / "part.obj")


def test_hidden_state_survives_ply(tmp_path):
    scene = random_scene(50, seed=2)
    sel = Selection.from_mask(torch.arange(50) < 10)
    back = read_ply(export(hide(scene, sel), tmp_path / "hidden.ply"))
    assert_scenes_equal(show(back, sel), scene)


def test_isolate_and_duplicate_translate(demo):
    sel = object_selection(demo, 4) | object_selection(demo, 7)
    alone = isolate(demo, sel)
    assert_scenes_equal(alone, demo.subset(sel.mask))
    assert set(alone.extras["object_id"].unique().tolist()) == {4, 7}

    offset = torch.tensor([0.5, -1.0, 2.0])
    doubled = duplicate_translate(demo, sel, offset)
    assert len(doubled) == len(demo) + sel.count
    ids = doubled.extras["object_id"]
    assert int(((ids == 4) | (ids == 7)).sum()) == 2 * sel.count
    assert_scenes_equal(doubled.subset(torch.arange(len(demo))), demo)
    copies = doubled.subset(torch.arange(len(demo), len(doubled)))
    assert torch.equal(copies.means, demo.means[sel.mask] + offset)
    assert torch.equal(copies.sh, demo.sh[sel.mask])


def test_edits_reject_a_selection_of_another_size():
    scene = random_scene(20)
    with pytest.raises(ValueError, match="10 Gaussians but the scene has 20"):
        delete(scene, Selection.empty(10))
