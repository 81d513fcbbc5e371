"""`omnivision track`: follow objects through a video (SAM 2, SAM 2 + re-identification, or DINO
label propagation), and the DAVIS semi-supervised protocol over a DAVIS-layout folder."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from .cli import check_inside, exemplar, parse_box, parse_point
from .dino import Precision
from .errors import TwoDError
from .video import VideoFrames

Method = Literal["sam2", "propagate", "sam2+reid"]


@dataclass
class TrackCommand:
    video: Path | None = None
    """Video file (.mp4, .mov, .avi, .webm, .mkv) or a folder of .jpg/.png frames (name order)."""
    davis: Path | None = None
    """Instead of --video: a DAVIS root (JPEGImages/RES/SEQ, Annotations/RES/SEQ); every
    sequence is tracked from its first frame's annotation (the semi-supervised protocol)."""
    sequences: str | None = None
    """With --davis: comma-separated sequence names (default: all)."""
    resolution: str = "480p"
    """With --davis: the resolution folder."""
    click: list[str] = field(default_factory=list)
    """X,Y pixels on --frame, one object per click (repeat: --click 210,350 400,150)."""
    box: list[str] = field(default_factory=list)
    """X1,Y1,X2,Y2 pixels on --frame, one object per box."""
    mask: Path | None = None
    """Index PNG on --frame (DAVIS palette or grey): each non-zero id is an object."""
    objects: str | None = None
    """With --mask: the ids to track, comma-separated (default: every id in the mask)."""
    ref: Path | None = None
    """An exemplar photo (taken anywhere): localize-by-example finds it on --frame."""
    ref_box: str | None = None
    """With --ref: X1,Y1,X2,Y2 of the object in the exemplar."""
    ref_click: list[str] = field(default_factory=list)
    """With --ref: X,Y points on the object in the exemplar (instead of --ref-box)."""
    frame: int = 0
    """Frame the prompt is given on (0-based); earlier frames get no masks."""
    method: Method = "sam2"
    """sam2: SAM 2's video tracker; sam2+reid: plus a DINO prototype bank that re-prompts SAM 2
    where a lost object reappears; propagate: the DINOv3 paper's label propagation (no SAM 2;
    starts from masks: --mask, or clicks/boxes made into masks by the SAM 2 image model)."""
    backbone: str = "dinov3-vits16"
    """Patch features for propagate, re-identification and --ref: dinov3-vits16|vitb16|...,
    dinov2-small|..., a hub id, a local folder, or `colour` (weight-free, offline)."""
    sam: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2: a hub id, or a local checkpoint .pt with --sam-config."""
    sam_config: str | None = None
    """SAM 2 config (name like configs/sam2.1/sam2.1_hiera_t.yaml or a yaml path) for a .pt."""
    short_side: int = 480
    """Short side the backbone sees (the DINOv3 paper: 960, a GPU setting; DAVIS is 480p)."""
    precision: Precision = "fp32"
    """dtype of the DINO backbone's weights and activations."""
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""
    out: Path = Path("track_out")
    """Output folder. --video: masks/NAME.png (DAVIS palette), overlay.mp4, track.json.
    --davis: SEQ/NAME.png per sequence (the layout `omnivision eval davis --pred` reads)."""
    no_mp4: bool = False
    """Skip overlay.mp4."""


DESCRIPTION = """Track objects through a video from a click, a box, a mask or an exemplar photo.

examples:
  omnivision track --video bedroom/ --click 210,350 --out child/                  # SAM 2
  omnivision track --video clip.mp4 --box 300,0,500,400 --method sam2+reid --backbone dinov3-vits16
  omnivision track --video judo/ --mask judo/00000.png --method propagate --backbone colour  # offline
  omnivision track --video shelf.mp4 --ref mug.jpg --ref-box 10,10,90,120 --frame 30
  omnivision track --davis DAVIS/ --sequences bike,judo --method propagate --out pred/
  omnivision eval davis --pred pred/ --gt DAVIS/ --out run/                        # J&F
"""


