"""PlayCanvas/SuperSplat `.compressed.ply` (read/write): chunks of 256 Gaussians, 16 bytes each.

Layout (as PlayCanvas's splat-transform and SuperSplat write it): `element chunk` with 18 floats per
256 Gaussians (min/max of x, y, z, of the log-scales and of the DC colour 0.5 + SH_C0 * f_dc), then
`element vertex` with four uint32 per Gaussian: position 11-10-11 bits and log-scale 11-10-11 bits
normalised to the chunk's box, rotation as "smallest three" (2-bit index of the largest |w, x, y, z|
component, made positive, then the other three as 10-bit (q / sqrt 2 + 0.5)), colour 8-8-8 in the
chunk's colour box plus 8-bit sigmoid opacity. An optional `element sh` holds the INRIA `f_rest_*`
(channel-major) as uint8 (v / 8 + 0.5) x 256. The writer sorts Gaussians into Morton order first,
as splat-transform does, so each chunk's box is small (`morton_order` gives the permutation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData

from .errors import SceneError
from .gaussians import SH_C0, GaussianScene, num_sh_bases
from .semantics import atomic_with_semantics, with_semantics

CHUNK = 256
CHUNK_PROPERTIES = tuple(
    f"{bound}_{axis}"
    for group in (("x", "y", "z"), ("scale_x", "scale_y", "scale_z"), ("r", "g", "b"))
    for bound in ("min", "max")
    for axis in group
)
VERTEX_PROPERTIES = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_ROT_SCALE = float(np.sqrt(2.0) * 0.5)


def _header_elements(path: Path) -> dict[str, list[str]] | None:
    try:
        with open(path, "rb") as f:
            header = PlyData._parse_header(f)  # noqa: SLF001 - header-only read, no data loaded
    except Exception:
        return None
    return {e.name: [p.name for p in e.properties] for e in header.elements}


def is_compressed_ply(path: str | Path) -> bool:
    """True for a PLY with a `chunk` element and packed `vertex` properties."""
    elements = _header_elements(Path(path))
    return (
        bool(elements) and "chunk" in elements and "packed_position" in elements.get("vertex", [])
    )


def morton_order(means: torch.Tensor) -> torch.Tensor:
    """Permutation sorting points along a 3D Morton (Z-order) curve of their bounding box (10 bits
    per axis): the order `write_compressed_ply` writes Gaussians in."""
    p = means.double()
    lo, hi = p.min(0).values, p.max(0).values
    cells = ((p - lo) / (hi - lo).clamp_min(1e-12) * 1023).round().long().clamp(0, 1023)
    code = torch.zeros(len(p), dtype=torch.long)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + (2 - axis))
    return torch.argsort(code, stable=True)


def _pack_unorm(values: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(values * top + 0.5), 0, top).astype(np.uint32)


def _unpack_unorm(packed: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return (packed & top).astype(np.float32) / top


def _chunk_normalise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """values (C, 256, D) into [0, 1] of each chunk's [lo, hi] (C, D); flat ranges map to 0."""
    span = (hi - lo)[:, None, :]
    out = np.where(span < 1e-5, 0.0, (values - lo[:, None, :]) / np.where(span < 1e-5, 1, span))
    return np.clip(out, 0.0, 1.0)


def _pack_111011(unit: np.ndarray) -> np.ndarray:
    return (
        (_pack_unorm(unit[..., 0], 11) << 21)
        | (_pack_unorm(unit[..., 1], 10) << 11)
        | _pack_unorm(unit[..., 2], 11)
    )


def _pack_rotations(quats_wxyz: np.ndarray) -> np.ndarray:
    q = quats_wxyz / np.linalg.norm(quats_wxyz, axis=-1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=-1)
    q = np.where(np.take_along_axis(q, largest[..., None], axis=-1) < 0, -q, q)
    packed = largest.astype(np.uint32)
    for i in range(4):
        shifted = (packed << 10) | _pack_unorm(q[..., i] * _ROT_SCALE + 0.5, 10)
        packed = np.where(largest != i, shifted, packed)
    return packed


