"""The viewer in a real browser: headless Debian Chromium (software WebGL) driven by playwright
on the demo scene. Type a phrase and press Search, see the mug turn magenta on the canvas and
the server select it; delete it and undo through the GUI; pick it with a real mouse click,
shift-drag a rectangle, press the keyboard shortcuts (Delete, Ctrl+Z, I, Esc), subtract with
Alt+click and add with Shift+click.

Needs /usr/bin/chromium (`apt-get install chromium`) and the python playwright package; never
downloads a browser. Takes about half a minute on quiet cores."""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_viewer import DIM, MUG, planted_text_fn

from omnivision.scenes.load import load_scene
from omnivision.viewer.panels import STATUS_HEIGHT, STATUS_WIDTH

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_thread")]

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 640, "height": 448}
PANEL = 340
"""Pixels at the right of the canvas that the GUI panel covers."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, raise_: bool = True
) -> object:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    if raise_:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return None


def canvas_image(page) -> np.ndarray:
    from PIL import Image

    box = page.locator("canvas").first.bounding_box()
    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)


def first_frame(page, timeout: float = 40.0) -> np.ndarray:
    """The canvas once the splats are drawn and have faded in (two equal screenshots)."""
    last = canvas_image(page)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        image = canvas_image(page)
        if image.std() > 10 and np.abs(image - last).mean() < 0.05:
            return image
        last = image
    raise AssertionError("the canvas did not settle")


def next_frame(page, previous: np.ndarray, box, timeout: float = 30.0) -> np.ndarray:
    """The first canvas screenshot whose `box` differs from `previous` (colour updates arrive
    atomically, so the first changed frame is the new picture)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        image = canvas_image(page)
        if region_change(image, previous, box)[0] > 2.0:
            return image
    raise AssertionError("the canvas did not change")


