"""Build a small real COLMAP model with pycolmap (SIFT -> exhaustive matching -> incremental SfM).

Test helper only: ``build_colmap_model(image_dir, out_dir)`` writes ``out_dir/sparse/0``
(cameras.bin, images.bin, points3D.bin). Images are referenced by file name only (nothing is
copied or linked). SIFT runs on images downscaled to ``max_image_size``, but COLMAP rescales the
keypoints back, so cameras carry the ORIGINAL image width/height and intrinsics.
"""

from __future__ import annotations

from pathlib import Path

import pycolmap

_THREADS = 2
_SEED = 0


def build_colmap_model(image_dir: Path, out_dir: Path, max_image_size: int = 640) -> Path:
    """Run SfM on the images in ``image_dir``; return ``out_dir/"sparse"/"0"`` (binary model)."""
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    database = out_dir / "database.db"
    if database.exists():
        database.unlink()

    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_image_size
    extraction.num_threads = 1  # >1 makes image_ids depend on thread completion order
    extraction.use_gpu = False
    extraction.sift.estimate_affine_shape = True  # at 640 px plain SIFT registers only ~3/10 photos
    pycolmap.extract_features(
        database,
        image_dir,
        camera_mode=pycolmap.CameraMode.PER_IMAGE,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = _THREADS
    matching.use_gpu = False
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = _SEED
    pycolmap.match_exhaustive(
        database,
        matching_options=matching,
        verification_options=verification,
        device=pycolmap.Device.cpu,
    )

    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = _THREADS
    mapping.random_seed = _SEED
    mapping.min_model_size = 3
    mapping.extract_colors = False
    maps = pycolmap.incremental_mapping(database, image_dir, out_dir / "mapper", mapping)
    if not maps:
        raise RuntimeError(f"COLMAP reconstructed nothing from {image_dir}")
    best = max(maps.values(), key=lambda rec: rec.num_reg_images())

    model_dir = out_dir / "sparse" / "0"
    model_dir.mkdir(parents=True, exist_ok=True)
    best.write_binary(model_dir)
    return model_dir
