"""Benchmark video tracking at real size, random weights: label propagation and SAM 2 video.

    python bench/track.py            # all cases (~6 min on 2 cores), markdown tables on stdout
    python bench/track.py --quick    # colour and DINOv3-S on 9 frames, SAM 2 at 480p on 2 frames

1. Label propagation (`twod.propagate`, `PropagateConfig()` defaults: radius 12, top-5,
   temperature 0.2, the first frame + the 7 previous as context, short side 480) on Cutie's judo
   (tests/data/cutie: the first `--frames` (16) real 854x480 frames, first mask 00000.png, one
   person), with three backbones: the `colour` extractor (stride 8: a 60x107 grid, D = 38), and
   DINOv3 ViT-S/16 and ViT-B/16 (30x53 grid) built with random weights at the real architecture
   (transformers `DINOv3ViTConfig`: hidden 384/768, 12 layers, 6/12 heads, MLP 4x, patch 16,
   4 registers; parameter counts checked against the published 21.6M/85.7M), saved with
   `save_pretrained` and loaded with `load_extractor(folder, short_side=480)`, as real weights are.
   - backbone: `extract([frame]).normalized()` of every frame, timed one by one after a warm-up.
   - propagation: `LabelPropagator` over the same frames, the features handed back by a cache
     (the backbone is not counted twice): the setup on frame 0, then per frame `step` (the
     propagation, bilinear upsampling to 854x480, argmax). s/frame is the mean over the steps,
     whose context grows from 1 to 8 frames (full from the 9th frame on), timed after a 2-frame
     warm-up run (which fills `propagate_step`'s neighbourhood-mask cache); its peak MB is a
     cold run's, the mask cache included.
   - total fps: frames / (backbone + propagation time).
   - step: one `propagate_step` at full context (T = 8: frame 0 and the 7 frames before the last,
     with the labels the run gave them, area-pooled to the grid; the query is the last frame)
     against `dense_step` below: every query patch against every patch of the 8 context frames
     (one full (h*w) x (8*h*w) similarity matrix), then the same radius mask, top-k and softmax.
     Time and peak ratios are ours / dense; "max diff" is the largest difference of their soft
     labels (they must agree within 1e-5).
2. SAM 2 video tracking: sam2's hiera-t config (configs/sam2.1/sam2.1_hiera_t.yaml, 38.9M
   parameters, 1024 px) with random weights saved as `{"model": state_dict}` and loaded with
   `load_sam2_video`, on the first `--sam-frames` (4) frames of tests/data/bedroom (960x540 JPEGs,
   "960p"; "480p": the same frames resized to 854x480, saved as JPEG), one click on frame 0
   ((210, 350) in 960x540 pixels, scaled for 480p). Ours: `open_video(folder)`,
   `Sam2Video.start`, `add_points`, `track()`. Reference: sam2's own path on the same model and
   folder, `init_state(video_path=folder)` (which loads every frame, as 1024x1024 float32
   = 12 MB each) + `add_new_points_or_box` + `propagate_in_video`. Ratios are ours / sam2's;
   IoU compares the two paths' masks frame by frame (random weights: the masks mean nothing,
   but both paths must give the same ones). Each path runs once per mode after a 2-frame
   warm-up of ours, so the SAM times are single runs. A frame costs 3-5 s on 2 CPU cores, more
   as the memory bank fills (num_maskmem = 7: full from frame 7), hence 4 frames by default
   (`--sam-frames 8`, the whole clip, adds about 3 minutes); sam2's path holds 12 MB more per
   frame of the video.
3. CUDA: the same cases again on the GPU when there is one (DINO, propagation and SAM on the
   GPU, the colour backend on the CPU; SAM under bf16 autocast, ours and sam2's alike); without
   one a line says so. There is no bf16 on CPU.

Times come from the default allocator and peak memory from a second run of the case in a fresh
interpreter (bench/_measure.py's `run_isolated`): peak MB is what one call adds to the process
(on CUDA: torch's peak allocated). Step times are the best of 3 calls after a warm-up; the
backbone (mean s/frame) and the propagation pass are single runs. `--threads` (2) sets torch's
CPU threads. Wall times on a shared machine grow with its load: the load average is printed at
the start and the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.twod.extractors import load_extractor  # noqa: E402
from omnivision.twod.features import PatchFeatures  # noqa: E402
from omnivision.twod.propagate import (  # noqa: E402
    LabelPropagator,
    PropagateConfig,
    as_frame,
    downsample_labels,
    propagate_step,
)
from omnivision.twod.sam_video import load_sam2_video  # noqa: E402
from omnivision.twod.video import open_video  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to fetch
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# sam2's per-frame progress bars, off in the case subprocesses (tqdm reads it on import)
os.environ.setdefault("TQDM_DISABLE", "1")

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
JUDO = DATA / "cutie"
BEDROOM = DATA / "bedroom"
SHORT_SIDE = 480
# DINOv3 (hidden, heads, published params in M); 12 layers, MLP 4x, patch 16, 4 registers.
DINOV3 = {"dinov3-vits16": (384, 6, 21.6), "dinov3-vitb16": (768, 12, 85.7)}
SAM_CONFIG, SAM_PARAMS = "configs/sam2.1/sam2.1_hiera_t.yaml", 38.9
SAM_SIZES = {"960p": None, "480p": (854, 480)}  # (W, H) the frames are resized to
CLICK = (210.0, 350.0)  # (x, y) on the 960x540 frame 0: the notebook's first click
CASES = {
    "propagate-colour": ("propagate", "colour"),
    "propagate-dinov3-vits16": ("propagate", "dinov3-vits16"),
    "propagate-dinov3-vitb16": ("propagate", "dinov3-vitb16"),
    "sam2-480p": ("sam2", "480p"),
    "sam2-960p": ("sam2", "960p"),
}
QUICK = ("propagate-colour", "propagate-dinov3-vits16", "sam2-480p")
QUICK_FRAMES, QUICK_SAM_FRAMES = 9, 2


def dense_step(query, context_features, context_labels, cfg: PropagateConfig) -> torch.Tensor:
    """The plain formulation of `propagate_step`: one (h*w) x (T*h*w) similarity matrix of every
    query patch against every context patch, -inf beyond `cfg.radius` (Euclidean, in patches),
    the candidates >= the k-th largest kept (ties too), softmax weights, labels averaged."""
    h, w, dim = query.shape
    frames, channels = context_labels.shape[:2]
    sims = query.reshape(-1, dim) @ context_features.reshape(-1, dim).T  # Q, T*h*w
    y, x = torch.meshgrid(
        torch.arange(h, device=sims.device), torch.arange(w, device=sims.device), indexing="ij"
    )
    y, x = y.reshape(-1), x.reshape(-1)
    far = (y[:, None] - y) ** 2 + (x[:, None] - x) ** 2 > cfg.radius**2  # Q, h*w
    sims.view(h * w, frames, h * w).masked_fill_(far[:, None], -torch.inf)
    top = sims.topk(cfg.topk, dim=1).values
    below = sims < top[:, -1:]
    weights = sims.sub_(top[:, :1]).div_(cfg.temperature).exp_().masked_fill_(below, 0.0)
    labels = context_labels.permute(0, 2, 3, 1).reshape(-1, channels)
    return ((weights @ labels) / weights.sum(1, keepdim=True)).T.reshape(channels, h, w)


# --------------------------------------------------------------------------------- set-up


def param_millions(model: torch.nn.Module, expected: float, name: str) -> float:
    """Parameters in millions, checked against the published count (within 2%)."""
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    if abs(millions - expected) > 0.02 * expected:
        raise SystemExit(f"{name}: {millions:.1f}M parameters, the real model has {expected}M")
    return millions


def dino_folder(workdir: Path, name: str) -> Path:
    """A random DINOv3 at the real architecture, saved with `save_pretrained` (once per run)."""
    folder = workdir / name
    if not (folder / "config.json").is_file():
        from transformers import DINOv3ViTConfig, DINOv3ViTModel

        hidden, heads, _ = DINOV3[name]
        config = DINOv3ViTConfig(
            hidden_size=hidden,
            num_hidden_layers=12,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            patch_size=16,
            num_register_tokens=4,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = DINOv3ViTModel(config)
        partial = workdir / f"{name}.partial"
        model.save_pretrained(partial)
        partial.rename(folder)
    return folder


def build_extractor(name: str, workdir: Path, device: str):
    if name == "colour":
        return load_extractor("colour", short_side=SHORT_SIDE), None
    extractor = load_extractor(str(dino_folder(workdir, name)), SHORT_SIDE, device)
    return extractor, param_millions(extractor.model, DINOV3[name][2], name)  # type: ignore[attr-defined]


def sam_checkpoint(workdir: Path) -> tuple[Path, Path]:
    """hiera-t with random weights as `{"model": state_dict}` plus its config (once per run)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from omnivision.twod.sam import _sam2_config

    checkpoint, config = workdir / "sam2.1_hiera_t_random.pt", workdir / "sam2.1_hiera_t.yaml"
    if not checkpoint.is_file():
        cfg = _sam2_config(SAM_CONFIG)
        OmegaConf.save(cfg, config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = instantiate(cfg.model, _recursive_=True)
        partial = checkpoint.with_suffix(".partial")
        torch.save({"model": model.state_dict()}, partial)
        partial.rename(checkpoint)
    return checkpoint, config


def bedroom_folder(workdir: Path, size: str, count: int) -> Path:
    """The first `count` bedroom frames as JPEGs named as sam2 wants them (copied at 960p,
    resized with PIL's bicubic filter and saved at quality 95 otherwise)."""
    folder = workdir / f"bedroom-{size}-{count}"
    if not folder.is_dir():
        partial = workdir / f"{folder.name}.partial"
        partial.mkdir()
        for path in sorted(BEDROOM.glob("*.jpg"))[:count]:
            if SAM_SIZES[size] is None:
                shutil.copyfile(path, partial / path.name)
            else:
                with Image.open(path) as image:
                    resized = image.convert("RGB").resize(SAM_SIZES[size], Image.Resampling.BICUBIC)
                resized.save(partial / path.name, quality=95)
        partial.rename(folder)
    return folder


def judo(count: int) -> tuple[list[np.ndarray], np.ndarray]:
    paths = sorted((JUDO / "images" / "judo").glob("*.jpg"))[:count]
    frames = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    return frames, np.asarray(Image.open(JUDO / "masks" / "judo" / "00000.png"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> tuple[object, float]:
    """One call: its result and wall seconds."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------- propagation


class CachedFeatures:
    """A `FeatureExtractor` handing back precomputed (normalised) features, one frame per call
    in order (the propagator asks once per frame), as fresh copies (normalising them again
    costs about a millisecond)."""

    def __init__(self, features: torch.Tensor, stride: int) -> None:
        self.features = features
        self.name, self.dim, self.stride = "cached", features.shape[-1], stride
        self.short_side = SHORT_SIDE
        self.served = 0

    def extract(self, images: Sequence[torch.Tensor]) -> PatchFeatures:
        patches = self.features[self.served : self.served + 1].clone()
        self.served += 1
        h, w = patches.shape[1:3]
        image_size = (images[0].shape[0], images[0].shape[1])
        return PatchFeatures(patches, self.stride, (h * self.stride, w * self.stride), image_size)


def propagation_pass(
    features, stride: int, frames, mask, device: str, keep: Collection[int] = ()
) -> dict:
    """`LabelPropagator` over `frames` on cached `features`; the results of frames in `keep`."""
    propagator = LabelPropagator(
        CachedFeatures(features, stride), frames[0], mask, PropagateConfig(), device=device
    )
    kept = {0: propagator.last} if 0 in keep else {}
    for index, frame in enumerate(frames[1:], 1):
        result = propagator.step(frame)
        if index in keep:
            kept[index] = result
    return kept


def context_indices(count: int) -> list[int]:
    """Context of the last frame's step: frame 0 and the (up to) 7 frames before the last."""
    cfg = PropagateConfig()
    return [0, *range(max(1, count - 1 - cfg.context), count - 1)]


def run_propagate(backbone: str, device: str, mode: str, workdir: Path, count: int) -> dict:
    extractor, params = build_extractor(backbone, workdir, device)
    frames, mask = judo(count)
    images = [as_frame(frame) for frame in frames]
    stride = extractor.stride
    cache = workdir / f"features-{backbone}-{device}-{count}.pt"
    row: dict = {"case": f"propagate-{backbone}", "device": device, "frames": len(frames)}
    row["params_m"] = "-" if params is None else f"{params:.1f}"
    cfg = PropagateConfig()
    context = context_indices(len(frames))
    if mode == "time" or not cache.is_file():
        extractor.extract([images[0]])  # warm-up
        features, seconds = [], []
        for image in images:
            feats, took = timed(lambda im=image: extractor.extract([im]).normalized()[0], device)
            features.append(feats)
            seconds.append(took)
        features = torch.stack(features).to(device)
        propagation_pass(features[:2], stride, frames[:2], mask, device)  # warm-up: mask caches
        kept, pass_s = timed(
            lambda: propagation_pass(features, stride, frames, mask, device, set(context)), device
        )
        assert isinstance(kept, dict)
        grid = (features.shape[1], features.shape[2])
        labels = torch.stack([downsample_labels(kept[i].probs, grid) for i in context])
        torch.save({"features": features.cpu(), "labels": labels}, cache)
    saved = torch.load(cache, weights_only=True)
    features, labels = saved["features"].to(device), saved["labels"].to(device)
    h, w, dim = features.shape[1:]
    row["grid"] = f"{h}x{w}, D={dim}"
    query, context_features = features[-1], features[context]
    fmt = "{:.3f}" if mode == "time" else "{:.0f}"
    if mode == "time":
        backbone_s, steps = sum(seconds), len(frames) - 1
        row["backbone_s"] = f"{backbone_s / len(frames):.3f}"
        row["backbone_fps"] = f"{len(frames) / backbone_s:.2f}"
        row["prop_s"] = f"{pass_s / steps:.3f}"
        row["prop_fps"] = f"{steps / pass_s:.2f}"
        row["total_fps"] = f"{len(frames) / (backbone_s + pass_s):.2f}"
        ours = propagate_step(query, context_features, labels, cfg)
        dense = dense_step(query, context_features, labels, cfg)
        diff = float((ours - dense).abs().max())
        row["max_diff"] = f"{diff:.1e} ({'ok' if diff < 1e-5 else 'OVER 1e-5'})"
        row["context"] = len(context)
    else:
        row["backbone_peak_mb"] = fmt.format(
            measure(lambda: extractor.extract([images[0]]).normalized(), mode, device=device)
        )
        row["prop_peak_mb"] = fmt.format(
            measure(
                lambda: propagation_pass(features, stride, frames, mask, device),
                mode,
                device=device,
            )
        )
    step = measure(lambda: propagate_step(query, context_features, labels, cfg), mode, 3, device)
    dense = measure(lambda: dense_step(query, context_features, labels, cfg), mode, 3, device)
    unit = "s" if mode == "time" else "peak_mb"
    row[f"step_{unit}"], row[f"dense_{unit}"] = fmt.format(step), fmt.format(dense)
    ratio = step / max(dense, 1e-9)
    row["step_time_ratio" if mode == "time" else "step_mem_ratio"] = f"{ratio:.2f}"
    return row


# --------------------------------------------------------------------------------- SAM 2


def run_sam2(size: str, device: str, mode: str, workdir: Path, count: int) -> dict:
    checkpoint, config = sam_checkpoint(workdir)
    folder = bedroom_folder(workdir, size, count)
    video = load_sam2_video(checkpoint, config=config, device=device)
    model = video.model
    params = param_millions(model, SAM_PARAMS, "sam2.1-hiera-t")
    h, w = open_video(folder).size
    click = [[CLICK[0] * w / 960, CLICK[1] * h / 540]]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else contextlib.nullcontext()
    )

    def ours(frames: int | None = None) -> list[torch.Tensor]:
        video.start(open_video(folder))
        video.add_points(0, 1, click, [1])
        masks = []
        for result in video.track():
            masks.append(result.masks[1])
            if len(masks) == frames:
                break
        video.state = video.frames = None  # drop this video's state
        return masks

    def theirs() -> list[torch.Tensor]:
        with autocast:
            state = model.init_state(video_path=str(folder))
            model.add_new_points_or_box(state, 0, 1, points=click, labels=[1])
            return [(m[0, 0] > 0).cpu() for _, _, m in model.propagate_in_video(state)]

    ours(2)  # warm-up: image encoder, prompt and mask decoders, memory encoder and attention
    row: dict = {"case": f"sam2-{size}", "device": device, "params_m": f"{params:.1f}"}
    row.update(video=f"{w}x{h}", frames=count)
    if mode == "time":
        ours_masks, ours_s = timed(ours, device)
        their_masks, their_s = timed(theirs, device)
        assert isinstance(ours_masks, list) and isinstance(their_masks, list)
        ious = [
            float((a & b).sum() / max(int((a | b).sum()), 1))
            for a, b in zip(ours_masks, their_masks, strict=True)
        ]
        row.update(ours_s=f"{ours_s:.1f}", ours_fps=f"{count / ours_s:.3f}")
        row.update(sam2_s=f"{their_s:.1f}", sam2_fps=f"{count / their_s:.3f}")
        row["time_ratio"] = f"{ours_s / their_s:.2f}"
        row["iou_min"] = f"{min(ious):.4f}"
        row["ious"] = " ".join(f"{iou:.4f}" for iou in ious)
    else:
        ours_mb = measure(ours, mode, device=device)
        their_mb = measure(theirs, mode, device=device)
        row.update(ours_peak_mb=f"{ours_mb:.0f}", sam2_peak_mb=f"{their_mb:.0f}")
        row["mem_ratio"] = f"{ours_mb / max(their_mb, 1e-3):.2f}"
    return row


# ---------------------------------------------------------------------------------- main


def run_case(case: str, args) -> dict:
    torch.set_num_threads(args.threads)
    family, what = CASES[case]
    workdir = Path(args.workdir)
    if family == "propagate":
        return run_propagate(what, args.device, args.mode, workdir, args.frames)
    return run_sam2(what, args.device, args.mode, workdir, args.sam_frames)


PROPAGATE_COLUMNS = [
    ("case", "case"),
    ("device", "device"),
    ("params (M)", "params_m"),
    ("grid", "grid"),
    ("frames", "frames"),
    ("backbone s/frame", "backbone_s"),
    ("backbone fps", "backbone_fps"),
    ("propagation s/frame", "prop_s"),
    ("propagation fps", "prop_fps"),
    ("total fps", "total_fps"),
    ("backbone peak MB", "backbone_peak_mb"),
    ("propagation peak MB", "prop_peak_mb"),
]
STEP_COLUMNS = [
    ("case", "case"),
    ("device", "device"),
    ("context T", "context"),
    ("step s", "step_s"),
    ("dense s", "dense_s"),
    ("time ours/dense", "step_time_ratio"),
    ("step peak MB", "step_peak_mb"),
    ("dense peak MB", "dense_peak_mb"),
    ("peak ours/dense", "step_mem_ratio"),
    ("max diff", "max_diff"),
]
SAM_COLUMNS = [
    ("case", "case"),
    ("device", "device"),
    ("frames", "frames"),
    ("size", "video"),
    ("ours s", "ours_s"),
    ("ours fps", "ours_fps"),
    ("sam2 s", "sam2_s"),
    ("sam2 fps", "sam2_fps"),
    ("time ours/sam2", "time_ratio"),
    ("ours peak MB", "ours_peak_mb"),
    ("sam2 peak MB", "sam2_peak_mb"),
    ("peak ours/sam2", "mem_ratio"),
    ("min IoU", "iou_min"),
]


def load_average() -> str:
    """The machine's 1- and 5-minute load averages: other processes' share of the cores."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    if any("error" in row for row in rows):
        columns = [*columns, ("error", "error")]
    return markdown_table(rows, columns)


def main() -> None:
    parser = bench_parser(__doc__, CASES, "colour and DINOv3-S on 9 frames, SAM 480p on 2 frames")
    parser.set_defaults(device="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    parser.add_argument("--frames", type=int, default=16, help="judo frames (16: all)")
    parser.add_argument(
        "--sam-frames", type=int, default=4, help="bedroom frames (4; 8: all, ~3 min more)"
    )
    parser.add_argument("--workdir", help="folder for the random models and frames (a temp dir)")
    args = parser.parse_args()
    if args.case:
        if args.workdir:
            print(json.dumps(run_case(args.case, args)))
            return
        with tempfile.TemporaryDirectory() as workdir:
            args.workdir = workdir
            print(json.dumps(run_case(args.case, args)))
        return
    start = time.perf_counter()
    print("$ python " + shlex.join(sys.argv))
    torch.set_num_threads(args.threads)
    if args.quick:
        args.frames, args.sam_frames = QUICK_FRAMES, QUICK_SAM_FRAMES
    cases = QUICK if args.quick else tuple(CASES)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()})"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(f"at the start: {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for device in devices:
            extra = ["--device", device, "--threads", str(args.threads), "--workdir", workdir]
            extra += ["--frames", str(args.frames), "--sam-frames", str(args.sam_frames)]
            rows += run_cases(Path(__file__), cases, device, extra)
    propagate = [r for r in rows if r["case"].startswith("propagate")]
    sam = [r for r in rows if r["case"].startswith("sam2")]
    print("\nLabel propagation, Cutie judo 854x480 (backbone at short side 480):\n")
    print(table(propagate, PROPAGATE_COLUMNS))
    print("\nOne propagation step at full context vs the dense reference:\n")
    print(table(propagate, STEP_COLUMNS))
    if sam:
        print("\nSAM 2.1 hiera-t video tracking, bedroom, one click on frame 0:\n")
        print(table(sam, SAM_COLUMNS))
        for row in sam:
            if "ious" in row:
                print(f"IoU ours vs sam2 per frame, {row['case']} {row['device']}: {row['ious']}")
    if not torch.cuda.is_available():
        print("\nNo GPU present (torch.cuda.is_available() is False): CPU rows only.")
    print(f"\nwall {time.perf_counter() - start:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
