"""The splats as viser's web renderer takes them, and which parts of them an update must send.

viser packs each Gaussian into 32 bytes: centre (3 x float32), covariance (6 x float16, upper
triangle) and RGBA (4 x uint8); a splat node's update re-sends its whole buffer. So:

- **fp16 covariances.** float16 keeps full precision only above 6.1e-5, and a variance of 1e-8
  (a 0.1 mm Gaussian) becomes 0. `display_scale` picks a power of ten s so the main axes of
  nearly all Gaussians are in range; centres and covariances are sent multiplied by s and s²
  and the node is scaled by 1/s, so the browser draws the scene at its true size and rays,
  picks and cameras stay in scene units.
- **Only what changed.** Splats are laid out in Morton (z-curve) order of their centres and
  split into chunks of nearby Gaussians, one splat node each; the browser sorts all nodes
  together. An update compares the packed RGBA of each chunk with what was sent last and
  re-sends only the chunks that differ (selecting an object touches a few chunks).

Pure numpy, no viser: `app.py` owns the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, UInt32

FP16_MIN_NORMAL = 6.104e-5
"""Smallest float16 with full (11-bit) precision; below it precision drops, below 6e-8 it is 0."""
FP16_MAX = 65504.0


def display_scale(scales: Float[np.ndarray, "N 3"], headroom: float = 16.0) -> float:
    """A power of ten s such that the largest-axis variance of 99% of the Gaussians, times s²,
    is a normal float16, while the largest variance times s² stays below FP16_MAX / headroom
    (so rotated covariances and the renderer's sums do not overflow). 1.0 when no scaling helps."""
    if len(scales) == 0:
        return 1.0
    variance = np.square(np.asarray(scales, np.float64).max(axis=1))
    variance = variance[np.isfinite(variance)]
    if variance.size == 0:
        return 1.0
    low = float(np.quantile(variance, 0.01))
    high = float(variance.max())
    ceiling = FP16_MAX / headroom
    k = 0
    while high * 100.0**k > ceiling and k > -30:
        k -= 1
    while low * 100.0**k < FP16_MIN_NORMAL and high * 100.0 ** (k + 1) <= ceiling and k < 30:
        k += 1
    return 10.0**k


def covariances(
    quats: Float[np.ndarray, "N 4"], scales: Float[np.ndarray, "N 3"], scale: float = 1.0
) -> Float[np.ndarray, "N 3 3"]:
    """R diag(scale * scales)² Rᵀ per Gaussian from unit `wxyz` quaternions (float32)."""
    import torch

    from omnivision.scenes.gaussians import quats_to_rotmats

    rot = quats_to_rotmats(torch.as_tensor(np.asarray(quats, np.float32))).numpy()
    m = rot * (np.asarray(scales, np.float32) * np.float32(scale))[:, None, :]
    return np.einsum("nij,nkj->nik", m, m)


def morton_order(points: Float[np.ndarray, "N 3"], bits: int = 10) -> np.ndarray:
    """Indices sorting `points` along a z-order curve of their bounding box (nearby points end
    up nearby in the order)."""
    p = np.asarray(points, np.float64)
    if len(p) == 0:
        return np.zeros(0, np.int64)
    lo, hi = p.min(axis=0), p.max(axis=0)
    q = ((p - lo) / np.maximum(hi - lo, 1e-12) * ((1 << bits) - 1)).astype(np.uint64)
    code = np.zeros(len(p), np.uint64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


def pack_rgba(
    rgb: Float[np.ndarray, "N 3"], opacity: Float[np.ndarray, "N"]
) -> UInt32[np.ndarray, "N"]:
    """RGBA bytes as viser packs them (r in the low byte), one uint32 per Gaussian."""
    rgba = np.empty((len(rgb), 4), np.uint8)
    rgba[:, :3] = np.clip(rgb * 255.0 + 0.5, 0, 255)
    rgba[:, 3] = np.clip(opacity * 255.0 + 0.5, 0, 255)
    return rgba.view(np.uint32).reshape(-1)


def pack_geometry(
    centers: Float[np.ndarray, "N 3"], covariance: Float[np.ndarray, "N 3 3"]
) -> UInt32[np.ndarray, "N 8"]:
    """viser's 8 x uint32 buffer with centres and fp16 covariances (RGBA left 0)."""
    buffer = np.zeros((len(centers), 8), np.uint32)
    buffer[:, 0:3] = np.ascontiguousarray(centers, np.float32).view(np.uint32)
    triu = covariance.reshape(-1, 9)[:, [0, 1, 2, 4, 5, 8]]
    buffer[:, 4:7] = np.ascontiguousarray(triu, np.float16).view(np.uint32)
    return buffer


def unpack_covariances(buffer: UInt32[np.ndarray, "N 8"]) -> Float[np.ndarray, "N 3 3"]:
    """The (N, 3, 3) float32 covariances stored in a packed buffer (exactly its fp16 values)."""
    triu = buffer[:, 4:7].copy().view(np.float16).astype(np.float32)
    cov = np.empty((len(buffer), 3, 3), np.float32)
    for k, (i, j) in enumerate(((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))):
        cov[:, i, j] = cov[:, j, i] = triu[:, k]
    return cov


def chunk_size_for(n: int, max_chunks: int = 64, smallest: int = 4096) -> int:
    """A power of two so that n splats make at most about `max_chunks` chunks."""
    size = smallest
    while size * max_chunks < n:
        size *= 2
    return size


@dataclass
class SplatLayout:
    """The loaded Gaussians in display order, packed for viser, split into chunks.

    `order[k]` is the loaded-scene row of display splat k; `buffers[c]` is chunk c's (n_c, 8)
    uint32 buffer (centres x `scale`, covariances x `scale`²); the node showing it is scaled by
    1 / `scale`. `sent[c]` is the RGBA last sent for chunk c (None before the first send).
    """

    order: np.ndarray
    scale: float
    chunk_size: int
    buffers: list[np.ndarray]
    sent: list[np.ndarray | None]

    @staticmethod
    def build(
        means: Float[np.ndarray, "N 3"],
        quats: Float[np.ndarray, "N 4"],
        scales: Float[np.ndarray, "N 3"],
        chunk_size: int | None = None,
    ) -> SplatLayout:
        n = len(means)
        order = morton_order(means)
        s = display_scale(scales)
        size = chunk_size or chunk_size_for(n)
        packed = pack_geometry(
            (np.asarray(means, np.float64)[order] * s).astype(np.float32),
            covariances(quats[order], scales[order], s),
        )
        buffers = [packed[i : i + size] for i in range(0, max(n, 1), size)]
        return SplatLayout(order, s, size, buffers, [None] * len(buffers))

    @property
    def num_chunks(self) -> int:
        return len(self.buffers)

    def changed_chunks(self, rgba_loaded: UInt32[np.ndarray, "N"]) -> list[tuple[int, np.ndarray]]:
        """(chunk, its new (n_c, 8) buffer) for every chunk whose RGBA differs from what was last
        sent; records the new RGBA as sent. `rgba_loaded` is in loaded-scene order."""
        rgba = rgba_loaded[self.order]
        changed = []
        for c, buffer in enumerate(self.buffers):
            new = rgba[c * self.chunk_size : c * self.chunk_size + len(buffer)]
            last = self.sent[c]
            if last is not None and np.array_equal(last, new):
                continue
            buffer = buffer.copy()
            buffer[:, 7] = new
            self.buffers[c] = buffer
            self.sent[c] = new
            changed.append((c, buffer))
        return changed
