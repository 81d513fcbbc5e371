"""The command line as a user meets it: help, outputs on disk, and one-line errors with exit code 2.
The console script runs as a process for help and an unknown command; the rest run `main` in this
process (tests/cli_run.py: the same output and exit status, without importing torch again)."""

from __future__ import annotations

import pytest
from cli_run import omnivision, omnivision_process
from PIL import Image


def test_help_lists_the_commands():
    out = omnivision_process("--help")
    assert out.returncode == 0
    for command in ("demo", "demo-scene", "render", "info", "export", "query", "view"):
        assert f"  {command} " in out.stdout


def test_query_help_teaches_with_examples():
    out = omnivision("query", "--help")
    assert out.returncode == 0
    for flag in ("--text", "--exemplar", "--click", "--sam", "--mask", "--then", "--preview"):
        assert flag in out.stdout
    assert "examples:" in out.stdout


def test_render_one_view_and_all_views(demo_dir, tmp_path):
    one = omnivision("render", str(demo_dir), "--view", "2", "--out", str(tmp_path / "v2.png"))
    assert one.returncode == 0, one.stderr
    with Image.open(tmp_path / "v2.png") as im:
        assert im.size == (320, 240)
    every = omnivision(
        "render",
        str(demo_dir),
        "--all",
        "--kind",
        "depth",
        "--width",
        "80",
        "--out",
        str(tmp_path / "d"),
    )
    assert every.returncode == 0, every.stderr
    files = sorted((tmp_path / "d").glob("*.png"))
    assert len(files) == 18
    with Image.open(files[0]) as im:
        assert im.size == (80, 60)


def test_export_splat_and_info(demo_dir, tmp_path):
    out = omnivision("export", str(demo_dir), str(tmp_path / "demo.splat"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "demo.splat").stat().st_size % 32 == 0
    info = omnivision("info", str(tmp_path / "demo.splat"))
    assert info.returncode == 0 and "sh degree : 0" in info.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "{missing}"], "no such file or folder"),
        (["render", "{demo}", "--view", "99"], "--view 99 out of range: the scene has 18 cameras"),
        (["export", "{demo}", "{tmp}/x.obj"], "output must end in .ply, .splat, .spz"),
        (["render", "{empty}"], "folder is empty"),
        (["render", "{demo}", "--width", "-5"], "--width -5: want a positive number of pixels"),
        (["render", "{demo}", "--width", "0"], "--width 0: want a positive number of pixels"),
        (["render", "{demo}", "--height", "0"], "--height 0: want a positive number of pixels"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(demo_dir, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    subs = {
        "{missing}": str(tmp_path / "nope"),
        "{demo}": str(demo_dir),
        "{tmp}": str(tmp_path),
        "{empty}": str(tmp_path / "empty"),
    }
    argv = [a for a in args]
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    out = omnivision(*argv)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_scene_without_cameras_asks_for_an_orbit(tmp_path):
    from conftest import random_scene

    from omnivision.scenes.io_ply import write_ply

    write_ply(random_scene(50), tmp_path / "s.ply")
    out = omnivision("render", str(tmp_path / "s.ply"), "--out", str(tmp_path / "r.png"))
    assert out.returncode == 2 and "pass --orbit N" in out.stderr
    ok = omnivision(
        "render",
        str(tmp_path / "s.ply"),
        "--orbit",
        "4",
        "--view",
        "1",
        "--out",
        str(tmp_path / "r.png"),
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r.png").is_file()


def test_unknown_command_exits_2():
    out = omnivision_process("teleport")
    assert out.returncode == 2 and "unknown command 'teleport'" in out.stderr
