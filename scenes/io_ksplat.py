""".ksplat (read): the format of mkkellogg's GaussianSplats3D viewer (`create-ksplat.js`, the
viewer's "save as .ksplat").

Layout (little-endian): a 4096-byte main header (version 0.x at bytes 0-1, max section count at
4, splat count at 16, compression level 0-2 at 20, the SH range of level 2 at 36/40), then
max-section-count headers of 1024 bytes (splat count 0, max splat count 4, bucket size 8,
bucket count 12, bucket block size 16, bucket storage bytes 20, quantization range 24, full
buckets 32, partly filled buckets 36, SH degree 40), then per section: the sizes of the partly
filled buckets (uint32 each), the bucket centres (3 float32 each), and the splats, max-splat-count
slots of a fixed size:

- level 0: centre 3 x f32, scale 3 x f32 (linear), rotation 4 x f32 (w x y z), RGBA8, SH f32;
- levels 1 and 2: centre 3 x uint16 around the bucket centre ((q - range) x block / 2 / range),
  scale and rotation float16, RGBA8, SH float16 (1) or uint8 over [min, max] (2).

SH per degree are channel-major (degree 1: r0 r1 r2 g0 g1 g2 b0 b1 b2, then degree 2's 15).
Colour and opacity are 8-bit, so the DC term and opacity are quantized in every level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import SceneError
from .gaussians import SH_C0, GaussianScene, num_sh_bases

MAIN_HEADER = 4096
SECTION_HEADER = 1024
_SH_COMPONENTS = (0, 9, 24, 45)


@dataclass
class _Section:
    count: int
    slots: int
    bucket_size: int
    buckets: int
    block: float
    bucket_bytes: int
    range: int
    full: int
    partial: int
    degree: int


def _sections(data: bytes, path: Path, max_sections: int) -> list[_Section]:
    if MAIN_HEADER + max_sections * SECTION_HEADER > len(data):
        raise SceneError(path, f"{max_sections} section headers do not fit the file (truncated?)")
    out = []
    for k in range(max_sections):
        start = MAIN_HEADER + k * SECTION_HEADER
        u32 = [int(v) for v in np.frombuffer(data, "<u4", count=10, offset=start)]
        u16 = np.frombuffer(data, "<u2", count=21, offset=start)
        block = float(np.frombuffer(data, "<f4", count=1, offset=start + 16)[0])
        out.append(
            _Section(
                u32[0],
                u32[1],
                u32[2],
                u32[3],
                block,
                int(u16[10]),
                u32[6],
                u32[8],
                u32[9],
                int(u16[20]),
            )
        )
    return out


def read_ksplat(path: str | Path) -> GaussianScene:
    """Read every section of a .ksplat into one scene (SH degree: the highest of its sections)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < MAIN_HEADER:
        raise SceneError(path, f"{len(data)} bytes: too short for a .ksplat (header is 4096)")
    major, minor = data[0], data[1]
    if major != 0 or minor < 1:
        raise SceneError(path, f"not a .ksplat this reader knows (version {major}.{minor})")
    max_sections = int(np.frombuffer(data, "<u4", count=1, offset=4)[0])
    total = int(np.frombuffer(data, "<u4", count=1, offset=16)[0])
    level = int(np.frombuffer(data, "<u2", count=1, offset=20)[0])
    if level > 2:
        raise SceneError(path, f"unknown compression level {level} (0, 1 or 2)")
    sh_min, sh_max = (float(v) for v in np.frombuffer(data, "<f4", count=2, offset=36))
    sh_min, sh_max = sh_min or -1.5, sh_max or 1.5
    sections = _sections(data, path, max_sections)
    degree = max((s.degree for s in sections if s.count), default=0)
    if degree > 3:
        raise SceneError(path, f"SH degree {degree} in a section header (0-3)")

    base = 44 if level == 0 else 24
    sh_bytes = (4, 2, 1)[level]
    parts: list[dict[str, np.ndarray]] = []
    offset = MAIN_HEADER + max_sections * SECTION_HEADER
    for k, s in enumerate(sections):
        components = _SH_COMPONENTS[s.degree]
        stride = base + components * sh_bytes
        meta = s.partial * 4
        storage = s.bucket_bytes * s.buckets + meta
        end = offset + storage + stride * s.slots
        if s.count > s.slots or end > len(data):
            raise SceneError(path, f"section {k} reaches past the end of the file (truncated?)")
        if s.count:
            rows = np.frombuffer(data, np.uint8, count=stride * s.count, offset=offset + storage)
            rows = rows.reshape(s.count, stride)
            part: dict[str, np.ndarray] = {}
            if level == 0:
                part["means"] = rows[:, 0:12].copy().view("<f4").astype(np.float64)
                part["scales"] = rows[:, 12:24].copy().view("<f4").astype(np.float64)
                part["quats"] = rows[:, 24:40].copy().view("<f4").astype(np.float64)
            else:
                quantized = rows[:, 0:6].copy().view("<u2").astype(np.float64)
                centres = np.frombuffer(data, "<f4", count=3 * s.buckets, offset=offset + meta)
                bucket = _bucket_of_each_splat(s, data, offset, path, k)
                scale = s.block / 2.0 / (s.range or 32767)
                part["means"] = (quantized - (s.range or 32767)) * scale + centres.reshape(-1, 3)[
                    bucket
                ].astype(np.float64)
                part["scales"] = rows[:, 6:12].copy().view("<f2").astype(np.float64)
                part["quats"] = rows[:, 12:20].copy().view("<f2").astype(np.float64)
            colour = base - 4
            part["rgba"] = rows[:, colour : colour + 4].astype(np.float64) / 255.0
            raw = rows[:, base:]
            if level == 0:
                coeffs = raw.copy().view("<f4").astype(np.float64)
            elif level == 1:
                coeffs = raw.copy().view("<f2").astype(np.float64)
            else:
                coeffs = sh_min + raw.astype(np.float64) / 255.0 * (sh_max - sh_min)
            part["rest"] = _rest_from_channel_major(coeffs, s.degree, degree)
            parts.append(part)
        offset = end
    if sum(len(p["means"]) for p in parts) != total:
        raise SceneError(path, f"header says {total} splats, the sections hold another count")
    if not parts:
        raise SceneError(path, "the file holds no splats")

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    rgba = cat("rgba")
    sh = np.concatenate([((rgba[:, :3] - 0.5) / SH_C0)[:, None], cat("rest")], axis=1)
    opacity = np.clip(rgba[:, 3], 1e-6, 1 - 1e-6)
    quats = cat("quats")
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    return GaussianScene(
        means=torch.from_numpy(cat("means")).float(),
        quats=torch.from_numpy(quats / np.where(norm > 0, norm, 1.0)).float(),
        log_scales=torch.from_numpy(np.log(np.maximum(cat("scales"), 1e-30))).float(),
        opacity_logits=torch.from_numpy(np.log(opacity / (1 - opacity))).float(),
        sh=torch.from_numpy(sh).float(),
    )


