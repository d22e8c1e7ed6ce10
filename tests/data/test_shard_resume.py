"""Training from shards: the same losses as training from the loose files, and a run SIGKILLed mid-epoch resumes
exactly (DataLoader workers reading the shards by byte range)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RECIPE = "tiny/stage2_ov"


def _cmd(out: Path, data: list[str], workers: int) -> list[str]:
    return [
        sys.executable, "-m", "onevision.train.worker", RECIPE, f"output_dir={out}", "init_from=null",
        "data.synthetic=null", *data, "logging.progress=false", f"data.num_workers={workers}",
        "checkpoint.every_steps=2", "checkpoint.keep_last=2", "train.precision=fp32", "train.grad_accum=2",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}


def _losses(out: Path) -> list[float]:
    if not (out / "metrics.jsonl").is_file():
        return []
    return [
        json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.endswith("}")
    ]


def test_pack_train_from_shards_sigkill_and_exact_resume(mixture, shards, tmp_path):
    root = mixture.parent
    media = [f"data.image_root={root / 'images'}", f"data.video_root={root / 'videos'}"]
    ref = tmp_path / "loose"
    subprocess.run(
        _cmd(ref, [f"data.path={mixture}", *media], 0),
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    expected = _losses(ref)
    assert len(expected) == 7
    out = tmp_path / "sharded"
    proc = subprocess.Popen(
        _cmd(out, [f"data.path={shards}"], 2),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(_losses(out)) >= 5:  # mid-epoch, after the step-4 checkpoint
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed:\n" + log
    assert not (out / "stage.json").exists()
    resumed = subprocess.run(
        _cmd(out, [f"data.path={shards}"], 2), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint-00000004" in resumed.stdout + resumed.stderr
    losses = _losses(out)
    assert len(losses) == len(expected)
    assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(losses, expected)), (losses, expected)
    assert (out / "stage.json").is_file()
