"""torchcodec backend (``pip install "onevision[torchcodec]"``): ``VideoDecoder.get_frames_at`` in exact mode."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from video.backends.base import Backend, OpenOptions, Reader, quarter_turns
from video.backends.pyav import read_header
from video.errors import VideoError
from video.limits import Deadline

__all__ = ["TorchCodecBackend", "TorchCodecReader"]

NAME = "torchcodec"


def _decoders() -> Any:
    from torchcodec import decoders  # lazy: optional dependency (pulls in torch)

    return decoders


class TorchCodecReader(Reader):
    """A ``torchcodec.decoders.VideoDecoder`` with ``seek_mode="exact"`` and NHWC output.

    torchcodec does not list per-frame timestamps cheaply, so timestamps are ``index / average_fps``
    (exact for constant-frame-rate video) and keyframes mode is not supported (``auto`` falls back).
    The file is checked with PyAV first (:func:`video.backends.pyav.read_header`: limits, rotation), and
    frames are returned as stored, like every backend (a torchcodec that rotates a quarter turn is undone).
    """

    backend = NAME

    def __init__(self, path: Path, options: OpenOptions, deadline: Deadline) -> None:
        decoders = _decoders()
        self.path = path
        self.warnings = []
        header = read_header(path, options.limits, backend=NAME)
        deadline.check(path, NAME)
        try:
            self._decoder = decoders.VideoDecoder(
                str(path), dimension_order="NHWC", num_ffmpeg_threads=options.threads, seek_mode="exact"
            )
            meta = self._decoder.metadata
        except (RuntimeError, ValueError) as exc:
            text = str(exc)
            reason = "no_video_stream" if "video stream" in text.lower() else "decode"
            raise VideoError(
                path, f"torchcodec cannot read this file: {text}", reason=reason, backend=NAME
            ) from exc
        deadline.check(path, NAME)
        self.num_frames = int(meta.num_frames or 0)
        options.limits.check_stream(
            path,
            width=header.width,
            height=header.height,
            duration=None,
            num_frames=self.num_frames,
            backend=NAME,
        )
        fps = float(meta.average_fps or 0.0)
        self.fps = Fraction(fps).limit_denominator(100_000) if fps > 0 else Fraction(1)
        self.cfr = True
        self.width, self.height = header.width, header.height  # stored size (torchcodec may report rotated)
        self.codec = header.codec
        self.rotation = header.rotation
        self.container = header.container

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        wanted = [int(i) for i in indices]
        deadline.check(self.path, NAME)
        try:
            batch = self._decoder.get_frames_at(indices=wanted)
        except (RuntimeError, IndexError, ValueError) as exc:
            raise VideoError(
                self.path, f"torchcodec failed to decode: {exc}", reason="decode", backend=NAME
            ) from exc
        data = batch.data
        frames = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        turns = quarter_turns(self.rotation)
        if turns in (1, 3) and self.width != self.height and frames.shape[1:3] == (self.width, self.height):
            frames = np.rot90(frames, -turns, axes=(1, 2))  # this torchcodec applied the rotation: undo it
        return {i: np.ascontiguousarray(frames[k]) for k, i in enumerate(wanted)}

    def close(self) -> None:
        self._decoder = None


class TorchCodecBackend(Backend):
    """torchcodec (``pip install "onevision[torchcodec]"``), PyTorch's FFmpeg decoder."""

    name = NAME
    modules = ("torchcodec.decoders",)
    extra = "torchcodec"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        return TorchCodecReader(path, options, deadline)
