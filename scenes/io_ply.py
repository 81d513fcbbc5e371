"""INRIA 3DGS `.ply` (read/write, exact round trip) and the 32-byte `.splat` web format (read/write)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from .errors import SceneError, atomic_path
from .gaussians import (
    SH_C0,
    GaussianScene,
    normalize_quats,
    num_sh_bases,
    rgb_to_sh_dc,
)
from .semantics import atomic_with_semantics, with_semantics

REQUIRED = (
    ["x", "y", "z"]
    + [f"f_dc_{i}" for i in range(3)]
    + ["opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
_IGNORED = {"nx", "ny", "nz"}
_REST = re.compile(r"f_rest_(\d+)$")


def ply_property_names(path: str | Path) -> list[str]:
    """Names of the `vertex` properties, read from the header only."""
    try:
        with open(path, "rb") as f:
            header = PlyData._parse_header(f)  # noqa: SLF001 - header-only read, no data loaded
    except Exception as err:  # plyfile raises several types for a bad header
        raise SceneError(path, f"not a readable PLY file ({err})") from None
    if "vertex" not in header:
        return []
    return [p.name for p in header["vertex"].properties]


def is_gaussian_ply(path: str | Path) -> bool:
    try:
        names = set(ply_property_names(path))
    except SceneError:
        return False
    return set(REQUIRED) <= names


def read_ply(path: str | Path) -> GaussianScene:
    """Read an INRIA/gsplat/nerfstudio 3DGS ply. SH degree is inferred from the `f_rest_*` count.

    Quaternions are normalised (exports often store them unnormalised); other values are kept
    exactly. Unknown vertex properties become `extras` (`name_0..name_k` grouped into one field).
    """
    path = Path(path)
    if not path.is_file():
        raise SceneError(path, "file not found")
    try:
        ply = PlyData.read(str(path))
    except Exception as err:
        raise SceneError(path, f"truncated or corrupt PLY ({type(err).__name__}: {err})") from None
    if "vertex" not in ply:
        raise SceneError(path, "PLY has no 'vertex' element, so it holds no Gaussians")
    vertex = ply["vertex"].data
    names = list(vertex.dtype.names or ())
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        kind = "not a 3DGS ply" if len(missing) > 6 else "incomplete 3DGS ply"
        raise SceneError(path, f"{kind}: missing vertex properties {', '.join(missing)}")
    n = len(vertex)
    if n == 0:
        raise SceneError(path, "PLY holds 0 Gaussians")

    rest_ids = sorted(int(m.group(1)) for name in names if (m := _REST.match(name)))
    if rest_ids != list(range(len(rest_ids))) or len(rest_ids) % 3:
        raise SceneError(
            path, f"f_rest_* properties are not 3*(K-1) consecutive fields ({len(rest_ids)})"
        )
    k = len(rest_ids) // 3 + 1
    if k not in (num_sh_bases(d) for d in range(5)):
        raise SceneError(path, f"{len(rest_ids)} f_rest_* fields do not match any SH degree")

    def col(*keys: str) -> np.ndarray:
        return np.stack([np.asarray(vertex[key], dtype=np.float32) for key in keys], axis=-1)

    arrays = {
        "means": col("x", "y", "z"),
        "dc": col("f_dc_0", "f_dc_1", "f_dc_2"),
        "rest": col(*[f"f_rest_{i}" for i in rest_ids])
        if rest_ids
        else np.zeros((n, 0), np.float32),
        "opacity": col("opacity")[:, 0],
        "scales": col("scale_0", "scale_1", "scale_2"),
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
    }
    for key, value in arrays.items():
        bad = ~np.isfinite(value)
        if bad.any():
            rows = int(bad.reshape(n, -1).any(axis=1).sum())
            raise SceneError(path, f"{rows} Gaussians have NaN or infinite values in '{key}'")

    # INRIA stores f_rest channel-major: f_rest[c * (K-1) + k].
    rest = arrays["rest"].reshape(n, 3, k - 1).transpose(0, 2, 1)
    sh = np.concatenate([arrays["dc"][:, None, :], rest], axis=1)
    known = set(REQUIRED) | _IGNORED | {f"f_rest_{i}" for i in rest_ids}
    extras = _group_extras({name: np.asarray(vertex[name]) for name in names if name not in known})
    return GaussianScene(
        means=torch.from_numpy(arrays["means"]),
        quats=normalize_quats(torch.from_numpy(arrays["quats"])),
        log_scales=torch.from_numpy(arrays["scales"]),
        opacity_logits=torch.from_numpy(arrays["opacity"]),
        sh=torch.from_numpy(np.ascontiguousarray(sh)),
        extras={key: torch.from_numpy(value.copy()) for key, value in extras.items()},
    )


def _group_extras(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`foo_0, foo_1, foo_2` -> one (N, 3) field `foo`; everything else stays a scalar field.
    Fields keep the order of the file."""
    stems: dict[str, list[int]] = {}
    for name in columns:
        m = re.match(r"(.+)_(\d+)$", name)
        if m:
            stems.setdefault(m.group(1), []).append(int(m.group(2)))
    groups = {
        stem: [f"{stem}_{i}" for i in range(len(ids))]
        for stem, ids in stems.items()
        if sorted(ids) == list(range(len(ids))) and len(ids) > 1 and stem not in columns
    }
    member_of = {key: stem for stem, keys in groups.items() for key in keys}
    grouped: dict[str, np.ndarray] = {}
    for name, value in columns.items():
        stem = member_of.get(name)
        if stem is None:
            grouped[name] = value
        elif stem not in grouped:
            grouped[stem] = np.stack([columns[key] for key in groups[stem]], axis=-1)
    return grouped


