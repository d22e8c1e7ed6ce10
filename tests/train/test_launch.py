"""Issue #13 point 12: a single-node launch keeps its rendezvous on loopback; a multi-node one uses the user's
address."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from onevision.train.launch import LOOPBACK, free_port, launch_env, loopback_interface, torchrun_command
from onevision.train.recipe import RecipeError


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_single_node_command_rendezvous_is_loopback_whatever_address_is_given():
    for given in (None, "0.0.0.0", "my-host.example.org"):
        cmd = torchrun_command(2, 29555, ["-m", "x"], master_addr=given)
        assert _flag(cmd, "--master_addr") == "127.0.0.1"
        assert _flag(cmd, "--master_port") == "29555" and _flag(cmd, "--nnodes") == "1"
        assert cmd[-2:] == ["-m", "x"]


def test_single_node_environment_overrides_an_inherited_master_addr():
    base = {"MASTER_ADDR": "0.0.0.0", "MASTER_PORT": "1234", "PATH": "/usr/bin"}
    env = launch_env("ddp", base, cuda=False)
    assert env["MASTER_ADDR"] == LOOPBACK == "127.0.0.1"
    assert env["GLOO_SOCKET_IFNAME"] == loopback_interface() == ("lo" if sys.platform == "linux" else "lo0")
    assert base["MASTER_ADDR"] == "0.0.0.0"  # the caller's mapping is not modified
    assert launch_env("ddp", {"GLOO_SOCKET_IFNAME": "eth7"}, cuda=False)["GLOO_SOCKET_IFNAME"] == "eth7"


def test_multi_node_uses_the_users_address_and_requires_it():
    cmd = torchrun_command(4, 29600, ["-m", "x"], nnodes=2, node_rank=1, master_addr="10.1.2.3")
    assert _flag(cmd, "--master_addr") == "10.1.2.3"
    assert _flag(cmd, "--nnodes") == "2" and _flag(cmd, "--node_rank") == "1"
    env = launch_env("ddp", {"MASTER_ADDR": "10.1.2.3"}, cuda=False, nnodes=2)
    assert env["MASTER_ADDR"] == "10.1.2.3" and "GLOO_SOCKET_IFNAME" not in env
    with pytest.raises(RecipeError, match=r"master_addr.*address of node 0"):
        torchrun_command(4, 29600, ["-m", "x"], nnodes=2)
    with pytest.raises(RecipeError, match="node_rank"):
        torchrun_command(4, 29600, ["-m", "x"], nnodes=2, node_rank=2, master_addr="10.1.2.3")


def test_free_port_is_picked_on_loopback():
    import socket

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # still free there


WORKER = """
import json, os, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)


def listening(pid):
    mine = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in mine:
                out.append(f[1].rsplit(":", 1)[0])
    return out


result = {
    "rank": dist.get_rank(),
    "sum": t.item(),
    "master": os.environ["MASTER_ADDR"],
    "listening": listening(os.getpid()),
    "agent": listening(os.getppid()),  # torchrun's agent, which hosts the rendezvous store
}
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as out:  # one file each: no interleaving
    json.dump(result, out)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.distributed
def test_two_process_gloo_launch_talks_over_loopback_only(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = launch_env("ddp", {**os.environ, "CUDA_VISIBLE_DEVICES": ""}, cuda=False)
    env.pop("MASTER_ADDR")  # set by torchrun from --master_addr, for the workers
    for _attempt in range(2):  # the rare gloo abort at interpreter exit (docs/training.md)
        proc = subprocess.run(
            torchrun_command(2, free_port(), [str(script), str(tmp_path)]),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0 or "terminate called" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in rows) == [0, 1] and all(r["sum"] == 3.0 for r in rows)
    assert all(r["master"] == "127.0.0.1" for r in rows)
    # every socket a worker listens on (gloo's connection listener) is bound to 127.0.0.1 (hex 0100007F)
    assert all(r["listening"] for r in rows) and {a for r in rows for a in r["listening"]} == {"0100007F"}
    # the agent's rendezvous store listens on 127.0.0.1 only (torch's TCPStore alone would listen on every interface)
    assert all(r["agent"] for r in rows) and {a for r in rows for a in r["agent"]} == {"0100007F"}
