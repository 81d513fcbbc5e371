"""The viewer's panels: the shared ones (built once on the server's GUI: every browser sees the
same controls and values) and each browser's own (built on its `client.gui` when it connects),
with the keyboard shortcuts, click modifiers and where each part sits in the panel.

Every control calls one event method of `ViewerApp` (app.py); nothing here changes state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from omnivision.scenes.load import WRITE_SUFFIXES

from .modes import (
    COLOUR_MODES,
    COMBINE_MODES,
    PICK_SCOPES,
    VOLUME_SHAPES,
    ClickMode,
    CombineMode,
    SelectionOp,
)
from .session import ClientSession

if TYPE_CHECKING:
    from .app import ViewerApp

CLICK_MODE_LABELS: dict[str, ClickMode] = {
    "off": "off",
    "exemplar": "exemplar",
    "3D pick": "pick",
    "SAM +point": "sam+",
    "SAM -point": "sam-",
    "lasso point": "lasso",
    "brush": "brush",
}
CLICK_HINTS: dict[ClickMode, str] = {
    "off": "click mode off: clicks move the camera",
    "exemplar": "click an object: select what looks like it",
    "pick": "click a splat: select it (and what is like it)",
    "sam+": "click points on the object, then Run SAM prompt",
    "sam-": "click points to exclude, then Run SAM prompt",
    "lasso": "click the lasso's corners on the scene, then Close lasso",
    "brush": "click to paint: each dab adds what it covers (Alt-click subtracts)",
}
CLICK_MODIFIERS: dict[str | None, CombineMode | None] = {
    None: None,
    "shift": "add",
    "alt": "subtract",
}
"""A click with these keys held joins its selection by this mode (None: the panel's mode)."""
RECT_MODIFIERS: dict[str, CombineMode | None] = {
    "shift": None,
    "cmd/ctrl+shift": "add",
    "alt+shift": "subtract",
}
"""Rectangle drags: Shift (the panel's combine mode), Ctrl+Shift (add), Alt+Shift (subtract)."""
HOTKEYS: tuple[tuple[str, str, str | None, str], ...] = (
    ("delete", "delete", None, "Delete the selection"),
    ("undo", "Z", "cmd/ctrl", "Undo"),
    ("redo", "Z", "cmd/ctrl+shift", "Redo"),
    ("hide", "H", None, "Hide the selection"),
    ("clear", "escape", None, "Clear the selection"),
    ("invert", "I", None, "Invert the selection"),
)
"""(action, key, modifier, label) of the keyboard shortcuts (viser commands, also listed in
the command palette, Ctrl+K)."""
KEYS_HELP = (
    "Keys: Del delete, Ctrl+Z / Ctrl+Shift+Z undo / redo, H hide, Esc clear, I invert. "
    "Shift-drag: rectangle (Ctrl+Shift add, Alt+Shift subtract); "
    "Shift-click add, Alt-click subtract."
)
STATUS_WIDTH, STATUS_HEIGHT = 320, 120
"""CSS pixels of each browser's status window (floating at the bottom left of the canvas)."""
DEFAULT_NEGATIVES = "object, things, stuff, texture"
MAX_FRUSTUMS = 200
ORDER = {
    "viewers": 0.02,
    "count": 0.03,
    "progress": 0.04,
    "query": 1.0,
    "click": 2.0,
    "reference": 3.0,
    "volume": 3.5,
    "selection": 4.0,
    "edit": 5.0,
    "export": 6.0,
}
"""Where each part sits in the panel (shared and per-browser parts interleave by it)."""


@dataclass
class ClientPanel:
    """One browser's own controls over its `session`; `client` is its viser ClientHandle (None
    for the local session of callers without a browser)."""

    session: ClientSession
    client: Any = None
    status: Any = None
    count: Any = None
    viewers: Any = None
    progress: Any = None
    click_mode: Any = None
    combine: Any = None
    pick_scope: Any = None
    reference_upload: Any = None
    reference_box: Any = None
    buttons: dict[str, Any] = field(default_factory=dict)
    click_callbacks: list[Callable] = field(default_factory=list)
    markers: dict[str, Any] = field(default_factory=dict)
    brush_radius: Any = None
    volume_shape: Any = None
    volume_centre: Any = None
    volume_size: Any = None
    gizmo: Any = None
    volume_node: Any = None


def _callback(fn: Callable[[], object]) -> Callable[[Any], None]:
    def callback(_event: Any) -> None:
        fn()

    return callback


def build_shared_gui(app: ViewerApp) -> None:
    """The shared panels on `app` (count line, Query, Selection, Edit, Export, the keyboard
    commands). Each control calls one event method of `app`; `app.buttons` maps names to
    buttons (setting a button's `.value = True` on the server runs its callback, as tests do;
    the event's client is then None: the local session)."""
    gui = app.server.gui
    app.count_md = gui.add_markdown("", order=ORDER["count"])
    buttons: dict[str, Any] = {}
    with gui.add_folder("Query (shared)", order=ORDER["query"]):
        app.phrase = gui.add_text("Phrase", initial_value="")
        app.negatives = gui.add_text("Negatives", initial_value=DEFAULT_NEGATIVES)
        buttons["search"] = gui.add_button("Search")
        app.threshold = gui.add_slider(
            "Threshold",
            min=0.0,
            max=1.0,
            step=0.001,
            initial_value=0.5,
            disabled=True,
            hint="cuts the live query's scores (disabled when no query is live)",
        )
        app.colour_mode = gui.add_dropdown(
            "Colours", options=COLOUR_MODES, initial_value=app.state.colour_mode
        )
        app.colour_bar = gui.add_html("")
        app.highlight = gui.add_checkbox(
            "Highlight selection",
            initial_value=app.state.highlight,
            hint="off: the selected splats in their own colours (see an edit's result)",
        )
    with gui.add_folder("Selection (shared)", order=ORDER["selection"]):
        for op in ("invert", "grow", "shrink", "clear"):
            buttons[op] = gui.add_button(op.capitalize())
    with gui.add_folder("Edit (shared, with undo)", order=ORDER["edit"]):
        for name, label in (
            ("hide", "Hide"),
            ("show", "Show all"),
            ("delete", "Delete"),
            ("isolate", "Isolate"),
        ):
            buttons[name] = gui.add_button(label)
        app.colour = gui.add_rgb("Colour", initial_value=(230, 40, 40))
        buttons["recolor"] = gui.add_button("Recolor")
        buttons["undo"] = gui.add_button("Undo")
        buttons["redo"] = gui.add_button("Redo")
        gui.add_markdown(KEYS_HELP)
    with gui.add_folder("Export", order=ORDER["export"], expand_by_default=False):
        app.export_format = gui.add_dropdown("Format", options=WRITE_SUFFIXES, initial_value=".ply")
        buttons["export"] = gui.add_button("Export")
    app.buttons = buttons

    def on(fn: Callable[[Any], object]) -> Callable[[Any], None]:
        """A viser callback running `fn(client)` for the browser the event came from."""

        def callback(event: Any) -> None:
            fn(event.client)

        return callback

    buttons["search"].on_click(on(lambda client: app.search(client=client)))
    app.threshold.on_update(on(app._on_threshold))
    app.colour_mode.on_update(on(lambda client: app.set_colour_mode(app.colour_mode.value, client)))
    app.highlight.on_update(on(lambda client: app.set_highlight(app.highlight.value, client)))
    ops: tuple[SelectionOp, ...] = ("invert", "grow", "shrink", "clear")
    for op in ops:
        buttons[op].on_click(on(partial(app.selection_op, op)))
    for name in ("hide", "show", "delete", "isolate", "recolor"):
        buttons[name].on_click(on(partial(app.edit, name)))
    buttons["undo"].on_click(on(app.undo))
    buttons["redo"].on_click(on(app.redo))
    buttons["export"].on_click(on(lambda client: app.export(app.export_format.value, client)))
    app.commands = {}
    for action, key, modifier, label in HOTKEYS:
        command = gui.add_command(label, hotkey=key, modifier=modifier)  # type: ignore[arg-type]
        command.on_trigger(on(partial(app.key, action)))
        app.commands[action] = command


def build_client_panel(app: ViewerApp, client: Any) -> ClientPanel:
    """A browser's own panel (status, viewers line, progress, Click, Reference photo, Volume),
    its controls calling `app`'s event methods for `client`."""
    gui = client.gui
    panel = ClientPanel(ClientSession(status=app.greeting), client)
    # The status line and the selection count in a small window of their own at the bottom
    # left of the canvas, so scrolling the control panel never hides them.
    status_window = gui.add_panel()
    with status_window.add_tab("Status"):
        panel.status = gui.add_markdown(app.greeting)
        panel.count = gui.add_markdown(f"**{app.state.summary()}**")
    status_window.float(x=10, y=-10, width=STATUS_WIDTH, height=STATUS_HEIGHT)
    panel.viewers = gui.add_markdown("", order=ORDER["viewers"])
    panel.progress = gui.add_progress_bar(
        0.0, visible=False, animated=True, order=ORDER["progress"]
    )
    with gui.add_folder("Click (this browser)", order=ORDER["click"]):
        panel.click_mode = gui.add_dropdown(
            "Click mode", options=tuple(CLICK_MODE_LABELS), initial_value="off"
        )
        panel.combine = gui.add_dropdown(
            "Combine",
            options=COMBINE_MODES,
            initial_value="replace",
            hint="how your next selection joins the current one (it is left as it is)",
        )
        panel.pick_scope = gui.add_dropdown(
            "Pick scope",
            options=PICK_SCOPES,
            initial_value="semantic",
            hint="3D pick / exemplar: semantic selects everything like the clicked splat, "
            "instance only the object it belongs to",
        )
        panel.buttons["sam"] = gui.add_button("Run SAM prompt")
        panel.buttons["sam_clear"] = gui.add_button("Clear SAM points")
        panel.buttons["lasso"] = gui.add_button("Close lasso")
        panel.buttons["lasso_clear"] = gui.add_button("Clear lasso")
        panel.brush_radius = gui.add_slider(
            "Brush radius (px)", min=2, max=200, step=1, initial_value=20
        )
    size = tuple(float(v) for v in np.full(3, round(0.1 * app.extent, 4)))
    centre = tuple(float(v) for v in app.centre)
    panel.session.set_volume(centre=centre, size=size)
    with gui.add_folder("Volume (this browser)", order=ORDER["volume"], expand_by_default=False):
        panel.volume_shape = gui.add_dropdown("Shape", options=VOLUME_SHAPES)
        panel.volume_centre = gui.add_vector3("Centre", initial_value=centre, step=1e-3)
        panel.volume_size = gui.add_vector3(
            "Half size", initial_value=size, step=1e-3, hint="sphere: the radius is x"
        )
        panel.buttons["gizmo"] = gui.add_checkbox("Show gizmo", initial_value=False)
        panel.buttons["volume"] = gui.add_button("Select volume")
    with gui.add_folder(
        "Reference photo (this browser)", order=ORDER["reference"], expand_by_default=False
    ):
        panel.reference_upload = gui.add_upload_button("Upload photo", mime_type="image/*")
        panel.reference_box = gui.add_text("Box X0,Y0,X1,Y1", initial_value="")
        panel.buttons["find"] = gui.add_button("Find in scene")
    panel.click_mode.on_update(
        _callback(lambda: app.set_click_mode(CLICK_MODE_LABELS[panel.click_mode.value], client))
    )
    panel.combine.on_update(_callback(lambda: app.set_mode(panel.combine.value, client)))
    panel.pick_scope.on_update(
        _callback(lambda: app.set_pick_scope(panel.pick_scope.value, client))
    )
    panel.buttons["sam"].on_click(_callback(lambda: app.run_sam(client)))
    panel.buttons["sam_clear"].on_click(_callback(lambda: app.clear_sam_points(client)))
    photo = panel.reference_upload
    photo.on_upload(
        _callback(lambda: app.upload_reference(photo.value.name, photo.value.content, client))
    )
    panel.buttons["find"].on_click(_callback(lambda: app.find_reference(client=client)))
    panel.buttons["lasso"].on_click(_callback(lambda: app.close_lasso(client)))
    panel.buttons["lasso_clear"].on_click(_callback(lambda: app.clear_lasso(client)))
    panel.brush_radius.on_update(
        _callback(lambda: app.set_brush_radius(panel.brush_radius.value, client))
    )
    for handle, name in (
        (panel.volume_shape, "shape"),
        (panel.volume_centre, "centre"),
        (panel.volume_size, "size"),
    ):
        handle.on_update(
            _callback(
                lambda handle=handle, name=name: app.set_volume(client, **{name: handle.value})
            )
        )
    panel.buttons["gizmo"].on_update(
        _callback(lambda: app.show_gizmo(panel.buttons["gizmo"].value, client))
    )
    panel.buttons["volume"].on_click(_callback(lambda: app.select_volume(client)))
    return panel
