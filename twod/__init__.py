"""2D models: DINOv3/DINOv2 features, SAM 2, the text bridge. Not built yet."""
