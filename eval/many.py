"""`omnivision eval lerf-scenes ROOT --labels ROOT --out ROOT [--ray]`: LERF-OVS over many scenes,
one `omnivision eval lerf` per scene (a Ray task each with --ray), then one report.

Scenes are the sub-folders of the scenes root that have a label folder of the same name under
the labels root (LangSplat's `lerf_ovs/label/<scene>` layout); every other option is passed to
each `omnivision eval lerf` unchanged. Each scene's run goes to OUT/<scene>, the report to
OUT/report.md. Without --ray the scenes run one after the other in this process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omnivision.scenes.errors import SceneError

DESCRIPTION = """LERF-OVS over many scenes: one `omnivision eval lerf` per scene (a Ray task each
with --ray), each run in OUT/<scene>, then one report, OUT/report.md.

examples:
  omnivision eval lerf-scenes lifted/ --labels lerf_ovs/label --out runs/
  omnivision eval lerf-scenes lifted/ --labels lerf_ovs/label --out runs/ --ray --address 10.0.0.5:6379
  omnivision eval lerf-scenes lifted/ --labels lerf_ovs/label --out runs/ --scenes ramen,teatime --no-3d

Any other option (--features, --smooth, --bridge, ...) goes to every `omnivision eval lerf`."""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenes_root", type=Path, metavar="SCENES_ROOT", help="one folder per scene"
    )
    parser.add_argument("--labels", type=Path, required=True, help="one label folder per scene")
    parser.add_argument("--out", type=Path, required=True, help="OUT/<scene>/ runs, OUT/report.md")
    parser.add_argument("--scenes", help="comma-separated scene names (default: all with labels)")
    parser.add_argument("--ray", action="store_true", help="one Ray task per scene")
    parser.add_argument("--address", help="with --ray: a running cluster, HOST:PORT")
    return parser


def find_scenes(root: Path, labels: Path, names: str | None) -> list[str]:
    """Scene names to score: the requested ones (each must have a scene and a label folder), or
    every sub-folder of `root` with a label folder of the same name."""
    for folder, what in ((root, "scenes root"), (labels, "labels root")):
        if not folder.is_dir():
            raise SceneError(folder, f"{what} is not a folder")
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        for name in wanted:
            if not (root / name).is_dir():
                raise SceneError(root / name, "no such scene folder")
            if not (labels / name).is_dir():
                raise SceneError(labels / name, f"no label folder for scene {name!r}")
        return wanted
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and (labels / p.name).is_dir())
    if not found:
        raise SceneError(root, f"no sub-folder has a label folder of the same name in {labels}")
    return found


def lerf_scenes_main(argv: list[str], prog: str) -> int:
    from omnivision.lift.distributed import connect, run_on_ray, run_target

    from .report import write_report

    args, rest = _parser(prog).parse_known_args(argv)
    if args.address and not args.ray:
        raise SceneError(args.out, "--address goes with --ray")
    names = find_scenes(args.scenes_root, args.labels, args.scenes)
    argvs = [
        [
            str(args.scenes_root / name),
            "--labels",
            str(args.labels / name),
            "--out",
            str(args.out / name),
            "--scene-name",
            name,
            *rest,
        ]
        for name in names
    ]
    target, lerf_prog = "omnivision.eval.cli:lerf_main", "omnivision eval lerf"
    if args.ray:
        ray = connect(args.address, args.out)
        results = run_on_ray(ray, target, lerf_prog, argvs, "lerf scenes (ray)")
    else:
        results = [run_target(target, a, lerf_prog) for a in argvs]
    failed = [(n, m) for n, (code, m) in zip(names, results, strict=True) if code != 0]
    done = [n for n in names if n not in {f for f, _ in failed}]
    for name, message in failed:
        print(f"{name}: {message}")
    if done:
        report = write_report([args.out / n for n in done], args.out / "report.md")
        print(f"scored {len(done)} of {len(names)} scenes; wrote {report.path}")
    if failed:
        raise SceneError(args.out, f"{len(failed)} of {len(names)} scenes failed (listed above)")
    return 0
