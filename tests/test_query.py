"""Queries on the demo scene: exemplar, 3D click, mask (SAM-style) prompt, phrase relevancy."""

from __future__ import annotations

import pytest
import torch

from omnivision.query.queries import (
    click_scores,
    exemplar_scores,
    mask_prompt_scores,
    pick_gaussian,
)
from omnivision.scenes.demo import render_object_ids
from omnivision.twod.localize import otsu_threshold

OBJECTS = (1, 2, 3, 5)  # red mug, blue box, green ball, purple torus


@pytest.fixture(scope="module")
def lifted(demo_colour_lift):
    return demo_colour_lift


def centre_pixel(scene, view, obj):
    """A pixel showing the object, the one nearest the projection of its centre (a torus's centre
    is its hole)."""
    ids = scene.gaussians.extras["object_id"]
    centre = scene.gaussians.means[ids == obj].mean(0)
    w2c, K = scene.cameras.world_to_camera[view], scene.cameras.K[view]
    cam = w2c[:3, :3] @ centre + w2c[:3, 3]
    u, v = (K @ cam)[:2] / cam[2]
    ys, xs = torch.nonzero(id_map(scene, view) == obj, as_tuple=True)
    nearest = torch.argmin((xs + 0.5 - u) ** 2 + (ys + 0.5 - v) ** 2)
    return float(xs[nearest]) + 0.5, float(ys[nearest]) + 0.5


def iou(selected, truth) -> float:
    return float((selected & truth).sum() / (selected | truth).sum())


def id_map(scene, view):
    return render_object_ids(scene.gaussians, scene.cameras, view, 8)


@pytest.mark.parametrize("obj", OBJECTS)
def test_exemplar_click_selects_the_clicked_object(lifted, obj):
    scene, features = lifted
    scores = exemplar_scores(
        scene.gaussians, scene.cameras, 0, features, xy=centre_pixel(scene, 0, obj)
    )
    selected = scores > otsu_threshold(scores)
    assert iou(selected, scene.gaussians.extras["object_id"] == obj) >= 0.85


@pytest.mark.parametrize("obj", OBJECTS)
def test_3d_click_picks_a_gaussian_of_the_object_and_its_neighbourhood(lifted, obj):
    scene, features = lifted
    ids = scene.gaussians.extras["object_id"]
    picked, scores = click_scores(
        scene.gaussians, scene.cameras, 0, centre_pixel(scene, 0, obj), features
    )
    assert int(ids[picked]) == obj
    selected = scores > otsu_threshold(scores)
    assert iou(selected, ids == obj) >= 0.85


def test_pick_outside_the_view_is_an_error(lifted):
    scene, _ = lifted
    with pytest.raises(ValueError, match="outside the 320x240 view"):
        pick_gaussian(scene.gaussians, scene.cameras, 0, (400, 10))


@pytest.mark.parametrize("obj", (1, 2))
def test_oracle_mask_prompt_with_multiview_refinement_selects_the_object(lifted, obj):
    """SAM replaced by an oracle: the rendered object-id mask (inside the prompt box)."""
    scene, _ = lifted
    ids = scene.gaussians.extras["object_id"]

    def oracle(view, _image, box):
        x0, y0, x1, y1 = (int(v) for v in box)
        mask = id_map(scene, view) == obj
        inside = torch.zeros_like(mask)
        inside[y0:y1, x0:x1] = True
        return mask & inside

    first = id_map(scene, 0) == obj
    single = mask_prompt_scores(scene.gaussians, scene.cameras, 0, first) > 0.5
    refined = (
        mask_prompt_scores(
            scene.gaussians, scene.cameras, 0, first, oracle, refine_views=(3, 6, 9, 12, 15)
        )
        > 0.5
    )
    truth = ids == obj
    assert iou(refined, truth) >= 0.9
    assert iou(refined, truth) >= iou(single, truth)


# IoU with the object, measured (deterministic: oracle mask, fixed graph and lift): alone
# mug 0.486, box 0.458, ball 0.516, torus 0.494; diffused mug 0.971, box 0.891, ball 0.987,
# torus 0.935. Asserted: alone <= measured + 0.03, diffused >= measured - 0.03.
ONE_VIEW_ALONE_MAX = {1: 0.51, 2: 0.49, 3: 0.54, 5: 0.52}
ONE_VIEW_DIFFUSED_MIN = {1: 0.94, 2: 0.86, 3: 0.96, 5: 0.90}


@pytest.mark.parametrize("obj", OBJECTS)
def test_one_view_mask_with_diffusion_selects_the_hidden_side_too(lifted, obj):
    """One oracle mask on view 0, no refinement: lifting alone selects the visible side only;
    diffused on the kNN graph (colour-feature edges, seen Gaussians anchored) the unseen side
    takes its neighbours' scores and the whole object is selected."""
    from omnivision.lift.diffusion import knn_graph

    scene, features = lifted
    truth = scene.gaussians.extras["object_id"] == obj
    mask = id_map(scene, 0) == obj
    alone = mask_prompt_scores(scene.gaussians, scene.cameras, 0, mask) > 0.5
    graph = knn_graph(scene.gaussians.means, 16)
    diffused = mask_prompt_scores(
        scene.gaussians, scene.cameras, 0, mask, graph=graph, features=features
    )
    assert iou(alone, truth) <= ONE_VIEW_ALONE_MAX[obj], iou(alone, truth)
    assert iou(diffused > 0.5, truth) >= ONE_VIEW_DIFFUSED_MIN[obj], iou(diffused > 0.5, truth)


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)]
)
def test_phrase_index_equals_relevancy_query_after_query(dtype, tol):
    """A session of phrases: the first query keeps |phi| and the negatives' best cosine, later ones
    are one matrix-vector product in the stored dtype; every answer is LERF's relevancy. New
    negatives are recomputed, zero features score 0.5, and bad shapes are one error."""
    from omnivision.query.queries import PhraseIndex
    from omnivision.twod.clip_dense import relevancy
    from omnivision.twod.features import TwoDError

    g = torch.Generator().manual_seed(0)
    features = (torch.randn(3001, 48, generator=g) * torch.rand(3001, 1, generator=g)).to(dtype)
    features[7] = 0
    index = PhraseIndex(features)
    negatives = torch.randn(4, 48, generator=g)
    for step in range(4):
        if step == 2:
            negatives = torch.randn(3, 48, generator=g)  # other negatives: recomputed
        query = torch.randn(48, generator=g)
        got = index.relevancy(query, negatives)
        expected = relevancy(features.float(), query, negatives)
        torch.testing.assert_close(got, expected, rtol=0, atol=tol)
        assert float(got[7]) == 0.5
    with pytest.raises(TwoDError, match="one E"):
        index.relevancy(torch.randn(47), negatives)
    with pytest.raises(ValueError, match="empty"):
        index.phrase(lambda texts: torch.randn(len(texts), 48), "  ")
