"""Benchmark the web viewer: server-side time from a GUI event to the splat update sent.

    python bench/viewer.py            # 45k, 138k and 1M splats, a markdown table on stdout
    python bench/viewer.py --quick    # 45k only

Each case builds a `ViewerApp` (a real viser server on a free port, no browser) over random
splats in a cube with planted features (8 objects = the octants, one-hot + noise, D = 16) and
times the handler a GUI control calls, until viser has the splat messages queued:

- `threshold`: the threshold slider moves on a live result whose scores fall with the distance
  to a point (the selection is a ball; the slider moves its surface);
- `phrase`: the Search button with a phrase naming one octant (LERF relevancy of the planted
  features against the canonical negatives; the text encoder is a table lookup).

Only the splat chunks whose colours changed are sent (see viewer/splats.py): the ball's surface
touches a few chunks; the phrase result also has scattered false positives (the features' noise)
that touch more. The reference is
what a viewer without that bookkeeping does: compute every covariance and re-add the whole splat
set (`add_gaussian_splats`) for each update. Best of 3 runs after a warm-up; peak memory is what
one event adds (measured in a second process, see _measure.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import bench_parser, markdown_table, measure, run_cases  # noqa: E402

from omnivision.scenes.gaussians import GaussianScene, normalize_quats  # noqa: E402
from omnivision.scenes.load import Scene  # noqa: E402
from omnivision.viewer.app import ViewerApp  # noqa: E402
from omnivision.viewer.splats import covariances  # noqa: E402
from omnivision.viewer.state import ViewerState  # noqa: E402

SIZES = {"45k": 45_000, "138k": 138_000, "1M": 1_000_000}
CASES = {f"{size}-{event}": (size, event) for size in SIZES for event in ("threshold", "phrase")}
QUICK = ("45k-threshold", "45k-phrase")
DIM = 16


def random_scene(n: int, seed: int = 0) -> tuple[Scene, torch.Tensor]:
    """n splats uniform in [-1, 1]^3 (scales 2-10 mm at 1M, larger for fewer) and their octant."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    size = 0.02 * (1_000_000 / n) ** (1 / 3)
    gaussians = GaussianScene(
        means=means,
        quats=normalize_quats(torch.randn(n, 4, generator=g)),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.8 * size + 0.2 * size),
        opacity_logits=torch.randn(n, generator=g) + 2,
        sh=torch.randn(n, 1, 3, generator=g) * 0.5,
    )
    octant = ((means > 0).long() * torch.tensor([1, 2, 4])).sum(-1)
    scene = Scene(gaussians, None, Path("."), Path("random.ply"))
    return scene, octant


def planted(octant: torch.Tensor, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(octant, 8).float()
    features = torch.nn.functional.pad(onehot, (0, DIM - 8))
    features = torch.nn.functional.normalize(
        features + 0.02 * torch.randn(len(octant), DIM, generator=g), dim=-1
    )
    others: dict[str, int] = {}

    def text_fn(phrases):
        rows = torch.zeros(len(phrases), DIM)
        for i, phrase in enumerate(phrases):
            if phrase.startswith("octant "):
                rows[i, int(phrase.split()[1])] = 1.0
            else:
                rows[i, 8 + others.setdefault(phrase, len(others) % 8)] = 1.0
        return rows

    return features, text_fn


def run_case(case: str, mode: str) -> dict:
    size, event = CASES[case]
    n = SIZES[size]
    scene, octant = random_scene(n)
    features, text_fn = planted(octant)
    state = ViewerState(scene, features, "planted", text_fn=text_fn)
    app = ViewerApp(state, port=0)
    try:
        return _measure_case(case, event, app, scene, mode)
    finally:
        app.stop()


def _measure_case(case: str, event: str, app: ViewerApp, scene: Scene, mode: str) -> dict:
    state, g = app.state, scene.gaussians
    if event == "threshold":
        distance = (g.means - torch.tensor([0.3, -0.2, 0.1])).norm(dim=-1)
        state._set_result(-distance, "distance to a point", threshold=-0.3)
        app.refresh()
        values = iter(np.tile([-0.35, -0.3], 1000))

        def fire() -> None:
            app.set_threshold(float(next(values)))

    else:
        phrases = iter(np.tile(["octant 3", "octant 5"], 1000))

        def fire() -> None:
            app.search(str(next(phrases)), "object, things, stuff, texture")

    def reference() -> None:  # a viewer without chunk bookkeeping: rebuild and re-add everything
        colors = state.display_colors()
        app.server.scene.add_gaussian_splats(
            "/reference",
            centers=g.means.numpy(),
            covariances=covariances(g.quats.numpy(), g.scales.numpy()),
            rgbs=colors.rgb,
            opacities=colors.opacity[:, None],
        )

    updates = []

    def fire_and_record() -> None:
        fire()
        updates.append(app.last_update)

    row: dict = {"case": case, "splats": len(g), "event": event}
    if mode == "time":
        seconds = measure(fire_and_record, "time", 3)
        stats = min(updates[1:], key=lambda u: u.seconds)  # the measured runs, not the warm-up
        reference_s = measure(reference, "time", 3)
        row.update(
            event_ms=f"{1000 * seconds:.1f}",
            refresh_ms=f"{1000 * stats.seconds:.1f}",
            chunks=f"{stats.chunks_sent}/{stats.chunks_total}",
            sent_mb=f"{stats.bytes_sent / 2**20:.2f}",
            full_mb=f"{32 * len(g) / 2**20:.1f}",
            reference_ms=f"{1000 * reference_s:.1f}",
            ratio=f"{reference_s / seconds:.1f}x",
            selected=state.count,
        )
    else:
        fire()  # warm-up outside the measured call
        row["peak_mb"] = f"{measure(fire, 'memory'):.0f}"
        row["reference_peak_mb"] = f"{measure(reference, 'memory'):.0f}"
    return row


def main() -> None:
    args = bench_parser(__doc__, CASES, "45k splats only", device=False).parse_args()
    if args.case:
        start = time.perf_counter()
        row = run_case(args.case, args.mode)
        print(f"{args.case} {args.mode}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        print(json.dumps(row))
        return
    rows = run_cases(Path(__file__), QUICK if args.quick else CASES)
    print(
        markdown_table(
            rows,
            [
                ("case", "case"),
                ("splats", "splats"),
                ("event", "event"),
                ("selected", "selected"),
                ("event → update sent ms", "event_ms"),
                ("of which display update ms", "refresh_ms"),
                ("chunks sent", "chunks"),
                ("MB sent", "sent_mb"),
                ("full set MB", "full_mb"),
                ("peak MB", "peak_mb"),
                ("re-add all ms", "reference_ms"),
                ("re-add peak MB", "reference_peak_mb"),
                ("re-add / event", "ratio"),
            ],
        )
    )


if __name__ == "__main__":
    main()
