"""`omnivision-lift SCENE_DIR ...` (and `omnivision-lift merge SCENE_DIR`): the command-line edge of lift."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from omnivision.scenes.errors import SceneError
from omnivision.twod.dino import Precision

from .codebook import MAX_ENTRIES, CodebookConfig, FitResult, fit_codebook
from .pipeline import LiftConfig, LiftResult, finish, lift_scene, segment_classes, select_views
from .store import (
    codebook_record,
    feature_name,
    features_path,
    file_hash,
    load_features,
    merge_partials,
    read_manifest,
    save_codebook,
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
    clip-pyramid (LERF-style multi-scale CLIP crops), clip-masks (LangSplat-style, SAM 2 masks),
    masks:DIR, segment:CLASSES (class probabilities of omnivision segment; CLASSES "mug,box,..."
    or @FILE; dense CLIP of --clip, or --bridge) or segment-labels:DIR (class-id PNGs per view and
    DIR/classes.txt, as omnivision segment writes them)."""
    clip: str = "ViT-B-16"
    """OpenCLIP model or local folder for clip-pyramid / clip-masks."""
    clip_pretrained: str | None = "laion2b_s34b_b88k"
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 hub id or local .pt (with --sam-config) for clip-masks."""
    sam_config: str | None = None
    bridge: Path | None = None
    """segment:CLASSES: a text bridge (omnivision train-bridge) taking the class names into its
    backbone's patch space (default: dense CLIP features of --clip)."""
    segment_temperature: float = 0.01
    """segment:CLASSES: per-pixel probabilities softmax(scores / T) (CLIP's logit scale: 0.01)."""
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
    ray: bool = False
    """Run the view shards as Ray tasks (one per GPU, else per CPU slot), then merge them:
    a local Ray instance, or the cluster at --address (pip install 'omnivision[dist]')."""
    address: str | None = None
    """With --ray: a running Ray cluster to join, e.g. 10.0.0.5:6379 (default: start one here)."""
    ray_tasks: int | None = None
    """With --ray: how many shards (default: the cluster's GPUs, else its CPU slots)."""
    codebook: int | None = None
    """Store the features as a codebook instead: K entries (weighted k-means, 1 <= K <= 65535)
    and a uint16 index per Gaussian (2.125 bytes a Gaussian with its seen bit; phrases cost K x D).
    When the full features of the same lift are already here, they are quantized (and replaced)
    without lifting again."""
    codebook_weighted: bool = True
    """Weight each Gaussian in the k-means by its lifted weight sum."""
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
    codebook: int | None = None
    """Store the merged features as a codebook of K entries (see omnivision-lift --codebook)."""
    codebook_weighted: bool = True
    device: str | None = None
    """Where the codebook is fitted (default: CUDA when present)."""


DESCRIPTION = """Lift 2D features onto the Gaussians (LUDVIG aggregation, optional graph diffusion).

Writes OUT/features_<name>.safetensors (per-Gaussian features, weight sums, seen mask; with
--codebook K a K-entry codebook and a uint16 index per Gaussian instead of the features) and
OUT/manifest.json. A second run with the same settings does nothing.

examples:
  omnivision-lift demo/                                  # weight-free colour features
  omnivision-lift garden/ --features dinov3-vitb16 --pca 40 --diffuse
  omnivision-lift big/ --features dinov2-small --shard 0/4   # ...shards 1-3 elsewhere, then:
  omnivision-lift merge big/ --features dinov2-small
  omnivision-lift garden/ --features clip-pyramid --codebook 1024   # 2.125 bytes a Gaussian + the codebook
  omnivision-lift big/ --features dinov2-small --ray --address 10.0.0.5:6379   # shards on a Ray cluster
  omnivision-lift room/ --features "segment:chair,table,floor,wall" --diffuse   # per-Gaussian classes
  omnivision segment --image demo/images --classes-file names.txt --bridge bridge/ --out seg/ &&
    omnivision-lift demo/ --features segment-labels:seg/   # lift 2D segmentations made beforehand
"""


