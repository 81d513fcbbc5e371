"""Label propagation on the real sequences we ship (Cutie's bike and judo, tests/data/cutie), with
the weight-free `colour` backend: what it gives where ground truth exists.

    python bench/eval_track.py                      # short side 480 (the default), 2 threads
    python bench/eval_track.py --short-side 240

The sequences have masks only where an object is given (bike: frame 0; judo: frames 0, 5, 8, 13,
one new person each), so the figure is a forward-backward cycle: each object is propagated
from its given frame to the last frame, then a fresh propagator starts from that last
prediction and runs back to the given frame, where J and F are measured against the given
mask (DAVIS's measures, eval/davis.py). The backward run has only propagated labels in its
context, never the given mask, so nothing is copied back. The cycle is twice the distance of a
forward track and ends on the hardest frame for drift; it is a proxy, not a DAVIS score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import markdown_table  # noqa: E402

from omnivision.eval.davis import db_eval_boundary, db_eval_iou  # noqa: E402
from omnivision.twod.davis import read_index_png  # noqa: E402
from omnivision.twod.extractors import load_extractor  # noqa: E402
from omnivision.twod.propagate import PropagateConfig, fit_mask, propagate_video  # noqa: E402
from omnivision.twod.video import open_video  # noqa: E402

CUTIE = Path(__file__).resolve().parents[1] / "tests" / "data" / "cutie"


def cycle(extractor, frames: list[np.ndarray], mask: np.ndarray, cfg: PropagateConfig):
    """The given mask's objects tracked to the end and back; the prediction on the given frame."""
    forward = list(propagate_video(extractor, frames, {0: mask}, cfg))
    back = frames[::-1]
    backward = list(propagate_video(extractor, back, {0: forward[-1].mask}, cfg))
    return backward[-1].mask, len(frames) + len(back) - 2


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short-side", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"$ python bench/eval_track.py --short-side {args.short_side} --threads {args.threads}")
    extractor = load_extractor("colour")
    cfg = PropagateConfig(short_side=args.short_side)
    rows = []
    for seq in ("bike", "judo"):
        frames = list(open_video(CUTIE / "images" / seq))
        size = frames[0].shape[:2]
        for given in sorted((CUTIE / "masks" / seq).glob("*.png")):
            start = int(given.stem)
            truth = fit_mask(read_index_png(given), size, str(given))
            began = time.perf_counter()
            predicted, steps = cycle(extractor, frames[start:], truth, cfg)
            seconds = time.perf_counter() - began
            for obj in sorted(set(np.unique(truth).tolist()) - {0}):
                j = float(db_eval_iou(truth == obj, predicted == obj))
                f = float(db_eval_boundary(truth == obj, predicted == obj))
                rows.append(
                    {
                        "sequence": seq,
                        "object": obj,
                        "given on frame": start,
                        "cycle frames": steps,
                        "J": f"{j:.3f}",
                        "F": f"{f:.3f}",
                        "J&F": f"{(j + f) / 2:.3f}",
                        "frames/s": f"{steps / seconds:.2f}",
                    }
                )
    print(markdown_table(rows, [(k, k) for k in rows[0]]))
    jf = np.mean([float(r["J&F"]) for r in rows])
    print(f"\nmean J&F over {len(rows)} objects: {jf:.3f} (forward-backward cycle, colour backend)")


if __name__ == "__main__":
    main()
