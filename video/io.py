"""``probe`` and ``load``: path checks, backend choice and fallback, limits, timeouts, and the :class:`Clip`."""

from __future__ import annotations

import functools
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from video.backends import get_backend, list_backends
from video.backends.base import (
    ROTATION_MODES,
    Backend,
    OpenOptions,
    Reader,
    VideoInfo,
    cfr_timestamps,
    quarter_turns,
    require_regular_file,
)
from video.errors import BackendUnavailableError, VideoError
from video.limits import Deadline, Limits
from video.sampling import Sampling, snap_to_keyframes

__all__ = ["Clip", "load", "probe"]

log = logging.getLogger("video")

PathLike = str | os.PathLike[str]
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Clip:
    """Frames sampled from one video, with where they came from.

    Attributes:
        frames: uint8 RGB array ``[T, H, W, 3]``, upright: the container's display rotation is applied (a
            90-degree video of stored size W x H comes out H x W), unless ``load(..., rotation="keep")``.
        indices: int64 ``[T]`` frame index of every returned frame (may repeat, e.g. ``num_frames > total``).
        timestamps: float64 ``[T]`` seconds from the first frame: ``index / fps`` for constant frame rate,
            the real presentation timestamps for variable frame rate.
        fps: the video's average frame rate.
        duration: the whole video's duration in seconds (``total_frames / fps`` for constant frame rate).
        path: the loaded path.
        backend: the backend that decoded it.
        total_frames: frames in the whole video (what the sampling rule saw).
        sampling: the spec used.
        rotation: display rotation in degrees (counter-clockwise) recorded in the container, whether or not
            it was applied to ``frames``.
        missing: requested indices that could not be decoded (only with ``allow_partial=True``; else raise).
        warnings: anything worth knowing that did not stop loading (also logged when it means missing data).
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    duration: float
    path: str
    backend: str
    total_frames: int
    sampling: Sampling
    rotation: int = 0
    missing: tuple[int, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, H, W)``."""
        t, h, w = self.frames.shape[:3]
        return (int(t), int(h), int(w))

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"Clip(path={self.path!r}, frames={self.shape}, backend={self.backend!r}, fps={self.fps:.3f}, "
            f"duration={self.duration:.2f}s, missing={len(self.missing)})"
        )


# -- path and backend selection ------------------------------------------------------------------------
def _check_path(path: PathLike) -> Path:
    p = Path(os.fspath(path))
    st = require_regular_file(p, directory_ok=True)  # never open a FIFO, device or socket
    if st.st_size == 0 and not stat.S_ISDIR(st.st_mode):
        raise VideoError(p, "file is empty (0 bytes)", reason="empty")
    return p


def _candidates(path: Path, backend: str) -> list[type[Backend]]:
    if backend != "auto":
        cls = get_backend(backend)
        cls.require(path)
        return [cls]
    accepting = [get_backend(name) for name in list_backends() if get_backend(name).accepts(path)]
    usable = [cls for cls in accepting if cls.available()]
    if not usable:
        hints = "; ".join(f"{cls.name}: {cls.install_hint()}" for cls in accepting) or "no backend accepts it"
        raise BackendUnavailableError(path, f"no usable video backend is installed ({hints})")
    return usable


def _guarded(fn: Callable[[], T], path: Path, backend: str) -> T:
    """Run ``fn``; any non-VideoError exception from a decoding library becomes a VideoError naming the file."""
    try:
        return fn()
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(path, f"{type(exc).__name__}: {exc}", reason="decode", backend=backend) from exc


