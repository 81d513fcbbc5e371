"""`omnivision-lift SCENE_DIR ...` (and `omnivision-lift merge SCENE_DIR`): the command-line edge of lift."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from omnivision.scenes.errors import SceneError
from omnivision.twod.dino import Precision

from .pipeline import LiftConfig, LiftResult, finish, lift_scene, select_views
from .store import (
    feature_name,
    features_path,
    file_hash,
    merge_partials,
    read_manifest,
    save_features,
    save_partial,
    write_manifest_entry,
)

VERSION = 1


@dataclass
class LiftCommand:
    scene: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE_DIR")]
    """Scene folder (or file) as `omnivision render` takes it."""
    features: str = "colour"
    """colour (weight-free demo backend), rgb, dinov3-vitb16, dinov2-small, a hub id or folder,
    clip-pyramid (LERF-style multi-scale CLIP crops), clip-masks (LangSplat-style, SAM 2 masks), or masks:DIR."""
    clip: str = "ViT-B-16"
    """OpenCLIP model or local folder for clip-pyramid / clip-masks."""
    clip_pretrained: str | None = "laion2b_s34b_b88k"
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 hub id or local .pt (with --sam-config) for clip-masks."""
    sam_config: str | None = None
    source: Literal["auto", "images", "render"] = "auto"
    """auto: the scene's photos when present, else renders of the views."""
    views: tuple[int, ...] | None = None
    """Camera indices (default: all)."""
    pca: int | None = None
    """Keep this many PCA dims (LUDVIG uses 40 for DINO)."""
    diffuse: bool = False
    """Fill Gaussians no view saw and smooth features over a kNN graph."""
    refine: int = 0
    """After aggregation, this many steps of feature distillation (Σ‖render(f) − F‖², geometry
    frozen); needs all views at once, so not with --shard."""
    max_side: int | None = None
    """Render views at most this large (long side, pixels); default: the cameras' size."""
    short_side: int = 448
    """Short side the 2D backbone sees."""
    precision: Precision = "fp32"
    """dtype of a DINO backbone's weights and activations (bf16/fp16 halve its memory)."""
    shard: str | None = None
    """k/n: lift every n-th view from k and write partial sums (merge them with `omnivision-lift merge`)."""
    fp16: bool = True
    """Store features as float16."""
    out: Path | None = None
    """Output folder (default: SCENE_DIR/omnivision)."""
    force: bool = False
    """Recompute even if the manifest says the features are up to date."""
    device: str | None = None


@dataclass
class MergeCommand:
    scene: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE_DIR")]
    features: str = "colour"
    """Feature name whose partial files to add."""
    out: Path | None = None
    diffuse: bool = False
    fp16: bool = True


DESCRIPTION = """Lift 2D features onto the Gaussians (LUDVIG aggregation, optional graph diffusion).

Writes OUT/features_<name>.safetensors (per-Gaussian features, weight sums, seen mask) and
OUT/manifest.json. A second run with the same settings does nothing.

examples:
  omnivision-lift demo/                                  # weight-free colour features
  omnivision-lift garden/ --features dinov3-vitb16 --pca 40 --diffuse
  omnivision-lift big/ --features dinov2-small --shard 0/4   # ...shards 1-3 elsewhere, then:
  omnivision-lift merge big/ --features dinov2-small
"""


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SceneError(Path(text), "--shard must look like k/n, e.g. 0/4") from None
    if not 0 <= k < n:
        raise SceneError(Path(text), f"--shard {text}: need 0 <= k < n")
    return k, n


def _summary(result: LiftResult, path: Path) -> str:
    d = result.features.shape[1]
    unseen = int((~result.seen).sum())
    lines = [
        f"wrote {path}",
        f"  {len(result.seen)} Gaussians x {d} dims from {len(result.views)} views ({result.feature_name})",
        f"  coverage {100 * result.coverage:.1f}% seen; {unseen} unseen"
        + (f", {result.filled} filled by diffusion" if result.filled else ""),
        f"  time {result.seconds:.1f} s",
    ]
    return "\n".join(lines)


