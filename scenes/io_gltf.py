"""glTF 2.0 (.glb, .gltf) with the Khronos `KHR_gaussian_splatting` extension, through pygltflib.

A splat scene is one mesh primitive of mode POINTS whose attributes are `POSITION`,
`KHR_gaussian_splatting:ROTATION` (unit quaternion, xyzw), `:SCALE` (linear, not log),
`:OPACITY` (after the sigmoid, in [0, 1]), `:SH_DEGREE_0_COEF_0` (the DC term, RGB) and
`:SH_DEGREE_l_COEF_n` for the higher degrees in the INRIA coefficient order, plus an optional
`COLOR_0` fallback (RGBA8 of the diffuse colour and opacity) for viewers without the extension.
These are the ratified extension's conventions, as PlayCanvas splat-transform writes them (the
review draft stored log-scales; no file of ours ever did).

Axes: glTF is y up; a 3DGS .ply is taken as y down (the INRIA / COLMAP camera convention), and
the two differ by a half turn about z, which both directions apply (x, y -> -x, -y; each
quaternion turned with it; SH coefficients of odd order m change sign): what PlayCanvas
splat-transform does converting .ply to .glb, so our .glb and theirs agree to float32
(tests/test_formats_web.py), and a scene read back is the scene written. Extra per-Gaussian fields (`object_id`, ...) travel as application-specific attributes
`_<NAME>` (float32, exact for integers below 2^24), their dtypes in the primitive's `extras`.

Rotation and scale may be quantized (normalized byte/short), opacity normalized ubyte/ushort: the
reader takes every component type the extension allows. Sparse accessors are refused.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import SceneError, atomic_path
from .gaussians import SH_C0, GaussianScene, num_sh_bases

EXTENSION = "KHR_gaussian_splatting"
PREFIX = f"{EXTENSION}:"
_COMPONENTS = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_COEFFS = (1, 3, 5, 7)
"""SH coefficients per degree."""


def _sh_names(degree: int) -> list[str]:
    """Attribute names of the SH coefficients after the DC term, in the INRIA order."""
    return [
        f"{PREFIX}SH_DEGREE_{d}_COEF_{n}" for d in range(1, degree + 1) for n in range(_COEFFS[d])
    ]


def _half_turn_about_z(
    means: np.ndarray, quats_wxyz: np.ndarray, sh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene turned 180 degrees about z (its own inverse, quaternions up to sign)."""
    w, x, y, z = quats_wxyz.T
    turned = np.stack([-z, -y, x, w], axis=1)  # (0, 0, 0, 1) * q
    signs = [1.0] + [(-1.0) ** abs(m) for d in range(1, 4) for m in range(-d, d + 1)]
    return (
        means * np.array([-1.0, -1.0, 1.0]),
        turned,
        sh * np.asarray(signs[: sh.shape[1]])[None, :, None],
    )


def is_gltf_splats(path: str | Path) -> bool:
    """A .glb / .gltf whose JSON lists KHR_gaussian_splatting in extensionsUsed."""
    path = Path(path)
    if path.suffix.lower() not in (".glb", ".gltf") or not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".glb":  # the JSON chunk only, not the binary one
            with open(path, "rb") as f:
                magic, _, _, size, kind = struct.unpack("<4sIIII", f.read(20))
                if magic != b"glTF" or kind != 0x4E4F534A:  # "JSON"
                    return False
                document = json.loads(f.read(size))
        else:
            document = json.loads(path.read_bytes())
        return EXTENSION in (document.get("extensionsUsed") or [])
    except (OSError, ValueError, struct.error, AttributeError):
        return False


