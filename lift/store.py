"""Lifted features on disk: `features_<name>.safetensors` + `manifest.json` in the output folder.

Writes go to a temporary file that is renamed into place, so a crashed run leaves no partial
file. The manifest records what produced each feature file (backbone, dims, views, the scene
file's hash, settings, time taken); a run whose request matches the manifest does nothing, and
`load_features(..., scene_file=)` refuses features lifted from another scene file.
Shards write `partial_<name>_<k>-of-<n>.safetensors` (raw sums); `merge_partials` adds them.

A feature file holds one of two forms, told apart by its tensors (and the manifest entry's
`form`): *full* (`features` (N, D) fp16/fp32, `weight_sums` fp32, `seen` uint8) or *codebook*
(`codebook` (K', D) fp16/fp32, `codebook_index` (N,) uint16, `seen_bits` the seen mask packed 8 to
a byte: 2.125 bytes a Gaussian; no weight sums, which only a fit or a merge needs). `load_features`
reads both; the codebook form decodes `features` only when something asks for them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omnivision.scenes.errors import SceneError, atomic_path

from .aggregate import PCA, FeatureSums
from .codebook import Codebook

MANIFEST = "manifest.json"
CODEBOOK_BYTES_PER_GAUSSIAN = 2.125
"""A codebook file's bytes a Gaussian besides the codebook: the uint16 index and one seen bit."""


def feature_name(features: str) -> str:
    """The name a `--features` choice is stored under (features_<name>.safetensors, manifest
    key): label-map sources drop their folder (`masks:DIR` -> masks, `clip-masks:DIR` ->
    clip-masks, `segment-labels:DIR` -> segment-labels) and `segment:CLASSES` its classes
    (-> segment; the manifest keeps them); hub ids and paths become one file name (`/` and `:`
    -> `_`)."""
    kind, sep, _ = features.partition(":")
    if sep and kind in ("masks", "clip-masks", "segment", "segment-labels"):
        return kind
    return features.replace("/", "_").replace(":", "_")


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not path.is_file():
        return {"features": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SceneError(path, f"invalid JSON ({err})") from None


def write_manifest_entry(out_dir: Path, name: str, entry: dict[str, Any]) -> None:
    manifest = read_manifest(out_dir)
    manifest.setdefault("features", {})[name] = entry
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        contiguous = {k: v.contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp), metadata=metadata)


def features_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"features_{name}.safetensors"


def save_features(
    out_dir: Path,
    name: str,
    features: torch.Tensor,
    weights: torch.Tensor,
    seen: torch.Tensor,
    pca: PCA | None,
    fp16: bool,
) -> Path:
    tensors = {
        "features": features.half() if fp16 else features.float(),
        "weight_sums": weights.float(),
        "seen": seen.to(torch.uint8),
    }
    if pca is not None:
        tensors.update(pca_mean=pca.mean, pca_components=pca.components)
    path = features_path(out_dir, name)
    _save(tensors, path, {"name": name, "form": "full"})
    return path


def save_codebook(
    out_dir: Path,
    name: str,
    codebook: Codebook,
    weights: torch.Tensor,
    seen: torch.Tensor,
    pca: PCA | None,
    fp16: bool,
) -> Path:
    """The codebook form of a lift in `features_<name>.safetensors` (replacing the full form):
    entries (K', D), a uint16 index per Gaussian and the seen mask packed 8 Gaussians to a byte.
    The weight sums are not kept (`weights` is unused: the signature matches `save_features`)."""
    if int(codebook.index.max()) > 65535 or int(codebook.index.min()) < 0:
        raise ValueError("codebook index out of the uint16 range")
    tensors = {
        "codebook": codebook.entries.half() if fp16 else codebook.entries.float(),
        "codebook_index": codebook.index.to(torch.int32).to(torch.uint16),
        "seen_bits": pack_bits(seen),
    }
    if pca is not None:
        tensors.update(pca_mean=pca.mean, pca_components=pca.components)
    path = features_path(out_dir, name)
    _save(tensors, path, {"name": name, "form": "codebook"})
    return path


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool (N,) -> uint8 (ceil(N/8),), big-endian bits as numpy's packbits."""
    return torch.from_numpy(np.packbits(mask.cpu().numpy().astype(bool)))


