"""Atomic, resumable training checkpoints and RNG capture/restore.

A checkpoint is the directory ``<root>/checkpoint-<step:08d>``. It is written as ``checkpoint-<step>.tmp`` by
every rank, then the main process writes ``manifest.json`` (last, fsynced) and renames the directory into place, and
only then deletes checkpoints beyond the last ``keep_last``. A directory without ``.tmp`` therefore always holds a
complete checkpoint: a run killed at any point (even mid-save) resumes from the newest complete one, and stale
``.tmp`` directories are removed at the next start.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "onevision-checkpoint/1"
_NAME = re.compile(r"checkpoint-(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (incomplete, wrong format, or from another recipe)."""


def capture_rng() -> dict[str, Any]:
    """The state of every random generator of this process: ``random``, ``numpy``, ``torch`` (and CUDA)."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(directory: str | os.PathLike, rank: int) -> Path:
    import torch

    path = Path(directory) / f"rng_rank{rank}.pt"
    torch.save(capture_rng(), path)
    return path


def load_rng(directory: str | os.PathLike, rank: int) -> None:
    import torch

    path = Path(directory) / f"rng_rank{rank}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no RNG state for rank {rank} (saved with another number of processes?)"
        )
    restore_rng(torch.load(path, weights_only=False))


class CheckpointManager:
    """Write, list, prune and find checkpoints under ``root``.

    ``barrier`` synchronises ranks (``accelerator.wait_for_everyone``); single-process use needs none.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        keep_last: int = 2,
        is_main: bool = True,
        barrier: Callable[[], None] | None = None,
    ):
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_main = is_main
        self.barrier = barrier or (lambda: None)

    def path_for(self, step: int) -> Path:
        return self.root / f"checkpoint-{step:08d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _NAME.fullmatch(p.name)
            if m and p.is_dir() and (p / MANIFEST).is_file():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def latest(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1][1] if cps else None

    def clean_incomplete(self) -> list[Path]:
        """Remove leftovers of interrupted saves (main process only); returns what was removed."""
        removed = []
        if self.is_main and self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and (p.name.endswith(".tmp") or p.name.endswith(".old")):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        self.barrier()
        return removed

    def save(self, step: int, write: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
        """Collective: every rank calls it. ``write(tmp_dir)`` writes this rank's files into the temporary dir."""
        final = self.path_for(step)
        tmp = final.with_name(final.name + ".tmp")
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp)
        self.barrier()
        _fault_point("save", step)
        if self.is_main:
            record = {
                "format": FORMAT,
                "step": step,
                "time": time.time(),
                **manifest,
                "files": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()),
            }
            _write_json_durably(tmp / MANIFEST, record)
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step: keep the old one until the new one is in place
                old = final.with_name(final.name + ".old")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        cps = self.checkpoints()
        for _, path in cps[: max(0, len(cps) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
        p = Path(path) / MANIFEST
        if not p.is_file():
            raise CheckpointError(f"{path}: not a complete checkpoint (no {MANIFEST})")
        record = json.loads(p.read_text())
        if record.get("format") != FORMAT:
            raise CheckpointError(
                f"{path}: unknown checkpoint format {record.get('format')!r}, expected {FORMAT}"
            )
        return record


def _fault_point(where: str, step: int) -> None:
    """Fault injection for crash tests: ``ONEVISION_FAULT=kill_in_save:<step>`` SIGKILLs this process after the
    checkpoint files of ``step`` are written and before the checkpoint is committed."""
    spec = os.environ.get("ONEVISION_FAULT", "")
    if spec == f"kill_in_{where}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
