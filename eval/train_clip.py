"""A tiny OpenCLIP and a text bridge trained for the demo scene, so the language path runs offline.

`train_scene_clip` trains a small OpenCLIP (`SCENE_CLIP_CONFIG`) from scratch, contrastively, on
crops of the demo scene's training views (`TRAIN_VIEWS`; `EVAL_VIEWS` are never seen) captioned
with the object they show. The crops are the kinds the dense-CLIP pipelines make at test time:
- object crops: an object's box, squared, scaled and shifted at random;
- mask crops: an object's pixels, black outside, padded to a black square (LangSplat);
- sliding crops: squares of 0.08-0.55 of the short side centred anywhere, black past the image
  edge (LERF's multi-scale windows);
- context crops: large rectangles of any aspect.
A square crop is captioned with the object that dominates it (`crop_class`): the table when it is
mostly table, else a generic phrase ("object", "things", "stuff", "texture", ...: LERF's canonical
negatives among them), so those negatives land on mixed and empty crops and lose to an object's
name on its own crops. Captions are a template around a name or synonym ("a photo of a cup").
The loss is a symmetric InfoNCE over the batch's distinct captions with a learnable logit scale as
CLIP: an image's positive is its caption (other captions of its class are left out), a caption's
positives are all images of its class.

`train_scene_bridge` trains the text bridge (`twod.bridge`) from the trained CLIP's text tower to
the weight-free `colour` features, on phrase-polygon pairs from the same training views.

Both write a folder that is reused when its `training.json` fingerprint (scene, views, seed,
settings) matches. Files are written to temporary names and renamed; `training.json` is removed
first and written last, so a folder holding one is complete.

`clip_pointing` and `bridge_pointing` score a model on the eval views: per category and view, is
the argmax of its relevancy (or bridge cosine) map inside the object's box / mask.
`negatives_beaten` checks the object crops themselves against LERF's canonical negatives.

Measured (tests/test_eval_train.py, the default 200 training steps, seed 0): on the 6 eval views
x 10 phrases (60 queries; an object's box covers 2.2% of the image on average, the chance level),
LERF relevancy on `lerf_features` points into the box for 100%, on mask crops of the rendered
object masks (LangSplat with the true masks for SAM's) for 100%; the phrase beats every canonical
negative on 98.3% of object box and mask crops; the bridge on `colour` features points right for
93.3% (the white plate loses to white background beside the table's edge in the two high views).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

EVAL_VIEWS: tuple[int, ...] = (1, 4, 7, 10, 13, 16)
"""Demo views held out of all training (4 of the low ring, 2 of the high ring)."""
TRAIN_VIEWS: tuple[int, ...] = tuple(i for i in range(18) if i not in EVAL_VIEWS)
"""The other 12 demo views."""
NUM_OBJECTS = 8
"""Object ids 0 (the table) .. 7 in the demo scene."""
TABLE = 0
MIN_PIXELS = 30
"""An object counts as visible in a view when it covers this many pixels."""
GENERIC = NUM_OBJECTS
"""Class of crops that show no single object (mixed, empty, background)."""

CATEGORIES: dict[str, int] = {
    "red mug": 1,
    "blue box": 2,
    "green ball": 3,
    "yellow cone": 4,
    "purple torus": 5,
    "orange can": 6,
    "white plate": 7,
    "coffee mug": 1,
    "soda can": 6,
    "dinner plate": 7,
}
"""The benchmark's phrases -> demo object id (the table is background, not a category)."""
NAMES: dict[int, tuple[str, ...]] = {
    0: ("wooden table", "table", "wooden tabletop"),
    1: ("red mug", "mug", "cup", "coffee mug", "red cup"),
    2: ("blue box", "box", "cube", "blue cube"),
    3: ("green ball", "ball", "sphere", "green sphere"),
    4: ("yellow cone", "cone", "yellow cone shape"),
    5: ("purple torus", "torus", "ring", "purple ring", "donut"),
    6: ("orange can", "can", "soda can", "orange soda can"),
    7: ("white plate", "plate", "dinner plate", "white dinner plate"),
}
"""Names and synonyms each object is captioned with (templated)."""
GENERIC_CAPTIONS = (
    "object", "things", "stuff", "texture", "an object", "objects", "some things", "a texture",
)  # fmt: skip
"""Captions of crops that show no single object; they include LERF's canonical negatives."""
TEMPLATES = ("a photo of a {}", "{}", "the {}", "a {}", "a photo of the {}", "a picture of a {}")

