"""Benchmark the scene file formats: save and load time, peak memory and file size.

    python bench/formats.py            # N = 1M Gaussians (SH degree 3), a markdown table on stdout
    python bench/formats.py --quick    # N = 100k: a smoke test

Scene: `_scenes.random_scene`, as bench/query.py's (centres ~ normal(0, 0.5), SH degree 3, random unit
quaternions, scales tied to the mean spacing), built before any timer starts. Each format is one
case in a fresh interpreter (time: best of 2 after a warm-up; memory: peak RSS added by one call):
`write_*` to a temporary file, then `read_*` of that file. INRIA .ply (lossless, float32) is the
reference row of the same run; "size / ply" is the file size relative to it. .splat keeps only
SH degree 0. .spz is written as version 3 (gzip, level 6 as spz does); .compressed.ply includes
the Morton sort of its writer; .sog includes its codebooks and the k-means palette of the higher SH
(4096 entries, 10 Lloyd iterations: most of its save time); .glb is float32 glTF
(KHR_gaussian_splatting). .ksplat is read-only here (its writer is GaussianSplats3D's).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402
from _scenes import random_scene  # noqa: E402

from omnivision.scenes.io_compressed_ply import read_compressed_ply, write_compressed_ply  # noqa: E402
from omnivision.scenes.io_gltf import read_gltf, write_gltf  # noqa: E402
from omnivision.scenes.io_ply import read_ply, read_splat, write_ply, write_splat  # noqa: E402
from omnivision.scenes.io_sog import read_sog, write_sog  # noqa: E402
from omnivision.scenes.io_spz import read_spz, write_spz  # noqa: E402

FORMATS = {
    "ply": (write_ply, read_ply, ".ply"),
    "splat": (write_splat, read_splat, ".splat"),
    "spz": (write_spz, read_spz, ".spz"),
    "compressed.ply": (write_compressed_ply, read_compressed_ply, ".compressed.ply"),
    "sog": (write_sog, read_sog, ".sog"),
    "glb": (write_gltf, read_gltf, ".glb"),
}
N_FULL, N_QUICK = 1_000_000, 100_000


def run_case(case: str, n: int, mode: str) -> dict:
    write, read, suffix = FORMATS[case]
    scene = random_scene(n, sh_degree=3)
    unit, fmt = ("s", "{:.2f}") if mode == "time" else ("peak_mb", "{:.0f}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"scene{suffix}"
        save = measure(lambda: write(scene, path), mode)
        load = measure(lambda: read(path), mode)
        size = path.stat().st_size
    return {
        "case": case,
        "gaussians": n,
        "size_mb": f"{size / 2**20:.1f}",
        "bytes_per_gaussian": f"{size / n:.1f}",
        f"save_{unit}": fmt.format(save),
        f"load_{unit}": fmt.format(load),
    }


def main() -> None:
    parser = bench_parser(__doc__, FORMATS, f"N = {N_QUICK:,} instead of {N_FULL:,}", device=False)
    args = parser.parse_args()
    n = N_QUICK if args.quick else N_FULL
    if args.case:
        print(json.dumps(run_case(args.case, n, args.mode)))
        return
    rows = run_cases(Path(__file__), list(FORMATS), "cpu", ["--quick"] if args.quick else [])
    ply_size = next((float(r["size_mb"]) for r in rows if r.get("case") == "ply"), None)
    for row in rows:
        if ply_size and "size_mb" in row:
            row["vs_ply"] = f"{float(row['size_mb']) / ply_size:.3f}"
    columns = [
        ("format", "case"),
        ("Gaussians", "gaussians"),
        ("file MB", "size_mb"),
        ("bytes/Gaussian", "bytes_per_gaussian"),
        ("size / ply", "vs_ply"),
        ("save s", "save_s"),
        ("load s", "load_s"),
        ("save peak MB", "save_peak_mb"),
        ("load peak MB", "load_peak_mb"),
    ]
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
