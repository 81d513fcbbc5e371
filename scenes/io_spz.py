"""Niantic `.spz` (read v2/v3/v4, write v3): 8-bit quantised Gaussians, gzip (v2/v3) or zstd (v4).

Layout (github.com/nianticlabs/spz): a 16-byte header (magic "NGSP", version, numPoints, shDegree,
fractionalBits, flags, reserved), then per attribute, all Gaussians at a time: positions (24-bit
signed fixed point with `fractionalBits`), alphas (sigmoid x 255), colours (SH DC x 0.15 x 255 +
127.5), log-scales ((log s + 10) x 16), rotations (v2: xyz of the unit xyzw quaternion with w >= 0,
3 bytes; v3+: "smallest three", 2-bit index of the largest + 3 x (sign, 9-bit magnitude)) and SH
rest (x 128 + 128, coefficient-major, channel inner; 5 bits kept for degree 1, 4 above). v2/v3 gzip
all of it; v4 has a 32-byte plain header, a table of (compressed, raw) sizes at `tocOffset` and one
zstd stream per attribute. Coordinates are stored as given (no axis flip), as splat-transform and
spz's own `from: UNSPECIFIED` default do, so our PLY and our .spz share axes.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import SceneError
from .gaussians import GaussianScene, num_sh_bases
from .semantics import atomic_with_semantics, with_semantics

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
_GZIP_MAGIC = b"\x1f\x8b"
_COLOR_SCALE = 0.15
_SQRT1_2 = float(np.sqrt(0.5))
_MAG_MASK = (1 << 9) - 1


def is_spz(path: str | Path) -> bool:
    """True when the file starts like an .spz (a gzip stream or the v4 NGSP header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == _GZIP_MAGIC or head == struct.pack("<I", SPZ_MAGIC)


# -- encoding (numpy, vectorised) ----------------------------------------------------------------
def _round(values: np.ndarray) -> np.ndarray:
    """Round half away from zero, as C++ `std::round` (numpy's `round` goes half to even)."""
    whole = np.trunc(values)
    return whole + np.sign(values) * (np.abs(values - whole) >= 0.5)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(_round(values), 0, 255).astype(np.uint8)


def _pack_positions(means: np.ndarray, fractional_bits: int) -> np.ndarray:
    limit = (1 << 23) - 1
    fixed = np.clip(_round(means * np.float32(1 << fractional_bits)), -limit, limit)
    as_bytes = fixed.astype("<i4").view(np.uint8).reshape(-1, 3, 4)
    return np.ascontiguousarray(as_bytes[:, :, :3]).reshape(-1)


def _unpack_positions(raw: np.ndarray, fractional_bits: int) -> np.ndarray:
    b = raw.reshape(-1, 3, 3).astype(np.int32)
    value = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    value = np.where(value & 0x800000, value - (1 << 24), value)
    return (value / float(1 << fractional_bits)).astype(np.float32)


def _pack_rotations_v3(quats_wxyz: np.ndarray) -> np.ndarray:
    """Smallest three: 2-bit index of the largest |component| of xyzw, then per other component
    (in index order, the first in the highest bits) a sign bit relative to the largest and a
    9-bit magnitude scaled by 1/sqrt(1/2)."""
    q = quats_wxyz[:, [1, 2, 3, 0]].astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    negate = np.take_along_axis(q, largest[:, None], axis=1)[:, 0] < 0
    packed = largest.astype(np.uint32)
    for i in range(4):
        other = largest != i
        mag = np.floor(_MAG_MASK * (np.abs(q[:, i]) / np.float32(_SQRT1_2)) + np.float32(0.5))
        mag = mag.astype(np.uint32)
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        shifted = (packed << 10) | (negbit << 9) | np.minimum(mag, _MAG_MASK)
        packed = np.where(other, shifted, packed)
    return packed.astype("<u4").view(np.uint8)


def _unpack_rotations_v3(raw: np.ndarray) -> np.ndarray:
    packed = raw.view("<u4").astype(np.uint32)
    largest = (packed >> 30).astype(np.int64)
    q = np.zeros((len(packed), 4), np.float64)
    for i in range(3, -1, -1):
        other = largest != i
        value = _SQRT1_2 * (packed & _MAG_MASK) / _MAG_MASK
        value = np.where((packed >> 9) & 1, -value, value)
        q[:, i] = np.where(other, value, 0.0)
        packed = np.where(other, packed >> 10, packed)
    rest = np.sum(q * q, axis=1)
    np.put_along_axis(q, largest[:, None], np.sqrt(np.maximum(0.0, 1.0 - rest))[:, None], axis=1)
    return q[:, [3, 0, 1, 2]].astype(np.float32)


def _unpack_rotations_v2(raw: np.ndarray) -> np.ndarray:
    xyz = raw.reshape(-1, 3).astype(np.float32) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - np.sum(xyz * xyz, axis=1)))
    return np.concatenate([w[:, None], xyz], axis=1).astype(np.float32)


