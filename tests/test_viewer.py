"""The viewer's state machine and its viser app, without a browser: the demo scene with planted
features (one-hot object ids + noise) and a text encoder that maps object names to them."""

from __future__ import annotations

import math
import time
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnivision.lift.store import default_features
from omnivision.query.selection import Selection
from omnivision.scenes.demo import object_id_features
from omnivision.scenes.gaussians import GaussianScene, normalize_quats
from omnivision.scenes.io_ply import read_ply
from omnivision.scenes.load import Scene, load_scene
from omnivision.scenes.render import RenderConfig, blend_weights, render
from omnivision.twod.clip_dense import CANONICAL_NEGATIVES
from omnivision.viewer.geometry import pinhole_camera
from omnivision.viewer.modes import ViewerError
from omnivision.viewer.panels import DEFAULT_NEGATIVES
from omnivision.viewer.splats import (
    SplatLayout,
    covariances,
    display_scale,
    pack_geometry,
    pack_rgba,
    unpack_covariances,
)
from omnivision.viewer.state import SOURCE_INDEX, ViewerState

pytestmark = pytest.mark.usefixtures("one_thread")

MUG, BOX = 1, 2
DIM = 16


def planted_text_fn(objects: dict[int, str]):
    """Object names -> one-hot embeddings in the first 8 dims; any other phrase -> its own
    direction in the last 8 (orthogonal to every planted feature)."""
    ids = {name: i for i, name in objects.items()}
    others: dict[str, int] = {}

    def encode(phrases):
        rows = []
        for phrase in phrases:
            e = torch.zeros(DIM)
            if phrase in ids:
                e[ids[phrase]] = 1.0
            else:
                e[8 + others.setdefault(phrase, len(others) % 8)] = 1.0
            rows.append(e)
        return torch.stack(rows)

    return encode


@pytest.fixture(scope="module")
def demo(demo_dir):
    scene = load_scene(demo_dir)
    ids = scene.gaussians.extras["object_id"].long()
    g = torch.Generator().manual_seed(0)
    features = F.pad(object_id_features(ids, 8), (0, DIM - 8))
    features = F.normalize(features + 0.02 * torch.randn(len(ids), DIM, generator=g), dim=-1)
    return scene, ids, features


@pytest.fixture
def state(demo):
    scene, _, features = demo
    return ViewerState(scene, features, "planted", text_fn=planted_text_fn(scene.objects))


def project(scene: Scene, view: int, points: torch.Tensor) -> torch.Tensor:
    """Pixel xy (continuous, pixel centres at +0.5) of world points in a scene camera."""
    assert scene.cameras is not None
    w2c, K = scene.cameras.world_to_camera[view], scene.cameras.K[view]
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    return (cam @ K.T)[:, :2] / cam[:, 2:]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def mug_pixel(scene: Scene, ids: torch.Tensor, view: int = 0) -> tuple[float, float]:
    """The pixel of the rendered mug nearest the projection of the mug's centre."""
    onehot = object_id_features(ids, 8)
    out = render(scene.gaussians, scene.cameras[view], onehot, RenderConfig(rgb=False))  # type: ignore[index]
    id_map = out.features[0].argmax(-1)
    u, v = project(scene, view, scene.gaussians.means[ids == MUG].mean(0, keepdim=True))[0]
    ys, xs = torch.nonzero(id_map == MUG, as_tuple=True)
    k = torch.argmin((xs + 0.5 - u) ** 2 + (ys + 0.5 - v) ** 2)
    return float(xs[k]) + 0.5, float(ys[k]) + 0.5


# -- queries --------------------------------------------------------------------------------------
def test_phrase_selects_the_planted_object(demo, state):
    _, ids, _ = demo
    count = state.query_phrase("red mug", CANONICAL_NEGATIVES)
    assert count == int((ids == MUG).sum())
    assert torch.equal(state.selection.mask, ids == MUG)


def test_exemplar_click_on_the_mug_selects_the_mug(demo, state):
    scene, ids, _ = demo
    state.query_exemplar(scene.cameras[0], mug_pixel(scene, ids))
    assert iou(state.selection.mask, ids == MUG) >= 0.85


def test_3d_pick_along_a_ray_through_the_mug(demo, state):
    scene, ids, _ = demo
    origin = scene.cameras.centers[0]
    direction = scene.gaussians.means[ids == MUG].mean(0) - origin
    picked = state.pick(origin.tolist(), direction.tolist())
    assert int(ids[picked]) == MUG
    assert iou(state.selection.mask, ids == MUG) >= 0.85  # features: the Gaussians like it
    plain = ViewerState(scene)  # no features: a neighbourhood of the picked Gaussian
    picked = plain.pick(origin.tolist(), direction.tolist())
    assert int(ids[picked]) == MUG
    assert plain.count >= 1 and bool(plain.selection.mask[picked])


