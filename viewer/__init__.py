"""viewer: the viser web app `omnivision view SCENE_DIR` (query, select, edit, export in the
browser). `ViewerState` (state.py) is the state machine without web code (selection.py, session.py,
prompts.py, display.py, geometry.py are its parts), `SplatLayout` (splats.py) packs the splats and
picks what to re-send, `ViewerApp` (app.py) is the server with its panels (panels.py) and scene
nodes (nodes.py). Nothing else of omnivision imports viewer; only app.py and nodes.py import viser."""