def _quantize_sh(rest: np.ndarray) -> np.ndarray:
    """(N, K-1, 3) -> (N, (K-1)*3) uint8, coefficient-major; degree-1 coefficients keep 5 bits,
    higher ones 4 (spz's defaults), rounding to the middle of each bucket as spz does."""
    q = (_round(rest.astype(np.float32) * np.float32(128.0)) + 128).astype(np.int64)
    bucket = np.full((1, rest.shape[1], 1), 16, np.int64)
    bucket[:, :3] = 8
    q = (np.maximum(q, 0) + bucket // 2) // bucket * bucket  # C++ integer division
    return np.clip(q, 0, 255).astype(np.uint8).reshape(len(rest), -1)


def write_spz(
    scene: GaussianScene,
    path: str | Path,
    fractional_bits: int | None = None,
    source: str | Path | None = None,
) -> Path:
    """Write an `.spz` (version 3, gzip) atomically.

    `fractional_bits` (default: 12 as spz does, fewer when the scene reaches beyond +-2048 so every
    position fits the 24-bit range). Lossy: see scenes/DESIGN.md for the measured loss. Integer
    extras go to a semantics sidecar (`semantics.py`; `source` is recorded there).
    """
    path = Path(path)
    s = scene.to("cpu")
    n, k = len(s), s.sh.shape[1]
    if k > num_sh_bases(4):
        raise SceneError(path, f"spz holds SH degree <= 4, the scene has {s.sh_degree}")
    means = s.means.float().numpy()
    if fractional_bits is None:
        extent = float(np.abs(means).max()) if n else 0.0
        fractional_bits = 12
        while fractional_bits > 0 and extent * (1 << fractional_bits) >= (1 << 23) - 1:
            fractional_bits -= 1
    f32 = np.float32  # spz computes in float: same bytes as its encoder
    header = struct.pack("<IIIBBBB", SPZ_MAGIC, 3, n, s.sh_degree, fractional_bits, 0, 0)
    parts = [
        header,
        _pack_positions(means, fractional_bits).tobytes(),
        _u8(s.opacities.float().numpy() * f32(255.0)).tobytes(),
        _u8(s.sh[:, 0].float().numpy() * f32(_COLOR_SCALE * 255.0) + f32(127.5)).tobytes(),
        _u8((s.log_scales.float().numpy() + f32(10.0)) * f32(16.0)).tobytes(),
        _pack_rotations_v3(s.quats.float().numpy()).tobytes(),
        _quantize_sh(s.sh[:, 1:].float().numpy()).tobytes(),
    ]
    with (
        atomic_with_semantics(path, s, source) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f,
    ):
        for part in parts:
            f.write(part)
    return path


# -- decoding ------------------------------------------------------------------------------------
def _decompress_v4(path: Path, data: bytes, sizes: list[int]) -> list[bytes]:
    try:
        import zstandard
    except ImportError:
        raise SceneError(path, "spz version 4 is zstd-compressed: pip install zstandard") from None
    num_streams, toc_offset = data[15], struct.unpack_from("<I", data, 16)[0]
    if num_streams != len(sizes) or toc_offset < 32 or toc_offset + 16 * num_streams > len(data):
        raise SceneError(
            path, f"spz v4 table of contents is broken ({num_streams} streams at {toc_offset})"
        )
    offset, streams = toc_offset + 16 * num_streams, []
    decompressor = zstandard.ZstdDecompressor()
    for i, want in enumerate(sizes):
        packed_size, raw_size = struct.unpack_from("<QQ", data, toc_offset + 16 * i)
        if raw_size != want or offset + packed_size > len(data):
            raise SceneError(path, f"truncated or corrupt spz v4 stream {i}")
        try:
            stream = decompressor.decompress(data[offset : offset + packed_size], want)
        except zstandard.ZstdError as err:
            raise SceneError(path, f"corrupt zstd stream {i} ({err})") from None
        if len(stream) != want:
            raise SceneError(path, f"spz v4 stream {i} holds {len(stream)} bytes, want {want}")
        streams.append(stream)
        offset += packed_size
    return streams


def read_spz(path: str | Path) -> GaussianScene:
    """Read a Niantic `.spz` (version 2, 3 or 4) into Gaussians (quantisation of the format
    applies), with the integer extras of its semantics sidecar when there is one."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(path, "file not found")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise SceneError(path, f"truncated or corrupt gzip stream ({err})") from None
    elif data[:4] != struct.pack("<I", SPZ_MAGIC):
        what = "a PLY file" if data[:4] == b"ply\n" else f"starts with {data[:4]!r}"
        raise SceneError(path, f"not an .spz file: neither gzip nor NGSP magic ({what})")
    if len(data) < 16:
        raise SceneError(path, f"spz header is {len(data)} bytes, want 16")
    magic, version, n, degree, fractional_bits, _flags, _ = struct.unpack_from("<IIIBBBB", data)
    if magic != SPZ_MAGIC:
        raise SceneError(path, f"not an .spz file: magic 0x{magic:08x}, want 0x{SPZ_MAGIC:08x}")
    if version not in (2, 3, 4):
        raise SceneError(path, f"spz version {version} not supported (2, 3, 4 are)")
    if degree > 4:
        raise SceneError(path, f"spz SH degree {degree} not supported (0-4 are)")
    k = num_sh_bases(degree)
    sizes = [9 * n, n, 3 * n, 3 * n, (3 if version == 2 else 4) * n]
    if k > 1:
        sizes.append(3 * (k - 1) * n)
    if version >= 4:
        if len(data) < 32:
            raise SceneError(path, f"spz v4 header is {len(data)} bytes, want 32")
        streams = _decompress_v4(path, data, sizes)
    else:
        need = 16 + sum(sizes)
        if len(data) < need:
            raise SceneError(
                path, f"truncated: {n} Gaussians need {need} bytes, the stream holds {len(data)}"
            )
        bounds = np.cumsum([16, *sizes])
        streams = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if n == 0:
        raise SceneError(path, "spz holds 0 Gaussians")
    raw = [np.frombuffer(s, np.uint8) for s in streams]
    alphas = np.clip(raw[1].astype(np.float32) / 255.0, 1e-6, 1 - 1e-6)
    rotations = _unpack_rotations_v2(raw[4]) if version == 2 else _unpack_rotations_v3(raw[4])
    dc = ((raw[2].astype(np.float32) / 255.0 - 0.5) / _COLOR_SCALE).reshape(n, 1, 3)
    rest = (raw[5].astype(np.float32) - 128.0) / 128.0 if k > 1 else np.zeros(0, np.float32)
    sh = np.concatenate([dc, rest.reshape(n, k - 1, 3)], axis=1)
    scene = GaussianScene(
        means=torch.from_numpy(_unpack_positions(raw[0], fractional_bits)),
        quats=torch.nn.functional.normalize(torch.from_numpy(rotations), dim=-1),
        log_scales=torch.from_numpy(raw[3].astype(np.float32).reshape(n, 3) / 16.0 - 10.0),
        opacity_logits=torch.from_numpy(np.log(alphas / (1 - alphas))),
        sh=torch.from_numpy(np.ascontiguousarray(sh, dtype=np.float32)),
    )
    return with_semantics(scene, path)


__all__ = ["SPZ_MAGIC", "is_spz", "read_spz", "write_spz"]
