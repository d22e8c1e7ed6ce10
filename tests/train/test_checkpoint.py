"""Atomic checkpoints with keep-last-K, and RNG capture/restore."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch

from onevision.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng,
    load_rng,
    restore_rng,
    save_rng,
)


def _write(tmp, payload="x"):
    (tmp / "weights.bin").write_text(payload)


def test_save_is_atomic_and_keeps_the_last_k(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        path = mgr.save(step, _write, {"step_info": step})
        assert path.name == f"checkpoint-{step:08d}" and (path / "manifest.json").is_file()
    assert [s for s, _ in mgr.checkpoints()] == [20, 30]
    assert mgr.latest() == tmp_path / "checkpoint-00000030"
    manifest = CheckpointManager.read_manifest(mgr.latest())
    assert manifest["step"] == 30 and list(manifest["files"]) == ["weights.bin"]
    assert manifest["files"]["weights.bin"] == {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
    assert not list(tmp_path.glob("*.tmp"))


def test_an_interrupted_save_never_replaces_a_complete_checkpoint(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(5, _write, {})

    def crash(tmp):
        _write(tmp, "partial")
        raise KeyboardInterrupt  # the process dies while writing

    with pytest.raises(KeyboardInterrupt):
        mgr.save(10, crash, {})
    assert mgr.latest() == tmp_path / "checkpoint-00000005"  # still the last complete one, nothing pruned
    assert (tmp_path / "checkpoint-00000010.tmp").is_dir()
    (tmp_path / "checkpoint-00000015").mkdir()  # a directory without a manifest is not a checkpoint
    assert [s for s, _ in mgr.checkpoints()] == [5]
    removed = CheckpointManager(tmp_path, keep_last=1).clean_incomplete()
    assert [p.name for p in removed] == ["checkpoint-00000010.tmp"]
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        CheckpointManager.read_manifest(tmp_path / "checkpoint-00000015")


def test_resaving_a_step_replaces_it(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save(4, lambda t: _write(t, "old"), {})
    mgr.save(4, lambda t: _write(t, "new"), {})
    assert (mgr.latest() / "weights.bin").read_text() == "new" and len(mgr.checkpoints()) == 1


def test_rng_capture_restore_roundtrip(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    state = capture_rng()
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    save_rng(tmp_path, rank=1)
    expected = torch.rand(2)
    torch.rand(5)
    load_rng(tmp_path, rank=1)
    assert torch.equal(torch.rand(2), expected)
    with pytest.raises(CheckpointError, match="rank 0"):
        load_rng(tmp_path, rank=0)