# -- writing -------------------------------------------------------------------------------------
def write_gltf(scene: GaussianScene, path: str | Path) -> Path:
    """Write `scene` as a binary glTF (.glb) or a .gltf with its buffer embedded (base64),
    atomically. Lossless for the splat fields up to float32."""
    import pygltflib as gl

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".gltf"):
        raise SceneError(path, "a glTF scene ends in .glb or .gltf")
    s = scene.to("cpu")
    n = len(s)
    if n == 0:
        raise SceneError(path, "no Gaussians to write")
    f32 = np.float32
    turned = _half_turn_about_z(
        s.means.double().numpy(), s.quats.double().numpy(), s.sh.double().numpy()
    )
    means, quats, sh = (a.astype(f32) for a in turned)
    dc = sh[:, 0]
    opacity = s.opacities.float().numpy().astype(f32)
    colour = np.clip(np.round(np.c_[dc * f32(SH_C0) + f32(0.5), opacity] * 255), 0, 255)
    columns: list[tuple[str, np.ndarray, int, bool]] = [
        ("POSITION", means, gl.FLOAT, False),
        ("COLOR_0", colour.astype(np.uint8), gl.UNSIGNED_BYTE, True),
        (f"{PREFIX}ROTATION", np.ascontiguousarray(quats[:, [1, 2, 3, 0]]), gl.FLOAT, False),
        (f"{PREFIX}SCALE", np.exp(s.log_scales.double().numpy()).astype(f32), gl.FLOAT, False),
        (f"{PREFIX}OPACITY", opacity, gl.FLOAT, False),
        (f"{PREFIX}SH_DEGREE_0_COEF_0", dc, gl.FLOAT, False),
    ]
    rest = sh[:, 1:]
    for k, name in enumerate(_sh_names(s.sh_degree)):
        columns.append((name, rest[:, k], gl.FLOAT, False))
    dtypes: dict[str, str] = {}
    for key, value in s.extras.items():
        flat = value.reshape(n, -1)
        if flat.shape[1] > 4:
            raise SceneError(
                path, f"extra field {key!r} has {flat.shape[1]} columns; glTF holds <= 4"
            )
        name = f"_{key.upper()}"
        dtypes[name] = str(value.dtype).removeprefix("torch.")
        columns.append((name, flat.double().numpy().astype(f32), gl.FLOAT, False))

    blob, views, accessors, attributes = bytearray(), [], [], {}
    for i, (name, data, component, normalized) in enumerate(columns):
        data = np.ascontiguousarray(data)
        width = 1 if data.ndim == 1 else data.shape[1]
        views.append(
            gl.BufferView(
                buffer=0, byteOffset=len(blob), byteLength=data.nbytes, target=gl.ARRAY_BUFFER
            )
        )
        blob += data.tobytes()
        blob += b"\0" * (-len(blob) % 4)
        accessor = gl.Accessor(
            bufferView=i,
            componentType=component,
            count=n,
            type={1: "SCALAR", 3: "VEC3", 4: "VEC4", 2: "VEC2"}[width],
            normalized=normalized or None,
        )
        if name == "POSITION":
            accessor.min, accessor.max = means.min(0).tolist(), means.max(0).tolist()
        accessors.append(accessor)
        attributes[name] = i
    primitive = gl.Primitive(
        attributes=gl.Attributes(
            **{k: v for k, v in attributes.items() if k in ("POSITION", "COLOR_0")}
        ),
        mode=gl.POINTS,
        extensions={
            EXTENSION: {
                "kernel": "ellipse",
                "colorSpace": "srgb_rec709_display",
                "sortingMethod": "cameraDistance",
                "projection": "perspective",
            }
        },
        extras={"omnivision": {"dtypes": dtypes}} if dtypes else None,
    )
    for name, index in attributes.items():  # names with ':' are not dataclass fields
        setattr(primitive.attributes, name, index)
    gltf = gl.GLTF2(
        asset=gl.Asset(version="2.0", generator="omnivision"),
        extensionsUsed=[EXTENSION],
        scene=0,
        scenes=[gl.Scene(nodes=[0])],
        nodes=[gl.Node(mesh=0)],
        meshes=[gl.Mesh(primitives=[primitive])],
        buffers=[gl.Buffer(byteLength=len(blob))],
        bufferViews=views,
        accessors=accessors,
    )
    gltf.set_binary_blob(bytes(blob))
    with atomic_path(path) as tmp:
        if suffix == ".glb":
            gltf.save_binary(str(tmp))
        else:
            gltf.convert_buffers(gl.BufferFormat.DATAURI)
            gltf.save_json(str(tmp))
    return path


# -- reading -------------------------------------------------------------------------------------
def _load(path: Path) -> Any:
    import pygltflib as gl

    try:
        if path.suffix.lower() == ".glb":
            with open(path, "rb") as f:
                if f.read(4) != b"glTF":
                    raise SceneError(path, "not a binary glTF (no 'glTF' magic)")
            return gl.GLTF2.load_binary(str(path))
        return gl.GLTF2.load_json(str(path))
    except SceneError:
        raise
    except Exception as err:  # pygltflib raises whatever its parser met
        raise SceneError(path, f"unreadable glTF ({type(err).__name__}: {err})") from None


def _buffer_bytes(gltf: Any, path: Path, index: int, cache: dict[int, bytes]) -> bytes:
    if index in cache:
        return cache[index]
    buffer = gltf.buffers[index]
    if buffer.uri is None:
        data = gltf.binary_blob()
        if data is None:
            raise SceneError(path, f"buffer {index} has no uri and the file no binary chunk")
    elif buffer.uri.startswith("data:"):
        data = gltf.decode_data_uri(buffer.uri)
    else:
        file = path.parent / buffer.uri
        if not file.is_file():
            raise SceneError(path, f"buffer {index} names {file}, which does not exist")
        data = file.read_bytes()
    cache[index] = bytes(data)
    return cache[index]