SCENE_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 128, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
"""OpenCLIP `CLIP(**config)`: a 32-pixel ViT of 8-pixel patches (16 tokens) and a 16-token text
tower with the standard vocabulary, so `open_clip.get_tokenizer` works on the saved folder. Colour
and coarse shape tell the demo's objects apart, and a step at 32 pixels costs about a quarter of
one at 64 (the patch count), so 32 pixels buys more steps."""
PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
}
FORMAT = "omnivision.scene_clip/1"
"""Part of every fingerprint: bump it when training changes."""
TRAINING_FILE = "training.json"


CLIP_STEPS = 200
"""Default optimizer steps of `train_scene_clip` (128 crops each)."""


@dataclass(frozen=True)
class ClipTrainConfig:
    """How `train_scene_clip` trains, besides its steps (recorded in the fingerprint)."""

    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 40
    weight_decay: float = 0.05
    mix: tuple[float, float, float, float] = (0.4, 0.3, 0.2, 0.1)
    """Shares of sliding, object, mask and context crops in a batch."""


# --------------------------------------------------------------------------------------------
# Views: images and rendered object-id maps


@dataclass
class SceneView:
    """One demo view: the image and the object id of each pixel (-1 where no object is)."""

    index: int
    image_path: Path
    image: Float[Tensor, "H W 3"]
    object_ids: Int[Tensor, "H W"]

    def mask(self, object_id: int) -> Tensor:
        return self.object_ids == object_id


def object_id_map(scene: Any, index: int) -> Int[Tensor, "H W"]:
    """The rendered object id of each pixel of camera `index` (-1 where alpha <= 0.5)."""
    from omnivision.scenes.demo import render_object_ids

    return render_object_ids(scene.gaussians, scene.cameras, index, NUM_OBJECTS)


def load_demo_scene(scene_dir: str | Path) -> Any:
    """The demo scene (`scenes.load.Scene`), checked: cameras with images, per-Gaussian ids."""
    from omnivision.scenes.errors import SceneError
    from omnivision.scenes.load import load_scene

    scene = load_scene(scene_dir)
    if scene.cameras is None or scene.cameras.image_paths is None:
        raise SceneError(scene.root, "needs cameras with images (write_demo_scene writes them)")
    if "object_id" not in scene.gaussians.extras:
        raise SceneError(scene.gaussians_file, "no object_id field (not the demo scene)")
    return scene


def scene_views(scene: Any, views: Sequence[int]) -> list[SceneView]:
    """Images and rendered object-id maps of a loaded demo scene's `views`."""
    from omnivision.twod.io import read_image

    paths = scene.cameras.image_paths
    return [SceneView(i, paths[i], read_image(paths[i]), object_id_map(scene, i)) for i in views]


def load_views(scene_dir: str | Path, views: Sequence[int]) -> list[SceneView]:
    """Images and object-id maps of the demo scene's `views`."""
    return scene_views(load_demo_scene(scene_dir), views)


# --------------------------------------------------------------------------------------------
# Crops and their classes (pure functions on tensors)


