"""The text bridge: CLIP text embeddings -> DINO patch-feature space, so a phrase scores patches.

`TextBridge` = a frozen OpenCLIP text encoder (`ClipModel`) + a trained 2-layer MLP (Linear,
LayerNorm, GELU, Linear) to the backbone's dimension; its outputs are L2-normalised and compared
to L2-normalised patch features by cosine. Saved as `bridge.safetensors` (MLP + temperature only,
never CLIP) and `bridge.json` (a `BridgeConfig` naming the CLIP model and the backbone).

Training (`train_bridge`) reads (image, phrase, region) `Pair`s: a region's feature is the mean of
the normalised patch features whose centres lie inside it. Features are computed once per image
(and kept on disk beside the checkpoints) then reused every epoch. The loss is a symmetric InfoNCE:
each phrase against the batch's regions plus sampled patches of the batch's images (patches inside
a region with the same phrase are not negatives), and each region against the batch's phrases.

Readers: JSON lines (`read_pairs_jsonl`), RefCOCO/RefCOCO+/RefCOCOg (`read_refcoco`) and Flickr30k
Entities (`read_flickr30k_entities`), each returning `Pair`s.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from .clip import ClipModel
from .features import FeatureExtractor, PatchFeatures, TwoDError

CONFIG_FILE = "bridge.json"
WEIGHTS_FILE = "bridge.safetensors"
STATE_FILE = "training_state.pt"
CACHE_FILE = "region_cache.safetensors"
FORMAT = "omnivision-text-bridge"

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------
# Pairs and their regions


@dataclass(frozen=True)
class Pair:
    """A phrase naming a region of an image: `box` xyxy pixels (always set; the polygon's bounds
    when a polygon is given) and optionally a `polygon` ((x, y) pixel vertices) that is then the
    region. A pixel or patch belongs to the region when its centre lies inside."""

    image: Path
    phrase: str
    box: Box
    polygon: tuple[tuple[float, float], ...] | None = None

    def contains(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Whether points (x, y) in pixels lie inside the region (same-shape bool array)."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        if self.polygon is None:
            x0, y0, x1, y1 = self.box
            return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        from matplotlib.path import Path as PolygonPath

        points = np.stack([xs.ravel(), ys.ravel()], axis=1)
        return PolygonPath(self.polygon).contains_points(points).reshape(xs.shape)

    def mask(self, size: tuple[int, int]) -> Bool[Tensor, "H W"]:
        """The region as a bool[H, W] mask of the image (pixel centres inside)."""
        H, W = size
        ys, xs = np.mgrid[0:H, 0:W] + 0.5
        return torch.from_numpy(self.contains(xs, ys))


def normalize_phrase(phrase: str) -> str:
    """Lower-case, single-spaced: phrases equal under this name the same thing."""
    return " ".join(phrase.lower().split())


def make_pair(
    image: str | Path,
    phrase: str,
    box: Sequence[float] | None = None,
    polygon: Sequence[Sequence[float]] | None = None,
    where: str = "pair",
) -> Pair:
    """A validated `Pair`; `where` names the source (file:line) in the one-line error."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise TwoDError(f"{where}: empty phrase")
    if polygon is not None:
        try:
            vertices = tuple((float(x), float(y)) for x, y in polygon)
        except (TypeError, ValueError):
            raise TwoDError(f"{where}: polygon must be [[x, y], ...] pixels") from None
        if len(vertices) < 3:
            raise TwoDError(f"{where}: a polygon needs at least 3 vertices, got {len(vertices)}")
        xs, ys = [v[0] for v in vertices], [v[1] for v in vertices]
        bounds = (min(xs), min(ys), max(xs), max(ys))
        return Pair(Path(image), phrase.strip(), _check_box(bounds, where), vertices)
    if box is None:
        raise TwoDError(f"{where}: needs a box [x0, y0, x1, y1] or a polygon [[x, y], ...]")
    return Pair(Path(image), phrase.strip(), _check_box(box, where))


def _check_box(box: Sequence[float], where: str) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise TwoDError(f"{where}: box must be [x0, y0, x1, y1] pixels, got {box!r}") from None
    if not (x1 > x0 and y1 > y0) or not all(map(math.isfinite, (x0, y0, x1, y1))):
        raise TwoDError(f"{where}: box {[x0, y0, x1, y1]} is empty (need x1 > x0, y1 > y0)")
    return x0, y0, x1, y1


