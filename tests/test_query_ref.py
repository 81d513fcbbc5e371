"""`omnivision query --ref PHOTO`: find an object of the demo scene from a photo taken elsewhere.

The photo is rendered from a camera path the scene does not have (20° elevation at radius 1.6,
480x360, 60° -> 55° field of view; the scene's cameras are at 35° / 65°, radius 1.25 / 1.15,
320x240), cropped around one object with a 16-pixel margin, the object boxed on the crop. The
scene is the demo with every third camera (6 views, its photos), so a run fits a test's time;
the features are the weight-free colour ones. IoU is over Gaussians, against the object ids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from omnivision.cli import main
from omnivision.lift.pipeline import view_image
from omnivision.query.reference import find_references
from omnivision.query.selection import Selection
from omnivision.scenes.cameras import orbit_cameras
from omnivision.scenes.demo import render_object_ids
from omnivision.scenes.io_images import save_image
from omnivision.scenes.io_ply import read_ply
from omnivision.scenes.load import load_scene
from omnivision.scenes.render import RenderConfig, render
from omnivision.twod.extractors import load_extractor
from omnivision.twod.localize import reference_vector

pytestmark = pytest.mark.usefixtures("one_thread")

ELSEWHERE = orbit_cameras((0.0, 0.0, 0.04), 1.6, 8, 20.0, 480, 360, 55.0)
PHOTO_VIEW = 1  # every object is in sight from there
MARGIN = 16

# IoU over Gaussians of `scores > 0.5` with each object, measured with the 6 views (deterministic:
# fixed scene, cameras and weight-free features), asserted 0.02 below (the margin covers
# float rounding moving a few boundary pixels). The orange can (6) is not found: its colour
# and stripes match the wooden table's under the colour features, so the table is selected
# with it; the bound there only says the pipeline still runs.
MEASURED = {1: 0.967, 2: 0.966, 3: 0.909, 4: 0.936, 5: 0.792, 6: 0.139, 7: 0.712}
MARGIN_IOU = 0.02


def reference_photos(scene) -> dict[int, tuple[torch.Tensor, tuple[float, float, float, float]]]:
    """Per object, its photo from `ELSEWHERE[PHOTO_VIEW]`: a crop around it (white background,
    as the scene's own photos) and the object's box on the crop."""
    camera = ELSEWHERE[PHOTO_VIEW]
    rgb = render(scene.gaussians, camera, config=RenderConfig(background=(1.0, 1.0, 1.0))).rgb
    assert rgb is not None
    ids = render_object_ids(scene.gaussians, ELSEWHERE, PHOTO_VIEW, 8)
    photos = {}
    for obj in range(1, 8):
        ys, xs = torch.nonzero(ids == obj, as_tuple=True)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        cx0, cy0 = max(x0 - MARGIN, 0), max(y0 - MARGIN, 0)
        cx1, cy1 = min(x1 + MARGIN, camera.widths[0]), min(y1 + MARGIN, camera.heights[0])
        crop = rgb[0, cy0:cy1, cx0:cx1].clamp(0, 1).contiguous()
        photos[obj] = crop, (float(x0 - cx0), float(y0 - cy0), float(x1 - cx0), float(y1 - cy0))
    return photos


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


@pytest.fixture(scope="module")
def scene_dir(demo_dir, tmp_path_factory):
    """The demo scene with every third camera (and all its photos)."""
    root = tmp_path_factory.mktemp("query_ref") / "scene"
    shutil.copytree(demo_dir, root, ignore=shutil.ignore_patterns("omnivision"))
    cameras = json.loads((root / "cameras.json").read_text())
    (root / "cameras.json").write_text(json.dumps(cameras[::3]))
    return root


@pytest.fixture(scope="module")
def photos(scene_dir, tmp_path_factory):
    """{object id: (photo path, crop, box)} for every demo object."""
    folder = tmp_path_factory.mktemp("photos")
    return {
        obj: (save_image(folder / f"object{obj}.png", crop), crop, box)
        for obj, (crop, box) in reference_photos(load_scene(scene_dir)).items()
    }


def test_every_object_from_a_photo_taken_elsewhere(scene_dir, photos):
    """All objects in one pass over the views (each view extracted once, the masks lifted as
    channels of one lift); each object's IoU at most MARGIN_IOU below the measured one."""
    scene = load_scene(scene_dir)
    assert scene.cameras is not None and len(scene.cameras) == 6
    gaussians, cameras = scene.gaussians, scene.cameras
    ids = gaussians.extras["object_id"].long()
    extractor = load_extractor("colour")
    objects = sorted(photos)
    references = torch.stack(
        [reference_vector(extractor.extract([photos[o][1]]), box=photos[o][2]) for o in objects]
    )
    result = find_references(
        gaussians,
        cameras,
        extractor,
        references,
        images=lambda view: view_image(gaussians, cameras, view, use_photos=True),
    )
    measured = {}
    for q, obj in enumerate(objects):
        selection = Selection.from_scores(result.scores[q], 0.5)
        measured[obj] = round(iou(selection.mask, ids == obj), 3)
    print("IoU per object (--ref, colour, 6 views):", measured)
    for obj in objects:
        assert measured[obj] >= MEASURED[obj] - MARGIN_IOU, (obj, measured[obj])
    # each view's mask is at the camera's size, and the mug is found where it is in sight
    assert all(mask.shape == (7, 240, 320) for mask in result.masks.values())
    assert result.best_view(objects.index(1)) in result.masks


def test_references_lifted_together_equal_lift_masks_one_by_one():
    """Q references share one lift (the masks as Q channels): each reference's scores equal
    `queries.lift_masks` of its own masks, unseen Gaussians at 0 (the slow twin)."""
    from conftest import random_scene

    from omnivision.query.queries import lift_masks

    scene = random_scene(300, seed=1)
    cameras = orbit_cameras((0.0, 0.0, 0.0), 2.5, 3, 30.0, 64, 48, 50.0)
    extractor = load_extractor("colour", short_side=96)
    references = torch.rand(2, extractor.dim, generator=torch.Generator().manual_seed(0))
    result = find_references(scene, cameras, extractor, references)
    assert set(result.masks) == {0, 1, 2} and any(bool(m.any()) for m in result.masks.values())
    for q in range(2):
        probability, weights = lift_masks(
            scene, cameras, {v: m[q] for v, m in result.masks.items()}
        )
        expected = torch.where(weights > 0.05, probability, torch.zeros_like(probability))
        torch.testing.assert_close(result.scores[q], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.weights, weights)


def extracted_iou(path, ids: torch.Tensor, obj: int) -> float:
    extracted = read_ply(path).extras["object_id"].long()
    hits, truth = int((extracted == obj).sum()), int((ids == obj).sum())
    return hits / (len(extracted) + truth - hits)


def test_cli_finds_the_mug_from_its_photo_and_extracts_it(scene_dir, photos, tmp_path, capsys):
    path, _, box = photos[1]
    out, preview = tmp_path / "mug.ply", tmp_path / "preview.png"
    code = main(
        ["query", str(scene_dir), "--ref", str(path), "--ref-box", ",".join(f"{v:g}" for v in box),
         "--then", "extract", "--out", str(out), "--preview", "2", str(preview)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "found in" in captured.out and "by --ref" in captured.out
    assert "6/6" in captured.err  # the progress bar over the views
    ids = load_scene(scene_dir).gaussians.extras["object_id"].long()
    measured = extracted_iou(out, ids, 1)
    print(f"--ref mug through the CLI: IoU {measured:.3f}")
    assert measured >= MEASURED[1] - MARGIN_IOU
    assert np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(preview)).shape == (
        240,
        4 * 320,
        3,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ref", "{missing}", "--ref-box", "0,0,10,10"], "no such image file"),
        (["--ref", "{photo}", "--ref-box", "0,0,500,20"], "is outside the"),
        (["--ref", "{photo}", "--ref-click", "5,500"], "is outside the"),
        (["--ref", "{photo}", "--ref-box", "1,2,3"], "--ref-box '1,2,3': expected X1,Y1,X2,Y2"),
        (["--ref", "{photo}", "--ref-box", "0,0,5,5", "--ref-click", "2,2"], "one of them"),
        (["--ref", "{photo}"], "give the reference as --ref-click"),
        (["--ref", "{photo}", "--ref-box", "0,0,5,5", "--click", "0:10,10"], "exactly one query"),
        (["--click", "0:10,10", "--ref-box", "0,0,5,5"], "give --ref PHOTO"),
    ],
    ids=["missing", "box-outside", "click-outside", "bad-box", "both", "neither", "two", "no-ref"],
)
def test_bad_reference_is_one_line_and_exit_2(scene_dir, photos, tmp_path, capsys, argv, message):
    fill = {"missing": str(tmp_path / "missing.jpg"), "photo": str(photos[1][0])}
    code = main(["query", str(scene_dir), *(a.format(**fill) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_help_explains_ref_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["query", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "PHOTO of the object" in out and "--ref-box" in out and "--ref-click" in out
    assert "--ref mug_photo.jpg --ref-box" in out  # the example


# -- the viewer: upload a photo, box the object, the scores become the selection ------------------
def box_text(box: tuple[float, float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in box)


def test_viewer_state_selects_the_boxed_object_of_an_uploaded_photo(scene_dir, photos):
    from omnivision.viewer.state import ViewerError, ViewerState

    scene = load_scene(scene_dir)
    ids = scene.gaussians.extras["object_id"].long()
    state = ViewerState(scene)  # no lifted features needed
    with pytest.raises(ViewerError, match="upload a reference photo first"):
        state.query_reference("0,0,10,10")
    with pytest.raises(ViewerError, match="notes.txt: not an image"):
        state.set_reference_photo("notes.txt", b"not a picture")
    path, crop, box = photos[2]  # the blue box
    assert state.set_reference_photo(path.name, path.read_bytes()) == (crop.shape[1], crop.shape[0])
    with pytest.raises(ViewerError, match="is outside the"):
        state.query_reference("0,0,500,20")
    count = state.query_reference(box_text(box))
    assert count == state.selection.count and "reference object2.png" in state.summary()
    measured = iou(state.selection.mask, ids == 2)
    print(f"viewer --ref blue box (renders of the edited scene): IoU {measured:.3f}")
    assert measured >= MEASURED[2] - MARGIN_IOU


def test_viewer_app_upload_and_find_buttons(scene_dir, photos):
    from omnivision.viewer.app import ViewerApp
    from omnivision.viewer.state import ViewerState

    app = ViewerApp(ViewerState(load_scene(scene_dir)), port=0)
    try:
        assert not app.upload_reference("notes.txt", b"not a picture")
        assert "notes.txt: not an image" in app.status()
        path, _, box = photos[1]
        assert app.upload_reference(path.name, path.read_bytes())
        assert "Find in scene" in app.status()
        assert app.find_reference(box_text(box))  # what a browser's Find in scene button runs
        assert app.state.count > 0 and app.state.result_kind == "reference object1.png"
        assert "reference photo:" in app.status()
        assert f"{app.state.count:,} of" in app.count_md.content
    finally:
        app.stop()
