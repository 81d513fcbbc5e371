"""`omnivision-lift SCENE --ray`: the view shards of one lift as Ray tasks, then the merge.

Each task runs the same command with `--shard k/n` (so a task is exactly what a SLURM array
job runs by hand) and writes `partial_<name>_k-of-n.safetensors` into the output folder; the
driver then adds them (`merge`) with the run's own diffusion, fp16 and codebook settings. The
workers read the scene and write the partial files by path: on a cluster the scene and its
output folder must be on a filesystem every node sees, and the nodes need omnivision installed
(or a Ray `runtime_env`), as for any Ray job. Ray is imported only here, only when asked
(`pip install omnivision[dist]`).
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Sequence
from pathlib import Path

from omnivision.scenes.errors import SceneError

RAY_FLAGS_WITH_VALUE = ("--address", "--ray-tasks")
RAY_FLAGS = ("--ray",)


def strip_ray_flags(argv: Sequence[str]) -> list[str]:
    """The command line a shard task runs: the user's, without the Ray options."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in RAY_FLAGS:
            continue
        if name in RAY_FLAGS_WITH_VALUE:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def run_target(target: str, argv: list[str], prog: str) -> tuple[int, str]:
    """Run the command `module:function` (argv, prog) -> exit code, in a Ray worker or here:
    (exit code, its one-line error, or what it printed). Bad input (an exception with
    `exit_code`) comes back as its code and message; anything else is raised (a bug)."""
    import importlib

    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = int(func(argv, prog) or 0)
    except Exception as err:
        code = getattr(err, "exit_code", None)
        if code is None:
            raise
        return int(code), str(err)
    return code, printed.getvalue().strip()


def run_on_ray(
    ray, target: str, prog: str, argvs: Sequence[list[str]], desc: str, gpus: int = 0
) -> list[tuple[int, str]]:
    """Each command line of `argvs` as one Ray task running `target`; results in input order,
    a progress bar over the tasks as they finish."""
    from tqdm import tqdm

    remote = ray.remote(num_cpus=1, num_gpus=gpus)(run_target)
    pending = {remote.remote(target, list(argv), prog): i for i, argv in enumerate(argvs)}
    results: list[tuple[int, str]] = [(0, "")] * len(argvs)
    with tqdm(total=len(argvs), desc=desc, unit="task") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            results[pending.pop(done[0])] = ray.get(done[0])
            bar.update(1)
    return results


def connect(address: str | None, where: Path, num_cpus: int | None = None):
    """`ray.init` on `address` (a running cluster) or a local instance; a missing Ray or an
    address that does not answer is one line (SceneError, exit 2)."""
    try:
        import ray
    except ImportError:
        raise SceneError(
            where, "--ray needs Ray: pip install 'omnivision[dist]' (or pip install ray)"
        ) from None
    if ray.is_initialized():
        return ray
    if address is not None:
        _check_reachable(address, where)
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        target = address or "a local instance"
        raise SceneError(where, f"cannot reach Ray at {target}: {first}") from None
    return ray


def _check_reachable(address: str, where: Path, timeout: float = 5.0) -> None:
    """A TCP connection to host:port before `ray.init`, which retries an address that does not
    answer for minutes. `auto` (the cluster this node belongs to) is left to Ray."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SceneError(where, f"--address {address}: want HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise SceneError(
            where, f"cannot reach Ray at {address}: {err.strerror or err} (is the cluster up?)"
        ) from None


def default_tasks(ray) -> int:
    """One task per GPU when the cluster has GPUs, else per CPU slot."""
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0)) or int(resources.get("CPU", 1)))


def lift_on_ray(
    argv: Sequence[str], scene: Path, address: str | None, tasks: int | None, views: int
) -> int:
    """Run the lift `argv` (the user's command line) as `tasks` shards on Ray; returns the
    number of shards run. Shards with no view are not started (tasks <= views)."""
    ray = connect(address, scene)
    n = min(tasks or default_tasks(ray), views)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    base = strip_ray_flags(argv)
    argvs = [[*base, "--shard", f"{k}/{n}"] for k in range(n)]
    results = run_on_ray(
        ray, "omnivision.lift.cli:lift_main", "omnivision-lift", argvs, "lift shards (ray)", gpus
    )
    for k, (code, message) in enumerate(results):
        if code != 0:
            raise SceneError(scene, f"shard {k}/{n}: {message}")
    return n
