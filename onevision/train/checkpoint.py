"""Atomic, verified, pickle-free training checkpoints and RNG capture/restore.

A checkpoint is the directory ``<root>/checkpoint-<step:08d>``. Every rank writes its files into
``checkpoint-<step>.tmp``; the main process then fsyncs every file, records each file's size and SHA-256 in
``manifest.json`` (written last, fsynced), renames the directory into place and fsyncs its parent. Only then are
old checkpoints rotated out, and only when ``keep_last`` newer checkpoints pass verification, so a damaged
checkpoint never costs the last good one. A directory without ``.tmp`` therefore always held a complete checkpoint
when it was committed; a run killed at any point (even mid-save) resumes from the newest one that still verifies
(:meth:`CheckpointManager.latest_good` says which ones it skipped and why), and stale ``.tmp`` directories are
removed at the next start.

Nothing in a checkpoint is unpickled: RNG states are safetensors, the scheduler and sampler are JSON, and files
written by accelerate/DeepSpeed are read under :func:`no_pickle`, which forces ``torch.load(weights_only=True)``
with an explicit allow-list of the few non-tensor types those files hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from onevision.errors import CheckpointError

MANIFEST = "manifest.json"
FORMAT = "onevision-checkpoint/2"
_LEGACY_FORMATS = ("onevision-checkpoint/1",)  # no sizes or checksums recorded: only file presence is checked
_NAME = re.compile(r"checkpoint-(\d+)")
_CHUNK = 8 << 20

logger = logging.getLogger("onevision.train")


# ----------------------------------------------------------------------------------------------------------------
# RNG state (safetensors + JSON metadata, no pickle)


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


def rng_file(directory: str | os.PathLike, rank: int) -> Path:
    return Path(directory) / f"rng_rank{rank}.safetensors"


def save_rng(directory: str | os.PathLike, rank: int) -> Path:
    """This rank's RNG states as ``rng_rank<rank>.safetensors`` (arrays as tensors, scalars as metadata)."""
    import numpy as np
    from safetensors.numpy import save_file

    state = capture_rng()
    py_version, py_internal, py_gauss = state["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    tensors = {
        "python": np.asarray(py_internal, dtype=np.uint32),
        "numpy": np.asarray(np_keys, dtype=np.uint32),
        "torch": state["torch"].numpy(),
    }
    for i, t in enumerate(state.get("cuda", [])):
        tensors[f"cuda.{i}"] = t.cpu().numpy()
    meta = {
        "python_version": str(py_version),
        "python_gauss": "" if py_gauss is None else float(py_gauss).hex(),
        "numpy_name": str(np_name),
        "numpy_pos": str(int(np_pos)),
        "numpy_has_gauss": str(int(np_has_gauss)),
        "numpy_gauss": float(np_gauss).hex(),
    }
    path = rng_file(directory, rank)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_rng(directory: str | os.PathLike, rank: int) -> None:
    """Restore what :func:`save_rng` wrote for ``rank`` (raises :class:`CheckpointError` naming the file)."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = rng_file(directory, rank)
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no RNG state for rank {rank} (saved with another number of processes?)"
        )
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        gauss = meta["python_gauss"]
        state: dict[str, Any] = {
            "python": (
                int(meta["python_version"]),
                tuple(int(x) for x in arrays["python"]),
                None if gauss == "" else float.fromhex(gauss),
            ),
            "numpy": (
                meta["numpy_name"],
                arrays["numpy"],
                int(meta["numpy_pos"]),
                int(meta["numpy_has_gauss"]),
                float.fromhex(meta["numpy_gauss"]),
            ),
            "torch": torch.from_numpy(arrays["torch"].copy()),
        }
        cuda = sorted((int(k.split(".", 1)[1]), v) for k, v in arrays.items() if k.startswith("cuda."))
        if cuda:
            state["cuda"] = [torch.from_numpy(v.copy()) for _, v in cuda]
        restore_rng(state)
    except (SafetensorError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable RNG state ({exc})") from None


# ----------------------------------------------------------------------------------------------------------------
# JSON state and restricted unpickling


def save_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as JSON, flushed and fsynced (floats round-trip exactly)."""
    path = Path(path)
    _write_json_durably(path, data)
    return path


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None


