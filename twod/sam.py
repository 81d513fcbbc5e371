"""SAM 2 masks from clicks, boxes or a point grid: a thin wrapper over the `sam2` package.

`load_sam2("facebook/sam2.1-hiera-tiny")` or `load_sam2("ckpt.pt", config="configs/sam2.1/...")`
builds the model from the yaml with OmegaConf + `hydra.utils.instantiate` (no global hydra state of
ours) and loads `{"model": state_dict}` with `weights_only=True`. Images are (H, W, 3) float in
[0, 1] or uint8; points are (x, y) pixels with labels 1 (include) / 0 (exclude); boxes xyxy pixels.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .features import TwoDError, hub_unavailable

ArrayLike = Any
"""A torch tensor, numpy array or nested lists (points, labels, boxes, images)."""
TINY_BASE = "configs/sam2.1/sam2.1_hiera_t.yaml"
# hiera-t shrunk to ~1.3M random parameters at 256 px: the test model. No global attention at a
# stage's first block (sam2 divides by its window size 0 there), hence stages [1,1,2,1] and [3].
TINY_OVERRIDES = tuple(
    """
    model.image_size=256 model.num_maskmem=2
    model.image_encoder.trunk.embed_dim=16 model.image_encoder.trunk.stages=[1,1,2,1]
    model.image_encoder.trunk.global_att_blocks=[3]
    model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]
    model.image_encoder.neck.d_model=64 model.image_encoder.neck.position_encoding.num_pos_feats=64
    model.image_encoder.neck.backbone_channel_list=[128,64,32,16]
    model.memory_attention.d_model=64 model.memory_attention.num_layers=1
    model.memory_attention.layer.d_model=64 model.memory_attention.layer.dim_feedforward=128
    model.memory_attention.layer.self_attention.embedding_dim=64
    model.memory_attention.layer.self_attention.feat_sizes=[16,16]
    model.memory_attention.layer.cross_attention.embedding_dim=64
    model.memory_attention.layer.cross_attention.feat_sizes=[16,16]
    model.memory_attention.layer.cross_attention.kv_in_dim=32
    model.memory_encoder.out_dim=32 model.memory_encoder.in_dim=64
    model.memory_encoder.position_encoding.num_pos_feats=32
    model.memory_encoder.mask_downsampler.embed_dim=64
    model.memory_encoder.fuser.layer.dim=64 model.memory_encoder.fuser.num_layers=1
    """.split()  # noqa: SIM905 (one override a word, several a line)
)


@dataclass
class Masks:
    """M candidate masks of one image, best first (scores descending)."""

    masks: Bool[Tensor, "M H W"]
    """Binary masks at the original image size."""
    scores: Float[Tensor, "M"]
    """SAM's predicted IoU of each mask."""
    logits: Float[Tensor, "M h w"] | None = None
    """Low-res mask logits (h = w = model input / 4): a next `predict`'s `mask_input`. None from
    `generate`."""

    def __len__(self) -> int:
        return self.masks.shape[0]


def _sorted(masks: np.ndarray, scores: np.ndarray, logits: np.ndarray | None) -> Masks:
    order = np.argsort(-scores, kind="stable")
    return Masks(
        torch.from_numpy(masks[order].astype(bool)),
        torch.from_numpy(scores[order].astype(np.float32)),
        None if logits is None else torch.from_numpy(logits[order].astype(np.float32)),
    )