def _segment_request(cmd: LiftCommand, classes: tuple[str, ...]) -> dict:
    """The request keys of segment features: the class names (channel order) and, for a
    model's segmentation, its text side and temperature."""
    request: dict = {"classes": list(classes)}
    if cmd.features.startswith("segment:"):
        if cmd.bridge is not None:
            request["bridge"] = str(cmd.bridge)
        else:
            request.update(clip=cmd.clip, clip_pretrained=cmd.clip_pretrained)
        request["segment_temperature"] = cmd.segment_temperature
    return request


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


def _check_codebook(k: int | None, where: Path) -> None:
    if k is not None and not 1 <= k <= MAX_ENTRIES:
        raise SceneError(
            where, f"--codebook {k}: want 1 <= K <= {MAX_ENTRIES} (the index is uint16)"
        )


def _codebook_request(k: int | None, weighted: bool) -> dict:
    """The request's `codebook` key, present only with --codebook (older entries stay equal)."""
    return {} if k is None else {"codebook": {"entries": k, "weighted": weighted}}


def _quantize(
    features, weights, seen, k: int, weighted: bool, device: str | None, where: Path
) -> tuple[FitResult, float]:
    """Fit the codebook (on `device`, default CUDA when present); (fit, seconds). K larger than
    the Gaussians it can be fitted on is bad input (exit 2)."""
    import time

    import torch

    start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = CodebookConfig(k, weighted=weighted)
    try:
        fit = fit_codebook(features.to(device), weights.to(device), config)
    except ValueError as err:
        raise SceneError(
            where, f"--codebook {k}: {err} (of {len(seen)} Gaussians): use a smaller K"
        ) from None
    fit.codebook = fit.codebook.to("cpu")
    return fit, time.perf_counter() - start


def _codebook_entry(fit: FitResult, weighted: bool, fp16: bool, path: Path, seconds: float):
    return {
        **codebook_record(fit.codebook, fp16, path),
        "fitted_entries": len(fit.codebook.entries) - int(fit.zero_entry),
        "zero_entry": fit.zero_entry,
        "weighted": weighted,
        "seed": 0,
        "iterations": fit.iterations,
        "fitted_on": fit.fitted,
        "relative_squared_error": round(fit.inertia / max(fit.energy, 1e-30), 6),
        "seconds": round(seconds, 3),
    }


