"""The viewer's state machine and its viser app, without a browser: the demo scene with planted
features (one-hot object ids + noise) and a text encoder that maps object names to them."""

from __future__ import annotations

import math
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
from omnivision.viewer.splats import (
    SplatLayout,
    covariances,
    display_scale,
    pack_geometry,
    pack_rgba,
    unpack_covariances,
)
from omnivision.viewer.state import (
    SOURCE_INDEX,
    ViewerError,
    ViewerState,
    pinhole_camera,
)

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
    assert state.sam_prompt is None


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
    state.query_phrase("blue box", CANONICAL_NEGATIVES)
    assert torch.equal(state.selection.mask, mug | box)
    state.set_mode("subtract")  # re-combines the live result with the same base
    assert torch.equal(state.selection.mask, mug)
    state.set_mode("intersect")
    assert state.count == 0
    state.set_mode("replace")
    assert torch.equal(state.selection.mask, box)
    state.set_threshold(state.score_range[1] + 1)  # the slider re-cuts the live result
    assert state.count == 0
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


def test_relevancy_colour_map_shows_the_scores(demo, state):
    _, ids, _ = demo
    mug = (ids == MUG).numpy()
    plain = state.display_colors().rgb
    state.query_phrase("red mug", CANONICAL_NEGATIVES)
    highlighted = state.display_colors().rgb
    assert np.array_equal(highlighted[~mug], plain[~mug])  # only the selection is highlighted
    assert (highlighted[mug, 1] < plain[mug, 1] + 1e-6).all() and (highlighted[mug, 2] > 0.6).all()
    state.relevancy_map = True
    coloured = state.display_colors().rgb
    top, low = coloured[mug].mean(0), coloured[~mug].mean(0)
    assert top[0] > 0.4 and top[2] < 0.1  # turbo's red end for relevancy ~1
    assert low[2] > top[2] + 0.2  # the rest is cooler


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
    state.hide()
    assert state.count == int(mug.sum())  # hiding keeps the selection
    assert state.display_colors().opacity[mug].max() < 1e-6
    state.show_all()
    state.recolor((0.0, 1.0, 0.0))
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
    with pytest.raises(ViewerError, match="suffix"):
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
    from omnivision.viewer.app import _wxyz

    scene, _, _ = demo
    cameras = scene.cameras
    c2w = np.linalg.inv(cameras.world_to_camera[3].double().numpy())
    fov_y = 2 * math.atan(0.5 * cameras.heights[3] / float(cameras.K[3, 1, 1]))
    camera = pinhole_camera(c2w[:3, 3], _wxyz(c2w[:3, :3]), fov_y, 320, 240)
    assert torch.allclose(camera.world_to_camera[0], cameras.world_to_camera[3], atol=1e-5)
    assert torch.allclose(camera.K[0], cameras.K[3], atol=1e-3)


# -- the app with a real viser server ----------------------------------------------------------------
@pytest.fixture
def app(state):
    from omnivision.viewer.app import ViewerApp

    app = ViewerApp(state, port=0)
    yield app
    app.stop()


def test_app_gui_callbacks_query_edit_undo_export(demo, app):
    scene, ids, _ = demo
    with urllib.request.urlopen(app.url, timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read(2000).lower()
    mug = int((ids == MUG).sum())
    app.phrase.value = "red mug"
    app.buttons["search"].value = True  # runs the button's callback, as a browser click does
    assert app.state.count == mug and f"{mug:,} of" in app.count_md.content
    assert app.threshold.min <= app.state.threshold <= app.threshold.max
    assert 0 < app.last_update.chunks_sent <= app.last_update.chunks_total
    app.threshold.value = app.threshold.max
    assert app.state.count <= 1
    app.threshold.value = 0.75
    app.buttons["delete"].value = True
    assert len(app.state.current) == len(ids) - mug
    nodes = np.concatenate([node.buffer for node in app.nodes])
    alpha = np.ascontiguousarray(nodes[:, 7]).view(np.uint8).reshape(-1, 4)[:, 3]
    assert not alpha[(ids == MUG).numpy()[app.layout.order]].any()
    app.buttons["undo"].value = True
    assert len(app.state.current) == len(ids) and "undid delete" in app.status.content
    app.export_format.value = ".ply"
    app.buttons["export"].value = True
    path = scene.root / "omnivision" / "edited.ply"
    assert path.is_file() and len(read_ply(path)) == len(ids)
    app.buttons["undo"].value = True  # nothing left to undo: a status line, no exception
    assert "nothing to undo" in app.status.content


def test_app_without_features_reports_on_the_status_line(demo):
    from omnivision.viewer.app import ViewerApp

    scene, _, _ = demo
    app = ViewerApp(ViewerState(scene), port=0)
    try:
        assert "omnivision-lift" in app.status.content
        assert not app.search("red mug")
        assert app.status.content.startswith("no lifted features: run omnivision-lift")
        app.click_mode.value = "3D pick"
        origin = scene.cameras.centers[0]
        direction = torch.tensor([0.0, 0.0, 0.04]) - origin
        assert app.click(
            scene.cameras[0], (160.0, 120.0), tuple(origin.tolist()), tuple(direction.tolist())
        )
        assert app.state.count >= 1
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