def _with_deadline(fn: Callable[[], T], deadline: Deadline, path: Path, backend: str) -> T:
    """Run ``fn`` in a worker thread and give up (``reason="timeout"``) when the deadline passes."""
    remaining = deadline.remaining()
    if remaining is None:
        return fn()
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=target, name=f"video-decode {path.name}", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        deadline.cancel()  # the worker stops at its next deadline check
        raise VideoError(
            path, f"decoding exceeded the {deadline.timeout} s timeout", reason="timeout", backend=backend
        )
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _run(path: Path, backend: str, limits: Limits, task: Callable[[Backend, Deadline], T]) -> T:
    candidates = _candidates(path, backend)
    deadline = Deadline(limits.timeout)
    attempts: list[tuple[str, VideoError]] = []
    for cls in candidates:
        instance = cls()
        try:
            attempt = functools.partial(_guarded, functools.partial(task, instance, deadline), path, cls.name)
            return _with_deadline(attempt, deadline, path, cls.name)
        except VideoError as exc:
            if backend != "auto" or (not exc.retryable and not attempts):
                raise
            attempts.append((cls.name, exc))
            if not exc.retryable:  # a later backend's verdict must not mask the first backend's diagnosis
                break
            if cls is not candidates[-1]:
                log.warning(
                    "%s: backend %s failed (%s: %s); trying the next backend",
                    path,
                    cls.name,
                    exc.reason,
                    exc.cause,
                )
    if len(attempts) == 1:
        raise attempts[0][1]
    summary = "; ".join(f"{name}: {err.cause} ({err.reason})" for name, err in attempts)
    raise VideoError(
        path, f"no backend could read it ({summary})", reason=attempts[0][1].reason, attempts=tuple(attempts)
    )


def _turns(reader: Reader, upright: bool, warnings: list[str]) -> int:
    """Counter-clockwise quarter turns from the reader's frames to the wanted orientation (upright or stored)."""
    if not reader.rotation:
        return 0
    turns = quarter_turns(reader.rotation)
    if turns is None:
        if upright:
            warnings.append(
                f"display rotation {reader.rotation} degrees is not a multiple of 90: not applied"
            )
        return 0
    return ((turns if upright else 0) - (turns if reader.rotated else 0)) % 4


# -- public API ----------------------------------------------------------------------------------------
def probe(path: PathLike, *, backend: str = "auto", limits: Limits | None = None) -> VideoInfo:
    """Metadata of a video file or frame directory, read from the container **without decoding** frames.

    Returns:
        :class:`VideoInfo` with ``num_frames``, ``fps``, ``duration``, ``width``, ``height``, ``rotation``,
        ``codec`` and ``container``.

    Raises:
        VideoError: missing/empty/corrupt file, not a regular file, no video stream, unsupported codec,
            0 frames, a header beyond ``limits`` (``too_large``: frame size, frame count, duration), timeout.
        BackendUnavailableError: the requested backend (or every backend) is not installed.
    """
    p = _check_path(path)
    limits = Limits() if limits is None else limits

    def task(instance: Backend, deadline: Deadline) -> VideoInfo:
        info = instance.probe(p, OpenOptions(limits=limits), deadline)
        if info.num_frames <= 0:
            raise VideoError(p, "video has 0 frames", reason="empty", backend=instance.name)
        limits.check_stream(
            p,
            width=info.width,
            height=info.height,
            duration=info.duration,
            num_frames=info.num_frames,
            backend=instance.name,
        )
        return info

    return _run(p, backend, limits, task)


def load(
    path: PathLike,
    sampling: Sampling,
    *,
    backend: str = "auto",
    limits: Limits | None = None,
    allow_partial: bool = False,
    threads: int = 0,
    dir_fps: float = 1.0,
    rotation: str = "apply",
) -> Clip:
    """Decode the frames ``sampling`` selects from a video file, animated image or frame directory.

    Args:
        path: video file, animated GIF/WebP/PNG, or directory of frame images.
        sampling: which frames (see :class:`Sampling`).
        backend: ``"auto"`` (try the registered backends in order, falling back to the next on a retryable
            :class:`VideoError`) or a backend name (``"pyav"``, ``"decord"``, ``"torchcodec"``, ``"pil"``).
        limits: size/duration/memory/time limits (default :class:`Limits`).
        allow_partial: return the frames that could be decoded, listing the others in ``Clip.missing`` (and
            logging a warning), instead of raising ``VideoError(reason="missing_frames"/"truncated")``.
        threads: decoder threads (0 = automatic).
        dir_fps: frame rate assumed for frame directories.
        rotation: ``"apply"`` (default) turns frames upright by the container's display rotation (display
            matrix / ``rotate`` tag), identically for every backend; ``"keep"`` returns them as stored.

    Returns:
        a :class:`Clip` with exactly ``len(sampling indices)`` frames, unless ``allow_partial=True``.

    Raises:
        VideoError: bad input (see ``video.errors.REASONS``), always naming the file.
        BackendUnavailableError: the requested backend (or every backend) is not installed.
    """
    if not isinstance(sampling, Sampling):
        raise TypeError(f"sampling must be a video.Sampling, got {type(sampling).__name__}")
    if rotation not in ROTATION_MODES:
        raise ValueError(f"rotation must be one of {ROTATION_MODES}, got {rotation!r}")
    p = _check_path(path)
    limits = Limits() if limits is None else limits
    options = OpenOptions(threads=threads, dir_fps=dir_fps, limits=limits)

    def task(instance: Backend, deadline: Deadline) -> Clip:
        with instance.open(p, options, deadline) as reader:
            return _sample(reader, p, sampling, limits, allow_partial, deadline, rotation == "apply")

    return _run(p, backend, limits, task)


