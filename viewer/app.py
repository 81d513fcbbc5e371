"""`ViewerApp`: the viser server around one `ViewerState`, with a panel per browser.

Shared by every browser: the scene and its edit history, the selection and its live query, the
display (splat colours, colour mode, highlight), and the panels that act on them (Query,
Selection, Edit, Export; a line at the top counts the selection). Each browser's own (a
`ClientPanel` built when it connects, over a `ClientSession`): its status line, the line saying
how many other viewers share the edits, its progress bar, the Click panel (click mode, combine
mode and pick scope of its next selection, SAM prompt points drawn as markers only it sees) and
the Reference photo panel, and its camera. Keyboard shortcuts are viser commands (Delete,
Ctrl+Z, Ctrl+Shift+Z, H, Esc, I); modifier keys while clicking or dragging pick the combine
mode of that one selection.

Every GUI callback, key and pointer event calls one plain method of `ViewerApp` (`search`,
`set_threshold`, `click`, `rect_select`, `edit`, `undo`, `export`, ...; `client` names the
browser, None: the state's local session), which runs the state machine under a lock and then
`refresh()`es: the new RGBA of each splat chunk is compared with what was sent and only the
chunks that differ are re-sent (see `splats.py`). Tests and the benchmark call the same methods.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnivision.scenes.cameras import Cameras

from .modes import (
    ClickMode,
    ColourMode,
    CombineMode,
    PickScope,
    SelectionOp,
    ViewerError,
)
from .nodes import (
    camera_to_world,
    client_camera,
    draw_markers,
    draw_volume,
    rotation_wxyz,
    scene_up,
    vertical_fov,
)
from .panels import (
    CLICK_HINTS,
    CLICK_MODIFIERS,
    MAX_FRUSTUMS,
    RECT_MODIFIERS,
    ClientPanel,
    build_client_panel,
    build_shared_gui,
)
from .session import ClientSession
from .splats import SplatLayout, pack_rgba
from .state import ViewerState


@dataclass
class UpdateStats:
    """The last display update: server-side seconds (state -> splat messages queued), how many
    chunks of how many were re-sent, and the bytes of splat buffers queued."""

    seconds: float = 0.0
    chunks_sent: int = 0
    chunks_total: int = 0
    bytes_sent: int = 0


class ViewerApp:
    """A viser server showing `state`'s scene with shared query / selection / edit / export
    panels and a panel of its own for each browser."""

    # the shared GUI handles (`panels.build_shared_gui`)
    count_md: Any
    phrase: Any
    negatives: Any
    threshold: Any
    colour_mode: Any
    colour_bar: Any
    highlight: Any
    colour: Any
    export_format: Any
    buttons: dict[str, Any]
    commands: dict[str, Any]

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
        self.panels: dict[int, ClientPanel] = {}
        self.local = ClientPanel(state.local)
        self.extent = 1.0
        self.centre = np.zeros(3)
        self.greeting = (
            f"{len(g):,} Gaussians, features: {state.features_name or 'none'}"
            + (
                ""
                if state.features is not None
                else f" (phrase / exemplar need omnivision-lift {state.scene.root})"
            )
            + f"; display scale {self.layout.scale:g}"
        )
        state.local.status = self.greeting
        build_shared_gui(self)
        self._add_splats()
        self._add_cameras()
        for modifier, mode in RECT_MODIFIERS.items():
            self.server.scene.on_rect_select(modifier=modifier)(  # type: ignore[arg-type]
                partial(self._on_rect_select, mode=mode)
            )
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self.refresh()

    # -- server --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    def panel(self, client: Any = None) -> ClientPanel:
        """The panel of `client` (a ClientHandle or its id; None: the local session's)."""
        if client is None:
            return self.local
        client_id = client if isinstance(client, int) else client.client_id
        return self.panels.get(client_id, self.local)

    def status(self, client: Any = None) -> str:
        """The status line `client` sees."""
        return self.panel(client).session.status

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
        self.extent, self.centre = extent, centre
        up = scene_up(cameras)
        self.server.scene.set_up_direction(up)
        self.server.initial_camera.near = extent * 1e-3
        self.server.initial_camera.far = extent * 1e3
        if len(cameras) == 0:
            return
        c2w = camera_to_world(cameras, 0)
        forward = c2w[:3, 2]
        depth = max(float((centre - c2w[:3, 3]) @ forward), 0.1 * extent)
        initial = self.server.initial_camera
        initial.position = tuple(c2w[:3, 3])
        initial.look_at = tuple(c2w[:3, 3] + forward * depth)
        initial.up = tuple(up)
        initial.fov = vertical_fov(cameras, 0)
        step = max(1, math.ceil(len(cameras) / MAX_FRUSTUMS))
        for i in range(0, len(cameras), step):
            pose = camera_to_world(cameras, i)
            frustum = self.server.scene.add_camera_frustum(
                f"/cameras/{i:04d}",
                fov=vertical_fov(cameras, i),
                aspect=cameras.widths[i] / cameras.heights[i],
                scale=0.04 * extent,
                thickness=1.5,
                thickness_units="screen",
                color=(90, 90, 90),
                wxyz=rotation_wxyz(pose[:3, :3]),
                position=tuple(pose[:3, 3]),
            )
            frustum.on_click(lambda event, i=i: self.jump_to(event.client, i))

    def jump_to(self, client: Any, view: int) -> None:
        """Move one browser's camera to scene camera `view`."""
        cameras = self.state.cameras
        pose = camera_to_world(cameras, view)
        with client.atomic():
            client.camera.fov = vertical_fov(cameras, view)
            client.camera.position = tuple(pose[:3, 3])
            client.camera.wxyz = rotation_wxyz(pose[:3, :3])
        self.set_status(f"camera {cameras.names[view]}", client)

    # -- per-browser panels ----------------------------------------------------------------------
    def _connect(self, client: Any) -> None:
        panel = build_client_panel(self, client)
        with self.lock:
            self.panels[client.client_id] = panel
            self._update_viewers()

    def _disconnect(self, client: Any) -> None:
        with self.lock:
            self.panels.pop(client.client_id, None)
            self._update_viewers()

    def _update_viewers(self) -> None:
        """Tell each browser how many others share the scene, its edits and the selection."""
        others = len(self.panels) - 1
        for panel in self.panels.values():
            panel.viewers.content = "*Edits, selection and colours are shared with " + (
                f"{others} other viewer{'s' if others != 1 else ''}*"
                if others
                else "anyone who connects*"
            )

    def set_status(self, text: str, client: Any = None) -> None:
        panel = self.panel(client)
        panel.session.status = text
        if panel.status is not None:
            panel.status.content = text

    def _on_threshold(self, client: Any) -> None:
        if not self._syncing and not self.set_threshold(self.threshold.value, client):
            with self.lock:
                self._sync_slider()  # a refused value: the slider goes back to the threshold

    def _sync_slider(self) -> None:
        """Fit the threshold slider to the live query's score range; disable it when none is
        live."""
        slider = self.threshold
        self._syncing = True
        try:
            live = self.state.live.live
            if slider.disabled == live:
                slider.disabled = not live
            if not live:
                return
            lo, hi = self.state.score_range
            if hi - lo < 1e-6:
                lo, hi = lo - 0.5, hi + 0.5
            step = 10.0 ** math.floor(math.log10((hi - lo) / 500))
            if (slider.min, slider.max, slider.step) != (lo, hi, step):  # a new query
                slider.min, slider.max, slider.step = lo, hi, step
            value = min(max(self.state.threshold, lo), hi)
            if slider.value != value:
                slider.value = value
        finally:
            self._syncing = False

    # -- running an event ------------------------------------------------------------------------
    def _run(
        self, what: str, action: Callable[[], str | None], client: Any = None, long: bool = False
    ) -> bool:
        """Run one GUI event under the lock; its message (or a user-fixable problem) goes to the
        status line of the browser that caused it. Returns whether it succeeded."""
        panel = self.panel(client)
        with self.lock:
            if long and panel.progress is not None:
                panel.progress.value = 0.0
                panel.progress.visible = True
                self.set_status(f"{what}...", client)
            try:
                message = action()
            except Exception as err:
                if getattr(err, "exit_code", None) is None:
                    self.set_status(f"{what} failed: {type(err).__name__}: {err}", client)
                    traceback.print_exc()
                    return False
                self.set_status(str(err), client)
                return False
            finally:
                if long and panel.progress is not None:
                    panel.progress.visible = False
            self.refresh()
            if message:
                self.set_status(message, client)
            return True

    def _reporter(self, client: Any) -> Callable[[float, str], None]:
        panel = self.panel(client)

        def report(fraction: float, what: str) -> None:
            if panel.progress is not None:
                panel.progress.value = float(min(max(100 * fraction, 0.0), 100.0))
            self.set_status(f"{what}...", client)

        return report

    def refresh(self) -> UpdateStats:
        """Send the splat chunks whose colours changed; update the shared lines (selection
        count, colour bar) and the threshold slider."""
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
        for panel in self.panels.values():
            panel.count.content = self.count_md.content
        self.colour_bar.content = self.state.colour_bar()
        self._sync_slider()
        return self.last_update

    # -- events (each GUI control calls one of these) --------------------------------------------
    def _session(self, client: Any, mode: CombineMode | None = None) -> ClientSession:
        """`client`'s session, with its combine mode replaced by `mode` for one selection."""
        session = self.panel(client).session
        return session if mode is None else dataclasses.replace(session, mode=mode)

    def search(
        self, phrase: str | None = None, negatives: str | None = None, client: Any = None
    ) -> bool:
        text: str = self.phrase.value if phrase is None else phrase
        others: str = self.negatives.value if negatives is None else negatives
        session = self._session(client)

        def action() -> str:
            self.state.query_phrase(text, others.split(","), session)
            return f"searched {text!r} ({session.mode})"

        return self._run("search", action, client)

    def set_threshold(self, value: float, client: Any = None) -> bool:
        def action() -> str:
            self.state.set_threshold(value)
            return f"threshold {self.state.threshold:.3g}"

        return self._run("threshold", action, client)

    def set_colour_mode(self, mode: ColourMode, client: Any = None) -> bool:
        def action() -> str:
            self.state.set_colour_mode(mode)
            if mode == "relevancy" and not self.state.live.live:
                return "relevancy colours show the scores of a live query: run one"
            return f"colours: {mode} (shared)"

        return self._run("colours", action, client)

    def set_highlight(self, on: bool, client: Any = None) -> bool:
        def action() -> str:
            self.state.highlight = bool(on)
            return "selection highlighted" if on else "highlight off: selected splats as they are"

        return self._run("highlight", action, client)

    def set_mode(self, mode: CombineMode, client: Any = None) -> bool:
        """The combine mode of `client`'s next selection (the current one is left as it is)."""

        def action() -> str:
            self.state.set_mode(mode, self._session(client))
            return f"combine {mode}: applies to your next selection"

        return self._run("combine", action, client)

    def selection_op(self, op: SelectionOp, client: Any = None) -> bool:
        done = {
            "invert": "inverted the selection",
            "grow": "grew the selection by a ring of neighbours",
            "shrink": "shrank the selection by a ring of neighbours",
            "clear": "cleared the selection",
        }

        def action() -> str:
            self.state.selection_op(op)
            return done.get(op, op)

        return self._run(op, action, client, long=op in ("grow", "shrink"))

    def set_click_mode(self, mode: ClickMode, client: Any = None) -> bool:
        """What `client`'s clicks on the scene do (its own; other browsers' clicks are theirs)."""
        panel = self.panel(client)

        def action() -> str:
            panel.session.set_click_mode(mode)
            scene = None if panel.client is None else panel.client.scene
            if scene is not None and mode == "off":
                for callback in panel.click_callbacks:
                    scene.remove_click_callback(callback)
                panel.click_callbacks.clear()
            elif scene is not None and not panel.click_callbacks:
                for modifier, combine in CLICK_MODIFIERS.items():
                    callback = scene.on_click(modifier=modifier)(  # type: ignore[arg-type]
                        partial(self._on_click, mode=combine)
                    )
                    panel.click_callbacks.append(callback)
            return CLICK_HINTS[mode]

        return self._run("click mode", action, client)

    def set_pick_scope(self, scope: PickScope, client: Any = None) -> bool:
        """What `client`'s next 3D pick or exemplar click selects: "semantic" or "instance"."""

        def action() -> str:
            self.state.set_pick_scope(scope, self._session(client))
            if scope == "instance":
                return "pick scope instance: a click selects only the object under it"
            return "pick scope semantic: a click selects everything like it"

        return self._run("pick scope", action, client)

    def click(
        self,
        camera: Cameras,
        xy: tuple[float, float],
        ray_origin: tuple[float, float, float],
        ray_direction: tuple[float, float, float],
        client: Any = None,
        mode: CombineMode | None = None,
    ) -> bool:
        """A click at pixel `xy` of `camera` (one view) along the given world ray, handled by
        `client`'s click mode; `mode` overrides its combine mode for this selection."""
        session = self._session(client, mode)
        click_mode = session.click_mode
        if click_mode == "off":
            return False

        def action() -> str:
            if click_mode == "exemplar":
                self.state.query_exemplar(camera, xy, session)
                return f"exemplar ({session.mode})"
            if click_mode == "pick":
                picked = self.state.pick(ray_origin, ray_direction, session)
                return f"picked Gaussian {picked} ({session.mode})"
            if click_mode == "brush":
                dab = self._session(client, mode or "add")
                self.state.brush(camera, xy, dab)
                return f"brush ({dab.mode})"
            own = self.panel(client).session  # the prompt is the browser's own
            world = self.state.surface_point(ray_origin, ray_direction)
            if click_mode == "lasso":
                points = own.add_lasso_point(camera, xy, world)
                draw_markers(self.panel(client), 0.012 * self.extent)
                return f"{points} lasso point(s): Close lasso when done"
            points = own.add_sam_point(camera, xy, click_mode == "sam+", world)
            draw_markers(self.panel(client), 0.012 * self.extent)
            return f"{points} SAM point(s): Run SAM prompt when done"

        return self._run("click", action, client, long=click_mode == "exemplar")

    def rect_select(
        self,
        camera: Cameras,
        xyxy: tuple[float, float, float, float],
        client: Any = None,
        mode: CombineMode | None = None,
    ) -> bool:
        session = self._session(client, mode)

        def action() -> str:
            self.state.select_rect(camera, xyxy, session=session)
            return f"rectangle ({session.mode})"

        return self._run("rectangle select", action, client, long=True)

    def close_lasso(self, client: Any = None) -> bool:
        session = self._session(client)

        def action() -> str:
            try:
                self.state.close_lasso(session)
            finally:
                draw_markers(self.panel(client), 0.012 * self.extent)
            return f"lasso ({session.mode})"

        return self._run("lasso", action, client, long=True)

    def clear_lasso(self, client: Any = None) -> bool:
        def action() -> str:
            self._session(client).lasso = None
            draw_markers(self.panel(client), 0.012 * self.extent)
            return "lasso cleared"

        return self._run("clear lasso", action, client)

    def set_brush_radius(self, radius: float, client: Any = None) -> bool:
        def action() -> str:
            if not radius > 0:
                raise ViewerError(f"brush radius {radius!r} must be a positive number of pixels")
            self._session(client).brush_radius = float(radius)
            return f"brush radius {float(radius):g} px"

        return self._run("brush radius", action, client)

    def set_volume(self, client: Any = None, **changes: Any) -> bool:
        """Change `client`'s selection volume (shape / centre / wxyz / size) and redraw it."""

        def action() -> str:
            volume = self._session(client).set_volume(**changes)
            draw_volume(self.panel(client))
            size = ", ".join(f"{v:.3g}" for v in volume.size)
            return f"volume: {volume.shape}, half size {size}"

        return self._run("volume", action, client)

    def show_gizmo(self, on: bool, client: Any = None) -> bool:
        """Show `client`'s volume with a transform gizmo (drag it to move / turn the volume)."""
        panel = self.panel(client)

        def action() -> str:
            if panel.gizmo is not None:
                panel.gizmo.remove()
                panel.gizmo = panel.volume_node = None
            if on and panel.client is not None:
                volume = panel.session.volume
                gizmo = panel.client.scene.add_transform_controls(
                    "/volume", scale=0.3 * self.extent, position=volume.centre, wxyz=volume.wxyz
                )

                @gizmo.on_update
                def _(_event: Any) -> None:
                    centre = tuple(float(v) for v in gizmo.position)
                    wxyz = tuple(float(v) for v in gizmo.wxyz)
                    with self.lock:
                        panel.session.set_volume(centre=centre, wxyz=wxyz)
                        if panel.volume_centre is not None:
                            panel.volume_centre.value = centre

                panel.gizmo = gizmo
                draw_volume(self.panel(client))
            return "drag the gizmo to place the volume" if on else "gizmo hidden"

        return self._run("gizmo", action, client)

    def select_volume(self, client: Any = None) -> bool:
        session = self._session(client)

        def action() -> str:
            self.state.select_volume(session)
            return f"{session.volume.shape} ({session.mode})"

        return self._run("volume select", action, client)

    def run_sam(self, client: Any = None) -> bool:
        session = self._session(client)

        def action() -> str:
            try:
                self.state.run_sam(progress=self._reporter(client), session=session)
            finally:
                draw_markers(self.panel(client), 0.012 * self.extent)
            return f"SAM prompt ({session.mode})"

        return self._run("SAM prompt", action, client, long=True)

    def clear_sam_points(self, client: Any = None) -> bool:
        def action() -> str:
            self.state.clear_sam_points(self._session(client))
            draw_markers(self.panel(client), 0.012 * self.extent)
            return "SAM points cleared"

        return self._run("clear SAM points", action, client)

    def upload_reference(self, name: str, content: bytes, client: Any = None) -> bool:
        """Keep an uploaded photo of an object for `find_reference` (this browser's own)."""

        def action() -> str:
            width, height = self.state.set_reference_photo(name, content, self._session(client))
            return f"{name} ({width}x{height}): give the object's box, then Find in scene"

        return self._run("upload", action, client)

    def find_reference(self, box: str | None = None, client: Any = None) -> bool:
        """Select what `client`'s reference photo shows inside `box` (default: its Box field)."""
        panel = self.panel(client)
        field_text = "" if panel.reference_box is None else panel.reference_box.value
        corners: str = field_text if box is None else box
        session = self._session(client)

        def action() -> str:
            self.state.query_reference(corners, progress=self._reporter(client), session=session)
            return f"reference photo: found ({session.mode})"

        return self._run("find", action, client, long=True)

    def edit(self, name: str, client: Any = None) -> bool:
        def action() -> str:
            if name == "recolor":
                message = self.state.recolor([c / 255 for c in self.colour.value])
            elif name == "show":
                message = self.state.show_all()
            else:
                message = getattr(self.state, name)()
            return f"{message} (Ctrl+Z undoes)"

        return self._run(name, action, client)

    def undo(self, client: Any = None) -> bool:
        return self._run("undo", lambda: f"undid {self.state.undo()}", client)

    def redo(self, client: Any = None) -> bool:
        return self._run("redo", lambda: f"redid {self.state.redo()}", client)

    def key(self, action: str, client: Any = None) -> bool:
        """A keyboard shortcut (`HOTKEYS`): delete, undo, redo, hide, clear or invert."""
        if action == "undo":
            return self.undo(client)
        if action == "redo":
            return self.redo(client)
        if action in ("clear", "invert"):
            return self.selection_op(action, client)  # type: ignore[arg-type]
        return self.edit(action, client)

    def export(self, suffix: str = ".ply", client: Any = None) -> Path | None:
        """Write SCENE/omnivision/edited<suffix> (any of `scenes.load.WRITE_SUFFIXES`) and send it to
        `client` as a download, with its semantics sidecar when the format needs one."""
        from omnivision.scenes.semantics import sidecar_paths

        written: list[Path] = []

        def action() -> str:
            path = self.state.export(self.state.scene.root / "omnivision" / f"edited{suffix}")
            written.append(path)
            files = [path, *(p for p in sidecar_paths(path) if p.is_file())]
            if client is not None:
                for file in files:
                    client.send_file_download(file.name, file.read_bytes(), save_immediately=True)
            extra = f" + {len(files) - 1} sidecar files" if len(files) > 1 else ""
            return f"wrote {path}{extra} ({len(self.state.current):,} Gaussians)"

        self._run("export", action, client, long=True)
        return written[0] if written else None

    # -- pointer events ------------------------------------------------------------------------
    def _on_click(self, event: Any, mode: CombineMode | None) -> None:
        camera = client_camera(event.client)
        x, y = event.screen_pos
        self.click(
            camera,
            (x * camera.widths[0], y * camera.heights[0]),
            event.ray_origin,
            event.ray_direction,
            event.client,
            mode,
        )

    def _on_rect_select(self, event: Any, mode: CombineMode | None) -> None:
        camera = client_camera(event.client)
        w, h = camera.widths[0], camera.heights[0]
        (x0, y0), (x1, y1) = event.screen_min, event.screen_max
        self.rect_select(
            camera,
            (min(x0, x1) * w, min(y0, y1) * h, max(x0, x1) * w, max(y0, y1) * h),
            event.client,
            mode,
        )