def test_rect_select_takes_the_visible_gaussians_in_the_box(demo, state):
    scene, ids, _ = demo
    uv = project(scene, 0, scene.gaussians.means[ids == MUG])
    (x0, y0), (x1, y1) = uv.min(0).values.tolist(), uv.max(0).values.tolist()
    state.select_rect(scene.cameras[0], (x0, y0, x1, y1))
    selected = state.selection.mask
    all_uv = project(scene, 0, scene.gaussians.means)
    inside = (all_uv[:, 0] >= x0) & (all_uv[:, 0] < x1) & (all_uv[:, 1] >= y0) & (all_uv[:, 1] < y1)
    assert not bool((selected & ~inside).any())
    # What the camera clearly sees in the box is selected; what it does not see is not.
    weights = blend_weights(scene.gaussians, scene.cameras, 0)
    weight = torch.zeros(len(ids)).index_add_(0, weights.gaussian_ids, weights.weights)
    seen, hidden = inside & (weight > 0.3), inside & (weight == 0)
    assert float((selected & seen).sum()) >= 0.85 * float(seen.sum())
    assert float((selected & hidden).sum()) <= 0.1 * float(hidden.sum())
    everything = ViewerState(scene)
    everything.select_rect(scene.cameras[0], (x0, y0, x1, y1), visible_only=False)
    assert torch.equal(everything.selection.mask, inside)


def test_lasso_brush_and_volume_select(demo, state):
    scene, ids, _ = demo
    camera = scene.cameras[0]
    uv = project(scene, 0, scene.gaussians.means[ids == MUG])
    (x0, y0), (x1, y1) = (uv.min(0).values - 3).tolist(), (uv.max(0).values + 3).tolist()
    # A lasso along the rectangle's corners selects what the rectangle selects.
    rect = ViewerState(scene)
    rect.select_rect(camera, (x0, y0, x1, y1))
    for xy in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        state.local.add_lasso_point(camera, xy)
    state.close_lasso()
    assert torch.equal(state.selection.mask, rect.selection.mask) and state.local.lasso is None
    # A triangle: the part of the rectangle's selection below its diagonal.
    state.selection_op("clear")
    for xy in ((x0, y0), (x1, y1), (x0, y1)):
        state.local.add_lasso_point(camera, xy)
    state.close_lasso()
    all_uv = project(scene, 0, scene.gaussians.means)
    below = (all_uv[:, 1] - y0) * (x1 - x0) >= (all_uv[:, 0] - x0) * (y1 - y0)
    selected = state.selection.mask
    assert bool(selected.any()) and not bool((selected & ~rect.selection.mask).any())
    assert not bool((selected & ~below).any())
    with pytest.raises(ViewerError, match="at least 3 lasso points"):
        state.close_lasso()
    # Brush dabs: what lies within the radius of the click, joined by the session's mode.
    state.selection_op("clear")
    state.local.brush_radius = 6.0
    centre = mug_pixel(scene, ids)
    state.brush(camera, centre)
    near = (all_uv - torch.tensor(centre)).norm(dim=-1) <= 6.0 + 1e-3
    first = state.selection.mask
    assert bool(first.any()) and not bool((first & ~near).any())
    assert float((first & (ids == MUG)).sum()) >= 0.9 * float(first.sum())
    state.set_mode("add")
    state.brush(camera, (centre[0] + 8.0, centre[1]))
    assert bool((state.selection.mask & first).sum() == first.sum()) and state.count > first.sum()
    # Volumes: a box (rotated a quarter turn about z) and a sphere, against the plain maths.
    means = scene.gaussians.means
    mid = means[ids == MUG].mean(0)
    half = (0.08, 0.04, 0.1)
    quarter = (math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4))
    state.set_mode("replace")
    state.local.set_volume(shape="box", centre=tuple(mid.tolist()), wxyz=quarter, size=half)
    state.select_volume()
    d = (means - mid).abs()  # the turn swaps the box's x and y extents
    box = (d[:, 0] <= half[1] + 1e-6) & (d[:, 1] <= half[0] + 1e-6) & (d[:, 2] <= half[2] + 1e-6)
    assert torch.equal(state.selection.mask, box) and state.count > 0
    state.local.set_volume(shape="sphere", size=(0.06, 0.06, 0.06))
    state.select_volume()
    assert torch.equal(state.selection.mask, (means - mid).norm(dim=-1) <= 0.06)
    assert 0 < state.count < int(box.sum())
    with pytest.raises(ViewerError, match="volume size"):
        state.local.set_volume(size=(0.1, -1.0, 0.1))


