"""`omnivision eval BENCHMARK ...`: the command-line edge of eval (one subcommand per benchmark)."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from omnivision.scenes.errors import SceneError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "lerf": ("omnivision.eval.cli:lerf_main", "LERF-OVS localization + mIoU (2D and 3D protocols)"),
    "lerf-scenes": (
        "omnivision.eval.many:lerf_scenes_main",
        "LERF-OVS over many scenes (one lerf run each, Ray tasks with --ray) + a report",
    ),
    "seg3d": ("omnivision.eval.seg3d:seg3d_main", "NVOS / SPIn-NeRF 3D segmentation (mIoU, acc)"),
    "spair": ("omnivision.eval.cli:spair_main", "SPair-71k keypoint transfer, PCK@alpha"),
    "davis": (
        "omnivision.eval.davis:davis_main",
        "DAVIS-2017 semi-supervised video object segmentation, J&F",
    ),
    "ovss": (
        "omnivision.eval.ovss:ovss_main",
        "open-vocabulary semantic segmentation (ADE20K, Pascal Context): mIoU as mmseg",
    ),
    "report": ("omnivision.eval.report:report_main", "markdown + CSV + figures from run folders"),
    "make-synthetic": (
        "omnivision.eval.cli:make_synthetic_main",
        "write the synthetic benchmark: demo scene, labels, trained tiny CLIP + bridge",
    ),
    "synthetic": (
        "omnivision.eval.cli:synthetic_main",
        "the whole synthetic benchmark end to end: make, lift, eval every path, report",
    ),
}


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    return "\n".join(
        [
            "usage: omnivision eval BENCHMARK [ARGS...]   (omnivision eval BENCHMARK --help)",
            "",
            "benchmarks:",
            *(f"  {n:<{width}}  {h}" for n, (_, h) in SUBCOMMANDS.items()),
            "",
            "every benchmark writes a run folder (metrics.json, per_query.csv); combine runs with",
            "  omnivision eval report RUN [RUN...] --out report.md",
            "offline, end to end on the demo scene:  omnivision eval synthetic bench_out/",
        ]
    )


def eval_main(argv: list[str], prog: str) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = argv[0]
    if name not in SUBCOMMANDS:
        raise SceneError(Path(name), f"unknown benchmark; choose one of {', '.join(SUBCOMMANDS)}")
    module, func = SUBCOMMANDS[name][0].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:], f"{prog} {name}") or 0)


# ---------------------------------------------------------------------------------------------
# omnivision eval lerf


@dataclass
class LerfCommand:
    scene: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE_DIR")]
    """Lifted scene folder (omnivision-lift SCENE_DIR wrote SCENE_DIR/omnivision/)."""
    labels: Path
    """LERF-OVS label folder of this scene (frame_*.json, LangSplat's layout)."""
    out: Path
    """Run folder to write (metrics.json, per_query.csv, maps/)."""
    features: str | None = None
    """Lifted features to score; several comma-separated act as levels (LangSplat's three);
    default: the clip-* features of the scene."""
    bridge: Path | None = None
    """Text bridge folder for DINO / colour features (omnivision train-bridge)."""
    clip: str | None = None
    """OpenCLIP model for clip-* features (default: the one the lift recorded)."""
    clip_pretrained: str | None = None
    smooth: int = 30
    """Box-filter side in pixels before the argmax / mask (LangSplat's evaluation: 30)."""
    mask_threshold: float = 0.4
    """Cut on clip(2 * normalised relevancy - 1, 0, 1) (LangSplat's --mask_thresh 0.4)."""
    majority: int = 7
    """Majority-filter window on the predicted mask (LangSplat: 7; 0 turns it off)."""
    tau: float = 10.0
    negatives: tuple[str, ...] = ("object", "things", "stuff", "texture")
    scene_name: str | None = None
    """Scene name in the run and the report (default: the scene folder's name)."""
    paths: tuple[Literal["features", "scalar"], ...] = ("features", "scalar")
    """2D-protocol paths: render features then relevancy, and/or per-Gaussian relevancy rendered."""
    no_3d: bool = False
    """Skip the 3D protocol (phrase -> selected Gaussians -> rendered mask)."""
    device: str | None = None


LERF_DESCRIPTION = """Score a lifted scene on LERF-OVS labels (LangSplat's layout).

2D protocol: relevancy rendered per pixel, box-smoothed argmax in a box = hit; normalised
relevancy > threshold -> mask IoU. 3D protocol: the phrase selects Gaussians (query/), the
selection rendered as a mask -> mIoU, mAcc@0.25. Writes RUN/metrics.json, per_query.csv, maps/.

examples:
  omnivision-lift ramen/ --features clip-pyramid
  omnivision eval lerf ramen/ --labels lerf_ovs/label/ramen --out runs/ramen
  omnivision eval lerf demo/ --labels labels/ --features colour --bridge bridge/ --smooth 10 --out runs/b
  omnivision eval report runs/* --out report.md
"""


def lerf_main(argv: list[str], prog: str) -> int:
    import torch

    from omnivision.scenes.load import load_scene

    from .lerf import LerfConfig, evaluate_lerf, match_frames
    from .lerf_labels import read_labels

    cmd: LerfCommand = tyro.cli(LerfCommand, args=argv, prog=prog, description=LERF_DESCRIPTION)
    if cmd.smooth < 0 or cmd.majority < 0 or not 0 <= cmd.mask_threshold < 1 or cmd.tau <= 0:
        raise SceneError(
            cmd.out, "--smooth/--majority must be >= 0, --mask-threshold in [0, 1), --tau > 0"
        )
    if not cmd.negatives or any(not n.strip() for n in cmd.negatives):
        raise SceneError(cmd.out, "--negatives needs at least one non-empty phrase")
    frames = read_labels(cmd.labels)
    scene = load_scene(cmd.scene)
    if scene.cameras is None:
        raise SceneError(
            cmd.scene, "no cameras: LERF-OVS frames are matched to the scene's cameras"
        )
    match_frames(frames, scene.cameras)  # every frame has a camera, before any model loads
    device = cmd.device or ("cuda" if torch.cuda.is_available() else "cpu")
    levels, first, names = _levels(scene, cmd.features)
    text = _text_space(cmd, first, names[0], device)
    config = LerfConfig(
        smooth=cmd.smooth,
        mask_threshold=cmd.mask_threshold,
        majority=cmd.majority,
        tau=cmd.tau,
        negatives=tuple(cmd.negatives),
        paths=tuple(cmd.paths),
        protocol_3d=not cmd.no_3d,
    )
    result = evaluate_lerf(
        scene.gaussians, scene.cameras, levels, text, frames, config, progress=True
    )
    settings = {
        "labels": str(cmd.labels),
        "frames": len(frames),
        "smooth": cmd.smooth,
        "mask_threshold": cmd.mask_threshold,
        "majority": cmd.majority,
        "tau": cmd.tau,
        "negatives": list(cmd.negatives),
    }
    text_kind = "bridge" if cmd.bridge is not None else "clip"
    metrics = result.metrics(
        cmd.scene_name or scene.root.name, ",".join(names), text_kind, settings
    )
    result.write(cmd.out, metrics)
    print(format_rows(metrics))
    print(f"wrote {cmd.out}/metrics.json, per_query.csv, maps/ ({len(result.maps)} frames)")
    return 0


def _levels(scene, features: str | None):
    from omnivision.lift.store import available_features, default_features, load_features

    from .lerf import Level

    folder = scene.root / "omnivision"
    default = default_features(folder)
    if features:
        names = [n.strip() for n in features.split(",")]
    elif default is not None:
        names = [default]
    else:
        raise SceneError(
            folder,
            "no lifted features: run omnivision-lift SCENE_DIR --features clip-pyramid first",
        )
    known = available_features(folder)
    levels, first = [], None
    for name in names:
        if name not in known:
            raise SceneError(
                folder / f"features_{name}.safetensors",
                f"unknown features {name!r}; lifted here: {', '.join(known) or 'none'}",
            )
        lifted = load_features(folder, name, scene_file=scene.gaussians_file)
        if lifted.num_gaussians != len(scene.gaussians):
            raise SceneError(
                folder / f"features_{name}.safetensors",
                f"{lifted.num_gaussians} rows for {len(scene.gaussians)} Gaussians: "
                "lifted from another scene (re-run omnivision-lift)",
            )
        levels.append(Level(name, lifted.features, lifted.pca, lifted.codebook))
        first = first or lifted
    return levels, first, names


def _text_space(cmd: LerfCommand, lifted, name: str, device: str):
    from omnivision.query.cli import text_encoder

    fallback = (
        "pass a local OpenCLIP folder with --clip, or score DINO/colour features with --bridge"
    )
    return text_encoder(
        lifted, name, cmd.bridge, cmd.clip, cmd.clip_pretrained, device, fallback=fallback
    )


def format_rows(metrics: dict) -> str:
    """A run's rows as a small table (percentages)."""
    lines = [f"{metrics['benchmark']} {metrics.get('scene', '')} ({metrics.get('features', '')})"]
    lines.append(f"  {'protocol':<9}{'path':<14}{'metric':<16}{'value':>7}  queries")
    for row in metrics["rows"]:
        lines.append(
            f"  {row['protocol']:<9}{row['path']:<14}{row['metric']:<16}"
            f"{100 * row['value']:>6.1f}%  {row['count']}"
        )
    for metric, value in metrics.get("chance", {}).items():
        lines.append(f"  chance {metric}: {100 * value:.1f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# omnivision eval spair


@dataclass
class SpairCommand:
    root: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SPAIR_ROOT")]
    """SPair-71k folder (PairAnnotation/, JPEGImages/)."""
    out: Path
    """Run folder to write."""
    backbone: str = "dinov3-vitb16"
    """colour, dinov3-vitb16, dinov2-base, a hub id or local folder."""
    split: str = "test"
    category: str | None = None
    alpha: float = 0.1
    short_side: int = 448
    limit: int | None = None
    """Score only the first N pairs."""
    device: str | None = None


def spair_main(argv: list[str], prog: str) -> int:
    from itertools import islice

    from omnivision.twod.correspondence import SPairDataset, evaluate_pck
    from omnivision.twod.extractors import load_extractor

    from .runs import write_run

    cmd: SpairCommand = tyro.cli(
        SpairCommand,
        args=argv,
        prog=prog,
        description="SPair-71k keypoint transfer: PCK@alpha of nearest-neighbour matching.\n\n"
        "example:\n  omnivision eval spair SPair-71k/ --backbone dinov2-base --out runs/spair",
    )
    if not 0 < cmd.alpha <= 1:
        raise SceneError(cmd.root, f"--alpha must be in (0, 1], got {cmd.alpha}")
    dataset = SPairDataset(cmd.root, split=cmd.split, category=cmd.category)
    extractor = load_extractor(cmd.backbone, short_side=cmd.short_side, device=cmd.device)
    pairs = list(islice(iter(dataset), cmd.limit)) if cmd.limit else dataset
    summary = evaluate_pck(extractor, pairs, alpha=cmd.alpha, progress=True)
    metric = f"pck@{cmd.alpha:g}"
    metrics = {
        "benchmark": "spair",
        "scene": cmd.category or "all",
        "features": extractor.name,
        "settings": {"split": cmd.split, "alpha": cmd.alpha, "short_side": cmd.short_side},
        "rows": [
            {
                "protocol": "-",
                "path": "per-pair",
                "metric": metric,
                "value": summary.mean,
                "count": len(summary.per_pair),
            },
            {
                "protocol": "-",
                "path": "per-keypoint",
                "metric": metric,
                "value": summary.per_keypoint,
                "count": len(summary.per_pair),
            },
        ],  # fmt: skip
    }
    per_query = [{"pair": name, metric: round(v, 6)} for name, v in summary.per_pair.items()]
    write_run(cmd.out, metrics, per_query)
    print(format_rows(metrics))
    return 0


# ---------------------------------------------------------------------------------------------
# omnivision eval make-synthetic / synthetic


@dataclass
class SyntheticCommand:
    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Folder for the benchmark (reused: finished parts and trained models are kept)."""
    seed: int = 0
    clip_steps: int | None = None
    """Training steps of the scene's tiny CLIP (default: train_clip.CLIP_STEPS)."""


def make_synthetic_main(argv: list[str], prog: str) -> int:
    from .synthetic import make_synthetic

    cmd: SyntheticCommand = tyro.cli(
        SyntheticCommand,
        args=argv,
        prog=prog,
        description="Write the synthetic benchmark: the demo scene, LERF-OVS labels of its "
        "evaluation views, NVOS / SPIn-NeRF layouts, and a tiny CLIP + text bridge trained on "
        "its other views (a few minutes on 2 cores, cached).\n\nexample:\n"
        "  omnivision eval make-synthetic bench_out/",
    )
    paths = make_synthetic(cmd.out, seed=cmd.seed, clip_steps=cmd.clip_steps)
    for name, path in paths.items():
        print(f"  {name:<9} {path}")
    return 0


def synthetic_main(argv: list[str], prog: str) -> int:
    from .synthetic import run_synthetic

    cmd: SyntheticCommand = tyro.cli(
        SyntheticCommand,
        args=argv,
        prog=prog,
        description="The synthetic benchmark end to end, offline: make-synthetic, lift (CLIP "
        "pyramid, CLIP masks, colour), eval lerf for every path (and oracle features), seg3d, "
        "and a report at OUT/report.md.\n\nexample:\n  omnivision eval synthetic bench_out/",
    )
    runs = run_synthetic(cmd.out, seed=cmd.seed, clip_steps=cmd.clip_steps)
    for metrics in runs.values():
        print(format_rows(metrics))
    print(f"report: {cmd.out / 'report.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(eval_main(sys.argv[1:], "omnivision eval"))
