"""Errors raised by :mod:`video`.

Every problem with a media file surfaces as :class:`VideoError` (a ``ValueError``), whose message starts with
the file path and which carries a machine-readable :attr:`VideoError.reason`, so a data loader can log,
quarantine and skip bad samples without parsing strings.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = [
    "NON_RETRYABLE_REASONS",
    "REASONS",
    "BackendUnavailableError",
    "VideoError",
]

#: Every value :attr:`VideoError.reason` can take, with what it means.
REASONS: Final[dict[str, str]] = {
    "not_found": "the path does not exist",
    "not_a_file": "the path is not a regular file or a frame directory (e.g. a FIFO or device)",
    "empty": "the file or directory holds no frames (0 bytes, 0 frames, or no image files)",
    "corrupt": "the container cannot be opened or parsed",
    "truncated": "the container declares more frames than it holds",
    "no_video_stream": "the file has no video stream (e.g. audio only)",
    "unsupported_codec": "no decoder is available for the video codec",
    "decode": "the decoder failed",
    "missing_frames": "some requested frames could not be decoded",
    "empty_range": "the sampling range (start/end) selects no frame",
    "too_large": "a configured limit (pixels, duration, output bytes) is exceeded",
    "timeout": "decoding exceeded the wall-clock timeout",
    "unsupported": "the backend does not support the requested operation",
    "backend_unavailable": "the requested decoder backend is not installed",
}

#: Reasons for which ``backend="auto"`` does not try the next backend: another decoder cannot fix them.
NON_RETRYABLE_REASONS: Final[frozenset[str]] = frozenset(
    {
        "not_found",
        "not_a_file",
        "empty",
        "truncated",
        "no_video_stream",
        "empty_range",
        "too_large",
        "timeout",
    }
)


class VideoError(ValueError):
    """A media file could not be probed or loaded.

    Attributes:
        path: the file (or frame directory) concerned, as a string (``None`` if not file-specific).
        reason: one of :data:`REASONS` (``"corrupt"``, ``"timeout"``, ...).
        cause: the human-readable cause, without the path.
        backend: name of the backend that raised it, if any.
        attempts: for ``backend="auto"``: ``(backend, error)`` for every backend tried.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        cause: str,
        *,
        reason: str = "decode",
        backend: str | None = None,
        attempts: tuple[tuple[str, VideoError], ...] = (),
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown VideoError reason {reason!r}; expected one of {sorted(REASONS)}")
        self.path = None if path is None else os.fspath(path)
        self.cause = cause
        self.reason = reason
        self.backend = backend
        self.attempts = attempts
        where = f"{self.path}: " if self.path is not None else ""
        via = f" [backend: {backend}]" if backend else ""
        super().__init__(f"{where}{cause} ({reason}){via}")

    @property
    def retryable(self) -> bool:
        """Whether another backend might succeed where this one failed."""
        return self.reason not in NON_RETRYABLE_REASONS

    def __reduce__(self):  # keep pickling (multiprocessing data loaders) working with keyword arguments
        return (
            _rebuild,
            (self.__class__, self.path, self.cause, self.reason, self.backend, self.attempts),
        )


class BackendUnavailableError(VideoError):
    """A decoder backend is not installed (or none is usable); the message names the pip extra to install."""

    def __init__(
        self, path: str | os.PathLike[str] | None, cause: str, *, backend: str | None = None
    ) -> None:
        super().__init__(path, cause, reason="backend_unavailable", backend=backend)

    def __reduce__(self):
        return (_rebuild_unavailable, (self.path, self.cause, self.backend))


def _rebuild(cls, path, cause, reason, backend, attempts):
    return cls(path, cause, reason=reason, backend=backend, attempts=attempts)


def _rebuild_unavailable(path, cause, backend):
    return BackendUnavailableError(path, cause, backend=backend)