def read_pairs_jsonl(path: str | Path, images: str | Path | None = None) -> list[Pair]:
    """Pairs from JSON lines `{"image": "rel/path.jpg", "phrase": "...", "box": [x0, y0, x1, y1]}`
    (or `"polygon": [[x, y], ...]` instead of the box); image paths are relative to `images`
    (default: the jsonl's folder). Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise TwoDError(f"{path}: no such pairs file (JSON lines with image, phrase, box)")
    root = Path(images) if images is not None else path.parent
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TwoDError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(record, dict) or "image" not in record:
            raise TwoDError(f"{where}: expected an object with image, phrase and box or polygon")
        pairs.append(
            make_pair(
                root / record["image"],
                record.get("phrase", ""),
                record.get("box"),
                record.get("polygon"),
                where,
            )
        )
    if not pairs:
        raise TwoDError(f"{path}: no pairs in the file")
    return pairs


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain containers only (the RefCOCO refs files hold lists, dicts, strings and
    numbers): a pickle that asks for any class is refused rather than run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a refs file")


def read_refcoco(
    root: str | Path,
    split: str | None = "train",
    images: str | Path | None = None,
    split_by: str | None = None,
) -> list[Pair]:
    """RefCOCO / RefCOCO+ / RefCOCOg pairs from a dataset folder holding `refs(unc).p` (or
    `refs(umd).p`, `refs(google).p`; `split_by` picks one) and `instances.json`.

    Each ref of the split (`train`, `val`, `testA`, `testB`, `test`; None = all) gives one pair
    per sentence: the ref's annotation box (COCO `bbox` xywh -> xyxy) on the image's `file_name`
    under `images` (default `root/images`).
    """
    root = Path(root)
    choices = [split_by] if split_by else ["unc", "umd", "google"]
    refs_file = next(
        (root / f"refs({c}).p" for c in choices if (root / f"refs({c}).p").is_file()), None
    )
    if refs_file is None:
        raise TwoDError(
            f"{root}: no {' or '.join(f'refs({c}).p' for c in choices)} (a RefCOCO folder)"
        )
    instances_file = root / "instances.json"
    if not instances_file.is_file():
        raise TwoDError(f"{root}: no instances.json beside {refs_file.name}")
    try:
        with refs_file.open("rb") as f:
            refs = _PlainUnpickler(f, encoding="utf-8", errors="replace").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise TwoDError(f"{refs_file}: not a RefCOCO refs pickle ({err})") from None
    try:
        instances = json.loads(instances_file.read_text())
        boxes = {a["id"]: a["bbox"] for a in instances["annotations"]}
        file_names = {im["id"]: im["file_name"] for im in instances["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise TwoDError(f"{instances_file}: not a COCO instances file ({err})") from None
    image_root = Path(images) if images is not None else root / "images"
    pairs = []
    for ref in refs:
        if split is not None and ref["split"] != split:
            continue
        where = f"{refs_file} ref {ref.get('ref_id', '?')}"
        if ref["ann_id"] not in boxes or ref["image_id"] not in file_names:
            raise TwoDError(f"{where}: annotation {ref['ann_id']} not in {instances_file}")
        x, y, w, h = boxes[ref["ann_id"]]
        image = image_root / file_names[ref["image_id"]]
        for sentence in ref["sentences"]:
            if sentence["sent"].strip():
                pairs.append(make_pair(image, sentence["sent"], (x, y, x + w, y + h), where=where))
    if not pairs:
        splits = sorted({str(r["split"]) for r in refs})
        raise TwoDError(f"{refs_file}: no refs in split {split!r} (splits: {', '.join(splits)})")
    return pairs


_ENTITY = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]+)\]")


def read_flickr30k_entities(
    root: str | Path, split: str | None = None, images: str | Path | None = None
) -> list[Pair]:
    """Flickr30k Entities pairs: `root/Annotations/ID.xml` boxes and `root/Sentences/ID.txt`
    phrases `[/EN#id/type words]`. A phrase's region is the union box of all boxes of its entity
    (the merged-boxes protocol); entities without boxes (scene, not visual) are skipped, and a
    phrase repeated for one entity counts once. XML boxes are 1-based inclusive, returned as
    0-based xyxy with exclusive max. `split` reads the image ids from `root/SPLIT.txt`; images are
    `ID.jpg` under `images` (default `root/flickr30k-images`)."""
    import xml.etree.ElementTree as ET

    root = Path(root)
    annotations, sentences = root / "Annotations", root / "Sentences"
    if not annotations.is_dir() or not sentences.is_dir():
        raise TwoDError(f"{root}: a Flickr30k Entities folder needs Annotations/ and Sentences/")
    if split is not None:
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            raise TwoDError(f"{root}: no {split}.txt listing the {split} image ids")
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    else:
        ids = sorted(p.stem for p in annotations.glob("*.xml"))
    image_root = Path(images) if images is not None else root / "flickr30k-images"
    pairs = []
    for image_id in ids:
        xml_file, txt_file = annotations / f"{image_id}.xml", sentences / f"{image_id}.txt"
        try:
            tree = ET.parse(xml_file).getroot()
        except (OSError, ET.ParseError) as err:
            raise TwoDError(
                f"{xml_file}: not a readable Flickr30k Entities annotation ({err})"
            ) from None
        boxes: dict[str, list[Box]] = {}
        for obj in tree.iter("object"):
            bndbox = obj.find("bndbox")
            if bndbox is None:
                continue
            coords = [float(bndbox.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
            box = (coords[0] - 1, coords[1] - 1, coords[2], coords[3])
            for name in obj.iter("name"):
                boxes.setdefault((name.text or "").strip(), []).append(box)
        if not txt_file.is_file():
            raise TwoDError(f"{txt_file}: missing (the sentences of {xml_file.name})")
        image = image_root / (tree.findtext("filename") or f"{image_id}.jpg")
        seen: set[tuple[str, str]] = set()
        for number, line in enumerate(txt_file.read_text().splitlines(), start=1):
            for entity, _, words in _ENTITY.findall(line):
                key = (entity, normalize_phrase(words))
                if entity not in boxes or key in seen:
                    continue
                seen.add(key)
                group = np.array(boxes[entity])
                union = (*group[:, :2].min(0).tolist(), *group[:, 2:].max(0).tolist())
                pairs.append(make_pair(image, words, union, where=f"{txt_file}:{number}"))
    if not pairs:
        raise TwoDError(f"{root}: no phrases with boxes found")
    return pairs


# --------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class BridgeConfig:
    """What a bridge was made from and its shape; saved as bridge.json beside the weights."""

    clip_model: str
    """OpenCLIP architecture, hf-hub id or local folder of the frozen text encoder."""
    clip_pretrained: str | None
    """OpenCLIP pretrained tag (None for a local folder or hf-hub id)."""
    backbone: str
    """The feature extractor's name (`extractor.name`): the space the bridge maps into."""
    text_dim: int
    """CLIP embedding size E."""
    dino_dim: int
    """Patch-feature size D."""
    backbone_source: str = ""
    """What `load_extractor` takes to rebuild the backbone (short name, hub id or folder)."""
    short_side: int = 448
    """Short side (pixels) the backbone saw during training."""
    hidden_dim: int = 512
    """Width of the MLP's hidden layer."""
    temperature: float = 0.07
    """Initial (or fixed) softmax temperature of the contrastive loss."""
    learn_temperature: bool = True
    """Learn the temperature (as CLIP does) or keep it fixed."""

    @classmethod
    def for_models(
        cls, clip: ClipModel, extractor: FeatureExtractor, **overrides: Any
    ) -> BridgeConfig:
        """A config from a loaded CLIP and extractor; `overrides` set any other field. Pass
        `clip_model` (and `clip_pretrained`) as CLIP was loaded: for a local folder `clip.name`
        is only the folder's name, which `TextBridge.load` could not find again."""
        base: dict[str, Any] = {
            "clip_model": clip.name,
            "clip_pretrained": None,
            "backbone": extractor.name,
            "backbone_source": extractor.name,
            "text_dim": clip.embed_dim,
            "dino_dim": extractor.dim,
            "short_side": extractor.short_side,
        }
        return cls(**{**base, **overrides})

    def matches_backbone(self, name: str) -> bool:
        return name in (self.backbone, self.backbone_source)


