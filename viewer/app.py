"""`ViewerApp`: the viser server around one `ViewerState`.

Every GUI callback and pointer event calls one plain method of `ViewerApp` (`search`,
`set_threshold`, `click`, `rect_select`, `edit`, `undo`, `export`, ...), which runs the state
machine under a lock and then `refresh()`es: the new RGBA of each splat chunk is compared with
what was sent and only the chunks that differ are re-sent (see `splats.py`). Tests and the
benchmark call the same methods.

All browsers share the GUI, the edits and the selection (one session per scene); each keeps its
own camera. Jumping to a scene camera (click its frustum) moves only the clicking browser.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnivision.scenes.cameras import Cameras

from .splats import SplatLayout, pack_rgba
from .state import (
    COMBINE_MODES,
    PICK_SCOPES,
    ClickMode,
    CombineMode,
    PickScope,
    SelectionOp,
    ViewerState,
    pinhole_camera,
)

CLICK_MODE_LABELS: dict[str, ClickMode] = {
    "off": "off",
    "exemplar": "exemplar",
    "3D pick": "pick",
    "SAM +point": "sam+",
    "SAM -point": "sam-",
}
DEFAULT_NEGATIVES = "object, things, stuff, texture"
MAX_FRUSTUMS = 200


@dataclass
class UpdateStats:
    """The last display update: server-side seconds (state -> splat messages queued), how many
    chunks of how many were re-sent, and the bytes of splat buffers queued."""

    seconds: float = 0.0
    chunks_sent: int = 0
    chunks_total: int = 0
    bytes_sent: int = 0


def _c2w(cameras: Cameras, i: int) -> np.ndarray:
    return np.linalg.inv(cameras.world_to_camera[i].double().numpy())


def _fov_y(cameras: Cameras, i: int) -> float:
    return 2 * math.atan(0.5 * cameras.heights[i] / float(cameras.K[i, 1, 1]))


def scene_up(cameras: Cameras) -> np.ndarray:
    """World up: the mean of the cameras' up vectors (-y of OpenCV cameras), +z if they cancel."""
    c2w = torch.linalg.inv(cameras.world_to_camera.double()).numpy()
    up = -c2w[:, :3, 1].mean(axis=0)
    norm = float(np.linalg.norm(up))
    return up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