def _bucket_of_each_splat(s: _Section, data: bytes, offset: int, path: Path, k: int) -> np.ndarray:
    """Bucket index per splat: full buckets of `bucket_size` first, then the partly filled ones
    with the sizes stored at the start of the section."""
    full = np.repeat(np.arange(s.full), s.bucket_size)
    sizes = np.frombuffer(data, "<u4", count=s.partial, offset=offset).astype(np.int64)
    partial = np.repeat(np.arange(s.full, s.full + s.partial), sizes)
    bucket = np.concatenate([full, partial])[: s.count]
    if len(bucket) < s.count or (len(bucket) and bucket.max() >= s.buckets):
        raise SceneError(path, f"section {k}: its buckets do not cover its {s.count} splats")
    return bucket


def _rest_from_channel_major(coeffs: np.ndarray, degree: int, out_degree: int) -> np.ndarray:
    """(n, components) per-degree channel-major -> (n, bases(out_degree) - 1, 3), zeros past
    `degree`."""
    n = len(coeffs)
    rest = np.zeros((n, num_sh_bases(out_degree) - 1, 3))
    start, first = 0, 0
    for d in range(1, degree + 1):
        m = 2 * d + 1
        block = coeffs[:, start : start + 3 * m].reshape(n, 3, m)  # channel, coefficient
        rest[:, first : first + m] = block.transpose(0, 2, 1)
        start, first = start + 3 * m, first + m
    return rest


def is_ksplat(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() == ".ksplat" and path.is_file()


__all__ = ["is_ksplat", "read_ksplat"]
