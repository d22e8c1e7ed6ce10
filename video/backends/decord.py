"""decord backend (``pip install "onevision[decord]"``): the LLaVA reference's decoder, ``VideoReader.get_batch``.

decord is C++ that aborts the whole process (``std::bad_alloc``, ``terminate``) on some hostile headers, e.g. an
MP4 whose ``stts`` claims four billion frames. So a file reaches ``decord.VideoReader`` only after PyAV has
opened it and its header passed :class:`video.Limits` (:func:`video.backends.pyav.read_header`); the display
rotation, stored frame size, codec and container name come from that header too (decord reports none of them).
decord (0.6) turns frames upright by quarter turns of the display matrix itself: the reader says so
(``rotated``) and :func:`video.load` does not rotate them again.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from video.backends.base import Backend, OpenOptions, Reader, frame_rate_from_timestamps, quarter_turns
from video.backends.pyav import read_header
from video.errors import VideoError
from video.limits import Deadline

__all__ = ["DecordBackend", "DecordReader"]

NAME = "decord"


def _decord() -> Any:
    import decord  # lazy: optional dependency

    return decord


class DecordReader(Reader):
    """A ``decord.VideoReader``; frame indices are decord's (its own pts-sorted frame index)."""

    backend = NAME

    def __init__(self, path: Path, options: OpenOptions, deadline: Deadline) -> None:
        decord = _decord()
        self.path = path
        self.warnings = []
        header = read_header(path, options.limits, backend=NAME)  # refuse what would crash decord
        deadline.check(path, NAME)
        self.container = header.container
        self.codec = header.codec
        self.rotation = header.rotation
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=options.threads)
            self.num_frames = len(self._vr)
            deadline.check(path, NAME)
            options.limits.check_stream(
                path,
                width=header.width,
                height=header.height,
                duration=None,
                num_frames=self.num_frames,
                backend=NAME,
            )
            header_rate = float(self._vr.get_avg_fps())
            stamps = np.asarray(self._vr.get_frame_timestamp(np.arange(self.num_frames)), dtype=np.float64)
            first = self._vr.get_batch([0]).asnumpy()[0]  # decord exposes no frame size: decode frame 0
        except (decord.DECORDError, AssertionError, RuntimeError, IndexError) as exc:
            text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            reason = "no_video_stream" if "cannot find video stream" in text else "decode"
            raise VideoError(
                path, f"decord cannot read this file: {text}", reason=reason, backend=NAME
            ) from exc
        self.width, self.height = header.width, header.height
        shape = (int(first.shape[0]), int(first.shape[1]))
        turns = quarter_turns(self.rotation) or 0
        if turns % 2 and self.width != self.height:  # an older decord that does not rotate: frames as stored
            self.rotated = shape == (self.width, self.height)
        else:
            self.rotated = turns != 0
        expected = (self.width, self.height) if self.rotated and turns % 2 else (self.height, self.width)
        if shape != expected:
            raise VideoError(
                path,
                f"decord decodes {shape[1]}x{shape[0]} frames, the header says {self.width}x{self.height}",
                reason="decode",
                backend=NAME,
            )
        starts = stamps[:, 0] - stamps[0, 0]
        rate = Fraction(header_rate).limit_denominator(100_000) if header_rate > 0 else None
        self.fps, self.cfr = frame_rate_from_timestamps(starts, rate, 1e-3)
        self._times = starts
        self._end = float(stamps[-1, 1] - stamps[0, 0])

    def timestamps(self) -> np.ndarray:
        return super().timestamps() if self.cfr else self._times.copy()

    @property
    def duration(self) -> float:
        return super().duration if self.cfr else self._end

    def keyframes(self) -> np.ndarray:
        return np.asarray(self._vr.get_key_indices(), dtype=np.int64)

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        decord = _decord()
        wanted = [int(i) for i in indices]
        deadline.check(self.path, NAME)
        try:
            batch = self._vr.get_batch(wanted).asnumpy()
        except (decord.DECORDError, RuntimeError, IndexError) as exc:
            raise VideoError(
                self.path, f"decord failed to decode: {exc}", reason="decode", backend=NAME
            ) from exc
        return {i: batch[k] for k, i in enumerate(wanted)}

    def close(self) -> None:
        self._vr = None


class DecordBackend(Backend):
    """decord (``pip install "onevision[decord]"``); no wheels for some platforms, hence optional."""

    name = NAME
    modules = ("decord",)
    extra = "decord"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        return DecordReader(path, options, deadline)
