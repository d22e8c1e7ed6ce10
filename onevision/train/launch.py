"""Launching multi-process runs that really are parallel, also on a CPU-only machine.

Several obvious launch commands silently run without parallelism on CPU (see ``docs/training.md``). This module
owns the ones that work:

* every backend is started with ``torchrun`` (``python -m torch.distributed.run``) and a free port; a single-node
  run keeps its rendezvous on the loopback interface (``MASTER_ADDR=127.0.0.1``, the port picked on 127.0.0.1,
  torchrun's store listening on 127.0.0.1 only through :mod:`onevision.train.rendezvous`, gloo's connections on
  the loopback interface), a multi-node run uses the address the user gives;
* ``ddp`` on CPU: ``Accelerator(cpu=True)`` (gloo DDP); ``ACCELERATE_USE_CPU`` is set too;
* ``zero2``/``zero3``: a programmatic ``DeepSpeedPlugin`` with a fully resolved config and, without CUDA,
  ``InitProcessGroupKwargs(backend="gloo")``; ``ACCELERATE_USE_CPU`` must **not** be set (DeepSpeed would be
  silently ignored);

and the engine checks the result (:func:`check_distributed`): the process count equals ``WORLD_SIZE``, the
distributed type is the expected one, exactly one process is the main process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from onevision.errors import RecipeError

#: The rendezvous address of a single-node run: never a wildcard address or the host name, which other machines
#: could reach.
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def disable_deepspeed_shm_op() -> None:
    """Skip DeepSpeed's CPU shared-memory all-reduce op (only used for inference all-reduce).

    ``deepspeed.init_distributed`` otherwise JIT-compiles it with g++ (30-70 s, and a hard failure without a C++
    toolchain). ``import deepspeed.comm.torch`` would bind the torch package, hence ``sys.modules``.
    """
    import deepspeed.comm  # noqa: F401  (loads deepspeed.comm.torch)

    module = sys.modules.get("deepspeed.comm.torch")
    if module is not None and hasattr(module, "build_shm_op"):
        module.build_shm_op = lambda: None


def loopback_interface() -> str | None:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS), if there is one."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):  # no interface listing on this platform
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def launch_env(
    backend: str,
    base: Mapping[str, str] | None = None,
    *,
    cuda: bool | None = None,
    nnodes: int = 1,
) -> dict[str, str]:
    """The environment for the worker processes of ``backend`` (``single``, ``ddp``, ``zero2``, ``zero3``).

    A single-node run (``nnodes=1``) talks over loopback only: ``MASTER_ADDR`` is 127.0.0.1 whatever the calling
    shell had, and gloo binds its connections to the loopback interface (unless ``GLOO_SOCKET_IFNAME`` is set).
    """
    import torch

    env = dict(os.environ if base is None else base)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
    if backend in ("zero2", "zero3"):
        env.pop("ACCELERATE_USE_CPU", None)  # with DeepSpeed it silently disables DeepSpeed
        env.pop("ACCELERATE_USE_DEEPSPEED", None)
    elif not cuda:
        env["ACCELERATE_USE_CPU"] = "true"
    if nnodes == 1:
        env["MASTER_ADDR"] = LOOPBACK
        lo = loopback_interface()
        if lo is not None:
            env.setdefault("GLOO_SOCKET_IFNAME", lo)
    return env


def torchrun_command(
    num_processes: int,
    port: int,
    args: Sequence[str],
    *,
    python: str | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run`` with ``num_processes`` workers per node running ``args``.

    One node (the default): the rendezvous is on 127.0.0.1 (``master_addr`` is not used). Several nodes: every
    node passes the same ``master_addr`` (node 0's address, reachable from the others) and its own ``node_rank``.
    """
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise RecipeError(
            "launch", "node_rank", f"must be in [0, {nnodes}) for {nnodes} node(s), got {node_rank}"
        )
    if nnodes == 1:
        master_addr = LOOPBACK
    elif not master_addr:
        raise RecipeError(
            "launch",
            "master_addr",
            f"a {nnodes}-node run needs the address of node 0 that every node can reach; pass it explicitly",
        )
    return [
        python or sys.executable,
        "-m",
        # one node: torchrun with its rendezvous store bound to 127.0.0.1 only (onevision.train.rendezvous)
        "onevision.train.rendezvous" if nnodes == 1 else "torch.distributed.run",
        "--nproc_per_node",
        str(num_processes),
        "--nnodes",
        str(nnodes),
        "--node_rank",
        str(node_rank),
        "--master_addr",
        master_addr,
        "--master_port",
        str(port),
        *args,
    ]


def launch_training(
    recipe_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    num_processes: int,
    backend: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run ``onevision train`` in ``num_processes`` worker processes under torchrun; returns the completed process."""
    args = ["-m", "onevision.train.worker", str(recipe_path), *overrides]
    cmd = torchrun_command(num_processes, port or free_port(), args)
    return subprocess.run(cmd, env=launch_env(backend, env), timeout=timeout, check=False)


def check_distributed(accelerator: Any, backend: str) -> None:
    """Fail loudly if the launch silently fell back to fewer processes or no gradient sync."""
    from accelerate.utils import DistributedType

    world = int(os.environ.get("WORLD_SIZE", "1"))
    expected = {
        "single": {DistributedType.NO},
        "ddp": {DistributedType.MULTI_CPU, DistributedType.MULTI_GPU},
        "zero2": {DistributedType.DEEPSPEED},
        "zero3": {DistributedType.DEEPSPEED},
    }[backend]
    problems = []
    if accelerator.num_processes != world:
        problems.append(f"accelerate sees {accelerator.num_processes} process(es) but WORLD_SIZE={world}")
    if backend == "ddp" and world == 1:
        expected = expected | {DistributedType.NO}
    if accelerator.distributed_type not in expected:
        problems.append(
            f"distributed type is {accelerator.distributed_type}, expected one of "
            f"{sorted(str(e) for e in expected)}"
        )
    if world > 1:
        import torch.distributed as dist

        flag = [int(accelerator.is_main_process)]
        gathered = [None] * world
        dist.all_gather_object(gathered, flag)
        if sum(g[0] for g in gathered) != 1:  # type: ignore[index]
            problems.append(f"{sum(g[0] for g in gathered)} processes claim to be the main process")  # type: ignore[index]
    if problems:
        raise RuntimeError(
            f"backend {backend!r}: the launch is not what it claims: "
            + "; ".join(problems)
            + ". Launch with `onevision train RECIPE engine.num_processes=N` (see docs/training.md)."
        )
