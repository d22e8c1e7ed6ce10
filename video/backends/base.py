"""The decoder-backend interface: a :class:`Backend` opens a path into a :class:`Reader`.

A backend adapter translates one decoding library (PyAV, decord, torchcodec, PIL) to this interface and maps
that library's failures to :class:`video.VideoError`. Everything else (sampling, limits, fallback, timeouts,
assembling the :class:`video.Clip`) lives in :mod:`video.io`, once, for all backends.
"""

from __future__ import annotations

import importlib
import math
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np

from video.errors import BackendUnavailableError, VideoError
from video.limits import Deadline, Limits

__all__ = [
    "ROTATION_MODES",
    "Backend",
    "OpenOptions",
    "Reader",
    "VideoInfo",
    "cfr_timestamps",
    "frame_rate_from_timestamps",
    "quarter_turns",
    "require_regular_file",
]

#: Values of ``video.load(..., rotation=...)``: ``"apply"`` turns frames upright by the container's display
#: rotation (what players show, FFmpeg's autorotate); ``"keep"`` returns them as stored.
ROTATION_MODES = ("apply", "keep")

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def require_regular_file(
    path: str | os.PathLike[str], *, backend: str | None = None, directory_ok: bool = False
) -> os.stat_result:
    """``os.stat`` of ``path``, refusing anything but a regular file **before** anything opens it.

    Opening a FIFO blocks until a writer appears and a device such as ``/dev/zero`` never ends, so every path
    entry point (``video.load``/``probe`` and each backend's ``open``) calls this first. Directories pass only
    with ``directory_ok`` (frame directories). Raises ``VideoError`` with ``reason="not_found"`` or
    ``"not_a_file"``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError(path, "file not found", reason="not_found", backend=backend) from None
    except OSError as exc:
        raise VideoError(
            path, f"cannot access path ({exc.strerror or exc})", reason="not_found", backend=backend
        ) from exc
    if stat.S_ISREG(st.st_mode) or (directory_ok and stat.S_ISDIR(st.st_mode)):
        return st
    kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
    wanted = "a video file or a frame directory" if directory_ok else "a video file"
    raise VideoError(
        path, f"not a regular file ({kind}); pass {wanted}", reason="not_a_file", backend=backend
    )


def quarter_turns(rotation: float) -> int | None:
    """Counter-clockwise quarter turns (0-3) for a display rotation in degrees; ``None`` if not a multiple of 90.

    Like FFmpeg's autorotate, an angle within 1 degree of a multiple of 90 counts as that multiple.
    """
    if not math.isfinite(rotation):
        return None
    turns = round(rotation / 90.0)
    if abs(rotation - 90.0 * turns) > 1.0:
        return None
    return turns % 4


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata from :func:`video.probe` (read from the container, without decoding the stream).

    Attributes:
        path: the probed path.
        backend: the backend that produced it.
        num_frames: number of frames (header count; counted from packets when the header has none).
        fps: average frame rate.
        duration: seconds.
        width, height: stored (coded) frame size in pixels, before ``rotation``.
        rotation: display rotation in degrees, counter-clockwise (0, 90, 180 or -90); :func:`video.load`
            applies it by default (``rotation="keep"`` returns frames as stored).
        codec: decoder name (``"h264"``, ``"gif"``, ``"png"`` for frame directories, ...).
        container: container format name (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"gif"``, ``"directory"``, ...).
    """

    path: str
    backend: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int
    codec: str
    container: str

    @property
    def size(self) -> tuple[int, int, int]:
        """``(T, H, W)``."""
        return (self.num_frames, self.height, self.width)


@dataclass(frozen=True)
class OpenOptions:
    """Options every backend receives when opening a file.

    Attributes:
        threads: decoder threads (0 = let the library choose; use 1 inside multi-worker data loaders).
        dir_fps: frame rate assumed for directories of frame images (the reference assumes 2 for
            ShareGPT4Video dumps).
        limits: checked against the container header **before** a backend builds an index or allocates
            frame buffers (frame size, frame count, duration).
    """

    threads: int = 0
    dir_fps: float = 1.0
    limits: Limits = field(default_factory=Limits)


