"""Shared fixtures: tiny synthetic scenes, the demo scene, and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from omnivision.scenes.gaussians import GaussianScene, normalize_quats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OMNIVISION_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (CI runs with ../shared beside the repo)")
    return path


def random_scene(
    n: int = 200, sh_degree: int = 3, seed: int = 0, spread: float = 0.5
) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(
        means=torch.randn(n, 3, generator=g) * spread,
        quats=normalize_quats(torch.randn(n, 4, generator=g)),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.01),
        opacity_logits=torch.randn(n, generator=g) * 2 + 1,
        sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3,
    )


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo scene written once per test session with the real writer."""
    from omnivision.scenes.demo import write_demo_scene

    # Session fixtures start before a module's `one_thread`: render on one thread here too, or
    # two spin-waiting threads on shared cores make this take minutes instead of seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return write_demo_scene(tmp_path_factory.mktemp("demo") / "scene")
    finally:
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gsplat kernels); none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread (tiny models spin-wait on shared cores), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random OpenCLIP saved as a local folder and loaded through the real local-dir path."""
    from omnivision.twod.clip import build_tiny_clip, load_clip

    folder = build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    return folder, load_clip(str(folder), device="cpu")


@pytest.fixture(scope="session")
def synthetic_bench(tmp_path_factory):
    """The synthetic benchmark run once, as `omnivision eval synthetic` runs it: demo scene,
    labels, the tiny CLIP and bridge trained (default steps), three lifts, every run, the report.
    (folder, {run name: metrics.json content})."""
    from omnivision.eval.synthetic import run_synthetic

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models spin-wait on two threads of shared cores
    try:
        folder = tmp_path_factory.mktemp("synthetic") / "bench"
        return folder, run_synthetic(folder, progress=False)
    finally:
        torch.set_num_threads(threads)