class TextBridge(nn.Module):
    """Phrases -> unit vectors in the backbone's patch-feature space (cosine with
    `PatchFeatures.normalized()` scores patches). CLIP is frozen and not part of `state_dict`."""

    def __init__(self, clip: ClipModel, config: BridgeConfig) -> None:
        super().__init__()
        if clip.embed_dim != config.text_dim:
            raise TwoDError(
                f"CLIP {clip.name} embeds {clip.embed_dim}-d text, the bridge expects {config.text_dim}-d"
            )
        self.clip = clip
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.text_dim, config.hidden_dim),
            nn.LayerNorm(config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, config.dino_dim),
        )
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / config.temperature)),
            requires_grad=config.learn_temperature,
        )

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.logit_scale.detach()))

    def encode_phrases(self, phrases: Sequence[str], batch_size: int = 256) -> Float[Tensor, "Q E"]:
        """Frozen CLIP text embeddings (L2-normalised, CPU), usable in autograd."""
        chunks = [
            self.clip.encode_text(phrases[i : i + batch_size]).clone()
            for i in range(0, len(phrases), batch_size)
        ]
        if not chunks:
            raise TwoDError("no phrases to encode")
        return torch.cat(chunks)

    def project(self, text_embeddings: Float[Tensor, "Q E"]) -> Float[Tensor, "Q D"]:
        """CLIP embeddings -> L2-normalised vectors in the backbone's space."""
        device = self.logit_scale.device
        return F.normalize(self.mlp(text_embeddings.to(device).float()), dim=-1)

    def forward(self, phrases: Sequence[str]) -> Float[Tensor, "Q D"]:
        return self.project(self.encode_phrases(list(phrases)))

    def save(self, folder: str | Path) -> Path:
        """Write bridge.safetensors (MLP + temperature) and bridge.json into `folder`."""
        from safetensors.torch import save_file

        from .io import write_atomically

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_atomically(
            folder / WEIGHTS_FILE,
            lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}),
        )
        write_atomically(
            folder / CONFIG_FILE,
            lambda tmp: tmp.write_text(json.dumps(asdict(self.config), indent=1)),
        )
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        clip: ClipModel | None = None,
        expect_backbone: str | None = None,
        device: str | None = None,
    ) -> TextBridge:
        """A saved bridge; CLIP is loaded from the recorded model unless given. With
        `expect_backbone` (an extractor's name or source), a bridge trained on another backbone
        is an error: its vectors would mean nothing in that space."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        config = read_bridge_config(folder)
        if expect_backbone is not None and not config.matches_backbone(expect_backbone):
            raise TwoDError(
                f"{folder}: bridge trained on backbone {config.backbone!r}, not {expect_backbone!r}; "
                f"use --backbone {config.backbone_source or config.backbone} or train a bridge for it"
            )
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise TwoDError(
                f"{folder}: no {WEIGHTS_FILE} beside {CONFIG_FILE} (an incomplete bridge)"
            )
        if clip is None:
            from .clip import load_clip

            clip = load_clip(config.clip_model, config.clip_pretrained, device=device)
        bridge = cls(clip, config)
        try:
            bridge.load_state_dict(load_file(str(weights)))
        except (RuntimeError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0]
            raise TwoDError(f"{weights}: does not fit {CONFIG_FILE} ({first})") from None
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return bridge.to(device).eval()


def read_bridge_config(folder: str | Path) -> BridgeConfig:
    """The `BridgeConfig` saved in a bridge folder (errors name the folder)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise TwoDError(
            f"{folder}: not a text bridge (no {CONFIG_FILE}); train one with omnivision train-bridge"
        )
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(BridgeConfig)}
        return BridgeConfig(**{k: v for k, v in raw.items() if k in known})
    except (json.JSONDecodeError, TypeError) as err:
        raise TwoDError(f"{path}: not a bridge config ({err})") from None


