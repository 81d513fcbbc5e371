"""PlayCanvas SOG (read and write): a `meta.json` plus lossless WebP textures, bundled in a `.sog` zip or
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
from .semantics import atomic_with_semantics, with_semantics

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
    """Read a SOG scene: a bundled `.sog` zip, or an unbundled `meta.json` (textures beside it),
    with the integer extras of a semantics sidecar beside the file when there is one."""
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
        scene = _decode(path, meta, read)
    except SceneError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SceneError(path, f"meta.json is malformed ({type(err).__name__}: {err})") from None
    return with_semantics(scene, path)


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


# -- writing -------------------------------------------------------------------------------------
def _kmeans_1d(
    values: np.ndarray, k: int = 256, alpha: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A 256-entry scalar codebook as splat-transform builds its SOG codebooks: the sorted values
    binned into up to 1024 bins (positions blended between rank and value, so both the dense
    centre and the tails get bins), each bin weighted by count^alpha (sub-linear: the tails keep
    centres), then the bins split into k runs of least weighted squared error by dynamic
    programming (`_optimal_segments`). (sorted float32 centres (k,), uint8 labels shaped like
    `values`)."""
    flat = values.reshape(-1).astype(np.float64)
    ordered = np.sort(flat)
    n, low, high = len(ordered), ordered[0], ordered[-1]
    if high - low < 1e-20:
        return np.full(k, low, np.float32), np.zeros(values.shape, np.uint8)
    bins = min(1024, n)
    iqr = ordered[int(n * 0.75)] - ordered[int(n * 0.25)]
    beta = min(0.999, max(0.5, 1 - iqr / (high - low)))
    position = beta * np.arange(n) / n + (1 - beta) * (ordered - low) / (high - low)
    index = np.minimum(bins - 1, (bins * position).astype(np.int64))
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    used = counts > 0
    centres_of_bins = np.bincount(index, ordered, minlength=bins)[used] / counts[used]
    weights = counts[used] ** alpha
    centres = _optimal_segments(centres_of_bins, weights, k)
    centres = np.pad(centres, (0, k - len(centres)), mode="edge").astype(np.float32)
    labels = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat.astype(np.float32))
    return centres, labels.reshape(values.shape).astype(np.uint8)


