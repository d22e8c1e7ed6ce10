"""Bad input: every case raises VideoError naming the file and the cause, quickly; partial results are explicit."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

import video
from video.backends.base import Backend, OpenOptions, Reader
from video.limits import Deadline
from video.testing import read_counter


def _expect(path: Path, reason: str, **kwargs) -> video.VideoError:
    with pytest.raises(video.VideoError) as info:
        video.load(path, video.Sampling(num_frames=4), **kwargs)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.reason == reason, str(error)
    assert str(path) in str(error) and error.path == str(path)
    return error


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.mp4", "not_found")
    with pytest.raises(video.VideoError, match=r"nope\.mp4"):
        video.probe(tmp_path / "nope.mp4")


def test_zero_byte_file(zero_bytes: Path) -> None:
    _expect(zero_bytes, "empty")


def test_zero_frame_video(zero_frames: Path) -> None:
    error = _expect(zero_frames, "empty")
    assert "0 frames" in error.cause
    with pytest.raises(video.VideoError, match="0 frames"):
        video.probe(zero_frames)


def test_empty_frame_directory(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    _expect(tmp_path, "empty")


def test_garbage_bytes_try_every_backend(garbage: Path) -> None:
    error = _expect(garbage, "corrupt")
    assert [name for name, _ in error.attempts] == ["pyav", "decord"]
    assert all(isinstance(e, video.VideoError) for _, e in error.attempts)


def test_truncated_file_without_index(truncated_no_index: Path) -> None:
    error = _expect(truncated_no_index, "corrupt", backend="pyav")
    assert "cannot open container" in error.cause


def test_truncated_file_with_index_raises_by_default(truncated_faststart: tuple[Path, int]) -> None:
    path, declared = truncated_faststart
    error = _expect(path, "truncated")
    assert f"declares {declared} frames" in error.cause
    assert error.attempts == ()  # not retried: another decoder cannot recover missing data


def test_truncated_file_allow_partial_reports_missing(
    truncated_faststart: tuple[Path, int], caplog: pytest.LogCaptureFixture
) -> None:
    path, declared = truncated_faststart
    spec = video.Sampling(num_frames=10)
    with caplog.at_level(logging.WARNING, logger="video"):
        clip = video.load(path, spec, allow_partial=True)
    requested = spec.indices(declared, 30.0)
    assert clip.total_frames == declared
    assert clip.missing and set(clip.missing) | set(clip.indices.tolist()) == set(requested.tolist())
    assert len(clip) + len(clip.missing) == len(requested)  # fewer frames than asked, and it says so
    assert [read_counter(f) for f in clip.frames] == clip.indices.tolist()
    assert any("could not be decoded" in w for w in clip.warnings)
    assert any(
        str(path) in r.getMessage() and "could not be decoded" in r.getMessage() for r in caplog.records
    )


def test_audio_only_file(audio_only: Path) -> None:
    error = _expect(audio_only, "no_video_stream")
    assert "audio" in error.cause
    assert error.attempts == ()


def test_unsupported_codec(unknown_codec: Path) -> None:
    error = _expect(unknown_codec, "unsupported_codec")
    assert "decoder" in error.cause
    assert [name for name, _ in error.attempts] == ["pyav", "decord"]  # retried with the next backend


def test_fifo_is_rejected_without_blocking(fifo: Path) -> None:
    start = time.monotonic()
    _expect(fifo, "not_a_file")
    assert time.monotonic() - start < 1.0


def test_limits_max_pixels(long_gop: Path) -> None:
    error = _expect(long_gop, "too_large", limits=video.Limits(max_pixels=100 * 100))
    assert "192x96" in error.cause and "max_pixels" in error.cause


def test_limits_max_duration(long_gop: Path) -> None:
    error = _expect(long_gop, "too_large", limits=video.Limits(max_duration=5))
    assert "12.0 s" in error.cause


def test_limits_max_output_bytes(long_gop: Path) -> None:
    with pytest.raises(video.VideoError, match="max_output_bytes") as info:
        video.load(long_gop, video.Sampling(fps=30), limits=video.Limits(max_output_bytes=10 * 2**20))
    assert info.value.reason == "too_large"


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        video.Limits(max_pixels=0)
    with pytest.raises(ValueError):
        video.Limits(timeout=-1)
    assert video.Limits.from_dict(video.Limits(timeout=3).to_dict()) == video.Limits(timeout=3)


def test_empty_range(long_gop: Path) -> None:
    with pytest.raises(video.VideoError) as info:
        video.load(long_gop, video.Sampling(num_frames=4, start=100.0))
    assert info.value.reason == "empty_range" and str(long_gop) in str(info.value)


def test_timeout_during_real_decoding(long_gop: Path) -> None:
    limits = video.Limits(timeout=1e-4)
    start = time.monotonic()
    with pytest.raises(video.VideoError) as info:
        video.load(long_gop, video.Sampling(num_frames=64), limits=limits)
    assert info.value.reason == "timeout" and str(long_gop) in str(info.value)
    assert time.monotonic() - start < 2.0


class _HangingReader(Reader):
    backend = "hanging"

    def __init__(self, path: Path) -> None:
        self.path, self.warnings = path, []
        self.num_frames, self.fps, self.width, self.height, self.codec = 10, 10, 8, 8, "fake"

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        time.sleep(3)  # a decoder stuck in C code: never checks the deadline
        return {}


class _HangingBackend(Backend):
    name = "hanging"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        return _HangingReader(path)


def test_a_hanging_backend_cannot_hang_the_caller(long_gop: Path, registered) -> None:
    registered("hanging", _HangingBackend)
    start = time.monotonic()
    with pytest.raises(video.VideoError) as info:
        video.load(
            long_gop, video.Sampling(num_frames=2), backend="hanging", limits=video.Limits(timeout=0.3)
        )
    assert info.value.reason == "timeout"
    assert time.monotonic() - start < 1.5


class _ShortReader(_HangingReader):
    """Decodes only the even frames."""

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        return {int(i): np.zeros((8, 8, 3), np.uint8) for i in indices if i % 2 == 0}


class _ShortBackend(_HangingBackend):
    name = "short"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        return _ShortReader(path)


def test_missing_frames_raise_unless_allow_partial(long_gop: Path, registered, caplog) -> None:
    registered("short", _ShortBackend)
    spec = video.Sampling(num_frames=4)  # indices 0, 3, 6, 9
    with pytest.raises(video.VideoError) as info:
        video.load(long_gop, spec, backend="short")
    assert info.value.reason == "missing_frames" and "2 of 4" in info.value.cause
    with caplog.at_level(logging.WARNING, logger="video"):
        clip = video.load(long_gop, spec, backend="short", allow_partial=True)
    assert clip.indices.tolist() == [0, 6] and clip.missing == (3, 9) and len(clip.frames) == 2
    assert any("2 of 4" in r.getMessage() for r in caplog.records)


def test_video_error_pickles() -> None:
    error = video.VideoError("/data/x.mp4", "boom", reason="corrupt", backend="pyav")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.cause, clone.reason, clone.backend, str(clone)) == (
        error.path,
        error.cause,
        error.reason,
        error.backend,
        str(error),
    )
    unavailable = pickle.loads(pickle.dumps(video.BackendUnavailableError(None, "gone", backend="decord")))
    assert (
        isinstance(unavailable, video.BackendUnavailableError) and unavailable.reason == "backend_unavailable"
    )


def test_video_error_rejects_unknown_reasons() -> None:
    with pytest.raises(ValueError, match="unknown VideoError reason"):
        video.VideoError("x", "y", reason="bogus")
    assert set(video.REASONS) >= {"not_found", "empty", "corrupt", "timeout", "too_large"}