def _sample(
    reader: Reader,
    path: Path,
    sampling: Sampling,
    limits: Limits,
    allow_partial: bool,
    deadline: Deadline,
    upright: bool,
) -> Clip:
    name = reader.backend
    available = reader.num_frames
    declared = reader.declared_frames
    warnings = list(reader.warnings)
    if available <= 0:
        raise VideoError(path, "video has 0 frames", reason="empty", backend=name)
    truncation = ""
    if declared:
        truncation = f"truncated: the container declares {declared} frames but only {available} are present"
        if not allow_partial:
            raise VideoError(path, truncation, reason="truncated", backend=name)
        warnings.append(truncation)
    total = declared or available
    fps = reader.fps
    duration = max(float(reader.duration), float(total / fps) if fps > 0 else 0.0)
    limits.check_stream(  # before any index array is built from the (possibly declared) frame count
        path, width=reader.width, height=reader.height, duration=duration, num_frames=total, backend=name
    )
    exact_times = not reader.cfr and not declared
    all_times = reader.timestamps() if exact_times else None
    try:
        indices = sampling.indices(total, float(fps), all_times)
    except ValueError as exc:
        raise VideoError(path, str(exc), reason="empty_range", backend=name) from exc
    if sampling.mode == "keyframes":
        snapped = snap_to_keyframes(indices, reader.keyframes())
        distinct = len(np.unique(snapped))
        if distinct < len(np.unique(indices)):
            warnings.append(
                f"keyframes mode: {len(indices)} requested frames map to {distinct} distinct keyframes"
            )
        indices = snapped
    limits.check_output(path, num_frames=len(indices), width=reader.width, height=reader.height, backend=name)

    unique = np.unique(indices)
    readable = unique[unique < available]
    decoded = reader.read(readable, deadline) if len(readable) else {}
    warnings.extend(w for w in reader.warnings if w not in warnings)
    missing = tuple(int(i) for i in unique if int(i) not in decoded)
    if missing:
        shown = ", ".join(str(i) for i in missing[:8]) + (", ..." if len(missing) > 8 else "")
        message = f"{len(missing)} of {len(unique)} requested frames could not be decoded (indices {shown})"
        if not allow_partial:
            raise VideoError(path, message, reason="missing_frames", backend=name)
        warnings.append(message)
        log.warning("%s: %s [backend: %s]", path, message, name)
    elif truncation:
        log.warning("%s: %s [backend: %s]", path, truncation, name)

    kept = np.array([i for i in indices if int(i) in decoded], dtype=np.int64)
    turns = _turns(reader, upright, warnings)
    if len(kept):  # rotated views, copied once by the stack
        frames = np.ascontiguousarray(np.stack([np.rot90(decoded[int(i)], turns) for i in kept]))
    else:
        frames = np.rot90(np.zeros((0, reader.height, reader.width, 3), dtype=np.uint8), turns, axes=(1, 2))
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(
            path, f"backend returned frames of shape {frames.shape} and dtype {frames.dtype}", backend=name
        )
    timestamps = all_times[kept] if all_times is not None else cfr_timestamps(kept, fps)
    return Clip(
        frames=frames,
        indices=kept,
        timestamps=timestamps,
        fps=float(fps),
        duration=float(total / fps) if declared else float(reader.duration),
        path=os.fspath(path),
        backend=name,
        total_frames=int(total),
        sampling=sampling,
        rotation=int(reader.rotation),
        missing=missing,
        warnings=tuple(warnings),
    )