@dataclass
class Tracked:
    """One frame's result, whatever the method: object id -> bool mask and score."""

    frame_index: int
    name: str
    masks: dict[int, np.ndarray]
    scores: dict[int, float]

    def index_map(self, size: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W) object ids; where masks overlap, the higher-scoring object wins."""
        ids = np.zeros(size, dtype=np.uint8)
        for obj in sorted(self.masks, key=lambda o: self.scores.get(o, 0.0)):
            ids[self.masks[obj]] = obj
        return ids


@dataclass
class Prompts:
    """What the command starts from, on one frame: per object a click, a box or a mask."""

    frame: int
    points: dict[int, tuple[float, float]] = field(default_factory=dict)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def object_ids(self) -> list[int]:
        return sorted({*self.points, *self.boxes, *self.masks})


def parse_ids(text: str, flag: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise TwoDError(f"{flag} {text!r}: expected comma-separated object ids, e.g. 1,3") from None
    if not ids or any(not 1 <= i <= 255 for i in ids):
        raise TwoDError(f"{flag} {text!r}: object ids are 1..255")
    return ids


def mask_prompts(path: Path, frame: int, size: tuple[int, int], objects: str | None) -> Prompts:
    """The objects of an index PNG (resized to the frame when at most 2 pixels off)."""
    from .davis import read_index_png
    from .propagate import fit_mask

    ids_map = fit_mask(read_index_png(path), size, str(path))
    present = sorted(set(np.unique(ids_map).tolist()) - {0})
    if not present:
        raise TwoDError(f"{path}: the mask has no object (every pixel is 0)")
    wanted = present if objects is None else parse_ids(objects, "--objects")
    missing = [i for i in wanted if i not in present]
    if missing:
        raise TwoDError(f"{path}: object ids {missing} are not in the mask (it has {present})")
    return Prompts(frame, masks={i: ids_map == i for i in wanted})


def command_prompts(cfg: TrackCommand, frames: VideoFrames, extractor_for_ref) -> Prompts:
    """Prompts from --click / --box / --mask / --ref, checked against the video."""
    given = [bool(cfg.click), bool(cfg.box), cfg.mask is not None, cfg.ref is not None]
    if sum(given) != 1:
        raise TwoDError(
            "give the objects one way: --click X,Y ..., --box X1,Y1,X2,Y2 ..., --mask FIRST.png, "
            "or --ref IMG with --ref-box/--ref-click"
        )
    if not 0 <= cfg.frame < len(frames):
        raise TwoDError(f"{frames.path}: --frame {cfg.frame} is outside 0..{len(frames) - 1}")
    if cfg.objects is not None and cfg.mask is None:
        raise TwoDError("--objects picks ids of --mask: give --mask too")
    size, where = frames.size, f"{frames.path} frame {cfg.frame}"
    if cfg.mask is not None:
        return mask_prompts(cfg.mask, cfg.frame, size, cfg.objects)
    if cfg.click:
        points = [parse_point(c) for c in cfg.click]
        check_inside(Path(where), size, points, "click")
        return Prompts(cfg.frame, points=dict(enumerate(points, 1)))
    if cfg.box:
        boxes = [parse_box(b) for b in cfg.box]
        for x0, y0, x1, y1 in boxes:
            check_inside(Path(where), size, [(x0, y0), (x1 - 1e-3, y1 - 1e-3)], "box corner")
        return Prompts(cfg.frame, boxes=dict(enumerate(boxes, 1)))
    return reference_prompts(cfg, frames, extractor_for_ref())


def reference_prompts(cfg: TrackCommand, frames: VideoFrames, extractor) -> Prompts:
    """--ref: localize by example on --frame; the best detection is the object (its box for
    SAM 2, its mask for propagation)."""
    from .localize import LocalizeConfig, localize, reference_vector

    assert cfg.ref is not None
    ref, clicks, box = exemplar(cfg.ref, cfg.ref_click, cfg.ref_box, ("--ref-click", "--ref-box"))
    reference = reference_vector(extractor.extract([ref]), clicks, box)
    image = torch.from_numpy(np.array(frames[cfg.frame], dtype=np.float32) / 255.0)
    found = localize(reference, extractor.extract([image]), LocalizeConfig(top_k=1), image=image)
    if not len(found):
        raise TwoDError(
            f"{frames.path} frame {cfg.frame}: nothing like {cfg.ref} was found; try another "
            "--frame, a tighter --ref-box, or give --box/--click on the video instead"
        )
    x0, y0, x1, y1 = (float(v) for v in found.boxes[0].tolist())
    return Prompts(cfg.frame, boxes={1: (x0, y0, x1, y1)}, masks={1: found.masks[0].numpy()})


# ---------------------------------------------------------------------------------------------
# Methods: each yields a `Tracked` per frame, in order, from frame 0


def load_video_sam(cfg: TrackCommand, device: str):
    from .sam_video import load_sam2_video

    try:
        return load_sam2_video(cfg.sam, config=cfg.sam_config, device=device)
    except TwoDError as err:  # the loader's hint names --sam none, a flag of localize
        raise TwoDError(str(err).replace("use --sam none", "use --method propagate")) from None


def track_sam2(sam, frames, prompts: Prompts, extractor=None) -> Iterator[Tracked]:
    from .sam_video import Prompt

    video_prompts = []
    for obj in prompts.object_ids:
        if obj in prompts.boxes:  # --ref gives a box and a mask: SAM 2 takes the box
            video_prompts.append(Prompt(prompts.frame, obj, box=prompts.boxes[obj]))
        elif obj in prompts.points:
            video_prompts.append(
                Prompt(prompts.frame, obj, points=[prompts.points[obj]], labels=[1])
            )
        else:
            video_prompts.append(Prompt(prompts.frame, obj, mask=prompts.masks[obj]))
    if extractor is None:
        sam.start(frames)
        for p in video_prompts:
            sam.add(p)
        results = sam.track()
    else:
        from .track import track_with_reid

        results = track_with_reid(sam, frames, extractor, video_prompts)
    for r in results:
        masks = {o: m.cpu().numpy().astype(bool) for o, m in r.masks.items()}
        yield Tracked(r.frame_index, r.name, masks, dict(r.scores))


def masks_from_sam_image(cfg, frames, prompts: Prompts, device) -> dict[int, np.ndarray]:
    """Clicks and boxes made into masks by the SAM 2 image model, for propagation."""
    from .sam import load_sam2

    try:
        sam = load_sam2(cfg.sam, config=cfg.sam_config, device=device)
    except TwoDError as err:
        raise TwoDError(
            f"{err}".replace("use --sam none", "give --mask instead (propagate starts from masks)")
        ) from None
    sam.set_image(frames[prompts.frame])
    masks = {}
    for obj in prompts.object_ids:
        if obj in prompts.boxes:
            found = sam.predict(box=prompts.boxes[obj], multimask=False)
        else:
            found = sam.predict(points=[prompts.points[obj]], labels=[1], multimask=True)
        masks[obj] = found.masks[0].cpu().numpy().astype(bool)
    return masks


def track_propagate(cfg, frames, prompts: Prompts, device, extractor) -> Iterator[Tracked]:
    from .propagate import PropagateConfig, propagate_video

    masks = prompts.masks
    start = np.zeros(frames.size, dtype=np.uint8)
    for obj in sorted(masks):
        start[masks[obj]] = obj
    if not start.any():
        raise TwoDError(f"{frames.path} frame {prompts.frame}: the prompt's mask is empty")
    for t in range(prompts.frame):
        yield Tracked(t, frames.names[t], {}, {})
    rest = (frames[t] for t in range(prompts.frame, len(frames)))
    run = propagate_video(
        extractor, rest, {0: start}, PropagateConfig(short_side=cfg.short_side), device
    )
    for r in run:
        t = prompts.frame + r.frame_index
        masks_t = {o: r.mask == o for o in r.object_ids}
        scores = {o: float(s) for o, s in zip(r.object_ids, r.scores.tolist(), strict=True)}
        yield Tracked(t, frames.names[t], masks_t, scores)


@dataclass
class Models:
    """What a method needs, loaded before the first frame (so a missing model fails at once)."""

    sam: Any = None
    extractor: Any = None

    @staticmethod
    def load(cfg: TrackCommand, device: str, extractor_for) -> Models:
        extractor = extractor_for() if cfg.method != "sam2" else None
        sam = load_video_sam(cfg, device) if cfg.method != "propagate" else None
        return Models(sam, extractor)


def run_method(cfg: TrackCommand, frames: VideoFrames, prompts: Prompts, device, models: Models):
    if cfg.method == "propagate":
        return track_propagate(cfg, frames, prompts, device, models.extractor)
    return track_sam2(models.sam, frames, prompts, models.extractor)


# ---------------------------------------------------------------------------------------------
# Outputs


def box_of(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def overlay_frame(frame: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The frame with each object tinted in its DAVIS palette colour."""
    from .davis import DAVIS_PALETTE

    palette = np.frombuffer(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3).astype(np.float32)
    out = frame.astype(np.float32)  # a copy: VideoFrames hands out read-only frames
    seen = ids > 0
    out[seen] = 0.45 * out[seen] + 0.55 * palette[ids[seen]]
    return out.astype(np.uint8)