def _optimal_segments(x: np.ndarray, w: np.ndarray, k: int, band: int = 96) -> np.ndarray:
    """Sorted points x with weights w split into k contiguous runs of at most `band` points that
    minimise the weighted sum of squared distances to each run's weighted mean (1-D k-means,
    exact within the band: a run holds ~len(x)/k points); the run means, ascending."""
    h = len(x)
    k = min(k, h)
    band = min(h, max(band, 4 * -(-h // k)))
    pw, pwx, pwxx = (np.concatenate([[0.0], np.cumsum(v)]) for v in (w, w * x, w * x * x))
    ends = np.arange(h)[None, :]
    begins = ends - np.arange(band)[:, None]  # (band, h): a run [begin, end]
    inside = begins >= 0
    b = np.maximum(begins, 0)
    mass = pw[ends + 1] - pw[b]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (pwxx[ends + 1] - pwxx[b]) - (pwx[ends + 1] - pwx[b]) ** 2 / mass
    cost = np.where(inside & (mass > 0), np.maximum(cost, 0.0), np.inf)
    before = np.maximum(begins - 1, 0)  # the previous run ends at begin - 1
    first_run = begins == 0
    best = np.where(inside & first_run, cost, np.inf).min(0)  # one run over bins 0..end
    lengths = np.zeros((k, h), np.int32)
    columns = np.arange(h)
    for m in range(1, k):
        options = np.where(inside & ~first_run, best[before], np.inf) + cost
        pick = options.argmin(0)
        lengths[m], best = pick + 1, options[pick, columns]
    end, out = h - 1, []
    for m in range(k - 1, -1, -1):
        begin = end - int(lengths[m, end]) + 1 if m else 0
        out.append((pwx[end + 1] - pwx[begin]) / (pw[end + 1] - pw[begin]))
        end = begin - 1
    return np.asarray(out[::-1])


def _kmeans(
    points: np.ndarray, k: int, iterations: int, seed: int = 0, per_centroid: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means in torch (chunked distances): the centroids fitted on a random sample of
    `per_centroid` points per centroid (every point when there are fewer; faiss samples so too),
    then every point labelled once. (centroids (k, D), labels (N,))."""
    x = torch.from_numpy(points.astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(len(x), generator=g)[: k * per_centroid]]
    centroids = sample[:k].clone()

    def nearest(data: torch.Tensor) -> torch.Tensor:
        c2 = (centroids * centroids).sum(1)
        chunks = [data[i : i + 32768] for i in range(0, len(data), 32768)]
        return torch.cat([(c2 - 2 * chunk @ centroids.T).argmin(1) for chunk in chunks])

    for _ in range(iterations):
        labels = nearest(sample)
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        counts = torch.bincount(labels, minlength=len(centroids)).float()
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids.numpy(), nearest(x).numpy()


def _webp(texels: np.ndarray, width: int, height: int) -> bytes:
    """(count, 4) uint8 texels, row-major, padded with zeros to width x height, as lossless WebP."""
    from PIL import Image

    image = np.zeros((width * height, 4), np.uint8)
    image[: len(texels)] = texels
    out = io.BytesIO()
    Image.fromarray(image.reshape(height, width, 4), "RGBA").save(
        out, "WEBP", lossless=True, quality=100, method=4, exact=True
    )
    return out.getvalue()


def write_sog(
    scene: GaussianScene,
    path: str | Path,
    palette: int | None = None,
    iterations: int = 10,
    source: str | Path | None = None,
) -> Path:
    """Write a bundled `.sog` (a zip of meta.json and lossless WebP textures, version 2), atomically.
    Lossy: 16-bit log positions, 8-bit quaternions, 256-entry codebooks for log-scales and the DC
    term, 8-bit opacity, and the higher SH as a k-means palette (`palette` entries, by default
    splat-transform's size, at most 4096 here to keep k-means on a CPU; `iterations` of Lloyd
    on 32 sampled Gaussians per entry, then every Gaussian labelled).
    No maintained Python library writes SOG (gsply 0.4.6 reads it only), hence this writer;
    splat-transform reads what it writes (tests/test_formats_web.py). Integer per-Gaussian fields go
    to a sidecar beside it (scenes/semantics.py; `source`: the scene it came from)."""
    path = Path(path)
    if path.suffix.lower() != ".sog":
        raise SceneError(path, "a bundled SOG ends in .sog")
    s = scene.to("cpu")
    n = len(s)
    if n == 0:
        raise SceneError(path, "no Gaussians to write")
    width = int(np.ceil(np.sqrt(n) / 4) * 4)
    height = int(np.ceil(n / width / 4) * 4)
    if width > 16383 or height > 16383:
        raise SceneError(path, f"{n} Gaussians exceed WebP's 16383-pixel textures")

    def texels(*channels: np.ndarray) -> np.ndarray:
        out = np.full((n, 4), 255, np.uint8)
        for c, values in enumerate(channels):
            out[:, c] = values
        return out

    files: dict[str, bytes] = {}
    means = s.means.double().numpy()
    logged = np.sign(means) * np.log1p(np.abs(means))
    mins, maxs = logged.min(0), logged.max(0)
    q = np.round(65535 * (logged - mins) / np.where(maxs > mins, maxs - mins, 1.0)).astype(
        np.uint32
    )
    files["means_l.webp"] = _webp(texels(*(q & 255).T), width, height)
    files["means_u.webp"] = _webp(texels(*(q >> 8).T), width, height)

    quats = s.quats.double().numpy()
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    largest = np.abs(quats).argmax(1)
    quats = quats * np.where(quats[np.arange(n), largest] < 0, -1.0, 1.0)[:, None] * np.sqrt(2)
    others = np.stack(
        [quats[np.arange(n), np.asarray(_QUAT_OTHERS)[largest][:, j]] for j in range(3)], 1
    )
    packed = np.clip(np.round(255 * (others * 0.5 + 0.5)), 0, 255).astype(np.uint8)
    files["quats.webp"] = _webp(texels(*packed.T, 252 + largest), width, height)

    scale_book, scale_labels = _kmeans_1d(s.log_scales.double().numpy())
    files["scales.webp"] = _webp(texels(*scale_labels.T), width, height)
    dc_book, dc_labels = _kmeans_1d(s.sh[:, 0].double().numpy())
    alpha = np.clip(np.round(s.opacities.double().numpy() * 255), 0, 255)
    files["sh0.webp"] = _webp(texels(*dc_labels.T, alpha), width, height)
    meta: dict = {
        "version": 2,
        "asset": {"generator": "omnivision"},
        "count": n,
        "means": {
            "mins": mins.tolist(),
            "maxs": maxs.tolist(),
            "files": ["means_l.webp", "means_u.webp"],
        },
        "scales": {"codebook": scale_book.tolist(), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": dc_book.tolist(), "files": ["sh0.webp"]},
    }
    degree = s.sh_degree
    if degree > 0:
        coeffs = _SH_COEFFS[degree]
        default = int(min(64, 2 ** np.floor(np.log2(max(n / 1024, 1)))) * 1024)
        k = max(1, min(n, palette or min(default, 4096)))
        rest = s.sh[:, 1:].double().numpy()  # (n, coeffs, 3)
        centroids, labels = _kmeans(rest.reshape(n, -1), k, iterations)
        book, book_labels = _kmeans_1d(centroids.reshape(k, coeffs, 3))
        rows = -(-k // 64)
        cells = np.zeros((rows * 64, coeffs, 4), np.uint8)
        cells[:k, :, :3], cells[:, :, 3] = book_labels, 255
        files["shN_centroids.webp"] = _webp(cells.reshape(-1, 4), 64 * coeffs, rows)
        files["shN_labels.webp"] = _webp(
            texels(labels & 255, labels >> 8, np.zeros(n, np.uint8)), width, height
        )
        meta["shN"] = {
            "count": k,
            "bands": degree,
            "codebook": book.tolist(),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        }
    # integer extras (object ids, ...) in a sidecar beside it, in this order (semantics.py)
    with (
        atomic_with_semantics(path, s, source) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as bundle,
    ):
        bundle.writestr("meta.json", json.dumps(meta))
        for name, data in files.items():
            bundle.writestr(name, data)
    return path


__all__ = ["is_sog", "read_sog", "write_sog"]