def crop_class(full: Float[Tensor, "B K"], centre: Float[Tensor, "B K"]) -> Int[Tensor, "B"]:
    """Class of crops from their pixel counts per id column [padding, background, 0..7] over the
    whole crop (`full`) and over its central half (`centre`, half the width and height).

    A crop is named for what lies at its centre, as LERF's maps read a crop's embedding at its
    centre pixel: an object (1..7) that fills a quarter of the centre, twice the runner-up, and
    5% of the crop; else the table when it fills 60% of the centre and no object 10% of it;
    else GENERIC (background, padding, or a mix)."""
    share = centre[:, 2:] / centre.sum(1, keepdim=True).clamp_min(1)
    whole = full[:, 2:] / full.sum(1, keepdim=True).clamp_min(1)
    top2 = share[:, 1:].topk(2, dim=1)
    best, first, second = top2.indices[:, 0] + 1, top2.values[:, 0], top2.values[:, 1]
    spread = whole.gather(1, best[:, None])[:, 0]
    dominant = (first >= 0.25) & (first >= 2 * second) & (spread >= 0.05)
    table = (share[:, TABLE] >= 0.6) & (first < 0.1)
    out = torch.full_like(best, GENERIC)
    out[table] = TABLE
    out[dominant] = best[dominant]
    return out