class Reader(ABC):
    """An opened video whose frames are addressed by presentation index ``0 .. num_frames-1``.

    Subclasses set the attributes in ``__init__`` and implement :meth:`read`.

    Attributes:
        backend: backend name.
        path: the opened path.
        num_frames: frames that can be addressed.
        declared_frames: frame count the container declares, when it declares more than ``num_frames``
            (a truncated file); ``None`` otherwise.
        fps: average frame rate (exact ``Fraction`` where the container gives one, e.g. 30000/1001).
        cfr: constant frame rate. Timestamps are then ``index / fps``; otherwise they come from the
            presentation timestamps.
        width, height, codec, rotation, container: as in :class:`VideoInfo` (``width``/``height`` as stored).
        rotated: :meth:`read` returns frames with ``rotation`` already applied (decord does it itself);
            :func:`video.load` then applies only what is left, so every backend gives the same frames.
    """

    backend: str
    path: Path
    num_frames: int
    declared_frames: int | None = None
    fps: Fraction
    cfr: bool = True
    width: int
    height: int
    codec: str
    rotation: int = 0
    rotated: bool = False
    container: str = ""
    warnings: list[str]

    def timestamps(self) -> np.ndarray:
        """Seconds from the first frame, for every frame (float64, non-decreasing)."""
        return cfr_timestamps(np.arange(self.num_frames), self.fps)

    @property
    def duration(self) -> float:
        """Video duration in seconds (``num_frames / fps`` for constant frame rate, like the reference)."""
        return float(Fraction(self.num_frames) / self.fps)

    def keyframes(self) -> np.ndarray:
        """Presentation indices of keyframes (sorted). Backends that cannot list them raise."""
        raise VideoError(
            self.path, "this backend cannot list keyframes", reason="unsupported", backend=self.backend
        )

    @abstractmethod
    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        """Decode the frames at ``indices`` (sorted, unique) as uint8 ``[H, W, 3]`` RGB arrays.

        Frames keep the stored orientation (``height`` x ``width``) unless :attr:`rotated`;
        :func:`video.load` applies ``rotation`` in one place for every backend.

        Frames that cannot be decoded are left out of the result (the caller reports them); a failure of the
        whole file raises :class:`VideoError`. Implementations call ``deadline.check`` regularly.
        """

    def info(self) -> VideoInfo:
        return VideoInfo(
            path=os.fspath(self.path),
            backend=self.backend,
            num_frames=self.declared_frames or self.num_frames,
            fps=float(self.fps),
            duration=self.duration,
            width=self.width,
            height=self.height,
            rotation=self.rotation,
            codec=self.codec,
            container=self.container,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (default: nothing to release)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """A decoding library behind the common interface.

    Class attributes:
        name: registry name (``"pyav"``).
        modules: import names that must be importable for the backend to work (checked lazily).
        extra: the ``onevision`` pip extra that installs it (``"decord"``), or ``None`` if always installed.
    """

    name: ClassVar[str]
    modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    @classmethod
    def install_hint(cls) -> str:
        if cls.extra is None:
            return f"install {', '.join(cls.modules) or cls.name}"
        return f'pip install "onevision[{cls.extra}]"'

    @classmethod
    def import_error(cls) -> str | None:
        """``None`` if the backend's modules import, else a one-line description of what failed."""
        for module in cls.modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken native install
                return f"{type(exc).__name__}: {exc}"
        return None

    @classmethod
    def available(cls) -> bool:
        return cls.import_error() is None

    @classmethod
    def require(cls, path: str | os.PathLike[str] | None = None) -> None:
        """Raise :class:`BackendUnavailableError` (naming the pip extra) if the backend cannot be imported."""
        problem = cls.import_error()
        if problem is not None:
            raise BackendUnavailableError(
                path,
                f"video backend {cls.name!r} is not available ({problem}); {cls.install_hint()}",
                backend=cls.name,
            )

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Whether ``backend="auto"`` should try this backend for ``path`` (default: regular files)."""
        return path.is_file()

    @abstractmethod
    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        """Open ``path``; raise :class:`VideoError` for bad media.

        Implementations call :func:`require_regular_file` before opening anything and check
        ``options.limits`` against the header before allocating per-frame state.
        """

    def probe(self, path: Path, options: OpenOptions, deadline: Deadline) -> VideoInfo:
        """Metadata without decoding frames (default: open a reader and describe it)."""
        with self.open(path, options, deadline) as reader:
            return reader.info()


def cfr_timestamps(indices: np.ndarray, fps: Fraction) -> np.ndarray:
    """``index / fps`` in seconds, computed as ``index * den / num`` so 30000/1001 stays exact."""
    fps = Fraction(fps)
    return np.asarray(indices, dtype=np.float64) * fps.denominator / fps.numerator


def frame_rate_from_timestamps(
    times: np.ndarray, header_rate: Fraction | float | None, tick: float
) -> tuple[Fraction, bool]:
    """Average frame rate and whether the stream is constant-rate, from sorted per-frame times (seconds).

    A stream is constant-rate when every time is within ``max(1.5 * tick, 1 us)`` of ``t0 + i / rate`` (``tick``
    = container time base in seconds, so millisecond-rounded Matroska timestamps still count as constant),
    where ``rate`` is the container's rate when it matches the measured ``(n-1) / span`` within 0.1 %, else the
    measured one. For variable-rate streams the container's average rate is returned when there is one (what
    decord's ``get_avg_fps`` reports, so ``fps`` sampling agrees with the reference), else the measured one.
    """
    header = None
    if header_rate:
        header = Fraction(header_rate).limit_denominator(1_000_000)
        if header <= 0:
            header = None
    n = len(times)
    if n < 2:
        return (header or Fraction(1)), True
    span = float(times[-1] - times[0])
    if span <= 0:
        return (header or Fraction(1)), False
    measured = (n - 1) / span
    if header is not None and abs(float(header) - measured) <= 1e-3 * measured:
        rate = header
    else:
        rate = Fraction(measured).limit_denominator(1_000_000)
    ideal = times[0] + cfr_timestamps(np.arange(n), rate)
    tolerance = max(1.5 * tick, 1e-6)
    if float(np.max(np.abs(times - ideal))) <= tolerance:
        return rate, True
    return (header or rate), False