def lift_main(argv: list[str], prog: str) -> int:
    from omnivision.scenes.load import load_scene

    cmd: LiftCommand = tyro.cli(LiftCommand, args=argv, prog=prog, description=DESCRIPTION)
    shard = _parse_shard(cmd.shard)
    if shard is not None and cmd.refine:
        # a shard writes sums over its views; refinement needs every view's map at once
        raise SceneError(
            cmd.scene,
            f"--refine {cmd.refine} cannot go with --shard {cmd.shard}: refinement needs every "
            "view; lift without --shard to refine",
        )
    scene = load_scene(cmd.scene, orbit_views=24)
    out = cmd.out or scene.root / "omnivision"
    config = LiftConfig(
        features=cmd.features,
        source=cmd.source,
        views=cmd.views,
        shard=shard,
        pca=cmd.pca,
        short_side=cmd.short_side,
        precision=cmd.precision,
        max_side=cmd.max_side,
        diffuse=cmd.diffuse,
        refine=cmd.refine,
        clip=cmd.clip,
        clip_pretrained=cmd.clip_pretrained,
        sam=cmd.sam,
        sam_config=cmd.sam_config,
        cache_dir=out / "cache",
        device=cmd.device,
    )
    try:
        views = select_views(scene.cameras_or_orbit(), LiftConfig(views=cmd.views))
    except ValueError as err:
        raise SceneError(cmd.scene, str(err)) from None
    request = {
        "version": VERSION,
        "scene_file": scene.gaussians_file.name,
        "scene_hash": file_hash(scene.gaussians_file),
        "features": cmd.features,
        "source": cmd.source,
        "views": views,
        "pca": cmd.pca,
        "short_side": cmd.short_side,
        "max_side": cmd.max_side,
        "diffuse": cmd.diffuse,
        "refine": cmd.refine,
        "fp16": cmd.fp16,
        **({"precision": cmd.precision} if cmd.precision != "fp32" else {}),
        **(
            {"clip": cmd.clip, "clip_pretrained": cmd.clip_pretrained}
            if cmd.features.startswith("clip-")
            else {}
        ),
        **({"sam": cmd.sam} if cmd.features == "clip-masks" else {}),
    }
    name = feature_name(cmd.features)
    existing = read_manifest(out).get("features", {}).get(name, {})
    if (
        config.shard is None
        and not cmd.force
        and existing.get("request") == request
        and features_path(out, name).is_file()
    ):
        print(
            f"up to date: {features_path(out, name)} (same scene, features and settings; --force to redo)"
        )
        return 0
    result = lift_scene(scene, config, progress=True)
    if config.shard is not None:
        path = save_partial(out, name, config.shard, result.sums, result.views, result.pca, request)
        print(
            f"wrote {path} ({len(result.views)} views, {result.seconds:.1f} s); merge with: omnivision-lift merge {cmd.scene} --features {cmd.features}"
        )
        return 0
    path = save_features(
        out, name, result.features, result.weights, result.seen, result.pca, cmd.fp16
    )
    write_manifest_entry(out, name, _entry(result, request))
    print(_summary(result, path))
    for note in result.notes:
        print(f"  {note}")
    return 0


def _entry(result: LiftResult, request: dict) -> dict:
    import torch

    from omnivision import __version__

    return {
        "request": request,
        "omnivision": __version__,
        "torch": torch.__version__,
        "dims": int(result.features.shape[1]),
        "views": result.views,
        "coverage": round(result.coverage, 6),
        "seconds": round(result.seconds, 3),
        "file": features_path(Path("."), result.feature_name).name,
    }


def merge_main(argv: list[str], prog: str) -> int:
    import time

    from omnivision.scenes.load import load_scene

    cmd: MergeCommand = tyro.cli(
        MergeCommand, args=argv, prog=prog, description="Add the partial sums of sharded lifts."
    )
    scene = load_scene(cmd.scene, orbit_views=24)
    out = cmd.out or scene.root / "omnivision"
    name = feature_name(cmd.features)
    start = time.perf_counter()
    sums, views, pca, request = merge_partials(out, name)
    # what the merged file holds: aggregated sums of all shards' views, never refined (partial
    # files of older versions may record a --refine that their shard did not apply)
    request = {**request, "views": views, "diffuse": cmd.diffuse, "fp16": cmd.fp16, "refine": 0}
    config = LiftConfig(diffuse=cmd.diffuse)
    result = finish(
        sums, views, name, pca, scene.gaussians.means, config, time.perf_counter() - start
    )
    path = save_features(
        out, name, result.features, result.weights, result.seen, result.pca, cmd.fp16
    )
    write_manifest_entry(out, name, _entry(result, request))
    print(_summary(result, path))
    return 0