def text_heatmap(queries: Float[Tensor, "Q D"], features: PatchFeatures) -> Float[Tensor, "Q h w"]:
    """Cosine of each (normalised) query with every patch of the first image."""
    grid = features.normalized()[0].to(queries.device)
    return torch.einsum("hwd,qd->qhw", grid, F.normalize(queries.float(), dim=-1))


# --------------------------------------------------------------------------------------------
# Region-feature cache


_CACHE_FIELDS = (
    "region_features", "pair_image", "phrase_ids", "patch_features", "patch_image", "patch_phrases"
)  # fmt: skip


@dataclass
class RegionCache:
    """Backbone features of a set of pairs, computed once.

    `region_features` (P, D) unit vectors per pair; `patch_features` (T, D, float16) unit vectors
    of up to `patches_per_image` sampled patches per image, `patch_image` (T,) their image index
    and `patch_phrases` (T, K) the phrase ids of the regions holding each patch (-1 padded).
    `grids` keeps every image's full normalised grid (float16) when asked (held-out sets)."""

    region_features: Float[Tensor, "P D"]
    pair_image: Tensor
    phrase_ids: Tensor
    patch_features: Tensor
    patch_image: Tensor
    patch_phrases: Tensor
    image_sizes: list[tuple[int, int]]
    grids: list[Tensor] = field(default_factory=list)

    def to_tensors(self, prefix: str) -> dict[str, Tensor]:
        out = {f"{prefix}.{k}": getattr(self, k).contiguous() for k in _CACHE_FIELDS}
        out[f"{prefix}.image_sizes"] = torch.tensor(self.image_sizes, dtype=torch.long).reshape(
            -1, 2
        )
        for i, grid in enumerate(self.grids):
            out[f"{prefix}.grid.{i}"] = grid.contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str) -> RegionCache:
        sizes = [(int(h), int(w)) for h, w in tensors[f"{prefix}.image_sizes"].tolist()]
        grids = []
        while f"{prefix}.grid.{len(grids)}" in tensors:
            grids.append(tensors[f"{prefix}.grid.{len(grids)}"])
        cached = {k: tensors[f"{prefix}.{k}"] for k in _CACHE_FIELDS}
        return cls(**cached, image_sizes=sizes, grids=grids)


