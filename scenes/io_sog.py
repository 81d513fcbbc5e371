"""PlayCanvas SOG (read): a `meta.json` plus lossless WebP textures, bundled in a `.sog` zip or
side by side in a folder (unbundled). Version 2, as splat-transform and SuperSplat write it.

Each texture holds one texel (RGBA) per Gaussian in row-major order. `means_l`/`means_u`: the low
and high bytes of a 16-bit position per axis, between `means.mins/maxs` of the log-transformed
positions (sign(x) log(1 + |x|)). `quats`: smallest three, three bytes (v/255 x 2 - 1)/sqrt 2 and
alpha 252 + the index of the largest component (w, x, y, z; the others in index order).
`scales`: three indices into the 256-entry `scales.codebook` of log-scales. `sh0`: three indices
into `sh0.codebook` (SH DC) and alpha = sigmoid(opacity) x 255. `shN` (optional): a 16-bit palette
label per Gaussian (`shN_labels`, R + 256 G) and the palette (`shN_centroids`, 64 entries per row,
one texel per coefficient, RGB indices into `shN.codebook`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .errors import SceneError
from .gaussians import GaussianScene

_SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
_QUAT_OTHERS = ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))


def is_sog(path: str | Path) -> bool:
    """A `.sog` zip holding `meta.json`, or a `meta.json` with SOG `means`/`quats` entries."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as bundle:
                return "meta.json" in bundle.namelist()
        if path.name == "meta.json":
            meta = json.loads(path.read_text())
            return isinstance(meta, dict) and "means" in meta and "quats" in meta
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return False


