"""viewer: the viser web app `omnivision view SCENE_DIR` (query, select, edit, export in the
browser). `ViewerState` (state.py) is the state machine without web code, `SplatLayout`
(splats.py) packs the splats and picks what to re-send, `ViewerApp` (app.py) is the server.
Nothing else of omnivision imports viewer; viser is imported only by app.py."""
