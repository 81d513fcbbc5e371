"""Benchmarks and reports: LERF localization, 3D mIoU, DAVIS J&F, SPair PCK. Not built yet."""
