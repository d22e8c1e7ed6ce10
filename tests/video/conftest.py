"""Media fixtures for the video tests, generated once per session with PyAV (no binary fixtures in git)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from video.testing import (
    write_audio_only,
    write_counter_gif,
    write_counter_video,
    write_frame_directory,
)

from .media import GIF_DURATIONS_MS, LONG_FRAMES, LONG_GOP, VFR_PTS_MS, decode_all


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video-media")


@pytest.fixture(scope="session")
def long_gop(media_dir: Path) -> Path:
    """H.264, 12 s at 30 fps, keyframe every 90 frames, 3 B-frames (b-pyramid: reference and non-reference B)."""
    return write_counter_video(
        media_dir / "long_gop.mp4", num_frames=LONG_FRAMES, width=192, height=96, gop=LONG_GOP, bframes=3
    )


@pytest.fixture(scope="session")
def open_gop(media_dir: Path) -> Path:
    """H.264 with open GOPs: keyframes after the first are non-IDR I-frames (recovery point), 3 B-frames."""
    return write_counter_video(
        media_dir / "open_gop.mp4",
        num_frames=150,
        width=192,
        height=96,
        options={"x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=3:open-gop=1"},
    )


@pytest.fixture(scope="session")
def hevc_clip(media_dir: Path) -> Path:
    return write_counter_video(
        media_dir / "hevc.mp4", num_frames=120, width=192, height=96, codec="libx265", gop=40, bframes=3
    )


@pytest.fixture(scope="session")
def ntsc(media_dir: Path) -> Path:
    """29.97 fps (30000/1001), 45 frames."""
    return write_counter_video(media_dir / "ntsc.mp4", num_frames=45, fps=Fraction(30000, 1001), bframes=2)


@pytest.fixture(scope="session")
def vfr(media_dir: Path) -> Path:
    """Variable frame rate: explicit millisecond timestamps."""
    return write_counter_video(
        media_dir / "vfr.mp4",
        num_frames=len(VFR_PTS_MS),
        fps=25,
        pts=VFR_PTS_MS,
        time_base=Fraction(1, 1000),
        bframes=2,
    )


@pytest.fixture(scope="session")
def rotated(media_dir: Path) -> Path:
    return write_counter_video(media_dir / "rotated.mp4", num_frames=6, rotation=90)


@pytest.fixture(scope="session")
def gif(media_dir: Path) -> Path:
    return write_counter_gif(media_dir / "anim.gif", GIF_DURATIONS_MS)


@pytest.fixture(scope="session")
def frame_dir(media_dir: Path) -> Path:
    directory = write_frame_directory(media_dir / "frames", 12)  # 0.png .. 11.png: natural order matters
    (directory / "notes.txt").write_text("not a frame")
    return directory


@pytest.fixture(scope="session")
def audio_only(media_dir: Path) -> Path:
    return write_audio_only(media_dir / "audio.m4a")


@pytest.fixture(scope="session")
def zero_frames(media_dir: Path) -> Path:
    """An AVI whose video stream has no frames."""
    path = media_dir / "zero_frames.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        container.start_encoding()
    return path


@pytest.fixture(scope="session")
def zero_bytes(media_dir: Path) -> Path:
    path = media_dir / "zero_bytes.mp4"
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def garbage(media_dir: Path) -> Path:
    path = media_dir / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(scope="session")
def truncated_no_index(media_dir: Path, long_gop: Path) -> Path:
    """The long-GOP MP4 (index at the end) cut in half: the index is gone."""
    path = media_dir / "truncated_no_index.mp4"
    data = long_gop.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def truncated_faststart(media_dir: Path) -> tuple[Path, int]:
    """A fast-start MP4 (index first) cut at 60 %: the index declares frames the file no longer holds."""
    full = write_counter_video(
        media_dir / "faststart.mp4",
        num_frames=60,
        gop=20,
        bframes=2,
        container_options={"movflags": "faststart"},
    )
    path = media_dir / "truncated_faststart.mp4"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path, 60


@pytest.fixture(scope="session")
def unknown_codec(media_dir: Path) -> Path:
    """An AVI whose codec FourCC was overwritten with one no decoder knows."""
    source = write_counter_video(media_dir / "mpeg4.avi", num_frames=5, codec="mpeg4")
    data = source.read_bytes()
    assert data.count(b"FMP4") >= 2
    path = media_dir / "unknown_codec.avi"
    path.write_bytes(data.replace(b"FMP4", b"QQZ9"))
    return path


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.mp4"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="session")
def long_gop_frames(long_gop: Path) -> list[np.ndarray]:
    return decode_all(long_gop)


@pytest.fixture()
def registered():
    """``registered(name, cls, **kw)`` registers a backend for one test and removes it afterwards."""
    import video

    names: list[str] = []

    def register(name: str, cls, **kwargs) -> None:
        video.register_backend(name, cls, **kwargs)
        names.append(name)

    yield register
    for name in names:
        video.unregister_backend(name)
