"""Resource limits for loading media, and the wall-clock deadline that bounds decoding time."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from video._fields import strict_from_dict
from video.errors import VideoError

__all__ = ["Deadline", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Upper bounds checked before and during decoding; exceeding one raises :class:`VideoError`.

    ``None`` disables a limit.

    Attributes:
        max_pixels: largest frame area (width x height) accepted; default 8K UHD (7680 x 4320).
        max_frames: most frames a video may declare or hold; default 2**23 (about 8.4 million: 6 hours at
            388 fps). Checked against the container header before any index or frame buffer is allocated,
            so a header claiming billions of frames is refused instead of exhausting memory.
        max_duration: longest video accepted, in seconds; default 6 hours.
        max_output_bytes: largest returned ``frames`` array (``T*H*W*3`` bytes); default 4 GiB.
            Stops e.g. ``Sampling(fps=1)`` without ``max_frames`` on a 3 h video from exhausting memory.
        timeout: wall-clock budget in seconds for one ``load``/``probe`` call, all backend attempts included;
            default 300 s. The decoding thread is abandoned (it stops at its next checkpoint) and
            ``VideoError(reason="timeout")`` is raised, so a call never hangs the caller.
    """

    max_pixels: int | None = 7680 * 4320
    max_duration: float | None = 6 * 3600.0
    max_output_bytes: int | None = 4 * 2**30
    timeout: float | None = 300.0
    max_frames: int | None = 2**23  # last: keeps the positional order of the fields above

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_frames", "max_output_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Limits.{name} must be a positive int or None, got {value!r}")
        for name in ("max_duration", "timeout"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                raise ValueError(f"Limits.{name} must be a positive number or None, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        return strict_from_dict(cls, data)

    def check_stream(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        duration: float | None,
        num_frames: int | None = None,
        backend: str | None = None,
    ) -> None:
        """Raise ``VideoError(reason="too_large")`` if the stream's size, frame count or duration exceeds a limit.

        Backends call it with the container header's values before allocating anything per frame.
        """
        if width < 0 or height < 0:
            raise VideoError(path, f"invalid frame size {width}x{height}", reason="corrupt", backend=backend)
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise VideoError(
                path,
                f"frame size {width}x{height} = {width * height} pixels exceeds Limits.max_pixels={self.max_pixels}",
                reason="too_large",
                backend=backend,
            )
        if self.max_frames is not None and num_frames is not None and num_frames > self.max_frames:
            raise VideoError(
                path,
                f"the container declares {num_frames} frames, more than Limits.max_frames={self.max_frames} "
                "(a corrupt header, or raise the limit)",
                reason="too_large",
                backend=backend,
            )
        if duration is not None and not math.isfinite(duration):
            raise VideoError(path, f"invalid duration {duration!r}", reason="too_large", backend=backend)
        if self.max_duration is not None and duration is not None and duration > self.max_duration:
            raise VideoError(
                path,
                f"duration {duration:.1f} s exceeds Limits.max_duration={self.max_duration} s",
                reason="too_large",
                backend=backend,
            )

    def check_output(
        self,
        path: str | os.PathLike[str],
        *,
        num_frames: int,
        width: int,
        height: int,
        backend: str | None = None,
    ) -> None:
        """Raise ``VideoError(reason="too_large")`` if ``num_frames`` RGB frames would exceed ``max_output_bytes``."""
        nbytes = num_frames * width * height * 3
        if self.max_output_bytes is not None and nbytes > self.max_output_bytes:
            raise VideoError(
                path,
                f"{num_frames} frames of {width}x{height} need {nbytes / 2**20:.0f} MiB, more than "
                f"Limits.max_output_bytes={self.max_output_bytes / 2**20:.0f} MiB (sample fewer frames)",
                reason="too_large",
                backend=backend,
            )


class Deadline:
    """A wall-clock deadline shared by the caller and a decoding thread.

    Backends call :meth:`check` between packets/frames; the caller calls :meth:`cancel` when it gives up
    waiting, which makes the next :meth:`check` in the decoding thread raise, so abandoned work stops early.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout
        self._cancelled = threading.Event()

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when there is no timeout."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._cancelled.is_set() or (self._end is not None and time.monotonic() >= self._end)

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self, path: str | os.PathLike[str], backend: str | None = None) -> None:
        """Raise ``VideoError(reason="timeout")`` once the deadline has passed or was cancelled."""
        if self.expired:
            raise VideoError(
                path, f"decoding exceeded the {self.timeout} s timeout", reason="timeout", backend=backend
            )