def _open(path: Path) -> tuple[dict, Callable[[str], bytes]]:
    """meta.json and a reader of the files beside it (in the zip or in the folder)."""
    if path.suffix.lower() == ".sog":
        if not zipfile.is_zipfile(path):
            raise SceneError(path, "not a .sog bundle: not a zip file")
        try:
            bundle = zipfile.ZipFile(path)
            names = set(bundle.namelist())
        except (zipfile.BadZipFile, OSError) as err:
            raise SceneError(path, f"corrupt .sog zip ({err})") from None
        if "meta.json" not in names:
            raise SceneError(path, "not a .sog bundle: the zip holds no meta.json")

        def read(name: str) -> bytes:
            if name not in names:
                raise SceneError(path, f"the .sog bundle lacks {name}, which meta.json names")
            try:
                return bundle.read(name)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise SceneError(path, f"corrupt {name} in the .sog zip ({err})") from None

        text = read("meta.json")
    else:

        def read(name: str) -> bytes:
            file = path.parent / name
            if not file.is_file():
                raise SceneError(path, f"{name} (named in meta.json) not found beside it")
            return file.read_bytes()

        text = path.read_bytes()
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise SceneError(path, f"meta.json is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise SceneError(path, "meta.json is not a JSON object")
    return meta, read


def _texels(path: Path, read: Callable[[str], bytes], name: str, count: int) -> np.ndarray:
    """(count, 4) uint8 RGBA texels of a WebP texture, row-major."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(read(name))) as image:
            rgba = np.asarray(image.convert("RGBA")).reshape(-1, 4)
    except SceneError:
        raise
    except Exception as err:  # PIL raises several types for a bad image
        raise SceneError(path, f"{name} is not a readable WebP image ({err})") from None
    if len(rgba) < count:
        raise SceneError(path, f"{name} holds {len(rgba)} texels for {count} Gaussians")
    return rgba[:count]


def read_sog(path: str | Path) -> GaussianScene:
    """Read a SOG scene: a bundled `.sog` zip, or an unbundled `meta.json` (textures beside it)."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(path, "file not found")
    meta, read = _open(path)
    if "means" not in meta or "quats" not in meta:
        raise SceneError(path, "not a SOG meta.json: it has no 'means' and 'quats'")
    if "version" not in meta:
        raise SceneError(path, "SOG version 1 (meta.json without 'version') is not supported")
    if meta["version"] != 2:
        raise SceneError(path, f"SOG version {meta['version']} not supported (2 is)")
    missing = [k for k in ("count", "means", "scales", "quats", "sh0") if k not in meta]
    if missing:
        raise SceneError(path, f"meta.json lacks {', '.join(missing)}")
    try:
        return _decode(path, meta, read)
    except SceneError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SceneError(path, f"meta.json is malformed ({type(err).__name__}: {err})") from None


def _decode(path: Path, meta: dict, read: Callable[[str], bytes]) -> GaussianScene:
    n = int(meta["count"])
    if n <= 0:
        raise SceneError(path, f"SOG holds {n} Gaussians")

    lo = _texels(path, read, meta["means"]["files"][0], n)[:, :3].astype(np.float64)
    hi = _texels(path, read, meta["means"]["files"][1], n)[:, :3].astype(np.float64)
    mins, maxs = np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"])
    span = np.where(maxs - mins == 0, 1.0, maxs - mins)
    logged = mins + span * ((lo + 256 * hi) / 65535)
    means = np.sign(logged) * np.expm1(np.abs(logged))

    packed = _texels(path, read, meta["quats"]["files"][0], n)
    others = (packed[:, :3].astype(np.float64) / 255 * 2 - 1) / np.sqrt(2)
    tag = packed[:, 3].astype(np.int64) - 252
    quats = np.zeros((n, 4))
    quats[:, 0] = 1.0  # as splat-transform: a tag outside 252-255 reads as the identity
    for largest, slots in enumerate(_QUAT_OTHERS):
        rows = tag == largest
        quats[rows] = 0.0
        quats[np.ix_(rows, slots)] = others[rows]
        quats[rows, largest] = np.sqrt(np.maximum(0.0, 1 - (others[rows] ** 2).sum(-1)))

    scale_book = np.asarray(meta["scales"]["codebook"], np.float32)
    log_scales = scale_book[_texels(path, read, meta["scales"]["files"][0], n)[:, :3]]
    sh0 = _texels(path, read, meta["sh0"]["files"][0], n)
    dc = np.asarray(meta["sh0"]["codebook"], np.float32)[sh0[:, :3]]
    alpha = np.clip(sh0[:, 3].astype(np.float64) / 255, 1e-6, 1 - 1e-6)
    sh = dc[:, None, :]

    sh_meta = meta.get("shN") or {}
    coeffs = _SH_COEFFS.get(int(sh_meta.get("bands", 0)), -1)
    if coeffs < 0:
        raise SceneError(path, f"shN.bands {sh_meta.get('bands')} not supported (1-3 are)")
    if coeffs:
        book = np.asarray(sh_meta["codebook"], np.float32)
        labels_rgba = _texels(path, read, sh_meta["files"][1], n)
        labels = labels_rgba[:, 0].astype(np.int64) + 256 * labels_rgba[:, 1].astype(np.int64)
        palette_size = int(sh_meta["count"])
        rows = -(-palette_size // 64)
        centroids = _texels(path, read, sh_meta["files"][0], rows * 64 * coeffs)
        palette = book[centroids[:, :3]].reshape(rows * 64, coeffs, 3)
        bad = labels >= palette_size
        if bad.any():
            raise SceneError(path, f"{int(bad.sum())} shN labels beyond the palette")
        sh = np.concatenate([sh, palette[labels]], axis=1)
    return GaussianScene(
        means=torch.from_numpy(means.astype(np.float32)),
        quats=torch.nn.functional.normalize(torch.from_numpy(quats.astype(np.float32)), dim=-1),
        log_scales=torch.from_numpy(np.ascontiguousarray(log_scales)),
        opacity_logits=torch.from_numpy(np.log(alpha / (1 - alpha)).astype(np.float32)),
        sh=torch.from_numpy(np.ascontiguousarray(sh, dtype=np.float32)),
    )


__all__ = ["is_sog", "read_sog"]