def _deepspeed_safe_globals() -> list[Any]:
    """The non-tensor types DeepSpeed checkpoints hold (found with ``get_unsafe_globals_in_checkpoint`` on ZeRO-2
    and ZeRO-3 checkpoints written by our engine); nothing that can run code."""
    out: list[Any] = []
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return out
    out += [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    return out


@contextlib.contextmanager
def no_pickle(extra_safe_globals: list[Any] | None = None) -> Iterator[None]:
    """Within the block, every ``torch.load`` (ours, accelerate's, DeepSpeed's) runs with ``weights_only=True``:
    tensors, containers and the allow-listed types load, anything else (a planted ``__reduce__`` payload) raises
    ``pickle.UnpicklingError`` before it can run."""
    import torch

    original = torch.load
    allow = [*_deepspeed_safe_globals(), *(extra_safe_globals or [])]

    def restricted(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(allow):
            return original(f, *args, **kwargs)

    torch.load = restricted
    try:
        yield
    finally:
        torch.load = original


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint directories


def file_digest(path: str | os.PathLike, *, fsync: bool = False) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file (read in chunks); with ``fsync`` the file is also flushed to disk."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(f.fileno())
    return {"size": size, "sha256": h.hexdigest()}


class CheckpointManager:
    """Write, list, verify, rotate and find checkpoints under ``root``.

    ``barrier`` synchronises ranks (``accelerator.wait_for_everyone``); single-process use needs none.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        keep_last: int = 2,
        is_main: bool = True,
        barrier: Callable[[], None] | None = None,
        hash_threads: int = 8,
    ):
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_main = is_main
        self.barrier = barrier or (lambda: None)
        self.hash_threads = max(1, hash_threads)

    def path_for(self, step: int) -> Path:
        return self.root / f"checkpoint-{step:08d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Committed checkpoints (a manifest is present; not yet verified), oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _NAME.fullmatch(p.name)
            if m and p.is_dir() and (p / MANIFEST).is_file():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def latest(self) -> Path | None:
        """The newest committed checkpoint, verified or not (see :meth:`latest_good`)."""
        cps = self.checkpoints()
        return cps[-1][1] if cps else None

    def latest_good(self, *, report: Callable[[str], None] | None = None) -> Path | None:
        """The newest checkpoint that passes full verification (sizes and checksums of every file). Each newer one
        that fails is reported (``report``, default a warning) with the reason, and skipped; ``None`` if there
        is no checkpoint. Raises :class:`CheckpointError` if checkpoints exist but none verifies."""
        report = report or logger.warning
        damaged = []
        for _, path in reversed(self.checkpoints()):
            problem = self.verify(path)
            if problem is None:
                return path
            damaged.append(path)
            report(f"checkpoint {path} is damaged ({problem}); falling back to the previous one")
        if damaged:
            raise CheckpointError(
                f"{self.root}: every checkpoint is damaged ({', '.join(p.name for p in damaged)}); "
                "set checkpoint.resume=never to start over (the damaged ones are kept for inspection)"
            )
        return None

    def verify(self, path: str | os.PathLike, *, checksums: bool = True) -> str | None:
        """``None`` if the checkpoint at ``path`` is intact, else what is wrong (first problem found)."""
        path = Path(path)
        try:
            record = self.read_manifest(path)
        except CheckpointError as exc:
            return str(exc)
        files = record.get("files")
        if isinstance(files, list):  # legacy manifest: names only
            missing = [f for f in files if not (path / f).is_file()]
            return f"missing {missing[0]}" if missing else None
        if not isinstance(files, dict) or not files:
            return f"{MANIFEST} lists no files"
        for name, want in files.items():
            p = path / name
            if not _inside(path, p) or not p.is_file():
                return f"missing {name}"
            if p.stat().st_size != want.get("size"):
                return f"{name}: {p.stat().st_size} bytes, the manifest recorded {want.get('size')}"
        if checksums:
            names = sorted(files)
            with ThreadPoolExecutor(self.hash_threads) as pool:
                digests = list(pool.map(lambda n: file_digest(path / n)["sha256"], names))
            for name, digest in zip(names, digests):
                if digest != files[name].get("sha256"):
                    return f"{name}: checksum mismatch (the file changed after it was written)"
        return None

    def clean_incomplete(self) -> list[Path]:
        """Remove leftovers of interrupted saves (main process only); returns what was removed."""
        removed = []
        if self.is_main and self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and _NAME.fullmatch(p.name.rsplit(".", 1)[0]) and p.suffix in (".tmp", ".old"):
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
            names = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            with ThreadPoolExecutor(self.hash_threads) as pool:
                digests = list(pool.map(lambda n: file_digest(tmp / n, fsync=True), names))
            for d in sorted({p for p in tmp.rglob("*") if p.is_dir()}, reverse=True):
                _fsync_dir(d)
            record = {
                "format": FORMAT,
                "step": step,
                "time": time.time(),
                **manifest,
                "files": dict(zip(names, digests)),
            }
            _write_json_durably(tmp / MANIFEST, record)
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step: keep the old one until the new one is in place
                old = final.with_name(final.name + ".old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(final, old)
                os.replace(tmp, final)
                _fsync_dir(self.root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
            self._prune(keep=final)
        self.barrier()
        return final

    def _prune(self, keep: Path) -> None:
        """Delete checkpoints older than the ``keep_last`` newest *good* ones (``keep`` was just written and is
        good by construction; older ones get a size check). While fewer good ones exist, nothing is deleted."""
        cps = self.checkpoints()
        good = 0
        for i in range(len(cps) - 1, -1, -1):
            _, path = cps[i]
            if path == keep or self.verify(path, checksums=False) is None:
                good += 1
            if good >= self.keep_last:
                for _, old in cps[:i]:
                    shutil.rmtree(old, ignore_errors=True)
                return

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
        p = Path(path) / MANIFEST
        if not p.is_file():
            raise CheckpointError(f"{path}: not a complete checkpoint (no {MANIFEST})")
        try:
            record = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") not in (FORMAT, *_LEGACY_FORMATS):
            found = record.get("format") if isinstance(record, dict) else None
            raise CheckpointError(f"{path}: unknown checkpoint format {found!r}, expected {FORMAT}")
        return record


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def fault_steps(kind: str) -> set[int]:
    """Fault injection for crash tests: the steps ``ONEVISION_FAULT=<kind>:<step>[,<step>...]`` names for ``kind``
    (``kill_in_save``: SIGKILL between writing and committing a checkpoint; ``nan_loss``: a NaN loss)."""
    spec = os.environ.get("ONEVISION_FAULT", "")
    if not spec.startswith(f"{kind}:"):
        return set()
    return {int(x) for x in spec.split(":", 1)[1].split(",") if x.strip()}


def _fault_point(where: str, step: int) -> None:
    """SIGKILL this process here if ``ONEVISION_FAULT=kill_in_<where>:<step>`` asks for it (see :func:`fault_steps`)."""
    if step in fault_steps(f"kill_in_{where}"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _write_json_durably(path: Path, data: Any) -> None:
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
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory; the files are synced
            os.fsync(fd)
    finally:
        os.close(fd)