def frame_record(t: Tracked) -> dict:
    objects = {
        str(o): {"box": box_of(m), "score": round(t.scores.get(o, 0.0), 4), "area": int(m.sum())}
        for o, m in sorted(t.masks.items())
    }
    return {"frame": t.frame_index, "name": t.name, "objects": objects}


def write_tracks(
    results: Iterator[Tracked], frames: VideoFrames, masks_dir: Path, records: list, progress
) -> Iterator[np.ndarray]:
    """Write each frame's index PNG, record its boxes and scores, yield its overlay."""
    from .davis import write_index_png

    for t in results:
        ids = t.index_map(frames.size)
        write_index_png(masks_dir / f"{t.name}.png", ids)
        records.append(frame_record(t))
        progress.update(1)
        yield overlay_frame(frames[t.frame_index], ids)


def track_video(cfg: TrackCommand, device: str, extractor_for) -> None:
    from tqdm import tqdm

    from .io import replace_folder
    from .video import open_video, video_encoder, write_overlay_mp4

    assert cfg.video is not None
    frames = open_video(cfg.video)
    prompts = command_prompts(cfg, frames, extractor_for)
    needs_features = cfg.method != "sam2"
    models = Models.load(cfg, device, extractor_for)
    if cfg.method == "propagate" and not prompts.masks:  # clicks/boxes: SAM 2 makes the masks
        prompts.masks = masks_from_sam_image(cfg, frames, prompts, device)
    records: list[dict] = []
    started = time.perf_counter()
    mp4 = not cfg.no_mp4 and video_encoder() is not None

    def build(tmp: Path) -> None:
        with tqdm(total=len(frames), desc=f"track ({cfg.method})", unit="frame") as bar:
            results = run_method(cfg, frames, prompts, device, models)
            overlays = write_tracks(results, frames, tmp / "masks", records, bar)
            if mp4:
                write_overlay_mp4(tmp / "overlay.mp4", overlays, frames.fps)
            else:
                for _ in overlays:
                    pass
        summary = {
            "video": str(cfg.video),
            "method": cfg.method,
            "backbone": cfg.backbone if needs_features or cfg.ref else None,
            "sam": cfg.sam if cfg.method != "propagate" else None,
            "prompt_frame": prompts.frame,
            "objects": prompts.object_ids,
            "size": list(frames.size),
            "seconds": round(time.perf_counter() - started, 2),
            "frames": records,
        }
        (tmp / "track.json").write_text(json.dumps(summary, indent=1))

    replace_folder(cfg.out, build)
    seen = sum(1 for r in records if r["objects"] and any(o["area"] for o in r["objects"].values()))
    fps = len(records) / max(time.perf_counter() - started, 1e-9)
    print(
        f"tracked {len(prompts.object_ids)} object(s) over {len(records)} frames ({fps:.1f} "
        f"frames/s; seen on {seen}); wrote {cfg.out}/ (masks/, "
        f"{'overlay.mp4, ' if mp4 else ''}track.json)"
    )