def write_compressed_ply(
    scene: GaussianScene, path: str | Path, source: str | Path | None = None
) -> Path:
    """Write a `.compressed.ply` atomically, Gaussians in `morton_order`. Lossy (DESIGN.md);
    integer extras go to a semantics sidecar in that order (`semantics.py`; `source` is recorded
    there), the others are dropped."""
    path = Path(path)
    s = scene.to("cpu")
    n, k = len(s), s.sh.shape[1]
    if k > num_sh_bases(3):
        raise SceneError(path, f"compressed.ply holds SH degree <= 3, the scene has {s.sh_degree}")
    s = s.subset(morton_order(s.means))
    chunks = -(-n // CHUNK)
    pad = np.concatenate([np.arange(n), np.full(chunks * CHUNK - n, n - 1)])

    def chunked(t: torch.Tensor) -> np.ndarray:
        return t.double().numpy()[pad].reshape(chunks, CHUNK, -1)

    means = chunked(s.means)
    scales = chunked(s.log_scales)
    colours = chunked(s.sh[:, 0] * SH_C0 + 0.5)
    lo_p, hi_p = means.min(1), means.max(1)
    lo_s, hi_s = np.clip(scales.min(1), -20, 20), np.clip(scales.max(1), -20, 20)
    lo_c, hi_c = colours.min(1), colours.max(1)
    packed = np.empty((chunks, CHUNK, 4), np.uint32)
    packed[..., 0] = _pack_111011(_chunk_normalise(means, lo_p, hi_p))
    packed[..., 1] = _pack_rotations(chunked(s.quats))
    packed[..., 2] = _pack_111011(_chunk_normalise(scales, lo_s, hi_s))
    rgb = _chunk_normalise(colours, lo_c, hi_c)
    alpha = chunked(s.opacities)[..., 0]
    packed[..., 3] = (
        (_pack_unorm(rgb[..., 0], 8) << 24)
        | (_pack_unorm(rgb[..., 1], 8) << 16)
        | (_pack_unorm(rgb[..., 2], 8) << 8)
        | _pack_unorm(alpha, 8)
    )
    bounds = np.concatenate([lo_p, hi_p, lo_s, hi_s, lo_c, hi_c], axis=1).astype("<f4")
    rest = s.sh[:, 1:].double().transpose(1, 2).reshape(n, -1).numpy()  # INRIA channel-major
    sh_bytes = np.clip(np.trunc((rest / 8 + 0.5) * 256), 0, 255).astype(np.uint8)
    lines = ["ply", "format binary_little_endian 1.0", "comment Generated by omnivision"]
    lines += [f"element chunk {chunks}"] + [f"property float {p}" for p in CHUNK_PROPERTIES]
    lines += [f"element vertex {n}"] + [f"property uint {p}" for p in VERTEX_PROPERTIES]
    if k > 1:
        lines += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(rest.shape[1])]
    lines.append("end_header\n")
    with atomic_with_semantics(path, s, source) as tmp, open(tmp, "wb") as f:
        f.write("\n".join(lines).encode("ascii"))
        f.write(bounds.tobytes())
        f.write(packed.reshape(-1, 4)[:n].astype("<u4").tobytes())
        f.write(sh_bytes.tobytes())
    return path