def _codebook_summary(record: dict, dims: int, fp16: bool) -> str:
    full = dims * (2 if fp16 else 4) + 5
    return (
        f"  codebook: {record['fitted_entries']} entries"
        + (" + a zero entry for featureless Gaussians" if record["zero_entry"] else "")
        + f", {record['bytes_per_gaussian']} bytes a Gaussian (index + seen bit; + {record['codebook_bytes']} "
        f"bytes of codebook) instead of {full}; relative squared error "
        f"{record['relative_squared_error']:.3f}; fitted in {record['seconds']:.1f} s"
    )


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
    classes = segment_classes(cmd.features)  # a bad class list is exit 2 before anything loads
    if classes is not None and cmd.pca is not None:
        raise SceneError(
            cmd.scene, f"--pca {cmd.pca}: segment features are class probabilities; drop --pca"
        )
    if classes is not None and not cmd.segment_temperature > 0:
        raise SceneError(
            cmd.scene, f"--segment-temperature {cmd.segment_temperature:g}: want T > 0"
        )
    if classes is None and cmd.bridge is not None:
        raise SceneError(cmd.bridge, "--bridge goes with --features segment:CLASSES")
    _check_codebook(cmd.codebook, cmd.scene)
    if shard is not None and cmd.codebook is not None:
        raise SceneError(
            cmd.scene,
            f"--codebook goes with the merge, not a shard: omnivision-lift merge {cmd.scene} "
            f"--features {cmd.features} --codebook {cmd.codebook}",
        )
    if shard is not None and cmd.refine:
        # a shard writes sums over its views; refinement needs every view's map at once
        raise SceneError(
            cmd.scene,
            f"--refine {cmd.refine} cannot go with --shard {cmd.shard}: refinement needs every "
            "view; lift without --shard to refine",
        )
    if cmd.ray and (shard is not None or cmd.refine):
        raise SceneError(
            cmd.scene,
            "--ray runs the shards itself and cannot refine (refinement needs every view at "
            "once): drop --shard/--refine",
        )
    if not cmd.ray and (cmd.address is not None or cmd.ray_tasks is not None):
        raise SceneError(cmd.scene, "--address and --ray-tasks go with --ray")
    if cmd.ray_tasks is not None and cmd.ray_tasks < 1:
        raise SceneError(cmd.scene, f"--ray-tasks {cmd.ray_tasks}: want at least 1")
    scene = load_scene(cmd.scene, orbit_views=24)
    if cmd.codebook is not None and cmd.codebook > len(scene.gaussians):
        raise SceneError(
            scene.gaussians_file,
            f"--codebook {cmd.codebook}: more entries than the scene's {len(scene.gaussians)} "
            "Gaussians: use a smaller K",
        )
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
        bridge=cmd.bridge,
        segment_temperature=cmd.segment_temperature,
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
        **(_segment_request(cmd, classes) if classes is not None else {}),
        **_codebook_request(cmd.codebook, cmd.codebook_weighted),
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
    if cmd.codebook is not None and config.shard is None and not cmd.force:
        full_request = {k: v for k, v in request.items() if k != "codebook"}
        if existing.get("request") == full_request and features_path(out, name).is_file():
            return _quantize_existing(out, name, existing, request, cmd)
    if cmd.ray:
        return _lift_on_ray(argv, cmd, scene, out, name, len(views))
    result = lift_scene(scene, config, progress=True)
    if config.shard is not None:
        path = save_partial(out, name, config.shard, result.sums, result.views, result.pca, request)
        print(
            f"wrote {path} ({len(result.views)} views, {result.seconds:.1f} s); merge with: omnivision-lift merge {cmd.scene} --features {cmd.features}"
        )
        return 0
    _write(out, name, result, request, cmd.codebook, cmd.codebook_weighted, cmd.fp16, cmd.device)
    for note in result.notes:
        print(f"  {note}")
    if result.classes is not None:
        print(f"  classes (channel order): {', '.join(result.classes)}")
    return 0


def _lift_on_ray(argv: list[str], cmd: LiftCommand, scene, out: Path, name: str, views: int) -> int:
    """--ray: the shards as Ray tasks into `out`, then the merge with this run's settings; the
    partial files of `name` are cleared before (a stale shard count would not add up) and after."""
    from .distributed import lift_on_ray

    def clear_partials() -> None:
        for part in out.glob(f"partial_{name}_*-of-*.safetensors"):
            part.unlink()

    clear_partials()
    shards = lift_on_ray(argv, cmd.scene, cmd.address, cmd.ray_tasks, views)
    print(f"ran {shards} shards on Ray; merging")
    _merge(scene, out, name, cmd.diffuse, cmd.fp16, cmd.codebook, cmd.codebook_weighted, cmd.device)
    clear_partials()
    return 0


def _write(
    out: Path,
    name: str,
    result: LiftResult,
    request: dict,
    k: int | None,
    weighted: bool,
    fp16: bool,
    device: str | None,
) -> None:
    """The feature file (full, or the codebook form with `k`) and its manifest entry; prints the summary."""
    if k is None:
        path = save_features(
            out, name, result.features, result.weights, result.seen, result.pca, fp16
        )
        write_manifest_entry(out, name, _entry(result, request, fp16))
        print(_summary(result, path))
        return
    # fitted on the features as the full file would store them (rounded in place: nothing reads
    # them after this), so quantizing a full file later gives this same codebook; fitted before
    # anything is written: a K too large leaves the old file in place
    if fp16:
        result.features.copy_(result.features.half())
    fit, seconds = _quantize(
        result.features, result.weights, result.seen, k, weighted, device, features_path(out, name)
    )
    path = save_codebook(out, name, fit.codebook, result.weights, result.seen, result.pca, fp16)
    record = _codebook_entry(fit, weighted, fp16, path, seconds)
    write_manifest_entry(out, name, _entry(result, request, fp16, record))
    print(_summary(result, path))
    print(_codebook_summary(record, result.features.shape[1], fp16))


