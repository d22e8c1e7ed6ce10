"""PIL backend: directories of frame images and animated images (GIF, animated WebP/PNG).

* A **directory** is a video whose frames are its image files in natural sort order (``frame_2`` before
  ``frame_10``; identical to plain sorting for zero-padded names), played at ``OpenOptions.dir_fps``.
* An **animated image** has per-frame durations; timestamps are their running sum. As in FFmpeg's GIF demuxer,
  GIF delays under 20 ms count as 100 ms.
"""

from __future__ import annotations

import re
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from video.backends.base import (
    Backend,
    OpenOptions,
    Reader,
    frame_rate_from_timestamps,
    require_regular_file,
)
from video.errors import VideoError
from video.limits import Deadline

__all__ = ["IMAGE_SUFFIXES", "AnimatedImageReader", "FrameDirectoryReader", "ImagesBackend", "frame_files"]

NAME = "pil"

#: File suffixes treated as frames inside a frame directory.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: File suffixes this backend opens as animated images.
ANIMATED_SUFFIXES = frozenset({".gif", ".webp", ".png", ".apng"})


def _image_module() -> Any:
    from PIL import Image  # lazy

    return Image


def _natural_key(name: str) -> list[Any]:
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def frame_files(directory: Path) -> list[Path]:
    """Image files of a frame directory, in natural sort order (hidden files ignored)."""
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


class FrameDirectoryReader(Reader):
    """A directory of frame images."""

    backend = NAME

    def __init__(self, path: Path, options: OpenOptions, deadline: Deadline) -> None:
        Image = _image_module()
        self.path = path
        self.warnings = []
        self._files = frame_files(path)
        self.num_frames = len(self._files)
        if not self._files:
            raise VideoError(path, "frame directory contains no image files", reason="empty", backend=NAME)
        options.limits.check_stream(
            path, width=0, height=0, duration=None, num_frames=self.num_frames, backend=NAME
        )
        if not options.dir_fps > 0:
            raise VideoError(
                path, f"dir_fps must be positive, got {options.dir_fps}", reason="decode", backend=NAME
            )
        self.fps = Fraction(options.dir_fps).limit_denominator(100_000)
        self.cfr = True
        self.container = "directory"
        try:
            with Image.open(self._files[0]) as first:
                self.width, self.height = first.size
                self.codec = (first.format or "image").lower()
        except (OSError, ValueError) as exc:
            raise VideoError(
                path, f"cannot read frame {self._files[0].name}: {exc}", reason="corrupt", backend=NAME
            ) from exc

    def keyframes(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.int64)

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        Image = _image_module()
        out: dict[int, np.ndarray] = {}
        for i in indices:
            deadline.check(self.path, NAME)
            file = self._files[int(i)]
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as exc:
                self.warnings.append(f"cannot read frame {file.name}: {exc}")
                continue
            if array.shape[:2] != (self.height, self.width):
                self.warnings.append(
                    f"frame {file.name} is {array.shape[1]}x{array.shape[0]}, expected {self.width}x{self.height}"
                )
                continue
            out[int(i)] = array
        return out


class AnimatedImageReader(Reader):
    """An animated GIF / WebP / PNG read with PIL (sequential seeks, so frame disposal is honoured)."""

    backend = NAME

    def __init__(self, path: Path, options: OpenOptions, deadline: Deadline) -> None:
        Image = _image_module()
        self.path = path
        self.warnings = []
        try:
            self._image = Image.open(path)
            self._image.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise VideoError(
                path, f"PIL cannot open this image: {exc}", reason="corrupt", backend=NAME
            ) from exc
        image = self._image
        self.width, self.height = image.size
        self.codec = (image.format or "image").lower()
        self.container = self.codec
        self.num_frames = int(getattr(image, "n_frames", 1))
        try:  # before a duration is listed per frame
            options.limits.check_stream(
                path,
                width=self.width,
                height=self.height,
                duration=None,
                num_frames=self.num_frames,
                backend=NAME,
            )
        except VideoError:
            image.close()
            raise
        durations = []
        for k in range(self.num_frames):
            deadline.check(path, NAME)
            image.seek(k)
            ms = float(image.info.get("duration") or 0)
            if (ms < 20 and self.codec == "gif") or ms <= 0:
                ms = 100.0
            durations.append(ms / 1000.0)
        image.seek(0)
        self._durations = np.array(durations, dtype=np.float64)
        self._times = np.concatenate([[0.0], np.cumsum(self._durations)[:-1]])
        total = float(self._durations.sum())
        header = (
            Fraction(self.num_frames) / Fraction(total).limit_denominator(1_000_000) if total > 0 else None
        )
        self.fps, self.cfr = frame_rate_from_timestamps(self._times, header, 1e-3)
        self._total = total

    def timestamps(self) -> np.ndarray:
        return super().timestamps() if self.cfr else self._times.copy()

    @property
    def duration(self) -> float:
        return self._total

    def keyframes(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.int64)

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for i in indices:
            deadline.check(self.path, NAME)
            try:
                self._image.seek(int(i))
                out[int(i)] = np.asarray(self._image.convert("RGB"))
            except (OSError, ValueError, EOFError) as exc:
                self.warnings.append(f"cannot decode frame {int(i)}: {exc}")
        return out

    def close(self) -> None:
        self._image.close()


class ImagesBackend(Backend):
    """PIL, for frame directories and animated images; always installed."""

    name = NAME
    modules = ("PIL.Image",)
    extra = None

    @classmethod
    def install_hint(cls) -> str:
        return "pip install pillow"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return path.is_dir() or (path.is_file() and path.suffix.lower() in ANIMATED_SUFFIXES)

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        if stat.S_ISDIR(require_regular_file(path, backend=NAME, directory_ok=True).st_mode):
            return FrameDirectoryReader(path, options, deadline)
        return AnimatedImageReader(path, options, deadline)
