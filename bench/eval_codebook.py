"""Benchmark the codebook form of lifted features on the synthetic benchmark: what K costs.

    omnivision eval synthetic bench_out/        # once: the scene, models, full lifts and runs
    python bench/eval_codebook.py bench_out/    # K = 64, 256, 1024; clip-masks and clip-pyramid
    python bench/eval_codebook.py bench_out/ --ks 256 --unweighted   # also plain k-means

For each CLIP lift of the synthetic benchmark (`clip-masks`: LangSplat-style mask crops;
`clip-pyramid`: LERF crops) and each K, the scene folder is copied, its full features are
quantized by the real command (`omnivision-lift SCENE ... --codebook K`, which fits the codebook
on the full lift already there: the same features, not a new lift), and the LERF-OVS protocols
are run by `omnivision eval lerf` exactly as `omnivision eval synthetic` runs them (labels of 6
held-out views, 10 phrases each, smooth 10). The full features' row is that benchmark's own
run (OUT/runs/masks, OUT/runs/pyramid). `--unweighted` adds K-means without the weight sums.

Columns: bytes a Gaussian in the file (full: fp16 features + fp32 weight sum + seen byte;
codebook: uint16 index + a packed seen bit, then the fp16 codebook spread over the N = 29,298
Gaussians), the codebook's relative squared error (weighted: share of the features' energy it
loses), 2D localization accuracy and mIoU (features / scalar paths), 3D mIoU and mAcc@0.25, and
the change of each mIoU from the full features in points. Deterministic for one thread count
(--threads, default 1, as the test suite's fixture).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import markdown_table  # noqa: E402

RUNS = {"clip-masks": "masks", "clip-pyramid": "pyramid"}
"""Feature name -> the synthetic benchmark's run of its full features."""
SMOOTH = "10"


def values(metrics: dict) -> dict[tuple[str, str, str], float]:
    return {(r["protocol"], r["path"], r["metric"]): r["value"] for r in metrics["rows"]}


def lift_args(out: Path, scene: Path, feature: str) -> list[str]:
    """The synthetic benchmark's lift of `feature` (eval/synthetic.py), from its manifest."""
    manifest = json.loads((out / "scene" / "omnivision" / "manifest.json").read_text())
    request = manifest["features"][feature]["request"]
    return [
        str(scene), "--features", request["features"], "--clip", request["clip"],
        "--clip-pretrained", str(request["clip_pretrained"]),
    ]  # fmt: skip


def quantized_run(out: Path, feature: str, k: int, weighted: bool, work: Path) -> dict:
    """Copy the scene, quantize `feature` with --codebook k, score it; the row's figures."""
    from omnivision.cli import lift_main
    from omnivision.eval.cli import lerf_main

    scene = work / "scene"
    if scene.exists():
        shutil.rmtree(scene)
    shutil.copytree(out / "scene", scene, ignore=shutil.ignore_patterns("cache"))
    args = [*lift_args(out, scene, feature), "--codebook", str(k)]
    if not weighted:
        args.append("--no-codebook-weighted")
    if lift_main(args) != 0:
        raise SystemExit(f"omnivision-lift {' '.join(args)} failed")
    entry = json.loads((scene / "omnivision" / "manifest.json").read_text())["features"][feature]
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    lerf_main(
        [str(scene), "--features", feature, "--labels", str(out / "lerf_labels"),
         "--smooth", SMOOTH, "--scene-name", "demo", "--out", str(run)],
        "omnivision eval lerf",
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    shutil.rmtree(scene)
    record = entry["codebook"]
    form = f"codebook K = {k}" + ("" if weighted else " (unweighted)")
    return {
        "form": form,
        "bytes": f"{record['bytes_per_gaussian_with_codebook']:.2f}",
        "error": f"{record['relative_squared_error']:.3f}",
        "fit_s": f"{record['seconds']:.1f}",
        **figures(values(metrics)),
    }


def figures(got: dict) -> dict:
    pct = {key: 100 * value for key, value in got.items()}
    return {
        "acc2d": f"{pct['2d', 'features', 'accuracy']:.0f} / {pct['2d', 'scalar', 'accuracy']:.0f}",
        "miou2d": f"{pct['2d', 'features', 'miou']:.1f} / {pct['2d', 'scalar', 'miou']:.1f}",
        "miou3d": f"{pct['3d', 'gaussians', 'miou']:.1f}",
        "macc3d": f"{pct['3d', 'gaussians', 'macc@0.25']:.1f}",
        "_raw": got,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="a folder `omnivision eval synthetic` wrote")
    parser.add_argument("--ks", default="64,256,1024", help="codebook sizes, comma-separated")
    parser.add_argument("--features", default="clip-masks,clip-pyramid")
    parser.add_argument("--unweighted", action="store_true", help="also unweighted k-means")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    rows = []
    for feature in args.features.split(","):
        full_run = out / "runs" / RUNS[feature] / "metrics.json"
        if not full_run.is_file():
            raise SystemExit(f"{full_run}: not found; run omnivision eval synthetic {out} first")
        entry = json.loads((out / "scene" / "omnivision" / "manifest.json").read_text())
        dims = entry["features"][feature]["dims"]
        full = figures(values(json.loads(full_run.read_text())))
        rows.append({"features": feature, "form": f"full ({dims}-d fp16)",
                     "bytes": f"{2 * dims + 5:.2f}", "error": "0", "fit_s": "-", **full})  # fmt: skip
        for k in (int(x) for x in args.ks.split(",")):
            for weighted in (True, False) if args.unweighted else (True,):
                work = out / "codebook" / f"{feature}-k{k}{'' if weighted else '-unweighted'}"
                row = {"features": feature, **quantized_run(out, feature, k, weighted, work)}
                base, got = full["_raw"], row["_raw"]
                row["delta"] = " / ".join(
                    f"{100 * (got[key] - base[key]):+.1f}"
                    for key in (("2d", "features", "miou"), ("2d", "scalar", "miou"),
                                ("3d", "gaussians", "miou"))
                )  # fmt: skip
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "_raw"}), file=sys.stderr)
    columns = [
        ("features", "features"),
        ("stored as", "form"),
        ("bytes / Gaussian", "bytes"),
        ("rel. sq. error", "error"),
        ("fit s", "fit_s"),
        ("2D acc. (features / scalar)", "acc2d"),
        ("2D mIoU (features / scalar)", "miou2d"),
        ("3D mIoU", "miou3d"),
        ("3D mAcc@0.25", "macc3d"),
        ("Δ mIoU vs full (2D f / 2D s / 3D), points", "delta"),
    ]
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