def read_compressed_ply(path: str | Path) -> GaussianScene:
    """Read a PlayCanvas `.compressed.ply` (quantisation of the format applies), with the
    integer extras of its semantics sidecar when there is one."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(path, "file not found")
    elements = _header_elements(path)
    if elements is None:
        raise SceneError(path, "not a readable PLY file (bad header)")
    missing = [p for p in VERTEX_PROPERTIES if p not in elements.get("vertex", [])]
    missing += [p for p in CHUNK_PROPERTIES[:12] if p not in elements.get("chunk", [])]
    if missing:
        raise SceneError(path, f"not a compressed ply: missing {', '.join(missing)}")
    try:
        ply = PlyData.read(str(path))
    except Exception as err:
        raise SceneError(path, f"truncated or corrupt PLY ({type(err).__name__}: {err})") from None
    vertex, chunk = ply["vertex"].data, ply["chunk"].data
    n = len(vertex)
    if n == 0:
        raise SceneError(path, "PLY holds 0 Gaussians")
    if len(chunk) != -(-n // CHUNK):
        raise SceneError(path, f"{len(chunk)} chunks for {n} Gaussians, want {-(-n // CHUNK)}")
    owner = np.arange(n) // CHUNK

    def lerp(names: list[str], unit: np.ndarray) -> np.ndarray:
        lo = np.stack([np.asarray(chunk[f"min_{a}"], np.float32)[owner] for a in names], -1)
        hi = np.stack([np.asarray(chunk[f"max_{a}"], np.float32)[owner] for a in names], -1)
        return lo * (1 - unit) + hi * unit

    def unit_111011(packed: np.ndarray) -> np.ndarray:
        parts = [_unpack_unorm(packed >> 21, 11), _unpack_unorm(packed >> 11, 10)]
        return np.stack([*parts, _unpack_unorm(packed, 11)], -1)

    words = {p: np.asarray(vertex[p], np.uint32) for p in VERTEX_PROPERTIES}
    means = lerp(["x", "y", "z"], unit_111011(words["packed_position"]))
    log_scales = lerp(["scale_x", "scale_y", "scale_z"], unit_111011(words["packed_scale"]))

    rot = words["packed_rotation"]
    others = np.stack([(_unpack_unorm(rot >> s, 10) - 0.5) / _ROT_SCALE for s in (20, 10, 0)], -1)
    largest = (rot >> 30).astype(np.int64)
    biggest = np.sqrt(np.maximum(0.0, 1.0 - np.sum(others * others, axis=-1)))
    quats = np.empty((n, 4), np.float32)
    slot = np.zeros(n, np.int64)
    for i in range(4):
        is_largest = largest == i
        quats[:, i] = np.where(is_largest, biggest, others[np.arange(n), np.minimum(slot, 2)])
        slot += ~is_largest

    colour = words["packed_color"]
    rgb = np.stack([_unpack_unorm(colour >> s, 8) for s in (24, 16, 8)], -1)
    if "min_r" in elements["chunk"]:
        rgb = lerp(["r", "g", "b"], rgb)
    alpha = np.clip(_unpack_unorm(colour, 8), 1e-6, 1 - 1e-6)
    sh = ((rgb - 0.5) / SH_C0)[:, None, :]
    if "sh" in ply:
        names = elements["sh"]
        k = len(names) // 3 + 1
        if len(names) % 3 or k not in (num_sh_bases(d) for d in range(4)):
            raise SceneError(path, f"{len(names)} sh properties do not match an SH degree <= 3")
        data = ply["sh"].data
        if len(data) != n:
            raise SceneError(path, f"{len(data)} sh rows for {n} Gaussians")
        if names == [f"f_rest_{i}" for i in range(len(names))] and data.dtype.itemsize == len(
            names
        ):
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(n, -1).astype(np.float32)
        else:  # another property order or type: column by column
            raw = np.stack(
                [np.asarray(data[f"f_rest_{i}"], np.float32) for i in range(len(names))], -1
            )
        unit = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256))
        rest = ((unit - 0.5) * 8).reshape(n, 3, k - 1).transpose(0, 2, 1)
        sh = np.concatenate([sh, rest], axis=1)
    scene = GaussianScene(
        means=torch.from_numpy(means.astype(np.float32)),
        quats=torch.nn.functional.normalize(torch.from_numpy(quats), dim=-1),
        log_scales=torch.from_numpy(log_scales.astype(np.float32)),
        opacity_logits=torch.from_numpy(np.log(alpha / (1 - alpha)).astype(np.float32)),
        sh=torch.from_numpy(np.ascontiguousarray(sh, dtype=np.float32)),
    )
    return with_semantics(scene, path)


__all__ = ["is_compressed_ply", "morton_order", "read_compressed_ply", "write_compressed_ply"]