def _array(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _image_array(image: Any) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] (SAM2Transforms' ToTensor passes floats through unscaled)."""
    arr = _array(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise TwoDError(f"SAM 2 needs an (H, W, 3) RGB image, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0 + 1e-3):
        raise TwoDError(f"float images must be in [0, 1], got max {arr.max():g}; pass uint8 0-255")
    return np.clip(arr, 0.0, 1.0)


def _check_points(points: Any, labels: Any, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    pts = _array(points).astype(np.float32)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise TwoDError(f"points must be (P, 2) (x, y) pixels, got shape {tuple(pts.shape)}")
    lab = np.ones(len(pts)) if labels is None else _array(labels).reshape(-1)
    if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
        raise TwoDError(f"labels must be 1 (include) or 0 (exclude) per point, got {lab.tolist()}")
    H, W = hw
    for x, y in pts:
        if not (0 <= x < W and 0 <= y < H):
            raise TwoDError(f"click ({x:g}, {y:g}) is outside the {W}x{H} image (x, y pixels)")
    return pts, lab.astype(np.int32)


def _check_boxes(boxes: Any, hw: tuple[int, int]) -> np.ndarray:
    b = _array(boxes).astype(np.float32)
    b = b.reshape(0, 4) if b.size == 0 else b.reshape(1, -1) if b.ndim == 1 else b
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise TwoDError(f"boxes must be (K, 4) finite x0, y0, x1, y1 pixels, got {b.tolist()}")
    H, W = hw
    for x0, y0, x1, y1 in b:
        if not (x0 < x1 and y0 < y1 and x1 > 0 and y1 > 0 and x0 < W and y0 < H):
            box = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
            raise TwoDError(f"box {box} is empty or outside the {W}x{H} image (xyxy pixels)")
    return b


@contextlib.contextmanager
def _quiet_jit():
    """sam2 1.1.0's SAM2Transforms calls torch.jit.script, deprecated (FutureWarning) in torch 2.x."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        yield


def _feat_sizes(model: Any) -> list[tuple[int, int]]:
    """Backbone grids at strides 4, 8, 16; SAM2ImagePredictor hard-codes them for 1024 px input."""
    s = model.image_size // model.backbone_stride
    return [(4 * s, 4 * s), (2 * s, 2 * s), (s, s)]


@dataclass
class Sam2:
    """A SAM 2 model and its image predictor: `set_image` then `predict`, or the one-shot
    `predict_boxes` / `generate`. Build with `load_sam2`."""

    model: Any = field(repr=False)
    """The `sam2.modeling.sam2_base.SAM2Base`, in eval mode."""
    predictor: Any = field(repr=False)
    """The `sam2.sam2_image_predictor.SAM2ImagePredictor` holding the current image embedding."""
    name: str
    """Hub id or checkpoint path it was loaded from."""
    image_hw: tuple[int, int] | None = None
    """(H, W) of the image set by `set_image`; None before."""

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 on CUDA as SAM 2's notebooks do; never on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_image(self, image: ArrayLike) -> None:
        """Embed an (H, W, 3) image (float in [0, 1] or uint8; tensor or array) for `predict`."""
        arr = _image_array(image)
        with self._autocast():
            self.predictor.set_image(arr)
        self.image_hw = (arr.shape[0], arr.shape[1])

    def predict(
        self,
        points: ArrayLike = None,
        labels: ArrayLike = None,
        box: ArrayLike = None,
        mask_input: ArrayLike = None,
        multimask: bool = True,
    ) -> Masks:
        """Masks for clicks `points` (P, 2) with `labels` (P,) (default all 1), one xyxy `box`,
        and/or `mask_input` logits (h, w) from a previous `Masks.logits`; 3 masks if `multimask`."""
        if self.image_hw is None:
            raise TwoDError("no image set: call set_image(image) before predict")
        if points is None and box is None and mask_input is None:
            raise TwoDError("predict needs points, a box or a mask_input")
        pts, lab = (None, None) if points is None else _check_points(points, labels, self.image_hw)
        boxes = None if box is None else _check_boxes(box, self.image_hw)
        if boxes is not None and len(boxes) != 1:
            raise TwoDError(f"predict takes one box, got {len(boxes)}; use predict_boxes")
        low_res = None
        if mask_input is not None:
            low_res, side = _array(mask_input).astype(np.float32), self.model.image_size // 4
            if low_res.size != side * side:
                raise TwoDError(f"mask_input must be ({side}, {side}) logits, got {low_res.shape}")
            low_res = low_res.reshape(1, side, side)
        with self._autocast():
            masks, scores, logits = self.predictor.predict(pts, lab, boxes, low_res, multimask)
        return _sorted(masks, scores, logits)

    def predict_boxes(
        self, image: ArrayLike, boxes: ArrayLike, multimask: bool = False
    ) -> Bool[Tensor, "K H W"]:
        """One mask per xyxy box (K, 4), all boxes in one batch (the best of 3 if `multimask`)."""
        self.set_image(image)
        hw = self.image_hw
        assert hw is not None
        b = _check_boxes(boxes, hw)
        if len(b) == 0:
            return torch.zeros((0, *hw), dtype=torch.bool)
        with self._autocast():
            masks, scores, _ = self.predictor.predict(box=b, multimask_output=multimask)
        best = scores.reshape(len(b), -1).argmax(1)
        return torch.from_numpy(masks.reshape(len(b), -1, *hw)[np.arange(len(b)), best] > 0)

    def generate(
        self,
        image: ArrayLike,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
    ) -> Masks:
        """Segment everything (`SAM2AutomaticMaskGenerator`): prompt a points_per_side² grid, keep
        masks above the predicted-IoU and stability thresholds, then NMS. `logits` is None."""
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        arr = _image_array(image)
        with _quiet_jit():
            generator = SAM2AutomaticMaskGenerator(
                self.model, points_per_side, points_per_batch, pred_iou_thresh,
                stability_score_thresh, box_nms_thresh=box_nms_thresh,
            )  # fmt: skip
        generator.predictor._bb_feat_sizes = _feat_sizes(self.model)
        with self._autocast():
            found = generator.generate(arr)
        masks = np.zeros((0, *arr.shape[:2]), bool)
        masks = np.stack([r["segmentation"] for r in found]) if found else masks
        return _sorted(masks, np.array([r["predicted_iou"] for r in found], np.float32), None)


def _sam2_config(config: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A sam2 config (a package name such as `configs/sam2.1/sam2.1_hiera_t.yaml`, or a yaml path)
    with OmegaConf dotlist overrides (hydra's leading `+`/`++` are accepted)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    path = Path(config).expanduser()
    if not path.is_file():
        root = files("sam2")
        found = [c for c in (root / str(config), root / "configs" / str(config)) if c.is_file()]
        if not found:
            raise TwoDError(f"SAM 2 config {config} not found: pass a .yaml or e.g. {TINY_BASE}")
        path = Path(str(found[0]))
    cfg = OmegaConf.load(path)
    if "model" not in cfg:
        raise TwoDError(f"{path} has no `model:` section; pass a SAM 2 config")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    OmegaConf.resolve(cfg)
    return cfg


def _hub_checkpoint(repo: str, filename: str) -> Path:
    """The checkpoint of a hub id through the Hugging Face cache (offline: the cache only)."""
    from huggingface_hub import hf_hub_download

    try:
        if hub_unavailable(repo, filename):  # fail at once instead of after the client's retries
            raise ConnectionError("offline and not cached")
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:
        raise TwoDError(
            f"{repo}: {filename} is not in the Hugging Face cache and could not be downloaded "
            f"({type(err).__name__}); run `hf download {repo} {filename}` (older huggingface_hub: "
            f"`huggingface-cli download {repo} {filename}`) with network access, or pass a local "
            ".pt with its config, or use --sam none"
        ) from err


def _load_weights(model: Any, checkpoint: Path, config: str | Path) -> None:
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise TwoDError(f"{checkpoint}: not readable as a SAM 2 checkpoint ({err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise TwoDError(f"{checkpoint} is not a SAM 2 checkpoint (a dict with a 'model' entry)")
    try:
        result = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = (str(err).splitlines()[1:] or [str(err)])[0].strip()
        raise TwoDError(f"{checkpoint} does not fit config {config}: {detail}") from err
    bad = result.missing_keys + result.unexpected_keys
    if bad:
        raise TwoDError(
            f"{checkpoint} does not fit config {config}: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected weights (e.g. {', '.join(bad[:3])})"
        )


def load_sam2(
    name_or_checkpoint: str | Path,
    config: str | Path | None = None,
    device: str | torch.device | None = None,
    overrides: Sequence[str] = (),
) -> Sam2:
    """A `Sam2` from a hub id (`facebook/sam2.1-hiera-tiny|small|base-plus|large`, `facebook/`
    optional) or a local `{"model": state_dict}` .pt plus its `config`. `overrides` edit the config
    (dotlist); sam2's postprocessing overrides are not added (apply_postprocessing=False)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = _build_model(name_or_checkpoint, config, device, overrides)
    with _quiet_jit():
        predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = _feat_sizes(model)
    return Sam2(model, predictor, str(name_or_checkpoint))


def _build_model(
    name_or_checkpoint: str | Path,
    config: str | Path | None,
    device: str | torch.device | None,
    overrides: Sequence[str],
) -> Any:
    """The config's `model` (a hub id's or a local checkpoint's) instantiated, weights loaded,
    on `device` (CUDA when present), in eval mode: `load_sam2`'s and `load_sam2_video`'s core."""
    from hydra.utils import instantiate
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    name = str(name_or_checkpoint)
    repo = name if name in HF_MODEL_ID_TO_FILENAMES else f"facebook/{name}"
    if repo in HF_MODEL_ID_TO_FILENAMES:
        hub_config, filename = HF_MODEL_ID_TO_FILENAMES[repo]
        checkpoint, config = _hub_checkpoint(repo, filename), config or hub_config
    else:
        checkpoint = Path(name).expanduser()
        if not checkpoint.is_file():
            raise TwoDError(
                f"SAM 2 checkpoint {checkpoint} not found: pass an existing .pt with its config, or a "
                "hub id such as facebook/sam2.1-hiera-tiny (or -small, -base-plus, -large)"
            )
        if config is None:
            raise TwoDError(
                f"{checkpoint}: a local SAM 2 checkpoint needs its config, e.g. {TINY_BASE}"
            )
    model = instantiate(_sam2_config(config, overrides).model, _recursive_=True)
    _load_weights(model, checkpoint, config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(device).eval()


def build_tiny_sam2_checkpoint(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny random SAM 2.1 (`TINY_OVERRIDES` of hiera-t, fast on CPU) as
    out_dir/tiny_sam2.pt (`{"model": state_dict}` like the official files) and tiny_sam2.yaml.
    `load_sam2(checkpoint, config=yaml)` then takes the path a real checkpoint takes."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _sam2_config(TINY_BASE, TINY_OVERRIDES)
    config_path, checkpoint = out / "tiny_sam2.yaml", out / "tiny_sam2.pt"
    OmegaConf.save(cfg, config_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    torch.save({"model": model.state_dict()}, checkpoint)
    return checkpoint, config_path