def red_segmenter(image, points, labels, box):
    """A stand-in for SAM 2 on the demo: the red pixels (the mug), inside the box if one is given."""
    r, g, b = image.unbind(-1)
    mask = (r > 0.45) & (g < 0.3) & (b < 0.3)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        inside = torch.zeros_like(mask)
        inside[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
        mask &= inside
    return mask


def test_sam_prompt_lifts_the_mask_refined_in_other_views(demo):
    scene, ids, features = demo
    calls = []

    def segment(image, points, labels, box):
        calls.append((image.shape, None if labels is None else labels.tolist(), box))
        return red_segmenter(image, points, labels, box)

    state = ViewerState(scene, features, "planted", segmenter=segment)
    camera = scene.cameras[0]
    with pytest.raises(ViewerError, match="first"):
        state.run_sam()
    assert state.add_sam_point(camera, mug_pixel(scene, ids), positive=True) == 1
    assert state.add_sam_point(camera, (5.0, 5.0), positive=False) == 2
    assert state.add_sam_point(scene.cameras[1], (5.0, 5.0), positive=True) == 1  # new view
    state.add_sam_point(camera, mug_pixel(scene, ids), positive=True)
    state.run_sam(refine_views=4)
    assert calls[0] == ((240, 320, 3), [1], None)  # the clicks on the prompt view
    assert len(calls) == 5 and all(box is not None for _, _, box in calls[1:])
    assert iou(state.selection.mask, ids == MUG) >= 0.85
    assert state.local.sam_prompt is None


def test_missing_features_and_models_say_what_to_run(demo):
    scene, _, _ = demo
    plain = ViewerState(scene, sam="/nonexistent/sam2.pt")
    for call in (
        lambda: plain.query_phrase("red mug", CANONICAL_NEGATIVES),
        lambda: plain.query_exemplar(scene.cameras[0], (160.0, 120.0)),
    ):
        with pytest.raises(ViewerError, match="no lifted features: run omnivision-lift"):
            call()
    colour = ViewerState(scene, torch.rand(len(scene.gaussians), 8), "colour")
    with pytest.raises(ViewerError, match="clip-pyramid"):
        colour.query_phrase("red mug", CANONICAL_NEGATIVES)
    plain.add_sam_point(scene.cameras[0], (160.0, 120.0), positive=True)
    with pytest.raises(ViewerError, match="no SAM 2 model"):
        plain.run_sam()


# -- selection ------------------------------------------------------------------------------------
def test_combine_modes_and_selection_ops(demo, state):
    _, ids, _ = demo
    mug, box = ids == MUG, ids == BOX
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    state.set_mode("add")
    assert torch.equal(state.selection.mask, mug)  # a mode applies to the next selection only
    state.query_phrase("blue box", CANONICAL_NEGATIVES)
    assert torch.equal(state.selection.mask, mug | box)
    state.set_mode("intersect")
    assert torch.equal(state.selection.mask, mug | box)  # never wipes the current one
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    assert torch.equal(state.selection.mask, mug)
    state.set_mode("subtract")
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    assert state.count == 0
    state.set_mode("replace")
    state.query_phrase("blue box", CANONICAL_NEGATIVES)
    assert torch.equal(state.selection.mask, box)
    state.set_threshold(state.score_range[1])  # the slider re-cuts the live result
    assert state.count <= 1
    state.set_threshold(0.75)
    state.selection_op("invert")
    assert torch.equal(state.selection.mask, ~box)
    state.selection_op("invert")
    before = state.selection.mask
    state.selection_op("grow")
    assert bool((state.selection.mask & ~before).any()) and not bool(
        (before & ~state.selection.mask).any()
    )
    state.selection_op("clear")
    assert state.count == 0


def test_threshold_keeps_working_after_invert_grow_shrink_and_is_validated(demo, state):
    _, ids, _ = demo
    mug = ids == MUG
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    state.selection_op("invert")
    assert torch.equal(state.selection.mask, ~mug)
    lo, hi = state.score_range
    state.set_threshold(hi)  # the cut shrinks to (almost) nothing: its inverse is (almost) all
    assert state.count >= len(ids) - 1
    state.set_threshold(0.75)  # back: the inverse of the mug again, the ops re-run
    assert torch.equal(state.selection.mask, ~mug)
    assert "then invert" in state.summary()
    state.selection_op("invert")
    state.selection_op("grow")
    grown = state.selection.mask
    assert bool((grown & ~mug).any()) and bool(grown[mug].all())
    state.set_threshold(hi)  # re-cut first, then invert, invert, grow
    assert state.count < int(grown.sum())
    state.set_threshold(0.75)
    assert torch.equal(state.selection.mask, grown)
    for bad in (hi + 0.5, lo - 0.5, float("nan")):
        with pytest.raises(ViewerError, match="outside the live scores' range"):
            state.set_threshold(bad)
    assert torch.equal(state.selection.mask, grown)  # a bad value changes nothing
    state.selection_op("clear")
    with pytest.raises(ViewerError, match="no live query"):
        state.set_threshold(0.5)
    with pytest.raises(ViewerError, match="combine mode 'xor' is not one of"):
        state.set_mode("xor")  # type: ignore[arg-type]


def test_relevancy_colour_map_shows_the_scores(demo, state):
    _, ids, _ = demo
    mug = (ids == MUG).numpy()
    plain = state.display_colors().rgb
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    highlighted = state.display_colors().rgb
    assert np.array_equal(highlighted[~mug], plain[~mug])  # only the selection is highlighted
    assert (highlighted[mug, 1] < plain[mug, 1] + 1e-6).all() and (highlighted[mug, 2] > 0.6).all()
    state.set_colour_mode("relevancy")
    coloured = state.display_colors().rgb
    top, low = coloured[mug].mean(0), coloured[~mug].mean(0)
    assert top[0] > 0.4 and top[2] < 0.1  # turbo's red end for relevancy ~1
    assert low[2] > top[2] + 0.2  # the rest is cooler
    # The colour bar names the scores at its ends and the threshold, as the map uses them.
    scores = state.result.scores.numpy()  # type: ignore[union-attr]
    lo, hi = np.percentile(scores, [1, 99])
    bar = state.colour_bar()
    assert f"{min(lo, state.threshold):.3g}" in bar and f"{max(hi, state.threshold):.3g}" in bar
    assert f"threshold {state.threshold:.3g}" in bar and "linear-gradient" in bar
    state.set_colour_mode("rgb")
    assert state.colour_bar() == ""
    state.highlight = False  # the selection in its own colours
    assert np.array_equal(state.display_colors().rgb, plain)


def test_feature_pca_colours_separate_the_objects(demo, state):
    """Planted features (one-hot object ids + noise): the first three principal components put
    each object's Gaussians at one colour, and different objects at different colours."""
    _, ids, _ = demo
    state.set_colour_mode("feature PCA")
    rgb = state.display_colors().rgb
    assert rgb.min() >= 0 and rgb.max() <= 1
    objects = [int(i) for i in ids.unique()]
    means = {i: rgb[(ids == i).numpy()].mean(0) for i in objects}
    spread = max(float(np.abs(rgb[(ids == i).numpy()] - means[i]).max()) for i in objects)
    large = sorted(objects, key=lambda i: -int((ids == i).sum()))[:4]
    gaps = [float(np.abs(means[a] - means[b]).max()) for a in large for b in large if a < b]
    print(f"feature PCA: smallest gap between objects {min(gaps):.3f}, largest spread {spread:.3f}")
    # The 4 largest objects take 4 distinct colours, the noise moves each little (measured: gap
    # 0.821, spread 0.070; asserts gap >= 0.6 and spread <= 0.15).
    assert min(gaps) >= 0.6 and spread <= 0.15
    plain = ViewerState(demo[0])
    with pytest.raises(ViewerError, match="feature PCA needs lifted features"):
        plain.set_colour_mode("feature PCA")


# -- edits ----------------------------------------------------------------------------------------
def fields(scene: GaussianScene) -> list[torch.Tensor]:
    return [scene.means, scene.quats, scene.log_scales, scene.opacity_logits, scene.sh]


def test_delete_then_undo_restores_the_splats_bit_exact(demo, state):
    scene, ids, _ = demo
    before_colors = state.display_colors()
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    state.delete()
    assert len(state.current) == len(ids) - int((ids == MUG).sum())
    assert state.count == 0  # the selection was of Gaussians that are gone
    shown = state.display_colors()
    assert not shown.opacity[(ids == MUG).numpy()].any()
    assert np.array_equal(
        shown.opacity[(ids != MUG).numpy()], before_colors.opacity[(ids != MUG).numpy()]
    )
    assert state.undo() == "delete"
    for a, b in zip(fields(state.edited_scene()), fields(scene.gaussians), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        state.edited_scene().extras["object_id"], ids.to(scene.gaussians.extras["object_id"].dtype)
    )
    after = state.display_colors()
    assert np.array_equal(after.rgb, before_colors.rgb) and np.array_equal(
        after.opacity, before_colors.opacity
    )
    assert state.redo() == "delete" and len(state.current) < len(ids)
    with pytest.raises(ViewerError, match="nothing selected"):
        state.hide()


def test_hide_recolor_isolate(demo, state):
    _, ids, _ = demo
    mug = (ids == MUG).numpy()
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    assert state.hide() == f"hidden {int(mug.sum()):,}; {len(ids) - int(mug.sum()):,} visible"
    assert state.count == int(mug.sum())  # hiding keeps the selection
    assert state.visible_count == len(ids) - int(mug.sum())
    assert state.display_colors().opacity[mug].max() < 1e-6
    assert state.show_all() == f"shown {int(mug.sum()):,}; {len(ids):,} visible"
    assert state.recolor((0.0, 1.0, 0.0)) == f"recoloured {int(mug.sum()):,}"
    state.selection_op("clear")
    rgb = state.display_colors().rgb
    assert np.allclose(rgb[mug], (0.0, 1.0, 0.0), atol=1e-6)
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    state.isolate()
    assert len(state.current) == int(mug.sum())
    assert state.undo() == "isolate" and len(state.current) == len(ids)


def test_export_reloads_without_the_deleted_gaussians(demo, state, tmp_path):
    _, ids, _ = demo
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    state.delete()
    path = state.export(tmp_path / "edited.ply")
    reloaded = read_ply(path)
    assert len(reloaded) == len(ids) - int((ids == MUG).sum())
    assert SOURCE_INDEX not in reloaded.extras
    assert not bool((reloaded.extras["object_id"] == MUG).any())
    splat = state.export(tmp_path / "edited.splat")
    assert splat.stat().st_size == 32 * len(reloaded)
    # Every format omnivision export writes; the object ids travel (glTF attributes, or a
    # sidecar beside the lossy formats) and come back with the Gaussians they belong to.
    for name in ("edited.glb", "edited.spz", "edited.compressed.ply", "edited.sog"):
        back = load_scene(state.export(tmp_path / name)).gaussians
        assert len(back) == len(reloaded), name
        assert not bool((back.extras["object_id"] == MUG).any()), name
    with pytest.raises(ViewerError, match="the name must end in .ply, .splat"):
        state.export(tmp_path / "edited.obj")


# -- what the browser is sent ---------------------------------------------------------------------
def test_fp16_covariances_keep_tiny_gaussians():
    g = torch.Generator().manual_seed(0)
    n = 500
    scales = torch.full((n, 3), 1e-4) * (1 + torch.rand(n, 3, generator=g))
    quats = normalize_quats(torch.randn(n, 4, generator=g)).numpy()
    plain = covariances(quats, scales.numpy())
    rounded = plain.astype(np.float16).astype(np.float32)
    assert np.abs(rounded - plain).max() > 0.3 * np.abs(plain).max()  # fp16 loses them at s = 1
    s = display_scale(scales.numpy())
    assert s != 1.0 and math.log10(s).is_integer()
    scaled = covariances(quats, scales.numpy(), s)
    restored = unpack_covariances(pack_geometry(np.zeros((n, 3), np.float32), scaled))
    diag = np.diagonal(restored, axis1=1, axis2=2)
    assert (diag > 0).all()
    assert np.abs(restored - scaled).max() <= 2e-3 * np.abs(scaled).max()
    assert display_scale(np.full((10, 3), 0.05)) == 1.0  # ordinary scenes are left alone
    assert display_scale(np.full((10, 3), 1e3)) < 1.0  # huge Gaussians are scaled down


def test_only_changed_chunks_are_resent(demo, state):
    scene, ids, _ = demo
    g = scene.gaussians
    layout = SplatLayout.build(g.means.numpy(), g.quats.numpy(), g.scales.numpy(), chunk_size=2048)
    colors = state.display_colors()
    first = layout.changed_chunks(pack_rgba(colors.rgb, colors.opacity))
    assert len(first) == layout.num_chunks
    assert layout.changed_chunks(pack_rgba(colors.rgb, colors.opacity)) == []
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    colors = state.display_colors()
    changed = {c for c, _ in layout.changed_chunks(pack_rgba(colors.rgb, colors.opacity))}
    mug_positions = np.nonzero((ids == MUG).numpy()[layout.order])[0]
    assert changed == set((mug_positions // 2048).tolist())
    assert len(changed) < layout.num_chunks / 2
    # Every splat is in exactly one chunk, with its own centre.
    buffers = np.concatenate(layout.buffers)
    centres = buffers[:, 0:3].view(np.float32) / np.float32(layout.scale)
    assert np.allclose(centres, g.means.numpy()[layout.order], atol=1e-6)


def test_client_camera_matches_the_scene_camera(demo):
    from omnivision.viewer.nodes import rotation_wxyz

    scene, _, _ = demo
    cameras = scene.cameras
    c2w = np.linalg.inv(cameras.world_to_camera[3].double().numpy())
    fov_y = 2 * math.atan(0.5 * cameras.heights[3] / float(cameras.K[3, 1, 1]))
    camera = pinhole_camera(c2w[:3, 3], rotation_wxyz(c2w[:3, :3]), fov_y, 320, 240)
    assert torch.allclose(camera.world_to_camera[0], cameras.world_to_camera[3], atol=1e-5)
    assert torch.allclose(camera.K[0], cameras.K[3], atol=1e-3)


# -- the app with a real viser server ----------------------------------------------------------------
@pytest.fixture
def app(state):
    from omnivision.viewer.app import ViewerApp

    app = ViewerApp(state, port=0)
    yield app
    app.stop()


class Browser:
    """A stand-in for a browser tab: a websocket that speaks viser's protocol (reports a camera,
    reads and drops what the server sends), so the server makes a real ClientHandle for it."""

    def __init__(self, app) -> None:
        import threading

        import msgspec
        import viser
        from websockets.sync.client import connect

        before = set(app.panels)
        self.ws = connect(
            f"ws://127.0.0.1:{app.port}", subprotocols=[f"viser-v{viser.__version__}"]
        )
        camera = {
            "type": "ViewerCameraMessage",
            "wxyz": [1.0, 0.0, 0.0, 0.0],
            "position": [0.0, 0.0, 0.0],
            "fov": 1.0,
            "near": 0.01,
            "far": 100.0,
            "image_height": 240,
            "image_width": 320,
            "look_at": [0.0, 0.0, 1.0],
            "up_direction": [0.0, -1.0, 0.0],
        }
        self.ws.send(msgspec.msgpack.encode(camera))
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.perf_counter() + 10
        while set(app.panels) == before and time.perf_counter() < deadline:
            time.sleep(0.02)
        (self.id,) = set(app.panels) - before
        self.panel = app.panels[self.id]
        self.client = self.panel.client

    def _drain(self) -> None:
        try:
            while True:
                self.ws.recv()
        except Exception:
            pass

    def close(self) -> None:
        self.ws.close()


def test_app_gui_callbacks_query_edit_undo_export(demo, app):
    scene, ids, _ = demo
    with urllib.request.urlopen(app.url, timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read(2000).lower()
    mug = int((ids == MUG).sum())
    assert app.threshold.disabled  # no live query yet: the slider has nothing to cut
    app.phrase.value = "red mug"
    app.buttons["search"].value = True  # runs the button's callback, as a browser click does
    assert app.state.count == mug and f"{mug:,} of" in app.count_md.content
    assert not app.threshold.disabled
    assert app.threshold.min <= app.state.threshold <= app.threshold.max
    assert 0 < app.last_update.chunks_sent <= app.last_update.chunks_total
    app.threshold.value = app.threshold.max
    assert app.state.count <= 1
    app.threshold.value = 0.75
    app.buttons["delete"].value = True
    assert len(app.state.current) == len(ids) - mug
    assert app.status() == f"deleted {mug:,}; {len(ids) - mug:,} left (Ctrl+Z undoes)"
    assert app.threshold.disabled  # the Gaussians changed: no live query
    nodes = np.concatenate([node.buffer for node in app.nodes])
    alpha = np.ascontiguousarray(nodes[:, 7]).view(np.uint8).reshape(-1, 4)[:, 3]
    assert not alpha[(ids == MUG).numpy()[app.layout.order]].any()
    app.buttons["undo"].value = True
    assert len(app.state.current) == len(ids) and "undid delete" in app.status()
    app.export_format.value = ".ply"
    app.buttons["export"].value = True
    path = scene.root / "omnivision" / "edited.ply"
    assert path.is_file() and len(read_ply(path)) == len(ids)
    app.buttons["undo"].value = True  # nothing left to undo: a status line, no exception
    assert "nothing to undo" in app.status()


def test_status_and_count_lines_never_disagree(demo, app):
    """The shared count line is the one place that counts the selection and is rewritten after
    every event; a status line says what happened and never counts the selection."""
    import re

    _, ids, _ = demo
    events = [
        lambda: app.search("red mug", DEFAULT_NEGATIVES),
        lambda: app.set_threshold(0.9),
        lambda: app.set_threshold(99.0),  # out of range: refused, one line
        lambda: app.set_mode("add"),
        lambda: app.search("blue box", DEFAULT_NEGATIVES),
        lambda: app.selection_op("invert"),
        lambda: app.set_threshold(0.8),
        lambda: app.edit("hide"),
        lambda: app.selection_op("clear"),
        lambda: app.set_threshold(0.5),  # nothing live: refused
        lambda: app.edit("show"),
        lambda: app.undo(),
    ]
    for event in events:
        event()
        assert app.count_md.content == f"**{app.state.summary()}**"
        # the status says what happened; it never counts the selection (that goes stale)
        assert not re.search(r"\d selected", app.status()), app.status()
    app.set_threshold(99.0)
    app.search("red mug", DEFAULT_NEGATIVES)
    assert not app.set_threshold(99.0)
    assert app.status().startswith("threshold 99.0 is outside the live scores' range")
    assert app.state.count == int((ids == MUG).sum())


def test_two_browsers_have_their_own_panels_and_share_the_scene(demo, app):
    scene, ids, _ = demo
    a, b = Browser(app), Browser(app)
    try:
        assert "shared with 1 other viewer" in a.panel.viewers.content
        assert a.panel.status is not b.panel.status and a.panel.session is not b.panel.session
        # Click mode, combine mode and prompts are each browser's own.
        a.panel.click_mode.value = "SAM +point"  # as a browser sets it
        assert a.panel.session.click_mode == "sam+" and b.panel.session.click_mode == "off"
        assert "Run SAM prompt" in app.status(a.client)
        assert "Run SAM prompt" not in app.status(b.client)
        origin = scene.cameras.centers[0]
        direction = scene.gaussians.means[ids == MUG].mean(0) - origin
        ray = (tuple(origin.tolist()), tuple(direction.tolist()))
        assert app.click(scene.cameras[0], mug_pixel(scene, ids), *ray, client=a.client)
        assert a.panel.session.sam_prompt is not None and b.panel.session.sam_prompt is None
        # The SAM point is drawn where the click met the mug, in A's scene only.
        marker = a.panel.markers["sam"]
        assert "sam" not in b.panel.markers
        mug_means = scene.gaussians.means[ids == MUG]
        assert float((mug_means - torch.tensor(marker.points[0])).norm(dim=-1).min()) < 0.02
        assert not app.click(scene.cameras[0], (1.0, 1.0), *ray, client=b.client)  # B: off
        b.panel.reference_box.value = "0,0,10,10"
        b.panel.buttons["find"].value = True  # B's own Find button, B's own status line
        assert app.status(b.client) == "upload a reference photo first"
        assert app.status(a.client) != app.status(b.client)
        b.panel.combine.value = "add"
        assert b.panel.session.mode == "add" and a.panel.session.mode == "replace"
        # The selection and the edits are shared: B's pick adds to what A's phrase selected.
        app.search("blue box", DEFAULT_NEGATIVES, client=a.client)
        b.panel.click_mode.value = "3D pick"
        assert app.click(scene.cameras[0], (0.0, 0.0), *ray, client=b.client)
        assert torch.equal(app.state.selection.mask, (ids == MUG) | (ids == BOX))
        assert app.status(b.client).startswith("picked Gaussian")
        assert app.status(a.client) == "searched 'blue box' (replace)"
        # A modifier overrides the panel's mode for one selection (Alt-click: subtract).
        assert app.click(scene.cameras[0], (0.0, 0.0), *ray, client=b.client, mode="subtract")
        assert torch.equal(app.state.selection.mask, ids == BOX)
        app.edit("delete", a.client)
        assert len(app.state.current) == len(ids) - int((ids == BOX).sum())
        assert app.status(a.client).startswith("deleted") and "deleted" not in app.status(b.client)
        app.key("undo", b.client)  # Ctrl+Z in B undoes A's edit: one shared history
        assert len(app.state.current) == len(ids) and app.status(b.client) == "undid delete"
        # A lasso in A (corners drawn only there), a volume with its gizmo in B.
        a.panel.click_mode.value = "lasso point"
        uv = project(scene, 0, scene.gaussians.means[ids == MUG])
        (x0, y0), (x1, y1) = uv.min(0).values.tolist(), uv.max(0).values.tolist()
        for xy in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            assert app.click(scene.cameras[0], xy, *ray, client=a.client)
        assert "lasso" in a.panel.markers and "lasso" not in b.panel.markers
        a.panel.buttons["lasso"].value = True
        assert app.state.result_kind == "lasso" and "lasso" not in a.panel.markers
        b.panel.buttons["gizmo"].value = True
        assert b.panel.gizmo is not None and a.panel.gizmo is None
        b.panel.volume_shape.value = "sphere"
        b.panel.volume_size.value = (0.06, 0.06, 0.06)
        b.panel.volume_centre.value = tuple(mug_means.mean(0).tolist())
        b.panel.combine.value = "replace"
        b.panel.buttons["volume"].value = True
        inside = (scene.gaussians.means - mug_means.mean(0)).norm(dim=-1) <= 0.06
        assert torch.equal(app.state.selection.mask, inside) and app.state.count > 0
        a.close()
        deadline = time.perf_counter() + 10
        while len(app.panels) > 1 and time.perf_counter() < deadline:
            time.sleep(0.02)
        assert "shared with anyone who connects" in b.panel.viewers.content
    finally:
        a.close()
        b.close()


def test_keyboard_shortcuts_are_commands_with_hotkeys(demo, app):
    _, ids, _ = demo
    keys = {name: (c.hotkey, c.modifier) for name, c in app.commands.items()}
    assert keys == {
        "delete": ("delete", None),
        "undo": ("Z", "cmd/ctrl"),
        "redo": ("Z", "cmd/ctrl+shift"),
        "hide": ("H", None),
        "clear": ("escape", None),
        "invert": ("I", None),
    }
    mug = int((ids == MUG).sum())
    app.search("red mug", DEFAULT_NEGATIVES)
    assert app.key("invert") and app.state.count == len(ids) - mug
    assert app.key("invert") and app.key("hide") and app.state.visible_count == len(ids) - mug
    assert app.key("delete") and len(app.state.current) == len(ids) - mug
    assert app.key("undo") and app.key("undo") and app.state.visible_count == len(ids)
    assert app.key("redo") and app.state.visible_count == len(ids) - mug
    assert app.key("clear") and app.state.count == 0
    assert not app.key("delete") and app.status() == "nothing selected"


def test_colour_modes_and_highlight_from_the_gui(demo, app):
    _, ids, _ = demo
    app.search("red mug", DEFAULT_NEGATIVES)
    app.colour_mode.value = "relevancy"
    assert "linear-gradient" in app.colour_bar.content
    app.highlight.value = False
    assert app.state.highlight is False
    app.colour_mode.value = "feature PCA"
    assert app.colour_bar.content == "" and app.status() == "colours: feature PCA (shared)"


def test_app_without_features_reports_on_the_status_line(demo):
    from omnivision.viewer.app import ViewerApp

    scene, _, _ = demo
    app = ViewerApp(ViewerState(scene), port=0)
    try:
        assert "omnivision-lift" in app.status()
        assert not app.search("red mug")
        assert app.status().startswith("no lifted features: run omnivision-lift")
        app.set_click_mode("pick")
        origin = scene.cameras.centers[0]
        direction = torch.tensor([0.0, 0.0, 0.04]) - origin
        assert app.click(
            scene.cameras[0], (160.0, 120.0), tuple(origin.tolist()), tuple(direction.tolist())
        )
        assert app.state.count >= 1
        assert not app.set_colour_mode("feature PCA")
        assert app.status().startswith("feature PCA needs lifted features")
    finally:
        app.stop()


def test_cli_bad_scene_and_feature_choice(tmp_path):
    from omnivision.scenes.errors import SceneError
    from omnivision.viewer.cli import view_main

    with pytest.raises(SceneError) as err:
        view_main([str(tmp_path / "missing")], "omnivision view")
    assert err.value.exit_code == 2
    assert default_features(tmp_path) is None
    for name in ("colour", "clip-pyramid", "dinov2-small"):
        (tmp_path / f"features_{name}.safetensors").touch()
    assert default_features(tmp_path) == "clip-pyramid"


def test_load_viewer_state_finds_lifted_features(demo, demo_dir, tmp_path):
    import shutil

    from omnivision.lift.store import save_features
    from omnivision.viewer.state import load_viewer_state

    _, ids, features = demo
    scene_dir = tmp_path / "scene"
    shutil.copytree(demo_dir, scene_dir, ignore=shutil.ignore_patterns("omnivision"))
    out = scene_dir / "omnivision"
    ones = torch.ones(len(ids))
    save_features(out, "colour", torch.rand(len(ids), 4), ones, ones.bool(), None, True)
    save_features(out, "clip-planted", features, ones, ones.bool(), None, False)
    state = load_viewer_state(scene_dir)
    assert state.features_name == "clip-planted" and torch.equal(state.features, features)
    state.text_fn = planted_text_fn(state.scene.objects)
    assert state.query_phrase("red mug", CANONICAL_NEGATIVES) == int((ids == MUG).sum())
    assert load_viewer_state(scene_dir, "colour").features.shape == (len(ids), 4)


def test_viewer_refuses_features_lifted_from_another_scene(demo_dir, tmp_path):
    """Same Gaussian count, other Gaussians: the manifest's scene hash no longer matches."""
    import shutil

    from omnivision.lift.store import file_hash, save_features, write_manifest_entry
    from omnivision.scenes.errors import SceneError
    from omnivision.scenes.io_ply import write_ply
    from omnivision.viewer.state import load_viewer_state

    scene_dir = tmp_path / "scene"
    shutil.copytree(demo_dir, scene_dir, ignore=shutil.ignore_patterns("omnivision"))
    ply = scene_dir / "point_cloud.ply"
    n = len(read_ply(ply))
    out = scene_dir / "omnivision"
    ones = torch.ones(n)
    save_features(out, "colour", torch.rand(n, 4), ones, ones.bool(), None, True)
    request = {"scene_file": ply.name, "scene_hash": file_hash(ply)}
    write_manifest_entry(out, "colour", {"request": request})
    assert load_viewer_state(scene_dir).features_name == "colour"
    other = read_ply(ply)
    other.means = other.means + 0.01
    write_ply(other, ply)
    with pytest.raises(SceneError, match="lifted from another scene file"):
        load_viewer_state(scene_dir)


def test_selection_helpers_agree_with_query_selection(demo, state):
    _, ids, _ = demo
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    expected = Selection.from_scores(state.result.scores, state.threshold)  # type: ignore[union-attr]
    assert torch.equal(state.selection.mask, expected.mask)


def test_phrase_search_with_the_scene_clip_and_real_lifts(synthetic_bench):
    """The viewer as a user opens it on the synthetic benchmark's scene: `load_viewer_state` picks
    the lifted CLIP features, loads the trained CLIP recorded in the manifest, and "red mug"
    selects the mug (IoU over Gaussians measured 0.906 with clip-masks features, as in
    test_query_cli; 5 points margin)."""
    from omnivision.viewer.state import load_viewer_state

    folder, _ = synthetic_bench
    state = load_viewer_state(folder / "scene", "clip-masks")
    ids = state.scene.gaussians.extras["object_id"].long()
    count = state.query_phrase("red mug", CANONICAL_NEGATIVES)
    assert count == int(state.selection.mask.sum())
    assert iou(state.selection.mask, ids == MUG) >= 0.906 - 0.05