def _group_by_image(pairs: Sequence[Pair]) -> tuple[list[Path], Tensor]:
    order: dict[Path, int] = {}
    index = [order.setdefault(p.image, len(order)) for p in pairs]
    return list(order), torch.tensor(index, dtype=torch.long)


def _patch_centres(features: PatchFeatures) -> tuple[np.ndarray, np.ndarray]:
    h, w = features.grid
    H, W = features.image_size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return (xs + 0.5) * W / w, (ys + 0.5) * H / h


def region_mask_on_grid(pair: Pair, features: PatchFeatures) -> Bool[Tensor, "h w"]:
    """Patches whose centres lie in the pair's region; the patch under the region's centre when
    the region is smaller than a patch."""
    xs, ys = _patch_centres(features)
    inside = torch.from_numpy(pair.contains(xs, ys))
    if not bool(inside.any()):
        x0, y0, x1, y1 = pair.box
        inside[features.pixel_to_patch((x0 + x1) / 2, (y0 + y1) / 2)] = True
    return inside


def encode_regions(
    pairs: Sequence[Pair],
    extractor: FeatureExtractor,
    phrase_index: dict[str, int],
    patches_per_image: int = 64,
    keep_grids: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> RegionCache:
    """Run the backbone once per distinct image of `pairs` and pool each pair's region."""
    from tqdm import tqdm

    from .io import read_image

    images, pair_image = _group_by_image(pairs)
    by_image: list[list[int]] = [[] for _ in images]
    for k, i in enumerate(pair_image.tolist()):
        by_image[i].append(k)
    region_features: list[Tensor] = [torch.empty(0)] * len(pairs)
    patch_features, patch_image, patch_phrases = [], [], []
    sizes, grids = [], []
    generator = torch.Generator().manual_seed(seed)
    for i, path in enumerate(
        tqdm(images, desc=f"{extractor.name} features", unit="img", disable=not progress)
    ):
        features = extractor.extract([read_image(path)])
        grid = features.normalized()[0].cpu()
        h, w, d = grid.shape
        sizes.append(features.image_size)
        if keep_grids:
            grids.append(grid.half())
        regions = [region_mask_on_grid(pairs[k], features) for k in by_image[i]]
        for k, inside in zip(by_image[i], regions, strict=True):
            region_features[k] = F.normalize(grid[inside].mean(0), dim=0)
        chosen = torch.randperm(h * w, generator=generator)[:patches_per_image]
        labels = [
            [
                phrase_index[normalize_phrase(pairs[k].phrase)]
                for k, inside in zip(by_image[i], regions, strict=True)
                if inside.flatten()[t]
            ]
            for t in chosen.tolist()
        ]
        patch_features.append(grid.reshape(-1, d)[chosen].half())
        patch_image.append(torch.full((len(chosen),), i, dtype=torch.long))
        patch_phrases.append(labels)
    width = max([1] + [len(x) for group in patch_phrases for x in group])
    phrase_table = torch.full((sum(len(g) for g in patch_phrases), width), -1, dtype=torch.long)
    for t, labels in enumerate(x for group in patch_phrases for x in group):
        phrase_table[t, : len(labels)] = torch.tensor(labels, dtype=torch.long)
    return RegionCache(
        region_features=torch.stack(region_features).float(),
        pair_image=pair_image,
        phrase_ids=torch.tensor(
            [phrase_index[normalize_phrase(p.phrase)] for p in pairs], dtype=torch.long
        ),
        patch_features=torch.cat(patch_features),
        patch_image=torch.cat(patch_image),
        patch_phrases=phrase_table,
        image_sizes=sizes,
        grids=grids,
    )


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainConfig:
    """How `train_bridge` trains."""

    epochs: int = 10
    """Total epochs (a resumed run continues up to this number)."""
    batch_size: int = 64
    """Pairs per step."""
    steps_per_epoch: int | None = None
    """Steps per epoch; None = one pass over the pairs (ceil(P / batch_size))."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patches_per_image: int = 64
    """Patches sampled per image (once, when caching) as extra negatives."""
    seed: int = 0
    """Seeds patch sampling and the batch order of every epoch (so a resumed run equals an
    uninterrupted one)."""
    resume: bool = False
    """Continue from the checkpoint in `checkpoint_dir` (weights, optimizer, step count)."""
    device: str | None = None
    """cpu, cuda, ... (default: cuda when available)."""


@dataclass
class EvalResult:
    """Held-out referring scores: pointing accuracy (the heatmap's peak falls in the region),
    mIoU (SAM 2's mask from the peak region's box, or the peak region of the thresholded heatmap)
    and `chance`, the mean fraction of the image the target covers (a random point's accuracy)."""

    pointing_accuracy: float
    miou: float
    chance: float
    pairs: int


@dataclass
class EpochStats:
    epoch: int
    """1-based epoch just finished."""
    step: int
    """Optimizer steps taken so far."""
    loss: float
    """Mean training loss over the epoch."""
    temperature: float
    eval: EvalResult | None = None


@dataclass
class TrainResult:
    bridge: TextBridge
    history: list[EpochStats]
    steps: int
    """Optimizer steps taken in total (including those before a resume)."""
    images_encoded: int
    """Images run through the backbone by this call (0 when the cache was read from disk)."""

    @property
    def final(self) -> EvalResult | None:
        return self.history[-1].eval if self.history else None


def contrastive_loss(
    queries: Float[Tensor, "B D"],
    regions: Float[Tensor, "B D"],
    phrase_ids: Tensor,
    patches: Float[Tensor, "T D"],
    patch_phrases: Tensor,
    logit_scale: Tensor,
) -> Tensor:
    """Symmetric InfoNCE between B phrases and their B regions, with T extra patch negatives for
    the phrase side. Other regions of the same phrase, and patches inside a region of the same
    phrase, are left out (they are not negatives)."""
    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    B = queries.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=queries.device)
    same = (phrase_ids[:, None] == phrase_ids[None, :]) & ~eye
    inside = (patch_phrases[None, :, :] == phrase_ids[:, None, None]).any(-1)
    logits = scale * queries @ torch.cat([regions, patches]).T
    logits = logits.masked_fill(torch.cat([same, inside], dim=1), float("-inf"))
    back = (scale * regions @ queries.T).masked_fill(same, float("-inf"))
    target = torch.arange(B, device=queries.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(back, target)) / 2


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    needed = steps * batch_size
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-needed // n))])
    for s in range(steps):
        yield order[s * batch_size : (s + 1) * batch_size]


@torch.no_grad()
def evaluate_bridge(
    bridge: TextBridge,
    pairs: Sequence[Pair],
    cache: RegionCache,
    text_embeddings: Float[Tensor, "U E"],
    sam: Any = None,
) -> EvalResult:
    """Pointing accuracy and mIoU of the bridge's heatmaps on cached held-out `pairs`."""
    from .io import read_image
    from .referring import mask_box, mask_iou, peak_component, pointing_hits

    was_training = bridge.training
    bridge.eval()
    queries = bridge.project(text_embeddings[cache.phrase_ids]).cpu()
    hits, ious, chance = [], [], []
    for i, grid in enumerate(cache.grids):
        members = torch.nonzero(cache.pair_image == i).flatten().tolist()
        H, W = cache.image_sizes[i]
        h, w = grid.shape[:2]
        heat = torch.einsum("hwd,qd->qhw", grid.float(), queries[members])
        image = read_image(pairs[members[0]].image) if sam is not None else None
        for q, k in enumerate(members):
            truth = pairs[k].mask((H, W))
            peak = int(torch.argmax(heat[q]))
            point = ((peak % w + 0.5) * W / w, (peak // w + 0.5) * H / h)
            hits.append(bool(pointing_hits([point], truth[None])[0]))
            pixels = F.interpolate(heat[q][None, None], size=(H, W), mode="bilinear")[0, 0]
            predicted = peak_component(pixels)
            if sam is not None:
                predicted = sam.predict_boxes(image, mask_box(predicted)[None])[0].bool().cpu()
            ious.append(float(mask_iou(predicted[None], truth[None])[0]))
            chance.append(float(truth.double().mean()))
    bridge.train(was_training)
    n = len(hits)
    return EvalResult(sum(hits) / n, sum(ious) / n, sum(chance) / n, n)


def _fingerprint(
    extractor: FeatureExtractor, config: TrainConfig, *pair_sets: Sequence[Pair]
) -> str:
    payload = [
        extractor.name,
        extractor.dim,
        getattr(extractor, "short_side", None),
        config.patches_per_image,
        config.seed,
        [[(str(p.image), p.phrase, p.box, p.polygon) for p in pairs] for pairs in pair_sets],
    ]
    return hashlib.sha1(json.dumps(payload).encode()).hexdigest()


def _load_cache(path: Path, fingerprint: str) -> tuple[RegionCache, RegionCache | None] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("fingerprint") != fingerprint:
            return None
    tensors = load_file(str(path))
    held_out = RegionCache.from_tensors(tensors, "eval") if "eval.pair_image" in tensors else None
    return RegionCache.from_tensors(tensors, "train"), held_out


def _save_cache(
    path: Path, fingerprint: str, train: RegionCache, held_out: RegionCache | None
) -> None:
    from safetensors.torch import save_file

    from .io import write_atomically

    tensors = train.to_tensors("train")
    if held_out is not None:
        tensors |= held_out.to_tensors("eval")
    write_atomically(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint})
    )


def _stats_dict(stats: EpochStats) -> dict:
    return asdict(stats)


def _stats_from(raw: dict) -> EpochStats:
    held_out = raw.get("eval")
    return EpochStats(**{**raw, "eval": EvalResult(**held_out) if held_out else None})


def train_bridge(
    bridge: TextBridge,
    pairs: Sequence[Pair],
    extractor: FeatureExtractor,
    config: TrainConfig | None = None,
    eval_pairs: Sequence[Pair] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    sam: Any = None,
) -> TrainResult:
    """Train `bridge` (in place) so each phrase's vector points at its region's features.

    Features come from `extractor` once per image (cached in memory, and on disk as
    region_cache.safetensors in `checkpoint_dir`, reused by a resume). After every epoch the
    held-out `eval_pairs` are scored (`EvalResult`; mIoU through `sam`'s box prompts when given)
    and, with `checkpoint_dir`, the bridge and the training state (optimizer, step, history) are
    written there; `config.resume` continues from them.
    """
    from tqdm import tqdm

    from .io import write_atomically

    config = config or TrainConfig()
    if not pairs:
        raise TwoDError("no training pairs")
    if extractor.dim != bridge.config.dino_dim or not bridge.config.matches_backbone(
        extractor.name
    ):
        raise TwoDError(
            f"bridge expects backbone {bridge.config.backbone!r} ({bridge.config.dino_dim}-d), "
            f"got {extractor.name!r} ({extractor.dim}-d)"
        )
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if config.resume and (folder is None or not (folder / STATE_FILE).is_file()):
        raise TwoDError(f"{folder}: no {STATE_FILE} to resume from; train without resume first")
    if config.resume and folder is not None:
        saved = asdict(read_bridge_config(folder))
        changed = [
            f"{k} {v!r} -> {getattr(bridge.config, k)!r}"
            for k, v in saved.items()
            if getattr(bridge.config, k) != v
        ]
        if changed:
            raise TwoDError(
                f"{folder}: cannot resume with other bridge settings than the checkpoint's "
                f"({'; '.join(changed)}); use the same settings or train afresh"
            )
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    eval_pairs = list(eval_pairs or [])
    vocabulary = sorted({normalize_phrase(p.phrase) for p in [*pairs, *eval_pairs]})
    phrase_index = {phrase: i for i, phrase in enumerate(vocabulary)}

    fingerprint = _fingerprint(extractor, config, pairs, eval_pairs)
    cached = _load_cache(folder / CACHE_FILE, fingerprint) if folder is not None else None
    images_encoded = 0
    if cached is None:
        train_cache = encode_regions(
            pairs,
            extractor,
            phrase_index,
            config.patches_per_image,
            seed=config.seed,
            progress=progress,
        )
        held_out = (
            encode_regions(
                eval_pairs, extractor, phrase_index, 0, keep_grids=True, progress=progress
            )
            if eval_pairs
            else None
        )
        images_encoded = len(train_cache.image_sizes) + (
            len(held_out.image_sizes) if held_out else 0
        )
        if folder is not None:
            _save_cache(folder / CACHE_FILE, fingerprint, train_cache, held_out)
    else:
        train_cache, held_out = cached
    text_embeddings = bridge.encode_phrases(vocabulary)

    bridge.to(device).train()
    trainable = [p for p in bridge.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    start, step, history = 0, 0, []
    if config.resume and folder is not None:
        state = torch.load(folder / STATE_FILE, map_location=device, weights_only=True)
        bridge.load_state_dict(state["bridge"])
        optimizer.load_state_dict(state["optimizer"])
        start, step = int(state["epoch"]), int(state["step"])
        history = [_stats_from(raw) for raw in state["history"]]

    n = len(pairs)
    batch_size = min(config.batch_size, n)
    steps = config.steps_per_epoch or -(-n // batch_size)
    for epoch in range(start, config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        total = 0.0
        bar = tqdm(
            _batches(n, batch_size, steps, generator),
            total=steps,
            desc=f"bridge epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress,
        )
        for idx in bar:
            images = torch.unique(train_cache.pair_image[idx])
            chosen = torch.isin(train_cache.patch_image, images)
            phrase_ids = train_cache.phrase_ids[idx]
            loss = contrastive_loss(
                bridge.project(text_embeddings[phrase_ids]),
                train_cache.region_features[idx].to(device),
                phrase_ids.to(device),
                train_cache.patch_features[chosen].to(device).float(),
                train_cache.patch_phrases[chosen].to(device),
                bridge.logit_scale,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        scores = (
            evaluate_bridge(bridge, eval_pairs, held_out, text_embeddings, sam)
            if held_out is not None
            else None
        )
        history.append(EpochStats(epoch + 1, step, total / steps, bridge.temperature, scores))
        if progress and scores is not None:
            tqdm.write(
                f"epoch {epoch + 1}: loss {total / steps:.3f}, held-out pointing "
                f"{scores.pointing_accuracy:.3f} (chance {scores.chance:.3f}), mIoU {scores.miou:.3f}"
            )
        if folder is not None:
            state = {
                "bridge": {k: v.detach().cpu() for k, v in bridge.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "history": [_stats_dict(s) for s in history],
            }
            bridge.save(folder)
            write_atomically(folder / STATE_FILE, lambda tmp, state=state: torch.save(state, tmp))
    bridge.eval()
    return TrainResult(bridge, history, step, images_encoded)