class ViewerApp:
    """A viser server showing `state`'s scene with query / selection / edit / export panels."""

    def __init__(
        self,
        state: ViewerState,
        host: str = "127.0.0.1",
        port: int = 8080,
        chunk_size: int | None = None,
        verbose: bool = False,
    ) -> None:
        import viser

        self.state = state
        self.lock = threading.RLock()
        self.server = viser.ViserServer(host=host, port=port, label="OmniVision", verbose=verbose)
        self.host = host
        self.last_update = UpdateStats()
        self._syncing = False
        g = state.scene.gaussians
        self.layout = SplatLayout.build(
            g.means.numpy(), g.quats.numpy(), g.scales.numpy(), chunk_size
        )
        self.nodes: list[Any] = []
        self._build_gui()
        self._add_splats()
        self._add_cameras()
        self._click_callback: Callable | None = None
        self.server.scene.on_rect_select(modifier="shift")(self._on_rect_select)
        self.set_status(
            f"{len(g):,} Gaussians, features: {state.features_name or 'none'}"
            + (
                ""
                if state.features is not None
                else f" (phrase / exemplar need omnivision-lift {state.scene.root})"
            )
            + f"; display scale {self.layout.scale:g}"
        )

    # -- server --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    # -- scene nodes ---------------------------------------------------------------------------
    def _add_splats(self) -> None:
        from .splats import unpack_covariances

        colors = self.state.display_colors()
        rgba = pack_rgba(colors.rgb, colors.opacity)[self.layout.order]
        size = self.layout.chunk_size
        for c, buffer in enumerate(self.layout.buffers):
            chunk = rgba[c * size : c * size + len(buffer)]
            rgba8 = chunk.view(np.uint8).reshape(-1, 4)
            self.nodes.append(
                self.server.scene.add_gaussian_splats(
                    f"/splats/{c:04d}",
                    centers=buffer[:, 0:3].view(np.float32),
                    covariances=unpack_covariances(buffer),
                    rgbs=rgba8[:, :3],
                    opacities=rgba8[:, 3:4],
                    scale=1.0 / self.layout.scale,
                )
            )
            self.layout.buffers[c] = buffer.copy()
            self.layout.buffers[c][:, 7] = chunk
            self.layout.sent[c] = chunk.copy()

    def _add_cameras(self) -> None:
        """Scene cameras as frustums (click: jump there) and a first view from camera 0."""
        cameras = self.state.cameras
        means = self.state.scene.gaussians.means
        sample = means[:: max(1, len(means) // 100_000)].double()
        lo = torch.quantile(sample, 0.02, dim=0).numpy() if len(sample) else np.zeros(3)
        hi = torch.quantile(sample, 0.98, dim=0).numpy() if len(sample) else np.ones(3)
        centre, extent = (lo + hi) / 2, max(float(np.linalg.norm(hi - lo)), 1e-6)
        up = scene_up(cameras)
        self.server.scene.set_up_direction(up)
        self.server.initial_camera.near = extent * 1e-3
        self.server.initial_camera.far = extent * 1e3
        if len(cameras) == 0:
            return
        c2w = _c2w(cameras, 0)
        forward = c2w[:3, 2]
        depth = max(float((centre - c2w[:3, 3]) @ forward), 0.1 * extent)
        initial = self.server.initial_camera
        initial.position = tuple(c2w[:3, 3])
        initial.look_at = tuple(c2w[:3, 3] + forward * depth)
        initial.up = tuple(up)
        initial.fov = _fov_y(cameras, 0)
        step = max(1, math.ceil(len(cameras) / MAX_FRUSTUMS))
        for i in range(0, len(cameras), step):
            pose = _c2w(cameras, i)
            frustum = self.server.scene.add_camera_frustum(
                f"/cameras/{i:04d}",
                fov=_fov_y(cameras, i),
                aspect=cameras.widths[i] / cameras.heights[i],
                scale=0.04 * extent,
                thickness=1.5,
                thickness_units="screen",
                color=(90, 90, 90),
                wxyz=_wxyz(pose[:3, :3]),
                position=tuple(pose[:3, 3]),
            )
            frustum.on_click(lambda event, i=i: self.jump_to(event.client, i))

    def jump_to(self, client: Any, view: int) -> None:
        """Move one browser's camera to scene camera `view`."""
        cameras = self.state.cameras
        pose = _c2w(cameras, view)
        with client.atomic():
            client.camera.fov = _fov_y(cameras, view)
            client.camera.position = tuple(pose[:3, 3])
            client.camera.wxyz = _wxyz(pose[:3, :3])
        self.set_status(f"camera {cameras.names[view]}")

    # -- GUI -----------------------------------------------------------------------------------
    def _build_gui(self) -> None:
        """The panels. Each control calls one event method; `buttons` maps names to buttons
        (setting a button's `.value = True` on the server runs its callback, as tests do)."""
        gui = self.server.gui
        self.status = gui.add_markdown("")
        self.progress = gui.add_progress_bar(0.0, visible=False, animated=True)
        self.count_md = gui.add_markdown("")
        buttons: dict[str, Any] = {}
        with gui.add_folder("Query"):
            self.phrase = gui.add_text("Phrase", initial_value="")
            self.negatives = gui.add_text("Negatives", initial_value=DEFAULT_NEGATIVES)
            buttons["search"] = gui.add_button("Search")
            self.relevancy = gui.add_checkbox("Relevancy colours", initial_value=False)
            self.threshold = gui.add_slider(
                "Threshold", min=0.0, max=1.0, step=0.001, initial_value=0.5
            )
        with gui.add_folder("Click"):
            self.click_mode = gui.add_dropdown(
                "Click mode", options=tuple(CLICK_MODE_LABELS), initial_value="off"
            )
            self.pick_scope = gui.add_dropdown(
                "Pick scope",
                options=PICK_SCOPES,
                initial_value="semantic",
                hint="3D pick / exemplar: semantic selects everything like the clicked splat, "
                "instance only the object it belongs to",
            )
            buttons["sam"] = gui.add_button("Run SAM prompt")
            buttons["sam_clear"] = gui.add_button("Clear SAM points")
            gui.add_markdown("Shift-drag: rectangle select")
        with gui.add_folder("Reference photo"):
            self.reference_upload = gui.add_upload_button("Upload photo", mime_type="image/*")
            self.reference_box = gui.add_text("Box X0,Y0,X1,Y1", initial_value="")
            buttons["find"] = gui.add_button("Find in scene")
        with gui.add_folder("Selection"):
            self.combine = gui.add_dropdown(
                "Combine", options=COMBINE_MODES, initial_value="replace"
            )
            for op in ("invert", "grow", "shrink", "clear"):
                buttons[op] = gui.add_button(op.capitalize())
        with gui.add_folder("Edit"):
            for name, label in (
                ("hide", "Hide"),
                ("show", "Show all"),
                ("delete", "Delete"),
                ("isolate", "Isolate"),
            ):
                buttons[name] = gui.add_button(label)
            self.colour = gui.add_rgb("Colour", initial_value=(230, 40, 40))
            buttons["recolor"] = gui.add_button("Recolor")
            buttons["undo"] = gui.add_button("Undo")
            buttons["redo"] = gui.add_button("Redo")
        with gui.add_folder("Export"):
            self.export_format = gui.add_dropdown(
                "Format", options=(".ply", ".splat"), initial_value=".ply"
            )
            buttons["export"] = gui.add_button("Export")
        self.buttons = buttons

        def call(fn: Callable[[], object]) -> Callable[[Any], None]:
            def callback(_event: Any) -> None:
                fn()

            return callback

        buttons["search"].on_click(call(self.search))
        self.relevancy.on_update(call(lambda: self.set_relevancy_map(self.relevancy.value)))
        self.threshold.on_update(call(self._on_threshold))
        self.click_mode.on_update(
            call(lambda: self.set_click_mode(CLICK_MODE_LABELS[self.click_mode.value]))
        )
        self.pick_scope.on_update(call(lambda: self.set_pick_scope(self.pick_scope.value)))
        buttons["sam"].on_click(call(self.run_sam))
        buttons["sam_clear"].on_click(call(self.clear_sam_points))
        photo = self.reference_upload
        photo.on_upload(call(lambda: self.upload_reference(photo.value.name, photo.value.content)))
        buttons["find"].on_click(call(self.find_reference))
        self.combine.on_update(call(lambda: self.set_mode(self.combine.value)))
        ops: tuple[SelectionOp, ...] = ("invert", "grow", "shrink", "clear")
        for op in ops:
            buttons[op].on_click(call(lambda op=op: self.selection_op(op)))
        for name in ("hide", "show", "delete", "isolate", "recolor"):
            buttons[name].on_click(call(lambda name=name: self.edit(name)))
        buttons["undo"].on_click(call(self.undo))
        buttons["redo"].on_click(call(self.redo))

        @buttons["export"].on_click
        def _(event: Any) -> None:
            self.export(self.export_format.value, event.client)

    def set_status(self, text: str) -> None:
        self.status.content = text

    def _on_threshold(self) -> None:
        if not self._syncing:
            self.set_threshold(self.threshold.value)

    def _sync_slider(self) -> None:
        """Fit the threshold slider to the live result's score range."""
        lo, hi = self.state.score_range
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        self._syncing = True
        try:
            step = 10.0 ** math.floor(math.log10((hi - lo) / 500))
            self.threshold.min, self.threshold.max, self.threshold.step = lo, hi, step
            self.threshold.value = min(max(self.state.threshold, lo), hi)
        finally:
            self._syncing = False

    # -- running an event ------------------------------------------------------------------------
    def _run(self, what: str, action: Callable[[], str | None], long: bool = False) -> bool:
        """Run one GUI event under the lock; a user-fixable problem goes to the status line.
        Returns whether it succeeded."""
        with self.lock:
            if long:
                self.progress.value = 0.0
                self.progress.visible = True
                self.set_status(f"{what}...")
            try:
                message = action()
            except Exception as err:
                if getattr(err, "exit_code", None) is None:
                    self.set_status(f"{what} failed: {type(err).__name__}: {err}")
                    traceback.print_exc()
                    return False
                self.set_status(str(err))
                return False
            finally:
                if long:
                    self.progress.visible = False
            self.refresh()
            if message:
                self.set_status(message)
            return True

    def _report(self, fraction: float, what: str) -> None:
        self.progress.value = float(min(max(100 * fraction, 0.0), 100.0))
        self.set_status(f"{what}...")

    def refresh(self) -> UpdateStats:
        """Send the splat chunks whose colours changed; update the count line."""
        start = time.perf_counter()
        colors = self.state.display_colors()
        changed = self.layout.changed_chunks(pack_rgba(colors.rgb, colors.opacity))
        with self.server.atomic():
            for c, buffer in changed:
                self.nodes[c].buffer = buffer
        self.last_update = UpdateStats(
            time.perf_counter() - start,
            len(changed),
            self.layout.num_chunks,
            sum(b.nbytes for _, b in changed),
        )
        self.count_md.content = f"**{self.state.summary()}**"
        return self.last_update

    # -- events (each GUI control calls one of these) --------------------------------------------
    def search(self, phrase: str | None = None, negatives: str | None = None) -> bool:
        phrase = self.phrase.value if phrase is None else phrase
        negatives = self.negatives.value if negatives is None else negatives

        def action() -> str:
            count = self.state.query_phrase(phrase, [n for n in negatives.split(",")])
            self._sync_slider()
            return f"phrase {phrase!r}: {count:,} selected"

        return self._run("search", action)

    def set_threshold(self, value: float) -> bool:
        return self._run("threshold", lambda: None if self.state.set_threshold(value) else None)

    def set_relevancy_map(self, on: bool) -> bool:
        def action() -> str | None:
            self.state.relevancy_map = bool(on)
            if on and self.state.result is None:
                return "relevancy colours show the scores of a query: run one"
            return None

        return self._run("relevancy colours", action)

    def set_mode(self, mode: CombineMode) -> bool:
        return self._run("combine", lambda: None if self.state.set_mode(mode) else None)

    def selection_op(self, op: SelectionOp) -> bool:
        def action() -> str:
            count = self.state.selection_op(op)
            return f"{op}: {count:,} selected"

        return self._run(op, action, long=op in ("grow", "shrink"))

    def set_click_mode(self, mode: ClickMode) -> None:
        with self.lock:
            self.state.click_mode = mode
            if mode == "off" and self._click_callback is not None:
                self.server.scene.remove_click_callback(self._click_callback)
                self._click_callback = None
            elif mode != "off" and self._click_callback is None:
                self._click_callback = self.server.scene.on_click()(self._on_click)
            hints = {
                "off": "",
                "exemplar": "click an object: select what looks like it",
                "pick": "click a splat: select it (and what is like it)",
                "sam+": "click points on the object, then Run SAM prompt",
                "sam-": "click points to exclude, then Run SAM prompt",
            }
            if hints[mode]:
                self.set_status(hints[mode])

    def set_pick_scope(self, scope: PickScope) -> bool:
        """What the next 3D pick or exemplar click selects: "semantic" or "instance"."""

        def action() -> str:
            self.state.set_pick_scope(scope)
            if scope == "instance":
                return "pick scope instance: a click selects only the object under it"
            return "pick scope semantic: a click selects everything like it"

        return self._run("pick scope", action)

    def click(
        self,
        camera: Cameras,
        xy: tuple[float, float],
        ray_origin: tuple[float, float, float],
        ray_direction: tuple[float, float, float],
    ) -> bool:
        """A click at pixel `xy` of `camera` (one view) along the given world ray, handled by
        the click mode."""
        mode = self.state.click_mode
        if mode == "off":
            return False

        def action() -> str:
            if mode == "exemplar":
                count = self.state.query_exemplar(camera, xy)
                self._sync_slider()
                return f"exemplar: {count:,} selected"
            if mode == "pick":
                picked = self.state.pick(ray_origin, ray_direction)
                self._sync_slider()
                return f"picked Gaussian {picked}: {self.state.count:,} selected"
            points = self.state.add_sam_point(camera, xy, positive=mode == "sam+")
            return f"{points} SAM point(s): Run SAM prompt when done"

        return self._run("click", action, long=mode == "exemplar")

    def rect_select(self, camera: Cameras, xyxy: tuple[float, float, float, float]) -> bool:
        def action() -> str:
            count = self.state.select_rect(camera, xyxy)
            self._sync_slider()
            return f"rectangle: {count:,} selected"

        return self._run("rectangle select", action, long=True)

    def run_sam(self) -> bool:
        def action() -> str:
            count = self.state.run_sam(progress=self._report)
            self._sync_slider()
            return f"SAM prompt: {count:,} selected"

        return self._run("SAM prompt", action, long=True)

    def clear_sam_points(self) -> bool:
        return self._run(
            "clear SAM points", lambda: self.state.clear_sam_points() or "SAM points cleared"
        )

    def upload_reference(self, name: str, content: bytes) -> bool:
        """Keep an uploaded photo of an object for `find_reference`."""

        def action() -> str:
            width, height = self.state.set_reference_photo(name, content)
            return f"{name} ({width}x{height}): give the object's box, then Find in scene"

        return self._run("upload", action)

    def find_reference(self, box: str | None = None) -> bool:
        """Select what the reference photo shows inside `box` (default: the Box field)."""
        box = self.reference_box.value if box is None else box

        def action() -> str:
            count = self.state.query_reference(box, progress=self._report)
            self._sync_slider()
            return f"reference photo: {count:,} selected"

        return self._run("find", action, long=True)

    def edit(self, name: str) -> bool:
        def action() -> str:
            before = self.state.count
            if name == "recolor":
                self.state.recolor([c / 255 for c in self.colour.value])
            elif name == "show":
                self.state.show_all()
            else:
                getattr(self.state, name)()
            return (
                f"{name}: {before:,} Gaussians; {len(self.state.current):,} left (undo to revert)"
            )

        return self._run(name, action)

    def undo(self) -> bool:
        return self._run("undo", lambda: f"undid {self.state.undo()}")

    def redo(self) -> bool:
        return self._run("redo", lambda: f"redid {self.state.redo()}")

    def export(self, suffix: str = ".ply", client: Any = None) -> Path | None:
        """Write SCENE/omnivision/edited.ply|.splat and send it to `client` as a download."""
        written: list[Path] = []

        def action() -> str:
            path = self.state.export(self.state.scene.root / "omnivision" / f"edited{suffix}")
            written.append(path)
            if client is not None:
                client.send_file_download(path.name, path.read_bytes(), save_immediately=True)
            return f"wrote {path} ({len(self.state.current):,} Gaussians)"

        self._run("export", action, long=True)
        return written[0] if written else None

    # -- pointer events ------------------------------------------------------------------------
    def _on_click(self, event: Any) -> None:
        camera = client_camera(event.client)
        x, y = event.screen_pos
        self.click(
            camera,
            (x * camera.widths[0], y * camera.heights[0]),
            event.ray_origin,
            event.ray_direction,
        )

    def _on_rect_select(self, event: Any) -> None:
        camera = client_camera(event.client)
        w, h = camera.widths[0], camera.heights[0]
        (x0, y0), (x1, y1) = event.screen_min, event.screen_max
        self.rect_select(
            camera, (min(x0, x1) * w, min(y0, y1) * h, max(x0, x1) * w, max(y0, y1) * h)
        )


def client_camera(client: Any) -> Cameras:
    """The OpenCV camera of a browser's current view (its canvas size, or 720 px high)."""
    camera = client.camera
    height = int(camera.image_height) or 720
    width = int(camera.image_width) or round(height * float(camera.aspect))
    return pinhole_camera(camera.position, camera.wxyz, float(camera.fov), width, height)


def _wxyz(rotation: np.ndarray) -> tuple[float, float, float, float]:
    import viser.transforms as tf

    w, x, y, z = tf.SO3.from_matrix(rotation).wxyz
    return float(w), float(x), float(y), float(z)