def track_davis(cfg: TrackCommand, device: str, extractor_for) -> None:
    from tqdm import tqdm

    from .davis import davis_sequences, sequence_annotations, write_index_png
    from .io import replace_folder
    from .video import open_video

    assert cfg.davis is not None
    root, res = cfg.davis, cfg.resolution
    names = davis_sequences(root, res)
    if cfg.sequences:
        wanted = [s.strip() for s in cfg.sequences.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in names]
        if unknown:
            raise TwoDError(f"{root}: no sequence {', '.join(unknown)} in JPEGImages/{res}")
        names = wanted
    # Check every sequence's input before the first frame is tracked.
    inputs = []
    for seq in names:
        frames = open_video(root / "JPEGImages" / res / seq)
        annotations = sequence_annotations(root, seq, res)
        if not annotations:
            raise TwoDError(f"{root / 'Annotations' / res / seq}: no annotation PNG")
        first = annotations[0]
        if first.stem != frames.names[0]:
            raise TwoDError(
                f"{first}: the first annotation is not of the first frame {frames.names[0]}"
            )
        inputs.append((seq, frames, mask_prompts(first, 0, frames.size, None)))
    models = Models.load(cfg, device, extractor_for)
    started, total = time.perf_counter(), 0

    def build(tmp: Path) -> None:
        nonlocal total
        for seq, frames, prompts in inputs:
            with tqdm(total=len(frames), desc=seq, unit="frame") as bar:
                for t in run_method(cfg, frames, prompts, device, models):
                    write_index_png(tmp / seq / f"{t.name}.png", t.index_map(frames.size))
                    bar.update(1)
                    total += 1

    replace_folder(cfg.out, build)
    fps = total / max(time.perf_counter() - started, 1e-9)
    print(
        f"tracked {len(inputs)} sequence(s), {total} frames ({fps:.1f} frames/s); wrote "
        f"{cfg.out}/SEQ/*.png; score with: omnivision eval davis --pred {cfg.out} --gt {root}"
    )


def track_main(argv: list[str], prog: str) -> int:
    cfg: TrackCommand = tyro.cli(TrackCommand, args=argv, prog=prog, description=DESCRIPTION)
    if (cfg.video is None) == (cfg.davis is None):
        raise TwoDError("give --video IN.mp4|FRAMES_DIR, or --davis ROOT (one of them)")
    if cfg.short_side < 1:
        raise TwoDError(f"--short-side {cfg.short_side}: want a positive number of pixels")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = {}

    def extractor_for():
        from .extractors import load_extractor

        if "x" not in loaded:
            loaded["x"] = load_extractor(
                cfg.backbone, short_side=cfg.short_side, device=device, precision=cfg.precision
            )
        return loaded["x"]

    if cfg.davis is not None:
        if cfg.click or cfg.box or cfg.mask or cfg.ref:
            raise TwoDError(
                "--davis takes each sequence's first annotation as the prompt: drop --click/--box/--mask/--ref"
            )
        track_davis(cfg, device, extractor_for)
    else:
        track_video(cfg, device, extractor_for)
    return 0