def _accessor(gltf: Any, path: Path, index: int, cache: dict[int, bytes]) -> np.ndarray:
    """The accessor as float64 (count, width) or (count,), normalized integers mapped to [-1, 1] /
    [0, 1] as glTF defines."""
    accessor = gltf.accessors[index]
    if accessor.sparse is not None:
        raise SceneError(path, f"accessor {index} is sparse, which this reader does not take")
    if accessor.componentType not in _COMPONENTS or accessor.type not in _WIDTH:
        raise SceneError(
            path, f"accessor {index} has type {accessor.type}/{accessor.componentType}"
        )
    dtype = np.dtype(_COMPONENTS[accessor.componentType]).newbyteorder("<")
    width, count = _WIDTH[accessor.type], accessor.count
    if accessor.bufferView is None:
        values = np.zeros((count, width), dtype)
    else:
        view = gltf.bufferViews[accessor.bufferView]
        data = _buffer_bytes(gltf, path, view.buffer, cache)
        start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
        element = dtype.itemsize * width
        stride = view.byteStride or element
        end = start + stride * (count - 1) + element if count else start
        if end > (view.byteOffset or 0) + view.byteLength or end > len(data):
            raise SceneError(path, f"accessor {index} reaches past its buffer (truncated file?)")
        raw = np.frombuffer(data, np.uint8, count=end - start, offset=start) if count else None
        if raw is None:
            values = np.zeros((0, width), dtype)
        elif stride == element:
            values = raw.view(dtype).reshape(count, width)
        else:
            padded = np.zeros(stride * count, np.uint8)
            padded[: len(raw)] = raw
            values = (
                padded.reshape(count, stride)[:, :element].copy().view(dtype).reshape(count, width)
            )
    out = values.astype(np.float64)
    if accessor.normalized and dtype.kind in "iu":
        top = float(np.iinfo(dtype).max)
        out = np.maximum(out / top, -1.0)
    return out[:, 0] if width == 1 else out


def _splat_primitive(gltf: Any, path: Path) -> Any:
    found = [
        p
        for mesh in gltf.meshes or []
        for p in mesh.primitives
        if (p.extensions or {}).get(EXTENSION) is not None
    ]
    if not found:
        raise SceneError(path, f"no mesh primitive carries {EXTENSION} (a glTF without splats?)")
    if len(found) > 1:
        raise SceneError(path, f"{len(found)} splat primitives; this reader takes one")
    return found[0]


def read_gltf(path: str | Path) -> GaussianScene:
    """Read the KHR_gaussian_splatting primitive of a .glb / .gltf."""
    path = Path(path)
    gltf = _load(path)
    primitive = _splat_primitive(gltf, path)
    attributes = {k: v for k, v in vars(primitive.attributes).items() if v is not None}
    cache: dict[int, bytes] = {}
    required = ["POSITION", f"{PREFIX}ROTATION", f"{PREFIX}SCALE", f"{PREFIX}OPACITY"]
    missing = [name for name in required if name not in attributes]
    if missing:
        raise SceneError(path, f"splat primitive lacks {', '.join(missing)}")

    def column(name: str) -> np.ndarray:
        return _accessor(gltf, path, attributes[name], cache)

    means = column("POSITION")
    n = len(means)
    degree = 0
    while degree < 3 and all(
        name in attributes for name in _sh_names(degree + 1)[-_COEFFS[degree + 1] :]
    ):
        degree += 1
    if f"{PREFIX}SH_DEGREE_0_COEF_0" in attributes:
        dc = column(f"{PREFIX}SH_DEGREE_0_COEF_0")
    elif "COLOR_0" in attributes:  # a lighting extension without SH: the diffuse colour
        dc = (column("COLOR_0")[:, :3] - 0.5) / SH_C0
    else:
        raise SceneError(path, "splat primitive has neither SH_DEGREE_0_COEF_0 nor COLOR_0")
    sh = np.zeros((n, num_sh_bases(degree), 3))
    sh[:, 0] = dc
    for k, name in enumerate(_sh_names(degree)):
        sh[:, 1 + k] = column(name)
    rotation = column(f"{PREFIX}ROTATION")[:, [3, 0, 1, 2]]
    norm = np.linalg.norm(rotation, axis=1, keepdims=True)
    scale = column(f"{PREFIX}SCALE")
    opacity = np.clip(column(f"{PREFIX}OPACITY"), 1e-7, 1 - 1e-7)
    for name, values in (("ROTATION", rotation), ("SCALE", scale), ("OPACITY", opacity)):
        if len(values) != n:
            raise SceneError(path, f"{PREFIX}{name} has {len(values)} entries, POSITION {n}")
    dtypes = ((primitive.extras or {}).get("omnivision") or {}).get("dtypes", {})
    extras = {}
    for name in attributes:
        if name.startswith("_"):
            values = column(name)
            dtype = getattr(torch, dtypes.get(name, "float32"), torch.float32)
            extras[name[1:].lower()] = torch.from_numpy(
                np.round(values) if not dtype.is_floating_point else values
            ).to(dtype)
    means, rotation, sh = _half_turn_about_z(means, rotation / np.where(norm > 0, norm, 1.0), sh)
    return GaussianScene(
        means=torch.from_numpy(means).float(),
        quats=torch.from_numpy(rotation).float(),
        log_scales=torch.from_numpy(np.log(np.maximum(scale, 1e-30))).float(),
        opacity_logits=torch.from_numpy(np.log(opacity / (1 - opacity))).float(),
        sh=torch.from_numpy(sh).float(),
        extras=extras,
    )


__all__ = ["EXTENSION", "is_gltf_splats", "read_gltf", "write_gltf"]