class CropSampler:
    """Random training crops of a set of views with their classes (see the module docstring).

    Views are padded with black by `margin` pixels so sliding crops may pass the image edge;
    per-id integral images give the pixel counts of any box in O(1)."""

    def __init__(self, views: Sequence[SceneView], side: int, margin: int = 72) -> None:
        from omnivision.twod.clip_dense import _mask_crop

        self.views, self.side, self.margin = list(views), side, margin
        self.images: list[Tensor] = []
        self.integrals: list[Tensor] = []
        self.boxes: list[dict[int, tuple[int, int, int, int]]] = []
        self.mask_crops: list[dict[int, Tensor]] = []
        self.pixels: list[dict[int, Tensor]] = []
        for view in self.views:
            chw = view.image.permute(2, 0, 1)
            self.images.append(F.pad(chw, (margin,) * 4, value=0.0))
            ids = F.pad(view.object_ids + 2, (margin,) * 4, value=0)  # 0 pad, 1 bg, 2.. objects
            onehot = F.one_hot(ids.long(), NUM_OBJECTS + 2).permute(2, 0, 1).double()
            self.integrals.append(F.pad(onehot.cumsum(1).cumsum(2), (1, 0, 1, 0)))
            present = [k for k in range(NUM_OBJECTS) if int(view.mask(k).sum()) >= MIN_PIXELS]
            self.boxes.append({k: _mask_box(view.mask(k)) for k in present})
            self.pixels.append({k: torch.nonzero(view.mask(k)) for k in present})
            self.mask_crops.append({k: _mask_crop(chw, view.mask(k), side) for k in present})

    def sample(
        self, n: int, generator: torch.Generator, mix: Sequence[float]
    ) -> tuple[Float[Tensor, "B 3 S S"], Int[Tensor, "B"]]:
        """n crops (n, 3, side, side) in [0, 1] and their classes (n,)."""
        kinds = torch.multinomial(torch.tensor(mix), n, replacement=True, generator=generator)
        makers = (self._sliding, self._object, self._mask, self._context)
        crops, classes = [], []
        for kind in kinds.tolist():
            view = int(torch.randint(len(self.views), (1,), generator=generator))
            crop, cls = makers[kind](view, generator)
            if float(torch.rand((), generator=generator)) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop.clamp(0, 1))
            classes.append(cls)
        return torch.stack(crops), torch.tensor(classes)

    def _counts(self, view: int, x0: int, y0: int, w: int, h: int) -> Tensor:
        s = self.integrals[view]
        return (s[:, y0 + h, x0 + w] - s[:, y0, x0 + w] - s[:, y0 + h, x0] + s[:, y0, x0]).float()

    def _crop(self, view: int, x0: int, y0: int, w: int, h: int) -> tuple[Tensor, int]:
        """The (padded-pixel) box, resized to the model's square, and its class."""
        full = self._counts(view, x0, y0, w, h)
        centre = self._counts(view, x0 + w // 4, y0 + h // 4, max(1, w // 2), max(1, h // 2))
        cls = int(crop_class(full[None], centre[None])[0])
        region = self.images[view][:, y0 : y0 + h, x0 : x0 + w]
        size = (self.side, self.side)
        return F.interpolate(region[None], size=size, mode="bicubic", antialias=True)[0], cls

    def _square(self, view: int, cx: float, cy: float, size: float) -> tuple[Tensor, int]:
        """The square of `size` pixels centred at image point (cx, cy) and its class."""
        _, H, W = self.images[view].shape
        side = int(min(max(4, round(size)), H, W))
        x0 = min(max(round(cx - side / 2) + self.margin, 0), W - side)
        y0 = min(max(round(cy - side / 2) + self.margin, 0), H - side)
        return self._crop(view, x0, y0, side, side)

    def _sliding(self, view: int, g: torch.Generator) -> tuple[Tensor, int]:
        H, W = self.views[view].object_ids.shape
        r = torch.rand(3, generator=g).tolist()
        return self._square(view, r[0] * W, r[1] * H, (0.08 + 0.47 * r[2]) * min(H, W))

    def _object(self, view: int, g: torch.Generator) -> tuple[Tensor, int]:
        """A square on an object: around its box (1-2.5 times its size), or a LERF-sized
        window centred on one of its pixels."""
        keys = [k for k in self.boxes[view] if k != TABLE]
        k = keys[int(torch.randint(len(keys), (1,), generator=g))]
        r = torch.rand(4, generator=g).tolist()
        if r[3] < 0.5:
            x0, y0, x1, y1 = self.boxes[view][k]
            size = max(x1 - x0, y1 - y0) * (1.0 + 1.5 * r[0])
            cx = (x0 + x1) / 2 + (r[1] - 0.5) * 0.3 * size
            cy = (y0 + y1) / 2 + (r[2] - 0.5) * 0.3 * size
            return self._square(view, cx, cy, size)
        pixels = self.pixels[view][k]
        y, x = pixels[int(r[1] * len(pixels))].tolist()
        H, W = self.views[view].object_ids.shape
        return self._square(view, x + 0.5, y + 0.5, (0.08 + 0.47 * r[0]) * min(H, W))

    def _mask(self, view: int, g: torch.Generator) -> tuple[Tensor, int]:
        keys = list(self.mask_crops[view])
        k = keys[int(torch.randint(len(keys), (1,), generator=g))]
        return self.mask_crops[view][k], k

    def _context(self, view: int, g: torch.Generator) -> tuple[Tensor, int]:
        H, W = self.views[view].object_ids.shape
        r = torch.rand(4, generator=g).tolist()
        h, w = round(H * (0.3 + 0.7 * r[0])), round(W * (0.3 + 0.7 * r[1]))
        y0, x0 = round((H - h) * r[2]) + self.margin, round((W - w) * r[3]) + self.margin
        return self._crop(view, x0, y0, w, h)


def _mask_box(mask: Tensor) -> tuple[int, int, int, int]:
    """xyxy (exclusive max) pixel box of a non-empty mask."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def caption(cls: int, generator: torch.Generator) -> str:
    """A random caption of a class: a template around one of its names, or a generic phrase."""
    if cls == GENERIC:
        return GENERIC_CAPTIONS[
            int(torch.randint(len(GENERIC_CAPTIONS), (1,), generator=generator))
        ]
    names = NAMES[cls]
    name = names[int(torch.randint(len(names), (1,), generator=generator))]
    template = TEMPLATES[int(torch.randint(len(TEMPLATES), (1,), generator=generator))]
    return template.format(name)


def caption_loss(
    images: Float[Tensor, "B E"],
    texts: Float[Tensor, "T E"],
    image_caption: Int[Tensor, "B"],
    image_class: Int[Tensor, "B"],
    text_class: Int[Tensor, "T"],
    logit_scale: Tensor,
) -> Tensor:
    """Symmetric InfoNCE between B unit image embeddings and T distinct unit caption embeddings:
    image -> its caption (other captions of its class left out), caption -> the mean over all
    images of its class (the captions' positives)."""
    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * images @ texts.T
    same = image_class[:, None] == text_class[None, :]
    own = F.one_hot(image_caption, texts.shape[0]).bool()
    to_text = F.cross_entropy(logits.masked_fill(same & ~own, float("-inf")), image_caption)
    log_prob = logits.T.log_softmax(dim=1)
    positives = same.T.float()
    to_image = -((log_prob * positives).sum(1) / positives.sum(1)).mean()
    return (to_text + to_image) / 2


# --------------------------------------------------------------------------------------------
# Training


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _scene_fingerprint(scene: Any, views: Sequence[int]) -> dict[str, Any]:
    """What training read: the Gaussians file and the images of `views` (hashes)."""
    images = hashlib.sha256()
    for i in views:
        images.update(_sha256(scene.cameras.image_paths[i]).encode())
    return {
        "ply_sha256": _sha256(scene.gaussians_file),
        "images_sha256": images.hexdigest(),
        "views": list(views),
    }


def _cached(out_dir: Path, fingerprint: dict[str, Any], files: Sequence[str]) -> bool:
    path = out_dir / TRAINING_FILE
    if not path.is_file() or not all((out_dir / f).is_file() for f in files):
        return False
    try:
        return json.loads(path.read_text()).get("fingerprint") == fingerprint
    except (json.JSONDecodeError, OSError):
        return False


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from omnivision.twod.io import write_atomically

    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))