def unpack_bits(bits: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of `pack_bits`: bool (n,)."""
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))


def codebook_record(codebook: Codebook, fp16: bool, path: Path) -> dict[str, Any]:
    """The manifest's description of a codebook file: entries (fitted K, stored K' with the zero
    row), dtypes and bytes: per Gaussian (index + seen bit), the codebook, the whole file."""
    n, stored = len(codebook), codebook.entries.shape[0]
    codebook_bytes = stored * codebook.dims * (2 if fp16 else 4)
    size = path.stat().st_size
    return {
        "entries": int(stored),
        "codebook_bytes": int(codebook_bytes),
        "index_dtype": "uint16",
        "bytes_per_gaussian": CODEBOOK_BYTES_PER_GAUSSIAN,
        "bytes_per_gaussian_with_codebook": round(
            CODEBOOK_BYTES_PER_GAUSSIAN + codebook_bytes / max(n, 1), 3
        ),
        "file_bytes": int(size),
    }


class LiftedFeatures:
    """Per-Gaussian features read back from disk (float32), with their manifest entry.

    From a codebook file, `codebook` holds the entries (float32) and the index (int32), and
    `features` is decoded from them the first time it is read (N x D floats): a phrase query
    reads `queryable` instead and never decodes. A codebook file keeps no weight sums:
    `weight_sums` is then 1 where seen, 0 elsewhere."""

    def __init__(
        self,
        features: torch.Tensor | None,
        weight_sums: torch.Tensor,
        seen: torch.Tensor,
        entry: dict[str, Any],
        pca: PCA | None = None,
        codebook: Codebook | None = None,
    ) -> None:
        if features is None and codebook is None:
            raise ValueError("LiftedFeatures needs features or a codebook")
        self._features = features
        self.weight_sums, self.seen, self.entry = weight_sums, seen, entry
        self.pca, self.codebook = pca, codebook

    @property
    def features(self) -> torch.Tensor:
        """(N, D) float32 (PCA coefficients (N, d) for a PCA-stored lift)."""
        if self._features is None:
            assert self.codebook is not None
            self._features = self.codebook.decode().float()
        return self._features

    @property
    def queryable(self) -> torch.Tensor | Codebook:
        """What a phrase query scores (`query.queries.PhraseIndex`): the codebook when the file
        holds one (relevancy per entry, gathered), else the features."""
        return self.codebook if self.codebook is not None else self.features

    @property
    def num_gaussians(self) -> int:
        return len(self.codebook) if self.codebook is not None else self.features.shape[0]

    @property
    def dims(self) -> int:
        """D of the stored rows (d for a PCA-stored lift)."""
        return self.codebook.dims if self.codebook is not None else self.features.shape[1]


def available_features(out_dir: str | Path) -> list[str]:
    """Names of the lifted feature files in `out_dir`, sorted."""
    return sorted(
        p.stem.removeprefix("features_") for p in Path(out_dir).glob("features_*.safetensors")
    )


def default_features(out_dir: str | Path, prefer_clip: bool = True) -> str | None:
    """The features to use when none is named: a clip-* one first (phrases work on it) unless
    `prefer_clip` is False, else the first by name; None when there are none."""
    names = available_features(out_dir)
    clip = [n for n in names if n.startswith("clip-")] if prefer_clip else []
    return (clip or names or [None])[0]


def load_features(
    out_dir: str | Path, name: str, scene_file: str | Path | None = None
) -> LiftedFeatures:
    """The lifted features `name` in `out_dir` with their manifest entry. With `scene_file` (the
    scene's Gaussians file, `Scene.gaussians_file`), features the manifest says were lifted from
    a file with another content hash are refused: another scene can have as many Gaussians, and
    its rows would silently mean other Gaussians (an entry without a hash is not checked)."""
    out_dir = Path(out_dir)
    path = features_path(out_dir, name)
    if not path.is_file():
        available = available_features(out_dir)
        raise SceneError(
            path,
            f"not found; lifted features here: {', '.join(available) or 'none'} (run omnivision-lift)",
        )
    entry = read_manifest(out_dir).get("features", {}).get(name, {})
    if scene_file is not None:
        check_scene(path, entry, Path(scene_file))
    data = load_file(str(path))
    pca = PCA(data["pca_mean"], data["pca_components"]) if "pca_mean" in data else None
    if "codebook" in data:
        index = data["codebook_index"].to(torch.int32)
        seen = unpack_bits(data["seen_bits"], len(index))
        codebook = Codebook(data["codebook"].float(), index)
        return LiftedFeatures(None, seen.float(), seen, entry, pca, codebook)
    return LiftedFeatures(
        data["features"].float(), data["weight_sums"], data["seen"].bool(), entry, pca
    )


def check_scene(path: Path, entry: dict[str, Any], scene_file: Path) -> None:
    """Raise SceneError when the manifest entry of the feature file `path` records a scene hash
    other than `scene_file`'s."""
    request = entry.get("request", {})
    recorded = request.get("scene_hash")
    if not recorded:
        return
    actual = file_hash(scene_file)
    if actual != recorded:
        lifted_from = request.get("scene_file", "?")
        raise SceneError(
            path,
            f"lifted from another scene file ({lifted_from}, hash {recorded}), not {scene_file} "
            f"(hash {actual}): lift this scene again (omnivision-lift SCENE_DIR --force)",
        )


def partial_path(out_dir: Path, name: str, shard: tuple[int, int]) -> Path:
    return out_dir / f"partial_{name}_{shard[0]}-of-{shard[1]}.safetensors"


def save_partial(
    out_dir: Path,
    name: str,
    shard: tuple[int, int],
    sums: FeatureSums,
    views: list[int],
    pca: PCA | None,
    request: dict,
) -> Path:
    tensors = {
        "sums": sums.sums,
        "weights": sums.weights,
        "views": torch.tensor(views, dtype=torch.int64),
    }
    if pca is not None:
        tensors.update(pca_mean=pca.mean, pca_components=pca.components)
    path = partial_path(out_dir, name, shard)
    _save(tensors, path, {"request": json.dumps(request, sort_keys=True)})
    return path


def merge_partials(out_dir: Path, name: str) -> tuple[FeatureSums, list[int], PCA | None, dict]:
    """Add all partial sums of `name`; every shard of 1..n must be present and agree on the request."""
    from safetensors import safe_open

    parts = sorted(out_dir.glob(f"partial_{name}_*-of-*.safetensors"))
    if not parts:
        raise SceneError(
            out_dir, f"no partial files for {name!r} (run omnivision-lift --shard k/n first)"
        )
    totals = sorted({int(p.stem.rsplit("-of-", 1)[1]) for p in parts})
    if len(totals) > 1:
        raise SceneError(
            out_dir,
            f"partial files of {name!r} from runs of {' and '.join(map(str, totals))} shards; "
            "delete the stale ones and merge again",
        )
    total = totals[0]
    present = sorted(int(p.stem.rsplit("_", 1)[1].split("-of-")[0]) for p in parts)
    if present != list(range(total)):
        raise SceneError(
            out_dir, f"shards {sorted(set(range(total)) - set(present))} of {total} are missing"
        )
    merged: FeatureSums | None = None
    views: list[int] = []
    requests = set()
    pca = None
    for part in parts:
        with safe_open(str(part), "pt") as f:
            requests.add((f.metadata() or {}).get("request", ""))
        data = load_file(str(part))
        piece = FeatureSums(data["sums"], data["weights"], len(data["views"]))
        views += data["views"].tolist()
        if "pca_mean" in data:
            pca = PCA(data["pca_mean"], data["pca_components"])
        merged = piece if merged is None else merged.__iadd__(piece)
    if len(requests) != 1:
        raise SceneError(
            out_dir, f"partial files of {name!r} come from different settings; re-run the shards"
        )
    assert merged is not None
    return merged, sorted(views), pca, json.loads(requests.pop())
