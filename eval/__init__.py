"""Benchmarks and reports: LERF-OVS localization and segmentation (2D and 3D protocols), NVOS /
SPIn-NeRF 3D segmentation, SPair PCK, the synthetic benchmark that ships with a tiny CLIP trained
for the demo scene, and markdown reports (`omnivision eval`). See DESIGN.md.

Public API (import from the modules; this package imports nothing heavy at import time):
`lerf.evaluate_lerf`, `lerf.LerfConfig`, `lerf.Level`, `lerf_labels.read_labels`,
`seg3d`, `synthetic.make_synthetic` / `run_synthetic`, `report.build_report`."""
