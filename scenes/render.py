"""Rendering: RGB (SH per view direction), depth, alpha and any per-Gaussian feature channels.

Two backends behind one function:
- `torch` (everywhere): our tile compositor. Gaussians are binned to 16x16 tiles and sorted by
  depth; tiles with similar Gaussian counts are batched into blocks `(tiles, gaussians, pixels)` so
  that alpha, transmittance (a cumulative product) and blending weights are dense tensor ops and
  the final sum is one batched matmul. Memory is bounded by `RenderConfig.chunk_elements`.
  The same blocks give per-pixel blending weights, which lifting needs (`accumulate`, `blend_weights`).
- `gsplat` (CUDA only): `gsplat.rasterization`.
The slow twin of the torch compositor is `reference.render_dense_reference`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .cameras import Cameras
from .gaussians import GaussianScene
from .project import ALPHA_MAX, ALPHA_MIN, T_MIN, Projected, pixel_ranges, project
from .sh import sh_colors

TORCH_TILE_SIZE = 8
"""The torch compositor's default tile side (see RenderConfig.tile_size)."""


@dataclass(frozen=True)
class RenderConfig:
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """auto: gsplat when CUDA is available and the scene is on a CUDA device, else torch."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """RGB added where the splats leave transmittance (rgb only; features and depth get none)."""
    rgb: bool = True
    """Evaluate SH colours; turn off when only features are wanted."""
    sh_degree: int | None = None
    """SH degree to use (default: all the scene has)."""
    near: float = 0.01
    far: float = 1e10
    eps2d: float = 0.3
    """Screen-space low-pass filter (pixels^2) added to each projected covariance."""
    tile_size: int | None = None
    """Tile side in pixels; None: 8 on the torch compositor (2-4x faster than 16 on CPU, where
    fewer Gaussians per tile pad less and stop sooner: `python bench/render.py`), 16 on gsplat
    (its default)."""
    chunk_elements: int = 1 << 22
    """Torch backend: Gaussian x pixel evaluations per step; peak memory is about 40 bytes each."""

    @property
    def torch_tile_size(self) -> int:
        """The tile side the torch compositor uses."""
        return self.tile_size or TORCH_TILE_SIZE


@dataclass
class RenderOutput:
    """Renders of C views of the same size. depth is the alpha-normalised expected depth (0 where
    alpha is 0); features are blended linearly without normalisation (Σ w_i f_i)."""

    rgb: Float[Tensor, "C H W 3"] | None
    depth: Float[Tensor, "C H W"]
    alpha: Float[Tensor, "C H W"]
    features: Float[Tensor, "C H W D"] | None


@dataclass
class BlendBlock:
    """Blending weights of a batch of tiles: `weights[t, g, p]` is the alpha-blending weight of
    Gaussian `gaussian_ids[t, g]` at pixel `p` of tile `tile_ids[t]` (row-major inside the tile).
    Padding entries have gaussian id N and weight 0."""

    tile_ids: Int[Tensor, "T"]
    gaussian_ids: Int[Tensor, "T G"]
    weights: Float[Tensor, "T G P"]


@dataclass
class TileGrid:
    width: int
    height: int
    tile_size: int

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile_size)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile_size)

    @property
    def num_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    def pixel_xy(self, tile_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Integer pixel coordinates (T, P) of every pixel of the given tiles."""
        ts = self.tile_size
        local = torch.arange(ts * ts, device=tile_ids.device)
        x = (tile_ids % self.tiles_x)[:, None] * ts + local % ts
        y = (tile_ids // self.tiles_x)[:, None] * ts + local // ts
        return x, y

    def pixel_index(self, tile_ids: Tensor) -> Tensor:
        """Row-major pixel index (T, P) in the image, -1 for pixels past the image border."""
        x, y = self.pixel_xy(tile_ids)
        inside = (x < self.width) & (y < self.height)
        return torch.where(inside, y * self.width + x, torch.full_like(x, -1))

    def untile(self, tiles: Tensor) -> Tensor:
        """(num_tiles, P, D) -> (H, W, D)."""
        ts, d = self.tile_size, tiles.shape[-1]
        img = tiles.reshape(self.tiles_y, self.tiles_x, ts, ts, d).permute(0, 2, 1, 3, 4)
        return img.reshape(self.tiles_y * ts, self.tiles_x * ts, d)[: self.height, : self.width]

    def tile(self, image: Tensor) -> Tensor:
        """(H, W, D) -> (num_tiles, P, D), zero-padded past the border."""
        ts, d = self.tile_size, image.shape[-1]
        padded = image.new_zeros(self.tiles_y * ts, self.tiles_x * ts, d)
        padded[: self.height, : self.width] = image
        tiles = padded.reshape(self.tiles_y, ts, self.tiles_x, ts, d).permute(0, 2, 1, 3, 4)
        return tiles.reshape(self.num_tiles, ts * ts, d)


def tile_ranges(proj: Projected, grid: TileGrid) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inclusive tile column/row ranges (tx0, tx1, ty0, ty1) of each of the N Gaussians: the tiles
    `blend_blocks` evaluates it in, so every nonzero blending weight of Gaussian i lies in them.
    Meaningful for visible Gaussians (`proj.visible`); a range with tx1 < tx0 or ty1 < ty0 is empty."""
    x0, x1, y0, y1 = pixel_ranges(proj, grid.width, grid.height)
    ts = grid.tile_size
    return x0 // ts, x1 // ts, y0 // ts, y1 // ts


@torch.no_grad()
def blend_blocks(
    proj: Projected, grid: TileGrid, chunk_elements: int = 1 << 22
) -> Iterator[BlendBlock]:
    """Front-to-back alpha compositing of one view, yielded as blocks of tiles.

    Matches gsplat's rasteriser: alpha = min(0.999, o·exp(-σ)), skipped below 1/255, and a pixel
    stops before the Gaussian that would bring its transmittance to 1e-4 or below.
    """
    device = proj.means2d.device
    n = proj.means2d.shape[0]
    ts = grid.tile_size
    p = ts * ts
    vis = torch.nonzero(proj.visible).squeeze(1)
    if vis.numel() == 0:
        return
    vis = vis[torch.argsort(proj.depths[vis], stable=True)]  # depth order
    tx0, tx1, ty0, ty1 = (r[vis] for r in tile_ranges(proj, grid))
    ntx = (tx1 - tx0 + 1).clamp_min(0)
    counts = ntx * (ty1 - ty0 + 1).clamp_min(0)
    keep = counts > 0
    vis, tx0, ty0, ntx, counts = vis[keep], tx0[keep], ty0[keep], ntx[keep], counts[keep]
    if vis.numel() == 0:
        return

    # (tile, gaussian) pairs, grouped by tile, depth order kept inside each tile (stable sort).
    pair_src = torch.repeat_interleave(torch.arange(vis.numel(), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(pair_src.numel(), device=device) - starts[pair_src]
    pair_tile = (
        (ty0[pair_src] + local // ntx[pair_src]) * grid.tiles_x
        + tx0[pair_src]
        + local % ntx[pair_src]
    )
    pair_tile, order = torch.sort(pair_tile, stable=True)
    pair_gauss = vis[pair_src[order]]
    del pair_src, local, order

    tile_counts = torch.bincount(pair_tile, minlength=grid.num_tiles)
    tile_starts = torch.cumsum(tile_counts, 0) - tile_counts
    # Batch tiles with similar counts together, so padding to the block's max count wastes little.
    busy = torch.nonzero(tile_counts).squeeze(1)
    busy = busy[torch.argsort(tile_counts[busy], stable=True)]
    busy_counts = tile_counts[busy].tolist()

    # Parameters with one padding Gaussian (index n) that never contributes.
    pad = torch.zeros(1, device=device)
    mx = torch.cat([proj.means2d[:, 0], pad])
    my = torch.cat([proj.means2d[:, 1], pad])
    ca, cb, cc = (torch.cat([proj.conics[:, i], pad]) for i in range(3))
    opac = torch.cat([proj.opacities, pad])

    i = 0
    while i < len(busy):
        # Grow the batch while (tiles x depth slice x pixels) fits the budget.
        j = i + 1
        while (
            j < len(busy) and (j + 1 - i) * min(busy_counts[j], DEPTH_SLICE) * p <= chunk_elements
        ):
            j += 1
        yield from _composite_tiles(
            busy[i:j],
            busy_counts[j - 1],
            tile_starts,
            tile_counts,
            pair_gauss,
            grid,
            (mx, my, ca, cb, cc, opac),
            n,
            chunk_elements,
        )
        i = j


DEPTH_SLICE = 64
"""Gaussians per tile composited per step; tiles whose pixels are all saturated stop early."""


def _composite_tiles(
    tiles: Tensor,
    g_max: int,
    tile_starts: Tensor,
    tile_counts: Tensor,
    pair_gauss: Tensor,
    grid: TileGrid,
    params: tuple[Tensor, ...],
    n: int,
    chunk_elements: int,
) -> Iterator[BlendBlock]:
    mx, my, ca, cb, cc, opac = params
    p = grid.tile_size**2
    px, py = grid.pixel_xy(tiles)
    inside = ((px < grid.width) & (py < grid.height))[:, None, :]
    px = (px.float() + 0.5)[:, None, :]
    py = (py.float() + 0.5)[:, None, :]
    starts, counts = tile_starts[tiles], tile_counts[tiles]
    transmittance = torch.ones(tiles.numel(), 1, p, device=tiles.device)
    done = ~inside
    step = max(1, min(DEPTH_SLICE, chunk_elements // (tiles.numel() * p)))
    for g0 in range(0, g_max, step):
        if g0 > 0:  # drop tiles that are finished: every pixel saturated or out of Gaussians
            alive = (counts > g0) & ~done.all(dim=2)[:, 0]
            if not bool(alive.all()):
                if not bool(alive.any()):
                    return
                tiles, px, py, starts, counts = (t[alive] for t in (tiles, px, py, starts, counts))
                transmittance, done = transmittance[alive], done[alive]
        g = torch.arange(g0, min(g0 + step, g_max), device=tiles.device)
        valid = g[None, :] < counts[:, None]
        pos = (starts[:, None] + g[None, :]).clamp_max(pair_gauss.numel() - 1)
        gid = torch.where(valid, pair_gauss[pos], torch.full_like(pos, n))
        dx = px - mx[gid][..., None]
        dy = py - my[gid][..., None]
        sigma = dx * dx
        sigma *= ca[gid][..., None]
        dx *= dy
        dx *= cb[gid][..., None]
        dy *= dy
        dy *= cc[gid][..., None]
        sigma += dy
        sigma *= 0.5
        sigma += dx
        del dx, dy
        alpha = torch.exp(-sigma)
        alpha *= opac[gid][..., None]
        alpha.clamp_(max=ALPHA_MAX)
        keep = alpha >= ALPHA_MIN
        keep &= sigma >= 0
        keep &= ~done
        del sigma
        alpha *= keep
        del keep
        # Transmittance after each Gaussian; a pixel stops before the one that takes it to T_MIN.
        through = torch.cumprod(1.0 - alpha, dim=1)
        stop = through * transmittance <= T_MIN
        alpha *= ~stop
        weights = torch.cat([transmittance, through[:, :-1] * transmittance], dim=1)
        weights *= alpha
        transmittance = transmittance * through[:, -1:]
        done = done | stop.any(dim=1, keepdim=True)
        yield BlendBlock(tiles, gid, weights)


def _use_gsplat(scene: GaussianScene, config: RenderConfig) -> bool:
    if config.backend == "torch":
        return False
    cuda = torch.cuda.is_available() and scene.device.type == "cuda"
    if config.backend == "gsplat" and not cuda:
        raise RuntimeError(
            "backend='gsplat' needs CUDA and a scene on a CUDA device; use backend='torch'"
        )
    return cuda


def render(
    scene: GaussianScene,
    cameras: Cameras,
    features: Float[Tensor, "N D"] | None = None,
    config: RenderConfig | None = None,
) -> RenderOutput:
    """Render C views of the same size. Differentiable in `features` (torch and gsplat backends),
    which go to the scene's device (so does everything rendered)."""
    config = config or RenderConfig()
    if len(cameras) == 0:
        raise ValueError("no cameras to render")
    if not cameras.same_size:
        raise ValueError(
            "cameras have different image sizes: render them one at a time (cameras[i])"
        )
    if features is not None and features.shape[0] != len(scene):
        raise ValueError(f"features have {features.shape[0]} rows for {len(scene)} Gaussians")
    cameras = cameras.to(scene.device)
    if features is not None:
        features = features.to(scene.device)
    if _use_gsplat(scene, config):
        return _render_gsplat(scene, cameras, features, config)
    outputs = [_render_view_torch(scene, cameras, i, features, config) for i in range(len(cameras))]
    return RenderOutput(
        rgb=torch.stack([o.rgb for o in outputs]) if config.rgb else None,  # type: ignore[misc]
        depth=torch.stack([o.depth for o in outputs]),
        alpha=torch.stack([o.alpha for o in outputs]),
        features=None if features is None else torch.stack([o.features for o in outputs]),  # type: ignore[misc]
    )


def project_view(
    scene: GaussianScene, cameras: Cameras, index: int, config: RenderConfig
) -> Projected:
    return project(
        scene,
        cameras.world_to_camera[index],
        cameras.K[index],
        cameras.widths[index],
        cameras.heights[index],
        near=config.near,
        far=config.far,
        eps2d=config.eps2d,
    )


def _render_view_torch(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    features: Tensor | None,
    config: RenderConfig,
):
    proj = project_view(scene, cameras, index, config)
    grid = TileGrid(cameras.widths[index], cameras.heights[index], config.torch_tile_size)
    # One channel table: [rgb (3) | depth (1) | features (D)], plus a zero row for padding ids.
    columns = [proj.depths[:, None]]
    if config.rgb:
        degree = (
            scene.sh_degree if config.sh_degree is None else min(config.sh_degree, scene.sh_degree)
        )
        columns.insert(
            0, sh_colors(degree, scene.sh, scene.means, cameras.centers[index].to(scene.means))
        )
    table = torch.cat([c.detach().to(torch.float32) for c in columns], dim=1)
    if features is not None:
        table = torch.cat([table, features.to(torch.float32)], dim=1)
    table = torch.cat([table, table.new_zeros(1, table.shape[1])])
    tiles = table.new_zeros(grid.num_tiles, grid.tile_size**2, table.shape[1])
    alpha_tiles = table.new_zeros(grid.num_tiles, grid.tile_size**2)
    # With a graph the sum must be out of place, and each index_add copies the whole image: the
    # blocks are added a batch at a time, a batch holding about one image's worth of products.
    graph = torch.is_grad_enabled() and table.requires_grad
    ids, contribs, pending = [], [], 0
    for block in blend_blocks(proj, grid, config.chunk_elements):
        contrib = torch.bmm(block.weights.transpose(1, 2), table[block.gaussian_ids])
        alpha_tiles.index_add_(0, block.tile_ids, block.weights.sum(1))
        if not graph:
            tiles.index_add_(0, block.tile_ids, contrib)
            continue
        ids.append(block.tile_ids)
        contribs.append(contrib)
        pending += contrib.numel()
        if pending >= tiles.numel():
            tiles = tiles.index_add(0, torch.cat(ids), torch.cat(contribs))
            ids, contribs, pending = [], [], 0
    if contribs:
        tiles = tiles.index_add(0, torch.cat(ids), torch.cat(contribs))
    image = grid.untile(tiles)
    alpha = grid.untile(alpha_tiles[..., None])[..., 0]
    c = 3 if config.rgb else 0
    depth = torch.where(alpha > 0, image[..., c] / alpha.clamp_min(1e-10), torch.zeros_like(alpha))
    rgb = None
    if config.rgb:
        background = torch.tensor(config.background, dtype=image.dtype, device=image.device)
        rgb = image[..., :3] + (1 - alpha[..., None]) * background
    return RenderOutput(
        rgb=rgb,
        depth=depth,
        alpha=alpha,
        features=None if features is None else image[..., c + 1 :],
    )


def _render_gsplat(
    scene: GaussianScene, cameras: Cameras, features: Tensor | None, config: RenderConfig
) -> RenderOutput:
    from gsplat import rasterization

    common: dict[str, Any] = dict(
        means=scene.means,
        quats=scene.quats,
        scales=scene.scales,
        opacities=scene.opacities,
        viewmats=cameras.world_to_camera.to(scene.means),
        Ks=cameras.K.to(scene.means),
        width=cameras.widths[0],
        height=cameras.heights[0],
        near_plane=config.near,
        far_plane=config.far,
        eps2d=config.eps2d,
        tile_size=config.tile_size or 16,
    )
    degree = scene.sh_degree if config.sh_degree is None else min(config.sh_degree, scene.sh_degree)
    if config.rgb:
        background = torch.tensor(config.background, device=scene.device).expand(len(cameras), 3)
        colors, alphas, _ = rasterization(
            colors=scene.sh, sh_degree=degree, render_mode="RGB+ED", **common
        )
        rgb = colors[..., :3] + (1 - alphas) * background[:, None, None, :]
        depth = colors[..., 3]
    else:
        depth_map, alphas, _ = rasterization(
            colors=scene.means.new_zeros(len(scene), 1), render_mode="ED", **common
        )
        rgb, depth = None, depth_map[..., 0]
    rendered = None
    if features is not None:
        rendered, _, _ = rasterization(colors=features, render_mode="RGB", **common)
    return RenderOutput(rgb=rgb, depth=depth, alpha=alphas[..., 0], features=rendered)


@dataclass
class ViewWeights:
    """Sparse pixel x Gaussian blending weights of one view: entry k says Gaussian
    `gaussian_ids[k]` contributes `weights[k]` to pixel `pixel_ids[k]` (row-major in H x W)."""

    pixel_ids: Int[Tensor, "M"]
    gaussian_ids: Int[Tensor, "M"]
    weights: Float[Tensor, "M"]
    num_gaussians: int
    width: int
    height: int

    def to_sparse(self) -> Tensor:
        """(H*W, N) sparse COO matrix W: render = W @ f and lift sums = W.T @ F."""
        return torch.sparse_coo_tensor(
            torch.stack([self.pixel_ids, self.gaussian_ids]),
            self.weights,
            (self.width * self.height, self.num_gaussians),
            check_invariants=False,
        ).coalesce()


@torch.no_grad()
def blend_weights(
    scene: GaussianScene, cameras: Cameras, index: int = 0, config: RenderConfig | None = None
) -> ViewWeights:
    """All nonzero blending weights of view `index` (torch backend)."""
    config = config or RenderConfig()
    proj = project_view(scene, cameras.to(scene.device), index, config)
    grid = TileGrid(cameras.widths[index], cameras.heights[index], config.torch_tile_size)
    pix, gau, wts = [], [], []
    for block in blend_blocks(proj, grid, config.chunk_elements):
        pixel = grid.pixel_index(block.tile_ids)[:, None, :].expand_as(block.weights)
        nz = block.weights > 0
        pix.append(pixel[nz])
        gau.append(block.gaussian_ids[..., None].expand_as(block.weights)[nz])
        wts.append(block.weights[nz])
    empty = torch.zeros(0, dtype=torch.long, device=scene.device)
    return ViewWeights(
        pixel_ids=torch.cat(pix) if pix else empty,
        gaussian_ids=torch.cat(gau) if gau else empty,
        weights=torch.cat(wts) if wts else empty.float(),
        num_gaussians=len(scene),
        width=grid.width,
        height=grid.height,
    )


@torch.no_grad()
def accumulate(
    scene: GaussianScene,
    cameras: Cameras,
    index: int,
    feature_map: Float[Tensor, "H W D"],
    config: RenderConfig | None = None,
) -> tuple[Float[Tensor, "N D"], Float[Tensor, "N"]]:
    """Streaming lift of one view: (Σ_p w_i(p) F(p), Σ_p w_i(p)) for every Gaussian i.

    `feature_map` must have the camera's size. Only N x D sums are produced; no pixel x Gaussian
    matrix is stored.
    """
    config = config or RenderConfig()
    width, height = cameras.widths[index], cameras.heights[index]
    if tuple(feature_map.shape[:2]) != (height, width):
        raise ValueError(
            f"feature map is {feature_map.shape[1]}x{feature_map.shape[0]}, camera is {width}x{height}"
        )
    proj = project_view(scene, cameras.to(scene.device), index, config)
    grid = TileGrid(width, height, config.torch_tile_size)
    tiled = grid.tile(feature_map.to(device=scene.device, dtype=torch.float32))
    n, d = len(scene), feature_map.shape[-1]
    sums = tiled.new_zeros(n + 1, d)
    weight_sums = tiled.new_zeros(n + 1)
    for block in blend_blocks(proj, grid, config.chunk_elements):
        contrib = torch.bmm(block.weights, tiled[block.tile_ids])  # (T, G, D)
        ids = block.gaussian_ids.reshape(-1)
        sums.index_add_(0, ids, contrib.reshape(-1, d))
        weight_sums.index_add_(0, ids, block.weights.sum(-1).reshape(-1))
    return sums[:n], weight_sums[:n]