def write_ply(scene: GaussianScene, path: str | Path) -> Path:
    """Write the INRIA layout (with zero normals, as the INRIA trainer does) plus `extras` fields
    (object ids, class ids, selection masks, ...) as extra vertex properties, which other 3DGS
    tools ignore (splat-transform keeps them: tests/test_formats.py).

    Written atomically: a failure leaves no partial file. `read_ply(write_ply(s))` equals `s`
    exactly, up to the types PLY has: bool extras read back as uint8, int64 ones as int32.
    """
    path = Path(path)
    s = scene.to("cpu")
    n, k = len(s), s.sh.shape[1]
    columns: list[tuple[str, np.ndarray]] = []

    def add(prefix: str, values: torch.Tensor | np.ndarray, names: list[str] | None = None) -> None:
        arr = values.numpy() if isinstance(values, torch.Tensor) else values
        arr = arr.reshape(n, -1)
        labels = names or (
            [prefix] if arr.shape[1] == 1 else [f"{prefix}_{i}" for i in range(arr.shape[1])]
        )
        columns.extend((label, arr[:, i]) for i, label in enumerate(labels))

    add("", s.means.float(), ["x", "y", "z"])
    add("", np.zeros((n, 3), np.float32), ["nx", "ny", "nz"])
    add("f_dc", s.sh[:, 0].float())
    if k > 1:
        add("f_rest", s.sh[:, 1:].float().transpose(1, 2).reshape(n, -1))
    add("opacity", s.opacity_logits.float())
    add("scale", s.log_scales.float())
    add("rot", s.quats.float())
    for name, value in s.extras.items():
        add(name, _ply_typed(path, name, value))
    dtype = [(name, arr.dtype.str) for name, arr in columns]
    vertex = np.empty(n, dtype=dtype)
    for name, arr in columns:
        vertex[name] = arr
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(tmp))
    return path


def _ply_typed(path: Path, name: str, value: torch.Tensor) -> torch.Tensor:
    """An extra in a type PLY has: bool as uint8, 64-bit integers as 32-bit when every value
    fits (else a SceneError naming the field), float16/bfloat16 and float64 kept exact as
    float32/float64."""
    if value.dtype == torch.bool:
        return value.to(torch.uint8)
    if value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if value.dtype == torch.int64:
        narrow = torch.iinfo(torch.int32)
        if value.numel() and (value.min() < narrow.min or value.max() > narrow.max):
            raise SceneError(
                path, f"extra {name!r} holds values beyond 32-bit integers (PLY's widest)"
            )
        return value.to(torch.int32)
    return value


# -- .splat (antimatter15 web viewer format): 32 bytes per Gaussian ---------------------------
_SPLAT_DTYPE = np.dtype(
    [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
)


def write_splat(scene: GaussianScene, path: str | Path, source: str | Path | None = None) -> Path:
    """Write `.splat`: position, linear scale, RGBA from the DC colour and opacity, quantised wxyz.

    Gaussians are sorted by decreasing volume x opacity as web viewers expect. Lossy by design.
    Integer extras (object ids, ...) go to a sidecar in that order (`semantics.py`; `source`:
    the scene it came from, recorded there).
    """
    s = scene.to("cpu")
    order = torch.argsort(-(s.log_scales.sum(-1).exp() * s.opacities), stable=True)
    s = s.subset(order)
    out = np.empty(len(s), dtype=_SPLAT_DTYPE)
    out["position"] = s.means.float().numpy()
    out["scale"] = s.scales.float().numpy()
    rgba = torch.cat([s.rgb_dc, s.opacities[:, None]], dim=-1)
    out["rgba"] = (rgba * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    q = torch.nn.functional.normalize(s.quats.float(), dim=-1)
    out["rot"] = (q * 128 + 128).round().clamp(0, 255).to(torch.uint8).numpy()
    with atomic_with_semantics(path, s, source) as tmp:
        out.tofile(tmp)
    return Path(path)


def read_splat(path: str | Path) -> GaussianScene:
    """Read a `.splat` file into SH degree 0 Gaussians (quantisation of the format applies), with
    the integer extras of its semantics sidecar when there is one."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else -1
    if size < 0:
        raise SceneError(path, "file not found")
    if size == 0 or size % _SPLAT_DTYPE.itemsize:
        raise SceneError(path, f"size {size} bytes is not a multiple of 32: not a .splat file")
    data = np.fromfile(path, dtype=_SPLAT_DTYPE)
    rgba = torch.from_numpy(data["rgba"].astype(np.float32) / 255)
    quats = (torch.from_numpy(data["rot"].astype(np.float32)) - 128) / 128
    opac = rgba[:, 3].clamp(1e-4, 1 - 1e-4)
    scene = GaussianScene(
        means=torch.from_numpy(data["position"].copy()),
        quats=normalize_quats(quats),
        log_scales=torch.from_numpy(data["scale"].copy()).clamp_min(1e-12).log(),
        opacity_logits=torch.log(opac / (1 - opac)),
        sh=rgb_to_sh_dc(rgba[:, None, :3]),
    )
    return with_semantics(scene, path)


__all__ = [
    "SH_C0",
    "is_gaussian_ply",
    "ply_property_names",
    "read_ply",
    "read_splat",
    "write_ply",
    "write_splat",
]
