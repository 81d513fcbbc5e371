"""Grid-pooled aggregation: a view's blending weights pooled onto the feature map's own grid.

Bilinear upsampling U (h·w cells -> H·W pixels) is linear, so the lift of a coarse map F is

    Σ_p w_i(p) (U F)(p) = Σ_c (Wᵀ U)_{i c} F(c)

`pool_weights` builds the sparse (N, cells) matrix P = Wᵀ U of one view, streaming the tile blocks
of `scenes.render.blend_blocks`: each block's (tiles, Gaussians, pixels) weights are contracted with
the tile's bilinear taps (a few cells per axis, two small matmuls) and added with one `index_add_`
into a ragged accumulator that gives every Gaussian a dense window of the cells its tiles touch
(`scenes.render.tile_ranges`), so nothing is sorted. The D-dependent product is then one sparse
CSR x dense matmul per chunk of rows (`PooledWeights.lift_into`), or, for label maps (one-hot
features), a scatter of P's entries onto (Gaussian, label) (`PooledWeights.lift_labels_into`).
The taps are `F.interpolate(bilinear, align_corners=False)` applied to the identity, so they are
the upsampling `resize_feature_map` does, border clamping included.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from omnivision.scenes.cameras import Cameras
from omnivision.scenes.gaussians import GaussianScene
from omnivision.scenes.project import Projected
from omnivision.scenes.render import (
    RenderConfig,
    TileGrid,
    blend_blocks,
    project_view,
    tile_ranges,
)

PRODUCT_ELEMENTS = 1 << 22
"""Rows x D of one chunk of the sparse product (its only D-sized temporary: 16 MB in fp32)."""


def bilinear_matrix(size_out: int, size_in: int) -> Float[Tensor, "out in"]:
    """1-D weights of `F.interpolate(mode="bilinear", align_corners=False)` from `size_in` samples
    to `size_out`: row o holds the (at most two) input weights of output o. Obtained by
    interpolating the identity, so it is exactly torch's rule, border clamping included."""
    eye = torch.eye(size_in).reshape(1, size_in, 1, size_in)
    rows = F.interpolate(eye, size=(1, size_out), mode="bilinear", align_corners=False)
    return rows[0, :, 0].T.contiguous()


@dataclass
class Bands:
    """Bilinear taps of each tile column (or row) of the render onto the grid: pixel `l` of tile
    `k` takes weight `taps[k, l, j]` from cell `starts[k] + j` (j < window)."""

    taps: Float[Tensor, "tiles ts window"]
    starts: Int[Tensor, "tiles"]

    @property
    def window(self) -> int:
        return self.taps.shape[2]


def tile_bands(size_out: int, size_in: int, tile_size: int, tiles: int) -> Bands:
    """The taps of `bilinear_matrix(size_out, size_in)` cut into per-tile windows: the narrowest
    window (the same for every tile) holding every nonzero tap of the tile's pixels."""
    matrix = bilinear_matrix(size_out, size_in)
    padded = matrix.new_zeros(tiles * tile_size, size_in)
    padded[:size_out] = matrix  # pixels past the image border (weights 0) take no cells
    nonzero = padded != 0
    has = nonzero.any(1)
    first = torch.where(
        has, nonzero.float().argmax(1), torch.full_like(has, size_in, dtype=torch.long)
    )
    last = torch.where(has, size_in - 1 - nonzero.flip(1).float().argmax(1), -1)
    first = first.view(tiles, tile_size).min(1).values
    last = last.view(tiles, tile_size).max(1).values
    window = int((last - first + 1).max())
    starts = first.clamp(max=size_in - window)
    cols = starts[:, None] + torch.arange(window)
    rows = torch.arange(tiles * tile_size).view(tiles, tile_size)
    return Bands(padded[rows[:, :, None], cols[:, None, :]], starts)