def _quantize_existing(out: Path, name: str, existing: dict, request: dict, cmd) -> int:
    """--codebook K over the full features of the same lift already in `out`: fit, replace the
    file with its codebook form, record it; no lifting."""
    lifted = load_features(out, name)
    path = features_path(out, name)
    fit, seconds = _quantize(
        lifted.features, lifted.weight_sums, lifted.seen, cmd.codebook, cmd.codebook_weighted,
        cmd.device, path,
    )  # fmt: skip
    path = save_codebook(
        out, name, fit.codebook, lifted.weight_sums, lifted.seen, lifted.pca, cmd.fp16
    )
    record = _codebook_entry(fit, cmd.codebook_weighted, cmd.fp16, path, seconds)
    entry = {**existing, "request": request, "form": "codebook", "codebook": record}
    entry["bytes_per_gaussian"] = record["bytes_per_gaussian"]
    write_manifest_entry(out, name, entry)
    print(f"wrote {path}: quantized the full {name} features already lifted here (same request)")
    print(_codebook_summary(record, lifted.features.shape[1], cmd.fp16))
    return 0


def _entry(result: LiftResult, request: dict, fp16: bool, codebook: dict | None = None) -> dict:
    """The manifest entry: the request, what ran, and what the file holds (`form` full or
    codebook, bytes per Gaussian; `codebook` describes the codebook form)."""
    import torch

    from omnivision import __version__

    dims = int(result.features.shape[1])
    full_bytes = dims * (2 if fp16 else 4) + 4 + 1  # features + fp32 weight sum + seen byte
    return {
        "request": request,
        "omnivision": __version__,
        "torch": torch.__version__,
        "dims": dims,
        "views": result.views,
        "coverage": round(result.coverage, 6),
        "seconds": round(result.seconds, 3),
        "file": features_path(Path("."), result.feature_name).name,
        "form": "full" if codebook is None else "codebook",
        "bytes_per_gaussian": full_bytes if codebook is None else codebook["bytes_per_gaussian"],
        **({} if codebook is None else {"codebook": codebook}),
        **({"classes": request["classes"]} if "classes" in request else {}),
    }


def merge_main(argv: list[str], prog: str) -> int:
    from omnivision.scenes.load import load_scene

    cmd: MergeCommand = tyro.cli(
        MergeCommand, args=argv, prog=prog, description="Add the partial sums of sharded lifts."
    )
    _check_codebook(cmd.codebook, cmd.scene)
    scene = load_scene(cmd.scene, orbit_views=24)
    out = cmd.out or scene.root / "omnivision"
    name = feature_name(cmd.features)
    _merge(scene, out, name, cmd.diffuse, cmd.fp16, cmd.codebook, cmd.codebook_weighted, cmd.device)
    return 0


def _merge(
    scene,
    out: Path,
    name: str,
    diffuse: bool,
    fp16: bool,
    codebook: int | None,
    weighted: bool,
    device: str | None,
) -> None:
    """Add the partial sums of `name` in `out` (all shards of one run of this scene) and write
    the feature file and its manifest entry."""
    import time

    start = time.perf_counter()
    sums, views, pca, request = merge_partials(out, name)
    if request.get("scene_hash") not in (None, file_hash(scene.gaussians_file)):
        raise SceneError(
            out,
            f"the partial files of {name!r} were lifted from another scene than "
            f"{scene.gaussians_file}; re-run the shards on it",
        )
    # what the merged file holds: aggregated sums of all shards' views, never refined (partial
    # files of older versions may record a --refine that their shard did not apply)
    request = {**request, "views": views, "diffuse": diffuse, "fp16": fp16, "refine": 0}
    request.pop("codebook", None)
    request.update(_codebook_request(codebook, weighted))
    config = LiftConfig(diffuse=diffuse)
    result = finish(
        sums, views, name, pca, scene.gaussians.means, config, time.perf_counter() - start
    )
    _write(out, name, result, request, codebook, weighted, fp16, device)
