"""Per-Gaussian semantics that travel with an export: object ids, class ids, selection masks.

An INRIA `.ply` stores them as extra vertex properties (`io_ply.write_ply` writes every extra).
Formats without a slot for them (.splat, .spz, .compressed.ply, .sog) get a sidecar beside the
file, named after the whole file name so two exports of one scene in one folder do not collide:

- `FILE.semantics.safetensors`: one tensor per field, first dimension N, in the Gaussians' order
  *in FILE* (writers that reorder, .splat by size and .compressed.ply by Morton code, write the
  fields reordered with them);
- `FILE.semantics.json`: format tag, the file name, N, each field's dtype and shape, and the
  source scene when the writer knows it.

The fields are the integer and boolean `extras` (bools stored as uint8); float extras (e.g. the
hidden opacities of `query.edits.hide`) stay behind. The writers go through
`atomic_with_semantics`: the file and its sidecar are written to temporary names and renamed only
once all are complete, and an export without semantics removes a stale sidecar of the same name.
The readers call `with_semantics`, which checks the count against the file's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import Tensor

from .errors import SceneError, atomic_path
from .gaussians import GaussianScene

SIDECAR_FORMAT = "omnivision-semantics"
SIDECAR_VERSION = 1
_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def sidecar_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(tensors, index) of the sidecar of the file at `path`: `FILE.semantics.safetensors` and
    `FILE.semantics.json`, beside it."""
    path = Path(path)
    return (
        path.with_name(f"{path.name}.semantics.safetensors"),
        path.with_name(f"{path.name}.semantics.json"),
    )


def semantic_fields(scene: GaussianScene) -> dict[str, Tensor]:
    """The integer and boolean per-Gaussian extras (bools as uint8), on the CPU, contiguous."""
    fields = {}
    for name, value in scene.extras.items():
        if value.dtype == torch.bool:
            value = value.to(torch.uint8)
        if value.dtype in _INTEGER:
            fields[name] = value.detach().cpu().contiguous()
    return fields


def _write_sidecar(
    tensors_path: Path,
    index_path: Path,
    file_name: str,
    fields: dict[str, Tensor],
    count: int,
    source: str | os.PathLike[str] | None,
) -> None:
    from safetensors.torch import save_file

    save_file(fields, str(tensors_path))
    index = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "file": file_name,
        "count": count,
        "order": "the Gaussians' order in file",
        "fields": {
            name: {"dtype": str(value.dtype).removeprefix("torch."), "shape": [*value.shape]}
            for name, value in fields.items()
        },
        "source": None if source is None else str(source),
    }
    index_path.write_text(json.dumps(index, indent=1))


@contextmanager
def atomic_with_semantics(
    path: str | os.PathLike[str], scene: GaussianScene, source: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """`atomic_path(path)` for a format without a slot for semantics, plus its sidecar.

    `scene` must be in the order the caller writes its Gaussians. Yields the temporary path of the
    file; the sidecar (when `scene` has semantic fields) is written after the block, and all are
    renamed only if everything succeeded. Without fields, a sidecar left by an earlier export of
    the same name is removed once the file is in place."""
    tensors_path, index_path = sidecar_paths(path)
    fields = semantic_fields(scene)
    with ExitStack() as stack:
        # entered first, renamed last: the file appears once its sidecar is in place
        tmp = stack.enter_context(atomic_path(path))
        if fields:
            tmp_tensors = stack.enter_context(atomic_path(tensors_path))
            tmp_index = stack.enter_context(atomic_path(index_path))
        yield tmp
        if fields:
            _write_sidecar(tmp_tensors, tmp_index, Path(path).name, fields, len(scene), source)
    if not fields:
        for stale in (tensors_path, index_path):
            stale.unlink(missing_ok=True)


def write_semantics(
    path: str | os.PathLike[str], scene: GaussianScene, source: str | os.PathLike[str] | None = None
) -> Path | None:
    """Label a file another tool wrote (e.g. a .sog from splat-transform): the sidecar of the
    existing file at `path` from `scene`'s semantic fields, `scene` in the file's order. Both
    halves written atomically; returns the index path (None when `scene` has no fields)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(path, "file not found: a sidecar goes beside an existing file")
    fields = semantic_fields(scene)
    if not fields:
        return None
    tensors_path, index_path = sidecar_paths(path)
    with atomic_path(tensors_path) as tmp_tensors, atomic_path(index_path) as tmp_index:
        _write_sidecar(tmp_tensors, tmp_index, path.name, fields, len(scene), source)
    return index_path


def read_semantics(path: str | os.PathLike[str], count: int) -> dict[str, Tensor]:
    """The fields of the sidecar beside `path` (empty without one), checked against the file's
    `count` of Gaussians; a half, corrupt or mismatched sidecar is a `SceneError` naming it."""
    path = Path(path)
    tensors_path, index_path = sidecar_paths(path)
    if not tensors_path.exists() and not index_path.exists():
        return {}
    for have, lack in ((tensors_path, index_path), (index_path, tensors_path)):
        if not lack.is_file():
            raise SceneError(have, f"sidecar of {path.name} without its other half {lack.name}")
    try:
        index = json.loads(index_path.read_text())
        declared = {str(k): v for k, v in index["fields"].items()}
        stored = int(index["count"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SceneError(index_path, f"not a semantics sidecar index ({err})") from None
    if index.get("format") != SIDECAR_FORMAT:
        raise SceneError(index_path, f"not a semantics sidecar (format {index.get('format')!r})")
    if stored != count:
        raise SceneError(
            index_path,
            f"describes {stored} Gaussians but {path} holds {count}: the sidecar belongs to "
            "another export (write the file again, or delete both sidecar files)",
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        fields = load_file(str(tensors_path))
    except (OSError, SafetensorError) as err:
        raise SceneError(tensors_path, f"not a readable safetensors file ({err})") from None
    if set(fields) != set(declared):
        raise SceneError(
            tensors_path,
            f"holds fields {sorted(fields)}, {index_path.name} lists {sorted(declared)}",
        )
    short = {name: len(value) for name, value in fields.items() if len(value) != count}
    if short:
        raise SceneError(tensors_path, f"fields {short} do not have {count} rows like {path}")
    return {name: fields[name] for name in declared}


def with_semantics(scene: GaussianScene, path: str | os.PathLike[str]) -> GaussianScene:
    """`scene` as read from `path`, with the fields of its sidecar (if any) added to `extras`."""
    fields = read_semantics(path, len(scene))
    if fields:
        scene.extras = {**scene.extras, **fields}
    return scene


__all__ = [
    "SIDECAR_FORMAT",
    "atomic_with_semantics",
    "read_semantics",
    "semantic_fields",
    "sidecar_paths",
    "with_semantics",
    "write_semantics",
]
