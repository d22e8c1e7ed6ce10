"""Multi-process training on CPU (gloo): DDP, ZeRO-2 and ZeRO-3 with 2 processes log the same losses as one
process with the same global batch (full and LoRA stages); ZeRO-3 resumes exactly; SIGKILL mid-training and
mid-save lose nothing.

Every launch uses the real tiny OneVision model, a fresh free port, OMP_NUM_THREADS=1, DS_ACCELERATOR=cpu and
CUDA_VISIBLE_DEVICES="" (see docs/training.md). Each launch is retried once on the rare gloo abort at exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onevision.train.launch import free_port, launch_env, torchrun_command

from .conftest import data_overrides

pytestmark = pytest.mark.distributed
RECIPE = "tiny/stage2_ov"


def _overrides(out: Path, mixture: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        "init_from=null",
        *data_overrides(mixture),
        "logging.progress=false",
        "data.num_workers=0",
        "checkpoint.every_steps=2",
        "checkpoint.keep_last=2",
        "train.precision=fp32",
        *extra,
    ]


def _env(backend: str, **extra: str) -> dict[str, str]:
    env = launch_env(
        backend,
        {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""},
        cuda=False,
    )
    env.update(extra)
    return env


def _run(
    out: Path,
    mixture: Path,
    backend: str,
    nproc: int,
    *extra: str,
    env: dict[str, str] | None = None,
    expect_ok: bool = True,
) -> subprocess.CompletedProcess:
    args = [
        "-m",
        "onevision.train.worker",
        RECIPE,
        *_overrides(
            out,
            mixture,
            f"engine.backend={backend}",
            f"engine.num_processes={nproc}",
            f"train.grad_accum={2 // nproc}",
            *extra,
        ),
    ]
    for _attempt in range(2):
        cmd = torchrun_command(nproc, free_port(), args) if nproc > 1 else [sys.executable, *args]
        proc = subprocess.run(cmd, env=env or _env(backend), capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or not expect_ok or "terminate called" not in proc.stderr + proc.stdout:
            break
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _close(a: list[float], b: list[float], rel: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(1.0, abs(y)) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """One 1-process run, 2-process DDP and ZeRO-2 runs, and a 2-process ZeRO-3 run stopped after step 3 (its last
    checkpoint is step 2) then resumed in a fresh launch: 5 launches for the whole equivalence + resume matrix."""
    root = tmp_path_factory.mktemp("dist")
    out = {}
    for name, backend, nproc in (("single", "single", 1), ("ddp", "ddp", 2), ("zero2", "zero2", 2)):
        proc = _run(root / name, tiny_data, backend, nproc)
        out[name] = (root / name, proc.stdout + proc.stderr)
    z3 = root / "zero3"
    first = _run(z3, tiny_data, "zero3", 2, env=_env("zero3", ONEVISION_STOP_AFTER="3"))
    out["zero3-interrupted"] = (_losses(z3), (z3 / "stage.json").exists(), first.stdout + first.stderr)
    second = _run(z3, tiny_data, "zero3", 2)
    out["zero3"] = (z3, first.stdout + first.stderr + second.stdout + second.stderr)
    return out


def test_some_step_gives_the_two_ranks_different_modalities(tiny_data):
    """R14: ranks must stay in lockstep when one runs a text-only micro-batch and the other images or video."""
    from onevision.train.build import build_encoder, build_model
    from onevision.train.data import load_samples, plan_samples
    from onevision.train.recipe import load_recipe
    from onevision.train.sampler import GroupedBatchSampler

    recipe = load_recipe(RECIPE, _overrides(Path("unused"), tiny_data))
    planned, _ = plan_samples(
        load_samples(recipe)[0], recipe, build_encoder(recipe, build_model(recipe)), log=False
    )
    mods = [p.sample.modality for p in planned]
    plan = GroupedBatchSampler(
        [p.length for p in planned],
        mods,
        micro_batch_size=2,
        world_size=2,
        seed=recipe.seed,
        group_by=recipe.data.group_by,
        lookahead=recipe.data.lookahead,
    ).plan(0)
    per_rank = [[{mods[i] for i in step[r]} for r in (0, 1)] for step in plan]
    assert any(("text" in a) != ("text" in b) for a, b in per_rank)


def test_one_process_run_is_a_complete_stage(runs):
    out, log = runs["single"]
    losses = _losses(out)
    assert len(losses) == 7 and losses[-1] < losses[0]
    assert (out / "stage.json").is_file() and (out / "model.safetensors").is_file()
    assert "DistributedType.NO" in log and "trainable" in log


@pytest.mark.parametrize(
    "backend, kind", [("ddp", "MULTI_CPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")]
)
def test_two_processes_match_one_process_with_the_same_global_batch(runs, backend, kind):
    out, log = runs[backend]
    assert f"2 process(es), DistributedType.{kind}" in log
    single = _losses(runs["single"][0])
    assert _close(_losses(out), single), (backend, _losses(out), single)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["lr"]) == {"vision", "projector", "llm", "newline"}
    assert record["lr"]["vision"] == pytest.approx(0.2 * record["lr"]["llm"])
    manifest = json.loads((out / "checkpoints" / "checkpoint-00000004" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["sampler"]["step"] == 4


def test_zero3_resume_is_exact(runs):
    losses, finished, _ = runs["zero3-interrupted"]
    assert len(losses) == 3 and not finished  # stopped after step 3; the last checkpoint is step 2
    _, log = runs["zero3"]
    assert "resumed from" in log and "checkpoint-00000002" in log
    single = _losses(runs["single"][0])
    assert _close(losses, single[:3]) and _close(_losses(runs["zero3"][0]), single)


def test_final_models_are_loadable_and_equal_across_backends(runs):
    import torch

    import onevision.pipeline as pipeline

    weights = {}
    for name in ("single", "ddp", "zero3"):
        pipe = pipeline.load(str(runs[name][0]))
        weights[name] = {k: v.float() for k, v in pipe.model.state_dict().items()}
    for name in ("ddp", "zero3"):
        for key, value in weights["single"].items():
            assert torch.allclose(weights[name][key], value, rtol=1e-4, atol=1e-5), (name, key)


def _single_cmd(out: Path, mixture: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "onevision.train.worker",
        RECIPE,
        *_overrides(out, mixture, "train.grad_accum=2"),
    ]


def test_sigkill_mid_save_and_mid_training_then_resume_matches(runs, tiny_data, tmp_path):
    out, ckpts = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
    # 1. killed while saving step 4: the files are written, the checkpoint is not committed
    proc = subprocess.run(
        _single_cmd(out, tiny_data),
        env=_env("single", ONEVISION_FAULT="kill_in_save:4"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL
    assert (ckpts / "checkpoint-00000004.tmp").is_dir() and not (ckpts / "checkpoint-00000004").exists()
    assert (ckpts / "checkpoint-00000002" / "manifest.json").is_file()
    # 2. resumed from step 2, then killed mid-training once step 5 is logged (after the step-4 save)
    proc = subprocess.Popen(
        _single_cmd(out, tiny_data),
        env=_env("single"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(_losses(out)) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert "resumed from" in log and "checkpoint-00000002" in log
    assert not (out / "stage.json").exists() and not list(ckpts.glob("*.tmp"))
    # 3. resumed from step 4 to the end: the same losses as the uninterrupted run
    resumed = _run(out, tiny_data, "single", 1)
    assert "checkpoint-00000004" in resumed.stdout + resumed.stderr
    assert _close(_losses(out), _losses(runs["single"][0]), rel=1e-6)
    assert (out / "stage.json").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Damaged checkpoints and non-finite steps (issue 13, points 2 and 7)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_a_damaged_newest_checkpoint_falls_back_and_the_run_still_matches(runs, tiny_data, tmp_path):
    out = tmp_path / "damaged"
    _run(out, tiny_data, "single", 1, env=_env("single", ONEVISION_STOP_AFTER="5"))
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-00000002", "checkpoint-00000004"]
    weights = ckpts / "checkpoint-00000004" / "state" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x01  # one flipped bit in a weight: same size, still a valid safetensors file
    weights.write_bytes(bytes(data))
    resumed = _run(out, tiny_data, "single", 1)
    log = resumed.stdout + resumed.stderr
    assert "checkpoint-00000004 is damaged (state/model.safetensors: checksum mismatch" in log
    assert "resumed from" in log and "checkpoint-00000002 at step 2" in log
    assert _losses(out) == _losses(runs["single"][0])
    reference = _weights(runs["single"][0])
    final = _weights(out)
    assert final.keys() == reference.keys() and all(final[k].equal(reference[k]) for k in reference)


def _data_with_a_truncated_image(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data.parent, root)
    jpeg = root / "images" / "img0000.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # the header survives, the pixels do not
    return root / tiny_data.name


def test_a_non_finite_step_is_skipped_and_every_skip_is_totalled_in_stage_json(tiny_data, tmp_path):
    out, mixture = tmp_path / "nan", _data_with_a_truncated_image(tiny_data, tmp_path)
    proc = _run(
        out,
        mixture,
        "single",
        1,
        "data.modalities=[image,multi_image,text]",
        env=_env("single", ONEVISION_FAULT="nan_loss:3"),
    )
    log = proc.stdout + proc.stderr
    assert "step 3 skipped: loss nan" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_step"] for r in records] == [r["step"] == 3 for r in records]
    assert records[2]["loss"] is None and all(r["loss"] is not None for r in records if r["step"] != 3)
    stage = json.loads((out / "stage.json").read_text())
    assert stage["skipped"] == {
        "planning": {"modality video not in data.modalities": 4},
        "load": {"media failed to load": 1},
        "steps": {"non-finite loss or gradient norm": 1},
    }
    assert "skipped: planning modality video not in data.modalities: 4" in log
    assert all(
        bool(t.isfinite().all()) for t in _weights(out).values()
    )  # the NaN step never reached the weights


def test_consecutive_non_finite_steps_stop_the_run_and_keep_the_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "diverged"
    proc = _run(
        out,
        tiny_data,
        "single",
        1,
        "train.max_bad_steps=2",
        "checkpoint.keep_last=1",
        env=_env("single", ONEVISION_FAULT="nan_loss:3,4"),
        expect_ok=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "TrainingError" in log and "2 consecutive steps" in log and "the last at step 4" in log
    assert "checkpoint-00000002" in log  # the error names the checkpoint to resume from
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-00000002"]
    assert not (out / "stage.json").exists() and not (out / "model.safetensors").exists()
    assert len(_losses(out)) == 4


def test_deepspeed_skips_a_non_finite_step_too(tiny_data, tmp_path):
    """Under ZeRO the engine steps inside backward(); it must refuse the NaN gradients itself, and the run counts the
    step as skipped like the other backends."""
    out = tmp_path / "zero2-nan"
    proc = _run(out, tiny_data, "zero2", 2, env=_env("zero2", ONEVISION_FAULT="nan_loss:3"))
    assert "step 3 skipped" in proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_step"] for r in records] == [r["step"] == 3 for r in records]
    stage = json.loads((out / "stage.json").read_text())
    assert stage["skipped"]["steps"] == {"non-finite loss or gradient norm": 1}
    assert all(bool(t.isfinite().all()) for t in _weights(out).values())


@pytest.mark.parametrize("backend", ["ddp", "zero2"])
def test_a_lora_stage_on_two_processes_matches_one_process(tiny_data, tmp_path, backend):
    """LoRA on the LLM (projector and newline full, tower frozen) under DDP / ZeRO-2 with 2 processes: the same
    losses as one process with the same global batch, and one adapter directory with the same LoRA weights."""
    import torch
    from safetensors.torch import load_file

    lora = ("components.llm.trainable=lora", "components.llm.lora.r=4", "components.llm.lora.dropout=0")
    lora += (
        "components.vision.trainable=frozen",
    )  # dropout 0: ranks draw other dropout masks than one process
    outs = {}
    for name, b, n in (("single", "single", 1), (backend, backend, 2)):
        _run(tmp_path / name, tiny_data, b, n, *lora)
        outs[name] = tmp_path / name
    assert _close(_losses(outs[backend]), _losses(outs["single"])), (
        _losses(outs[backend]),
        _losses(outs["single"]),
    )
    for out in outs.values():
        assert (out / "adapter_config.json").is_file() and (out / "stage.json").is_file()
        assert not (out / "model.safetensors").exists()  # an adapter directory, not a full model
    one, two = (load_file(str(outs[k] / "adapter_model.safetensors")) for k in ("single", backend))
    assert one.keys() == two.keys() and len(one) > 0
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4, msg=k)
