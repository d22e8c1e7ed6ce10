"""Checkpoints never unpickle, and a damaged checkpoint is detected, skipped and never costs the last good one.

The pickle tests plant a payload whose unpickling creates a marker directory; the payload is shown to run under a
plain ``pickle``/``torch.load(weights_only=False)`` (so the tests can fail), then never to run when resuming.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from onevision.train.checkpoint import (
    MANIFEST,
    CheckpointError,
    CheckpointManager,
    file_digest,
    load_json,
    no_pickle,
    save_json,
)

#: files accelerate reads or writes in ``save_state``/``load_state`` directories (planted even if absent)
ACCELERATE_NAMES = (
    "state/model.safetensors",
    "state/pytorch_model.bin",
    "state/optimizer.bin",
    "state/scheduler.bin",
    "state/sampler.bin",
    "state/scaler.pt",
    "state/random_states_0.pkl",
    "state/custom_checkpoint_0.pkl",
    "state/dl_state_dict.bin",
)


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pkl":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"state": Payload(marker)}, path)


def _rehash(ckpt: Path) -> None:
    """Make the manifest agree with the planted files, so verification passes and the loader parses them."""
    record = load_json(ckpt / MANIFEST)
    record["files"] = {
        str(p.relative_to(ckpt)): file_digest(p)
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    save_json(ckpt / MANIFEST, record)


def test_the_payload_runs_under_plain_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "x.pkl", marker)
    pickle.loads((tmp_path / "x.pkl").read_bytes())
    assert marker.is_dir()
    shutil.rmtree(marker)
    _plant(tmp_path / "x.bin", marker)
    torch.load(tmp_path / "x.bin", weights_only=False)
    assert marker.is_dir()


@pytest.fixture
def training_state(tmp_path):
    """A real accelerate training state (model, AdamW after one step, LambdaLR, sampler) saved by the engine."""
    from accelerate import Accelerator

    from onevision.train.engine import _save_checkpoint
    from onevision.train.recipe import Recipe
    from onevision.train.sampler import GroupedBatchSampler

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, opt = acc.prepare(model, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    sampler = GroupedBatchSampler([5] * 8, ["text"] * 8, micro_batch_size=2, world_size=1, rank=0, seed=0)
    ckpts = CheckpointManager(tmp_path / "ckpts")
    path = _save_checkpoint(ckpts, acc, sched, sampler, Recipe(), 1, 0, {"load": 0, "steps": 0})
    return acc, model, opt, sched, sampler, path


def _load(acc, sched, sampler, path):
    from onevision.train.engine import load_checkpoint

    return load_checkpoint(path, acc, sched, sampler, 0)


def test_a_clean_checkpoint_round_trips_without_pickle(training_state):
    acc, model, _opt, sched, sampler, path = training_state
    names = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
    assert "scheduler.json" in names and "rng_rank0.safetensors" in names
    assert not any(n.endswith(".pt") and "state/" not in n for n in names)
    weights = [p.detach().clone() for p in model.parameters()]
    last_lr = sched.get_last_lr()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    sched.step()
    _load(acc, sched, sampler, path)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert sched.get_last_lr() == last_lr


#: what earlier versions wrote with torch.save (a regression to reading them must not run a payload either)
LEGACY_NAMES = ("scheduler.pt", "rng_rank0.pt")


@pytest.mark.parametrize(
    "name", [*ACCELERATE_NAMES, *LEGACY_NAMES, "scheduler.json", "rng_rank0.safetensors"]
)
def test_a_payload_planted_in_any_checkpoint_file_never_runs(training_state, tmp_path, name):
    acc, _model, _opt, sched, sampler, path = training_state
    marker = tmp_path / "pwned"
    _plant(path / name, marker)
    _rehash(path)
    assert CheckpointManager(path.parent).verify(path) is None  # the forgery passes the integrity check
    with contextlib.suppress(CheckpointError):  # refusing the file is fine; running it is not
        _load(acc, sched, sampler, path)
    assert not marker.exists()


def test_files_the_loader_reads_refuse_a_payload_with_a_checkpoint_error(training_state, tmp_path):
    acc, _model, _opt, sched, sampler, path = training_state
    for name in ("state/optimizer.bin", "state/model.safetensors", "scheduler.json", "rng_rank0.safetensors"):
        original = (path / name).read_bytes()
        _plant(path / name, tmp_path / "pwned")
        _rehash(path)
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            _load(acc, sched, sampler, path)
        (path / name).write_bytes(original)
        _rehash(path)
    assert not (tmp_path / "pwned").exists()
    _load(acc, sched, sampler, path)  # restored files load again


def test_deepspeed_checkpoint_files_are_read_without_pickle(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    marker = tmp_path / "pwned"
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        _plant(tmp_path / name, marker)
        with no_pickle(), pytest.raises(pickle.UnpicklingError):
            TorchCheckpointEngine().load(str(tmp_path / name))
    assert not marker.exists()
    tensors = {"w": torch.arange(4.0), "meta": {"step": 3, "names": ["a"]}}
    torch.save(tensors, tmp_path / "ok.pt")
    with no_pickle():
        loaded = TorchCheckpointEngine().load(str(tmp_path / "ok.pt"))
    assert torch.equal(loaded["w"], tensors["w"]) and loaded["meta"] == tensors["meta"]
    assert torch.load.__name__ == "load"  # the guard is removed on exit


# ----------------------------------------------------------------------------------------------------------------
# Integrity: fsync + checksums, fallback, rotation


def _write(tmp: Path, payload: bytes = b"weights") -> None:
    (tmp / "state").mkdir()
    (tmp / "state" / "weights.bin").write_bytes(payload)
    (tmp / "scheduler.json").write_text("{}")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: _flip_byte(c / "state" / "weights.bin"), "checksum mismatch"),
        (lambda c: (c / "state" / "weights.bin").write_bytes(b"short"), "bytes, the manifest recorded"),
        (lambda c: (c / "scheduler.json").unlink(), "missing scheduler.json"),
        (lambda c: (c / MANIFEST).write_text('{"format": "onevision-checkpoint/2", "fi'), "not valid JSON"),
    ],
    ids=["bit-flip", "truncated", "missing-file", "torn-manifest"],
)
def test_resume_skips_a_damaged_newest_checkpoint_and_says_why(tmp_path, damage, reason):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (2, 4):
        mgr.save(step, lambda t, s=step: _write(t, b"weights-%d" % s), {})
    assert mgr.latest_good() == mgr.path_for(4)
    damage(mgr.path_for(4))
    messages: list[str] = []
    assert mgr.latest_good(report=messages.append) == mgr.path_for(2)
    assert len(messages) == 1 and "checkpoint-00000004 is damaged" in messages[0] and reason in messages[0]
    assert mgr.path_for(4).is_dir()  # reported, never deleted


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(2, _write, {})
    _flip_byte(mgr.path_for(2) / "state" / "weights.bin")
    with pytest.raises(CheckpointError, match=r"every checkpoint is damaged.*checkpoint.resume=never"):
        mgr.latest_good(report=lambda m: None)


def test_manifest_records_size_and_checksum_of_every_file_in_subdirectories(tmp_path):
    mgr = CheckpointManager(tmp_path)
    path = mgr.save(7, lambda t: _write(t, b"abc"), {"note": 1})
    files = CheckpointManager.read_manifest(path)["files"]
    assert sorted(files) == ["scheduler.json", "state/weights.bin"]
    assert (
        files["state/weights.bin"] == file_digest(path / "state" / "weights.bin")
        and files["state/weights.bin"]["size"] == 3
    )


def test_save_fsyncs_every_file_before_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    mgr = CheckpointManager(tmp_path, hash_threads=1)
    mgr.save(3, _write, {})
    tmp = str(mgr.path_for(3)) + ".tmp"
    for name in ("state/weights.bin", "scheduler.json", "manifest.json.part", "state", ""):
        assert os.path.normpath(os.path.join(tmp, name)) in synced, name
    assert str(tmp_path) in synced  # the parent after the rename


def test_rotation_counts_only_good_checkpoints(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(2, _write, {})
    mgr.save(4, _write, {})
    (mgr.path_for(4) / "state" / "weights.bin").write_bytes(b"x")  # damaged (size)
    mgr.save(6, _write, {})
    assert [s for s, _ in mgr.checkpoints()] == [2, 4, 6]  # only one good newer than 2: 2 is kept
    mgr.save(8, _write, {})
    assert [s for s, _ in mgr.checkpoints()] == [6, 8]


def test_explicit_resume_of_a_damaged_checkpoint_is_refused(tmp_path):
    from onevision.train.engine import _find_resume
    from onevision.train.recipe import Recipe

    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save(2, _write, {})
    recipe = Recipe()
    recipe.checkpoint.resume = str(mgr.path_for(2))
    assert _find_resume(recipe, mgr, True) == mgr.path_for(2)
    _flip_byte(mgr.path_for(2) / "state" / "weights.bin")
    with pytest.raises(CheckpointError, match=r"checkpoint.resume=.*damaged.*checksum mismatch"):
        _find_resume(recipe, mgr, True)