@dataclass
class PooledWeights:
    """One view's blending weights pooled onto an (h, w) grid: the sparse (N, h·w) matrix
    P = Wᵀ U in CSR form (rows = Gaussians, columns = row-major cells, zeros dropped), and the
    weight sums Σ_p w_i(p) (N). The lift of a grid map F is P F; of a label map, P's entries
    added at (Gaussian, label)."""

    crow: Int[Tensor, "N+1"]
    cols: Int[Tensor, "M"]
    values: Float[Tensor, "M"]
    weight_sums: Float[Tensor, "N"]
    grid_size: tuple[int, int]

    @property
    def num_gaussians(self) -> int:
        return self.weight_sums.shape[0]

    @property
    def nnz(self) -> int:
        return self.values.shape[0]

    def matrix(self) -> Tensor:
        """P as a torch sparse CSR tensor (N, h·w)."""
        h, w = self.grid_size
        with warnings.catch_warnings():  # "sparse CSR support is in beta" (torch 2.x)
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.crow,
                self.cols,
                self.values,
                (self.num_gaussians, h * w),
                check_invariants=False,
            )

    def rows(self) -> Int[Tensor, "M"]:
        """The Gaussian (row) of every entry."""
        counts = self.crow[1:] - self.crow[:-1]
        return torch.repeat_interleave(
            torch.arange(self.num_gaussians, device=counts.device), counts
        )

    def lift_into(self, out: Float[Tensor, "N D"], grid_features: Float[Tensor, "h w D"]) -> None:
        """out += P F, one CSR x dense matmul per chunk of rows (the only D-sized temporary is a
        chunk of the product, `PRODUCT_ELEMENTS` floats)."""
        h, w = self.grid_size
        if tuple(grid_features.shape[:2]) != (h, w):
            raise ValueError(
                f"grid features are {tuple(grid_features.shape[:2])}, pooled on {h, w}"
            )
        d = grid_features.shape[-1]
        dense = grid_features.reshape(h * w, d).to(device=self.values.device, dtype=torch.float32)
        n = self.num_gaussians
        step = max(1, PRODUCT_ELEMENTS // max(d, 1))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            e0, e1 = int(self.crow[r0]), int(self.crow[r1])
            if e0 == e1:
                continue
            with warnings.catch_warnings():  # "sparse CSR support is in beta" (torch 2.x)
                warnings.simplefilter("ignore", UserWarning)
                chunk = torch.sparse_csr_tensor(
                    self.crow[r0 : r1 + 1] - e0,
                    self.cols[e0:e1],
                    self.values[e0:e1],
                    (r1 - r0, h * w),
                    check_invariants=False,
                )
            out[r0:r1] += torch.sparse.mm(chunk, dense).to(out.dtype)

    def lift_labels_into(self, out: Float[Tensor, "N L"], labels: Int[Tensor, "h w"]) -> None:
        """out[i, l] += Σ_{c : labels(c) = l} P[i, c]: the lift of the one-hot map of `labels`
        (values in [0, L)) without forming it."""
        if tuple(labels.shape) != self.grid_size:
            raise ValueError(f"label map is {tuple(labels.shape)}, pooled on {self.grid_size}")
        num = out.shape[1]
        flat = labels.reshape(-1).to(self.cols.device).long()
        keys = self.rows() * num + flat[self.cols]
        out.view(-1).index_add_(0, keys, self.values.to(out.dtype))


@torch.no_grad()
def pool_weights(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    grid_size: tuple[int, int],
    config: RenderConfig | None = None,
) -> PooledWeights:
    """P = Wᵀ U of view `index` for a map on an (h, w) grid (any size; coarser than the render is
    where it pays), streamed over the tile blocks of `blend_blocks`."""
    config = config or RenderConfig()
    width, height = cameras.widths[index], cameras.heights[index]
    h, w = grid_size
    device = scene.device
    proj = project_view(scene, cameras.to(device), index, config)
    grid = TileGrid(width, height, config.torch_tile_size)
    ts = grid.tile_size
    bx = tile_bands(width, w, ts, grid.tiles_x)
    by = tile_bands(height, h, ts, grid.tiles_y)
    bx_taps, bx_starts = bx.taps.to(device), bx.starts.to(device)
    by_taps_t, by_starts = by.taps.transpose(1, 2).contiguous().to(device), by.starts.to(device)
    wx, wy = bx.window, by.window

    windows = _Windows.of(proj, grid, bx, by)
    pooled = torch.zeros(windows.total + w, device=device)  # + a spare row padding entries hit
    weight_sums = torch.zeros(len(scene) + 1, device=device)
    cell_x = bx_starts[:, None] + torch.arange(wx, device=device)  # (tiles_x, wx) grid columns
    cell_y = by_starts[:, None] + torch.arange(wy, device=device)  # (tiles_y, wy) grid rows
    for block in blend_blocks(proj, grid, config.chunk_elements):
        t, g = block.gaussian_ids.shape
        tile_x, tile_y = block.tile_ids % grid.tiles_x, block.tile_ids // grid.tiles_x
        weight_sums.index_add_(0, block.gaussian_ids.reshape(-1), block.weights.sum(-1).reshape(-1))
        # (T, G·ts, ts) @ (T, ts, wx): each pixel row onto its window's columns, then
        # (T, wy, ts) @ (T, ts, G·wx): the rows onto the window's cell rows -> (T, wy, G, wx)
        along_x = torch.bmm(block.weights.view(t, g * ts, ts), bx_taps[tile_x])
        along_x = along_x.view(t, g, ts, wx).transpose(1, 2).reshape(t, ts, g * wx)
        cells = torch.bmm(by_taps_t[tile_y], along_x)
        keys = windows.keys(block.gaussian_ids, cell_x[tile_x], cell_y[tile_y])
        pooled.index_add_(0, keys.reshape(-1), cells.reshape(-1))
    crow, cols, values = windows.to_csr(pooled[: windows.total], w)
    return PooledWeights(crow, cols, values, weight_sums[:-1], (h, w))


@dataclass
class _Windows:
    """The ragged accumulator of `pool_weights`: Gaussian i owns a dense, row-major block of
    height x width cells with top-left cell (y0, x0), at `offsets[i]` in one flat tensor. Its
    window is the union of its tiles' windows, so it holds every cell its pixels' taps reach."""

    x0: Tensor
    y0: Tensor
    width: Tensor
    height: Tensor
    offsets: Tensor
    total: int
    base: Tensor
    """(N + 1): offsets - y0·width - x0, so cell (y, x) of Gaussian i is at base[i] + y·width[i]
    + x; the padding id N has base `total` and stride 0 (the spare row)."""
    stride: Tensor

    @staticmethod
    def of(proj: Projected, grid: TileGrid, bx: Bands, by: Bands) -> _Windows:
        tx0, tx1, ty0, ty1 = tile_ranges(proj, grid)
        has = proj.visible & (tx1 >= tx0) & (ty1 >= ty0)
        sx, sy = bx.starts.to(tx0.device), by.starts.to(tx0.device)
        tx0, tx1 = tx0.clamp(0, grid.tiles_x - 1), tx1.clamp(0, grid.tiles_x - 1)
        ty0, ty1 = ty0.clamp(0, grid.tiles_y - 1), ty1.clamp(0, grid.tiles_y - 1)
        x0, y0 = sx[tx0], sy[ty0]
        width = torch.where(has, sx[tx1] - x0 + bx.window, 0)
        height = torch.where(has, sy[ty1] - y0 + by.window, 0)
        sizes = width * height
        offsets = torch.cumsum(sizes, 0) - sizes
        total = int(sizes.sum())
        spare = offsets.new_full((1,), total)
        base = torch.cat([offsets - y0 * width - x0, spare])
        stride = torch.cat([width, spare * 0])
        return _Windows(x0, y0, width, height, offsets, total, base, stride)

    def keys(self, ids: Tensor, cell_x: Tensor, cell_y: Tensor) -> Tensor:
        """Flat positions (T, wy, G, wx) of cells (cell_y[t, a], cell_x[t, b]) in the windows of
        Gaussians ids[t, g]; padding ids (N, weight 0) land in the spare row past `total`."""
        return (
            self.base[ids][:, None, :, None]
            + cell_y[:, :, None, None] * self.stride[ids][:, None, :, None]
            + cell_x[:, None, None, :]
        )

    def to_csr(self, pooled: Tensor, w: int) -> tuple[Tensor, Tensor, Tensor]:
        """(crow, cols, values) of the accumulated windows, zeros dropped (window corners no pixel
        reached, cells a tile's window holds but none of its pixels uses)."""
        n = self.offsets.shape[0]
        kept = torch.nonzero(pooled).squeeze(1)
        sizes = self.width * self.height
        rows = torch.repeat_interleave(torch.arange(n, device=pooled.device), sizes)[kept]
        local = kept - self.offsets[rows]
        cols = (
            (self.y0[rows] + local // self.width[rows]) * w
            + self.x0[rows]
            + local % self.width[rows]
        )
        counts = torch.bincount(rows, minlength=n)
        crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        return crow, cols, pooled[kept]


@torch.no_grad()
def accumulate_labels(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    labels: Int[Tensor, "H W"],
    out: Float[Tensor, "N L"],
    config: RenderConfig | None = None,
) -> Float[Tensor, "N"]:
    """out[i, l] += Σ_{p : labels(p) = l} w_i(p) for a label map at the camera's size (the lift of
    its one-hot map, as a scatter of the blending weights); returns the weight sums Σ_p w_i(p)."""
    config = config or RenderConfig()
    width, height = cameras.widths[index], cameras.heights[index]
    if tuple(labels.shape) != (height, width):
        raise ValueError(f"label map is {tuple(labels.shape)}, camera is {height, width}")
    device = scene.device
    proj = project_view(scene, cameras.to(device), index, config)
    grid = TileGrid(width, height, config.torch_tile_size)
    tiled = grid.tile(labels.to(device).long()[..., None])[..., 0]  # (tiles, P), 0 past the border
    num = out.shape[1]
    n = len(scene)
    weight_sums = torch.zeros(n + 1, device=device)
    flat = out.view(-1)
    for block in blend_blocks(proj, grid, config.chunk_elements):
        ids = block.gaussian_ids
        weight_sums.index_add_(0, ids.reshape(-1), block.weights.sum(-1).reshape(-1))
        # padding entries (id N, weight 0) go to key 0 and add nothing
        keys = torch.where(ids < n, ids, 0)[..., None] * num + tiled[block.tile_ids][:, None, :]
        flat.index_add_(0, keys.reshape(-1), block.weights.reshape(-1).to(out.dtype))
    return weight_sums[:n]