def region_change(
    a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[float, float]:
    """Mean absolute pixel difference inside `box` (x0, y0, x1, y1) and outside it, left of
    the GUI panel and the status window."""
    diff = np.abs(a - b).mean(-1)
    inside = np.zeros(diff.shape, bool)
    x0, y0, x1, y1 = box
    inside[y0:y1, x0:x1] = True
    outside = ~inside
    outside[:, diff.shape[1] - PANEL :] = False
    outside[diff.shape[0] - STATUS_HEIGHT - 10 :, : STATUS_WIDTH + 10] = False
    return float(diff[inside].mean()), float(diff[outside].mean())


def mug_view(scene, mug: torch.Tensor) -> int:
    """The scene camera that shows the mug nearest (0.3, 0.5) of a VIEWPORT-sized canvas."""
    cameras = scene.cameras
    centre = scene.gaussians.means[mug].mean(0)
    best, best_distance = 0, float("inf")
    for i in range(len(cameras)):
        w2c = cameras.world_to_camera[i]
        x, y, z = (w2c[:3, :3] @ centre + w2c[:3, 3]).tolist()
        f = VIEWPORT["height"] / cameras.heights[i] * float(cameras.K[i, 1, 1])
        u = (f * x / z) / VIEWPORT["width"] + 0.5
        v = (f * y / z) / VIEWPORT["height"] + 0.5
        distance = abs(u - 0.3) + abs(v - 0.5)
        if z > 0 and distance < best_distance:
            best, best_distance = i, distance
    return best


@pytest.fixture(scope="module")
def viewer(demo_dir):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    from omnivision.scenes.demo import object_id_features
    from omnivision.viewer.app import ViewerApp
    from omnivision.viewer.state import ViewerState

    scene = load_scene(demo_dir)
    every = scene.gaussians.extras["object_id"].long()
    # The mug whole and every other Gaussian of the rest (16.4k of 29.3k splats): SwiftShader
    # draws each frame on the CPU that the other test worker shares (57 s -> 30 s, quiet cores).
    scene.gaussians = scene.gaussians.subset((every == MUG) | (torch.arange(len(every)) % 2 == 0))
    ids = scene.gaussians.extras["object_id"].long()
    features = torch.nn.functional.pad(object_id_features(ids, 8), (0, DIM - 8))
    state = ViewerState(scene, features, "planted", text_fn=planted_text_fn(scene.objects))
    app = ViewerApp(state, port=0)
    yield app, ids
    app.stop()


def test_phrase_search_delete_undo_and_pick_in_chromium(viewer):
    from playwright.sync_api import sync_playwright

    from omnivision.viewer.app import client_camera

    app, ids = viewer
    mug = ids == MUG
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            page.goto(app.url)
            client: Any = wait_for(
                lambda: next(iter(app.server.get_clients().values()), None), 20, "the client"
            )
            initial = app.server.initial_camera.position
            wait_for(
                lambda: (
                    client.camera.update_timestamp > 0
                    and np.allclose(client.camera.position, initial, atol=1e-3)
                ),
                20,
                "the client's initial camera",
            )
            app.jump_to(client, mug_view(app.state.scene, mug))  # the mug left of the panel
            before = first_frame(page)
            timings["first frame"] = time.perf_counter() - start

            # Where the mug is on the canvas, from the camera the browser reports.
            camera = client_camera(client)
            w2c, K = camera.world_to_camera[0], camera.K[0]
            cam = app.state.scene.gaussians.means[mug] @ w2c[:3, :3].T + w2c[:3, 3]
            uv = ((cam @ K.T)[:, :2] / cam[:, 2:]).numpy()
            scale = np.array(
                [before.shape[1] / camera.widths[0], before.shape[0] / camera.heights[0]]
            )
            x0, y0 = (uv.min(0) * scale).astype(int)
            x1, y1 = (uv.max(0) * scale).astype(int) + 1
            box = (int(x0), int(y0), int(x1), int(y1))
            assert 0 <= x0 < x1 <= before.shape[1] - PANEL and 0 <= y0 < y1 <= before.shape[0], box
            assert y1 <= before.shape[0] - STATUS_HEIGHT - 10, box  # clear of the status window

            # Type a phrase, press Search: the server selects the mug, the canvas turns it magenta.
            row = '//label[text()="{}"]/ancestor::div[contains(@class,"mantine-Flex-root")][1]'
            page.locator(row.format("Phrase") + "//input").fill("red mug")
            wait_for(lambda: app.phrase.value == "red mug", 10, "the phrase to reach the server")
            page.get_by_role("button", name="Search").click()
            wait_for(lambda: app.state.count > 0, 20, "the phrase search")
            assert torch.equal(app.state.selection.mask, mug)
            selected = next_frame(page, before, box)
            if shots := os.environ.get("OMNIVISION_SAVE_SHOTS"):  # a folder to keep the frames in
                from PIL import Image

                for name, image in (("before", before), ("selected", selected)):
                    Image.fromarray(image.astype(np.uint8)).save(Path(shots) / f"viewer_{name}.png")
            inside, outside = region_change(selected, before, box)
            print(f"search: canvas change {inside:.1f} in the mug's box, {outside:.2f} elsewhere")
            assert inside > 15 and inside > 10 * outside
            timings["search"] = time.perf_counter() - start

            # Delete it, then undo: the splats change, then come back as they were.
            page.get_by_role("button", name="Delete").click()
            wait_for(lambda: len(app.state.current) == len(ids) - int(mug.sum()), 20, "delete")
            deleted = next_frame(page, selected, box)
            assert region_change(deleted, selected, box)[0] > 15
            page.get_by_role("button", name="Undo").click()
            wait_for(lambda: len(app.state.current) == len(ids), 20, "undo")
            next_frame(page, deleted, box)
            changes: list[tuple[float, float]] = []

            def back_to_first_frame() -> bool:  # the splat sort may land a frame later
                changes.append(region_change(canvas_image(page), before, box))
                return changes[-1][0] < 2.0 and changes[-1][1] < 1.0

            back = wait_for(back_to_first_frame, 15, "", raise_=False)
            print(f"undo: canvas differs from the first frame by {changes[-1]} (in / out)")
            assert back, changes
            timings["delete + undo"] = time.perf_counter() - start

            # 3D pick with a real mouse click on the mug: the browser's ray picks a mug Gaussian.
            page.get_by_role("combobox", name="Click mode").click()
            page.get_by_role("option", name="3D pick").click()
            panel = app.panel(client)  # the click mode is this browser's own
            wait_for(lambda: panel.session.click_mode == "pick", 10, "the click mode")
            centre_uv = np.median(uv, axis=0) * scale
            canvas = page.locator("canvas").first.bounding_box()
            assert canvas is not None
            for _ in range(5):  # the click filter reaches the page just after the mode change
                page.mouse.click(canvas["x"] + centre_uv[0], canvas["y"] + centre_uv[1])
                if wait_for(lambda: app.state.picked >= 0, 3, "", raise_=False):
                    break
            print(f"pick: {app.status(client)}")
            assert app.state.picked >= 0, "the click did not reach the server"
            assert int(ids[app.state.picked]) == MUG
            timings["pick"] = time.perf_counter() - start

            # Shift-drag a rectangle around the mug: the visible Gaussians inside it are selected.
            page.keyboard.down("Shift")
            page.mouse.move(canvas["x"] + float(x0) - 2, canvas["y"] + float(y0) - 2)
            page.mouse.down()
            page.mouse.move(canvas["x"] + float(x1) + 2, canvas["y"] + float(y1) + 2, steps=5)
            page.mouse.up()
            page.keyboard.up("Shift")
            wait_for(lambda: app.state.result_kind == "rectangle", 20, "the rectangle select")
            cam_all = app.state.scene.gaussians.means @ w2c[:3, :3].T + w2c[:3, 3]
            uv_all = ((cam_all @ K.T)[:, :2] / cam_all[:, 2:]).numpy() * scale
            margin = 6  # pixels: the drag's end points and the canvas rounding
            near_box = (
                (uv_all[:, 0] > x0 - margin)
                & (uv_all[:, 0] < x1 + margin)
                & (uv_all[:, 1] > y0 - margin)
                & (uv_all[:, 1] < y1 + margin)
            )
            selected = app.state.selection.mask.numpy()
            print(f"rectangle: {app.status(client)}")
            assert not (selected & ~near_box).any()
            assert (selected & mug.numpy()).sum() >= 0.4 * mug.sum().item()  # the front of it
            timings["rectangle"] = time.perf_counter() - start

            # Keys, pressed as a user does (viser commands): Delete, Ctrl+Z, I, Esc.
            n, rectangle = len(ids), app.state.count
            page.keyboard.press("Delete")
            wait_for(lambda: len(app.state.current) == n - rectangle, 10, "Delete")
            page.keyboard.press("Control+z")
            wait_for(lambda: len(app.state.current) == n, 10, "Ctrl+Z")
            page.keyboard.press("i")  # nothing selected after the undo: invert selects all
            wait_for(lambda: app.state.count == n, 10, "I (invert)")
            page.keyboard.press("Escape")
            wait_for(lambda: app.state.count == 0, 10, "Esc (clear)")
            # This browser's own lines are on its page: who shares the edits, and the status and
            # the selection count in the status window, on top of the canvas (not scrolled away).
            assert page.get_by_text("shared with anyone who connects").count() == 1
            bottom = canvas["y"] + canvas["height"]
            for line in (app.status(client), app.state.summary()):
                boxes = [b for b in (s.bounding_box() for s in page.get_by_text(line).all()) if b]
                assert any(bottom - STATUS_HEIGHT - 20 < b["y"] < bottom for b in boxes), boxes
            timings["keys"] = time.perf_counter() - start

            # Modifier keys while selecting: a pick on the mug, then Alt+click there subtracts it.
            x, y = canvas["x"] + centre_uv[0], canvas["y"] + centre_uv[1]
            page.mouse.click(x, y)
            wait_for(lambda: app.state.count > 0, 10, "the pick (3D pick mode is still on)")
            page.keyboard.down("Alt")
            page.mouse.click(x, y)
            page.keyboard.up("Alt")
            wait_for(lambda: app.state.count == 0, 10, "Alt+click to subtract")
            assert "(subtract)" in app.status(client)
            page.keyboard.down("Shift")  # Shift+click adds (a Shift-drag would be a rectangle)
            page.mouse.click(x, y)
            page.keyboard.up("Shift")
            wait_for(lambda: app.state.count > 0, 10, "Shift+click to add")
            assert "(add)" in app.status(client)
            timings["modifiers"] = time.perf_counter() - start
        finally:
            context.close()
    print(
        "browser test timings (s, cumulative): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
