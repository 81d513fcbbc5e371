"""`omnivision <command> ...`: a thin dispatcher. Each command lives in its package and is imported
only when it runs, so `omnivision --help` is instant and a missing optional extra only affects
its own command."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("omnivision.demo:main", "run the main job on the embedded demo scene (offline)"),
    "demo-scene": (
        "omnivision.scenes.cli:demo_scene_main",
        "write the procedural tabletop demo scene",
    ),
    "info": ("omnivision.scenes.cli:info_main", "summarise a scene: Gaussians, SH degree, cameras"),
    "render": (
        "omnivision.scenes.cli:render_main",
        "render RGB, depth or alpha of a scene's views",
    ),
    "export": (
        "omnivision.scenes.cli:export_main",
        "write a scene as .ply, .splat, .spz or .compressed.ply",
    ),
    "phrase": (
        "omnivision.twod.cli_language:phrase_main",
        "find what a phrase names in images (text bridge or CLIP relevancy)",
    ),
    "train-bridge": (
        "omnivision.twod.cli_language:train_bridge_main",
        "train the CLIP-text -> DINO text bridge on phrase-region pairs",
    ),
    "query": (
        "omnivision.query.cli:query_main",
        "select Gaussians by phrase, example, click or SAM prompt; edit and export them",
    ),
    "view": (
        "omnivision.viewer.cli:view_main",
        "open a scene in the browser: query, select, edit, export",
    ),
    "eval": (
        "omnivision.eval.cli:eval_main",
        "score: LERF-OVS, NVOS/SPIn-NeRF, SPair, DAVIS J&F; reports; the synthetic benchmark",
    ),
    "track": (
        "omnivision.twod.cli_track:track_main",
        "follow objects through a video (SAM 2, + re-identification, or label propagation)",
    ),
    "localize": (
        "omnivision.twod.cli:localize_main",
        "find what looks like a clicked example in images",
    ),
    "segment": (
        "omnivision.twod.cli_segment:segment_main",
        "label every pixel with one of given class names (open-vocabulary segmentation)",
    ),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: omnivision COMMAND [ARGS...]   (omnivision COMMAND --help for its options)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()),
        "",
        "example: omnivision demo-scene demo/ && omnivision render demo/ --view 0 --out view0.png",
    ]
    return "\n".join(lines)


def run_command(target: str, argv: list[str], prog: str) -> int:
    """Import `module:function`, call it with argv; bad input (an exception with `exit_code`)
    becomes one line on stderr and that exit code."""
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(argv, prog) or 0)
    except Exception as err:
        code = getattr(err, "exit_code", None)
        if code is None:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return int(code)


def lift_main(argv: list[str] | None = None) -> int:
    """The `omnivision-lift` console script: `omnivision-lift SCENE ...` or `omnivision-lift merge SCENE`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "merge":
        return run_command("omnivision.lift.cli:merge_main", argv[1:], "omnivision-lift merge")
    return run_command("omnivision.lift.cli:lift_main", argv, "omnivision-lift")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from omnivision import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"omnivision: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(COMMANDS[name][0], argv[1:], f"omnivision {name}")


if __name__ == "__main__":
    raise SystemExit(main())
