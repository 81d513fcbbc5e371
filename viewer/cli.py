"""`omnivision view SCENE_DIR`: serve a scene in the browser (the command-line edge of viewer)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro


@dataclass
class ViewConfig:
    scene: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE_DIR")]
    """Scene folder (or file) as `omnivision render` takes it."""
    port: int = 8080
    """HTTP/websocket port (0: any free port)."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 to serve other machines)."""
    features: str | None = None
    """Lifted features to query, by name in SCENE_DIR/omnivision (default: a clip-* one if
    present, so phrases work, else the only/first one; none: clicks and rectangles still work)."""
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 for the SAM prompt click mode: hub id or a local .pt (with --sam-config); loaded on
    first use."""
    sam_config: str | None = None
    """SAM 2 config (yaml) for a local --sam checkpoint."""


DESCRIPTION = """Open a scene in the browser: query by phrase / example / click / rectangle / lasso /
brush / box or sphere / SAM prompt / reference photo, select, hide / delete / recolor / isolate
with undo, export (.ply, .splat, .spz, .compressed.ply, .sog, .glb, .gltf). Keys: Delete, Ctrl+Z,
Ctrl+Shift+Z, H (hide), Esc (clear), I (invert); Shift-drag: rectangle; Shift-click / Alt-click:
add / subtract.

The scene, its edits (one undo history) and the selection are shared by every browser connected
to the server; each browser has its own click mode, combine mode, prompts, status line and
camera. Exports go to SCENE_DIR/omnivision/edited.<format> (with a semantics sidecar where the
format needs one) and download in the browser.

examples:
  omnivision demo-scene demo/ && omnivision-lift demo/ && omnivision view demo/
  omnivision view garden/ --features clip-pyramid --port 8081
"""


def view_main(argv: list[str], prog: str) -> int:
    from .app import ViewerApp
    from .state import load_viewer_state

    cfg: ViewConfig = tyro.cli(ViewConfig, args=argv, prog=prog, description=DESCRIPTION)
    state = load_viewer_state(cfg.scene, cfg.features, cfg.sam, cfg.sam_config)
    app = ViewerApp(state, host=cfg.host, port=cfg.port)
    print(
        f"serving {state.scene.gaussians_file} ({len(state.current):,} Gaussians, features: "
        f"{state.features_name or 'none'}) at {app.url}  (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0
