"""Shared fixtures: tiny synthetic scenes, the demo scene, and the real data in tests/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: two workers on two cores
    os.environ["OMP_NUM_THREADS"] = "1"  # the commands tests start as subprocesses too

from omnivision.scenes.gaussians import GaussianScene, normalize_quats  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers x two threads would spin-wait on two cores


REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


def data_path(*parts: str) -> Path:
    """A path under tests/data (real files made by others, see tests/data/README.md). They are
    part of the repository, so a missing one fails the test: it never skips."""
    path = TEST_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data {path} is missing: it ships with the repository (tests/data)")
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


@pytest.fixture(scope="session")
def demo_colour_lift(demo_dir):
    """The demo scene loaded and its colour features lifted from every view (as `make demo`
    lifts them), once per session on one thread: (Scene, features (N, D)). Shared by the query
    and instance tests; treat both as read-only."""
    from omnivision.lift.pipeline import LiftConfig, lift_scene
    from omnivision.scenes.load import load_scene

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scene = load_scene(demo_dir)
        return scene, lift_scene(scene, LiftConfig(features="colour")).features
    finally:
        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` every test that uses the trained synthetic benchmark
    runs in one worker, which trains it once; GPU tests skip without CUDA."""
    for item in items:
        if "synthetic_bench" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("synthetic_bench"))
    skip_gpus(items)


def skip_gpus(items):
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


RED, BLUE, GREEN = (0.85, 0.15, 0.1), (0.1, 0.2, 0.85), (0.15, 0.75, 0.2)


def moving_shapes(
    frames: int = 16, height: int = 144, width: int = 208
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """uint8 RGB frames and their id maps on a noisy grey ramp: a red disc (1) drifting right and
    up, a blue square (2) in front drifting right, a green disc (3) moving left behind the square:
    partly hidden on frames 7 and 11, wholly on 8-10, whole again from 13."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    ground = 0.45 + 0.1 * xx / width + 0.04 * rng.standard_normal((height, width))
    images, masks = [], []
    for t in range(frames):
        image = np.repeat(ground[..., None], 3, axis=2)
        ids = np.zeros((height, width), np.uint8)
        for object_id, colour, inside in (
            (3, GREEN, (xx - (168 - 7 * t)) ** 2 + (yy - 70) ** 2 <= 12**2),
            (1, RED, (xx - (40 + 3 * t)) ** 2 + (yy - (112 - t)) ** 2 <= 16**2),
            (2, BLUE, (abs(xx - (96 + t)) <= 20) & (abs(yy - 70) <= 20)),
        ):
            image[inside], ids[inside] = colour, object_id
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
        masks.append(ids)
    return images, masks


@pytest.fixture(scope="session")
def tiny_sam2_files(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random SAM 2.1 checkpoint and its config, written once per session."""
    from omnivision.twod.sam import build_tiny_sam2_checkpoint

    return build_tiny_sam2_checkpoint(tmp_path_factory.mktemp("tiny_sam2"))


@pytest.fixture(scope="session")
def tiny_dinov3(tmp_path_factory) -> Path:
    """A tiny random DINOv3 (patch 16, 4 registers) saved with `save_pretrained`: a local folder
    that `load_extractor` takes as it takes a downloaded model."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        num_register_tokens=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp("dinov3-tiny")
        DINOv3ViTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory) -> Path:
    """A tiny random DINOv2 (patch 14) saved with `save_pretrained`."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp("dinov2-tiny")
        Dinov2Model(config).save_pretrained(folder)
    return folder