def train_scene_clip(
    scene_dir: str | Path,
    out_dir: str | Path,
    *,
    views: Sequence[int] = TRAIN_VIEWS,
    seed: int = 0,
    steps: int = CLIP_STEPS,
    progress: bool = True,
    config: ClipTrainConfig = ClipTrainConfig(),
    threads: int | None = 1,
) -> Path:
    """Train the scene's tiny OpenCLIP on crops of `views` and save it as a local OpenCLIP folder
    (open_clip_config.json, open_clip_model.safetensors, training.json) in `out_dir`, loadable
    with `twod.clip.load_clip(str(out_dir))`. Returns at once when `out_dir` already holds a
    model of the same fingerprint. Deterministic for a seed (on one machine and thread count).

    `threads`: torch threads while training (restored after; None keeps the caller's). One is
    the default because the tiny model's threads spin-wait on shared cores (two threads ran
    several times slower than one while other jobs shared the 2 cores)."""
    from safetensors.torch import save_file

    from omnivision.twod.io import write_atomically

    out_dir = Path(out_dir)
    scene = load_demo_scene(scene_dir)
    views = tuple(int(v) for v in views)
    fingerprint = {
        "format": FORMAT,
        **_scene_fingerprint(scene, views),
        "seed": seed,
        "model_cfg": SCENE_CLIP_CONFIG,
        "train": {**asdict(config), "mix": list(config.mix)},
        "steps": steps,
    }
    files = ("open_clip_config.json", "open_clip_model.safetensors")
    if _cached(out_dir, fingerprint, files):
        return out_dir
    started = time.perf_counter()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads or before)
        model, final_loss = _train_clip(scene_views(scene, views), seed, steps, config, progress)
    finally:
        torch.set_num_threads(before)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TRAINING_FILE).unlink(missing_ok=True)
    saved = {"model_cfg": SCENE_CLIP_CONFIG, "preprocess_cfg": PREPROCESS}
    _write_json(out_dir / files[0], saved)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomically(out_dir / files[1], lambda tmp: save_file(state, str(tmp)))
    record = {
        "fingerprint": fingerprint,
        "final_loss": final_loss,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(out_dir / TRAINING_FILE, record)
    return out_dir


def _train_clip(
    views: list[SceneView], seed: int, steps: int, config: ClipTrainConfig, progress: bool
) -> tuple[Any, float]:
    """The trained model (eval mode) and its mean loss over the last 20 steps."""
    import open_clip
    from tqdm import tqdm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**copy.deepcopy(SCENE_CLIP_CONFIG))
    # The 49408-word embedding stays at its random init: few words are used, and leaving it out
    # of the optimizer saves most of the step's time.
    model.token_embedding.requires_grad_(False)
    tokenizer = open_clip.SimpleTokenizer(
        context_length=SCENE_CLIP_CONFIG["text_cfg"]["context_length"]
    )
    side = SCENE_CLIP_CONFIG["vision_cfg"]["image_size"]
    sampler = CropSampler(views, side)
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(PREPROCESS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS["std"]).view(1, 3, 1, 1)
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    rest = [p for p in trained if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, steps - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * t))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="train scene CLIP", unit="step", disable=not progress)
    for _ in bar:
        crops, classes = sampler.sample(config.batch_size, generator, config.mix)
        brightness = 1 + 0.1 * (torch.rand(len(crops), 1, 1, 1, generator=generator) * 2 - 1)
        pixels = ((crops * brightness).clamp(0, 1) - mean) / std
        captions = [caption(int(c), generator) for c in classes]
        distinct = sorted(set(captions))
        index = {c: i for i, c in enumerate(distinct)}
        text_class = torch.tensor([int(classes[captions.index(c)]) for c in distinct])
        image_caption = torch.tensor([index[c] for c in captions])
        images = F.normalize(model.encode_image(pixels), dim=-1)
        texts = F.normalize(model.encode_text(tokenizer(distinct)), dim=-1)
        loss = caption_loss(images, texts, image_caption, classes, text_class, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = losses[-20:]
    return model, float(sum(tail) / len(tail))


def mask_polygon(mask: Tensor) -> list[tuple[float, float]]:
    """The outline of a mask's largest connected part as (x, y) pixel vertices (pixel centres at
    +0.5, the contour at the half level between inside and outside)."""
    import contourpy

    padded = np.pad(mask.numpy().astype(np.float64), 1)
    lines: list[np.ndarray] = list(contourpy.contour_generator(z=padded).lines(0.5))  # type: ignore[arg-type]
    outline = max(lines, key=lambda v: abs(_shoelace(v)))
    return [(float(x) - 0.5, float(y) - 0.5) for x, y in outline]  # back to unpadded pixels


def _shoelace(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def scene_pairs(views: Sequence[SceneView]) -> list[Any]:
    """Bridge training pairs: every name of every visible object (the table included), its
    polygon from the rendered id map, on each view's image file."""
    from omnivision.twod.bridge import make_pair

    pairs = []
    for view in views:
        for k in range(NUM_OBJECTS):
            mask = view.mask(k)
            if int(mask.sum()) < MIN_PIXELS:
                continue
            polygon = mask_polygon(mask)
            for name in NAMES[k]:
                pairs.append(make_pair(view.image_path, name, polygon=polygon))
    return pairs


BRIDGE_TRAIN = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "patches_per_image": 128}
"""`twod.bridge.TrainConfig` settings of `train_scene_bridge` (plus its seed)."""
BRIDGE_BACKBONE = "colour"


def train_scene_bridge(
    scene_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    *,
    views: Sequence[int] = TRAIN_VIEWS,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Train the text bridge from the scene CLIP in `clip_dir` (its text tower, frozen) to the
    weight-free `colour` features (short side 240, the demo's image height) on `scene_pairs` of
    `views`; saved with `TextBridge.save` (bridge.json records `clip_dir` as an absolute path)
    plus training.json in `out_dir`. Returns at once when `out_dir` holds a bridge of the same
    fingerprint."""
    from omnivision.scenes.errors import SceneError
    from omnivision.twod.bridge import BridgeConfig, TextBridge, TrainConfig, train_bridge
    from omnivision.twod.clip import load_clip
    from omnivision.twod.extractors import load_extractor

    out_dir, clip_dir = Path(out_dir), Path(clip_dir).resolve()
    clip_weights = clip_dir / "open_clip_model.safetensors"
    if not clip_weights.is_file():
        raise SceneError(clip_dir, "no open_clip_model.safetensors (run train_scene_clip first)")
    scene = load_demo_scene(scene_dir)
    views = tuple(int(v) for v in views)
    fingerprint = {
        "format": FORMAT,
        **_scene_fingerprint(scene, views),
        "seed": seed,
        "clip": str(clip_dir),
        "clip_sha256": _sha256(clip_weights),
        "backbone": BRIDGE_BACKBONE,
        "train": BRIDGE_TRAIN,
    }
    files = ("bridge.json", "bridge.safetensors")
    if _cached(out_dir, fingerprint, files):
        return out_dir
    started = time.perf_counter()
    clip = load_clip(str(clip_dir), device="cpu")
    extractor = load_extractor(BRIDGE_BACKBONE, short_side=240)
    config = BridgeConfig.for_models(clip, extractor, clip_model=str(clip_dir))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bridge = TextBridge(clip, config)
    result = train_bridge(
        bridge,
        scene_pairs(scene_views(scene, views)),
        extractor,
        TrainConfig(**BRIDGE_TRAIN, seed=seed, device="cpu"),
        progress=progress,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TRAINING_FILE).unlink(missing_ok=True)
    result.bridge.save(out_dir)
    record = {
        "fingerprint": fingerprint,
        "final_loss": result.history[-1].loss,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(out_dir / TRAINING_FILE, record)
    return out_dir


# --------------------------------------------------------------------------------------------
# Pointing on the eval views


@dataclass
class PointingResult:
    """Pointing accuracy of one path over (view, category) queries whose object is visible."""

    path: str
    accuracy: float
    """Argmax inside the object's box (LERF's localization protocol)."""
    mask_accuracy: float
    """Argmax on the object's pixels."""
    chance: float
    """Mean fraction of the image the object's box covers (a random point's accuracy)."""
    count: int
    per_category: dict[str, float] = field(default_factory=dict)
    """Box accuracy per phrase."""
    positive: float = float("nan")
    """Mean fraction of an object's cells where the phrase beats every negative (relevancy > 0.5);
    NaN for the bridge."""


def _score(
    heat: dict[str, Tensor], view: SceneView, categories: Mapping[str, int]
) -> list[tuple[str, bool, bool, float]]:
    """(phrase, argmax in box, argmax on mask, box area fraction) per heatmap (h, w), upsampled
    bilinearly to the view's pixels."""
    H, W = view.object_ids.shape
    rows = []
    for phrase, heatmap in heat.items():
        mask = view.mask(categories[phrase])
        x0, y0, x1, y1 = _mask_box(mask)
        pixels = F.interpolate(heatmap[None, None].float(), size=(H, W), mode="bilinear")[0, 0]
        peak = int(torch.argmax(pixels))
        y, x = divmod(peak, W)
        in_box = x0 <= x < x1 and y0 <= y < y1
        rows.append((phrase, in_box, bool(mask[y, x]), (x1 - x0) * (y1 - y0) / (H * W)))
    return rows


def _summarise(
    path: str, rows: list[tuple[str, bool, bool, float]], positive: float = float("nan")
) -> PointingResult:
    n = len(rows)
    per: dict[str, list[bool]] = {}
    for phrase, hit, _, _ in rows:
        per.setdefault(phrase, []).append(hit)
    return PointingResult(
        path=path,
        accuracy=sum(r[1] for r in rows) / n,
        mask_accuracy=sum(r[2] for r in rows) / n,
        chance=sum(r[3] for r in rows) / n,
        count=n,
        per_category={p: sum(h) / len(h) for p, h in per.items()},
        positive=positive,
    )


def _visible(view: SceneView, categories: Mapping[str, int]) -> list[str]:
    return [p for p, k in categories.items() if int(view.mask(k).sum()) >= MIN_PIXELS]


def clip_pointing(
    clip: Any,
    views: Sequence[SceneView],
    path: Literal["lerf", "masks"] = "lerf",
    categories: Mapping[str, int] = CATEGORIES,
) -> PointingResult:
    """LERF relevancy (canonical negatives) of each category on dense CLIP maps of each view,
    merged over levels (`mean_of_levels`), upsampled, argmax. `lerf`: multi-scale crops
    (`lerf_features`); `masks`: LangSplat mask crops of the rendered object masks (a stand-in for
    SAM's), one level."""
    from omnivision.lift.pipeline import mean_of_levels
    from omnivision.twod.clip_dense import (
        CANONICAL_NEGATIVES,
        langsplat_features,
        lerf_features,
        relevancy,
    )

    negatives = clip.encode_text(list(CANONICAL_NEGATIVES))
    queries = dict(zip(categories, clip.encode_text(list(categories)), strict=True))
    rows, positive = [], []
    for view in views:
        if path == "lerf":
            dense = lerf_features(clip, view.image)
        else:
            present = [k for k in range(NUM_OBJECTS) if int(view.mask(k).sum()) >= MIN_PIXELS]
            masks = torch.stack([view.mask(k) for k in present])
            dense = langsplat_features(clip, view.image, masks=[masks])
        merged = mean_of_levels(dense.maps)
        heat = {p: relevancy(merged, queries[p], negatives) for p in _visible(view, categories)}
        rows += _score(heat, view, categories)
        for p, scores in heat.items():
            cells = _cells(view.mask(categories[p]), (scores.shape[0], scores.shape[1]))
            positive.append(float((scores[cells] > 0.5).float().mean()))
    return _summarise(path, rows, sum(positive) / len(positive))


def negatives_beaten(
    clip: Any, views: Sequence[SceneView], categories: Mapping[str, int] = CATEGORIES
) -> float:
    """Fraction of (view, category, crop) where the phrase's cosine with the crop beats every
    canonical negative's; crops: the object's box squared (1.2 times its side), and its mask crop."""
    from omnivision.twod.clip_dense import CANONICAL_NEGATIVES, _mask_crop

    texts = clip.encode_text([*categories, *CANONICAL_NEGATIVES])
    queries, negatives = texts[: len(categories)], texts[len(categories) :]
    index = {p: i for i, p in enumerate(categories)}
    wins = []
    for view in views:
        chw = view.image.permute(2, 0, 1)
        for p in _visible(view, categories):
            mask = view.mask(categories[p])
            x0, y0, x1, y1 = _mask_box(mask)
            half = max(x1 - x0, y1 - y0) * 0.6
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = chw[
                :,
                max(0, round(cy - half)) : round(cy + half),
                max(0, round(cx - half)) : round(cx + half),
            ]
            crops = [box, _mask_crop(chw, mask, clip.image_size)]
            for crop in crops:
                e = clip.encode_crops(crop[None])[0]
                wins.append(float(e @ queries[index[p]]) > float((negatives @ e).max()))
    return sum(wins) / len(wins)


def _cells(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cells of a (h, w) grid more than half covered by a (H, W) mask."""
    return F.adaptive_avg_pool2d(mask[None, None].float(), grid)[0, 0] > 0.5


def bridge_pointing(
    bridge: Any,
    extractor: Any,
    views: Sequence[SceneView],
    categories: Mapping[str, int] = CATEGORIES,
) -> PointingResult:
    """Cosine of `bridge([phrase])` with the extractor's normalised patch features, upsampled,
    argmax, for each category on each view."""
    from omnivision.twod.bridge import text_heatmap

    with torch.no_grad():
        vectors = dict(zip(categories, bridge(list(categories)).cpu(), strict=True))
    rows = []
    for view in views:
        features = extractor.extract([view.image])
        phrases = _visible(view, categories)
        maps = text_heatmap(torch.stack([vectors[p] for p in phrases]), features).cpu()
        rows += _score(dict(zip(phrases, maps, strict=True)), view, categories)
    return _summarise("bridge", rows)
