"""twod: 2D models (DINOv3/DINOv2 patch features, a weight-free colour backend, SAM 2),
localize by example, correspondence/PCK, and `omnivision localize`. Imports nothing else of
omnivision."""
