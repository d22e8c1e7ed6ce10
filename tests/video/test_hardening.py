"""Issue #13 hardening: special files never reach a decoder, absurd headers are refused before anything is
allocated, decord cannot abort the process, and every backend turns frames upright the same way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import video
from video._mp4 import mp4_sample_table, read_moov
from video.backends.pyav import PyAVReader
from video.testing import write_counter_video

from .media import decode_all, decode_upright, patch_moov_box

ROOT = Path(__file__).resolve().parents[2]
FILE_BACKENDS = [name for name in video.list_backends(available_only=True) if name != "pil"]
MAX_DIFF = 2  # decoders may round the YUV -> RGB conversion differently


def _run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this checkout first on the path (a hang fails, never blocks)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


# -- 1. special files are refused before any open ------------------------------------------------------
_SPECIAL_SCRIPT = r"""
import json, sys
from pathlib import Path
import video
from video.backends import get_backend
from video.backends.base import OpenOptions
from video.backends.pyav import read_header
from video.limits import Deadline, Limits

path, directory = sys.argv[1], sys.argv[2] == "dir"
calls = {
    "probe:pyav": lambda: video.probe(path, backend="pyav"),
    "load:pyav": lambda: video.load(path, video.Sampling(num_frames=2), backend="pyav"),
    "keyframes:pyav": lambda: video.load(path, video.Sampling(num_frames=2, mode="keyframes"), backend="pyav"),
    "read_header": lambda: read_header(Path(path), Limits()),
}
for name in video.list_backends(available_only=True):
    if directory and name == "pil":
        continue  # a directory is a frame directory for PIL
    backend = get_backend(name)
    calls[f"open:{name}"] = lambda b=backend: b().open(Path(path), OpenOptions(), Deadline(None)).close()
    calls[f"backend.probe:{name}"] = lambda b=backend: b().probe(Path(path), OpenOptions(), Deadline(None))
if not directory:
    calls["probe:auto"] = lambda: video.probe(path)
    calls["load:auto"] = lambda: video.load(path, video.Sampling(num_frames=2))
out = {}
for key, call in calls.items():
    try:
        call()
        out[key] = "no error"
    except video.VideoError as exc:
        out[key] = [exc.reason, exc.cause]
    except Exception as exc:
        out[key] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


@pytest.fixture()
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    kind = request.param
    if kind == "fifo":
        path = tmp_path / "pipe.mp4"
        os.mkfifo(path)  # opening it would block until a writer comes: none ever does
        yield path, "FIFO"
    elif kind == "device":
        yield Path("/dev/zero"), "character device"
    elif kind == "directory":
        path = tmp_path / "clip.mp4"
        path.mkdir()
        yield path, "directory"
    else:  # a socket path must be short (108 bytes): not under pytest's tmp_path
        with tempfile.TemporaryDirectory(dir="/tmp") as short:
            path = Path(short) / "s.mp4"
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(path))
            try:
                yield path, "socket"
            finally:
                server.close()


@pytest.mark.parametrize("special", ["fifo", "device", "directory", "socket"], indirect=True)
def test_special_files_are_refused_by_every_entry_point(special: tuple[Path, str]) -> None:
    path, kind = special
    result = _run_python(_SPECIAL_SCRIPT, str(path), "dir" if kind == "directory" else "file", timeout=60)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert {f"open:{name}" for name in FILE_BACKENDS} <= set(outcomes)
    for key, outcome in outcomes.items():
        assert outcome != "no error" and outcome[0] == "not_a_file", (key, outcome)
        assert f"not a regular file (a {kind}" in outcome[1], (key, outcome)


def test_require_regular_file_does_not_open(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(video.VideoError, match=r"not a regular file \(a FIFO") as info:
        video.backends.base.require_regular_file(fifo, backend="decord")  # returns at once: stat only
    assert info.value.reason == "not_a_file" and info.value.backend == "decord"
    assert video.backends.base.require_regular_file(tmp_path, directory_ok=True).st_mode


# -- 2. absurd headers: typed errors before allocation ---------------------------------------------------
@pytest.fixture(scope="session")
def tiny_mp4(media_dir: Path) -> Path:
    return write_counter_video(media_dir / "tiny.mp4", num_frames=10, width=64, height=32)


@pytest.fixture(scope="session")
def billions_of_frames(media_dir: Path, tiny_mp4: Path) -> Path:
    """stts says 4294967280 samples of 512 ticks: FFmpeg reports that many frames (the file holds 10)."""
    return patch_moov_box(tiny_mp4, media_dir / "billions.mp4", b"stts", 8, ">I", 0xFFFFFFF0)


@pytest.fixture(scope="session")
def years_long(media_dir: Path, tiny_mp4: Path) -> Path:
    """stts says every sample lasts 2**31 ticks of 1/15360 s: the stream claims 16 days."""
    return patch_moov_box(tiny_mp4, media_dir / "years.mp4", b"stts", 12, ">I", 0x7FFFFFF0)


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "auto"])
def test_billions_of_declared_frames_are_too_large(billions_of_frames: Path, backend: str) -> None:
    with pytest.raises(video.VideoError, match=r"declares 4294967280 frames.*Limits\.max_frames") as info:
        video.probe(billions_of_frames, backend=backend)
    assert info.value.reason == "too_large"
    for spec in (video.Sampling(num_frames=4), video.Sampling(fps=1)):
        with pytest.raises(video.VideoError, match=r"Limits\.max_frames") as info:
            video.load(billions_of_frames, spec, backend=backend, allow_partial=True)
        assert info.value.reason == "too_large" and str(billions_of_frames) in str(info.value)


def test_a_raised_frame_limit_lets_a_small_file_through(tiny_mp4: Path) -> None:
    assert video.probe(tiny_mp4, limits=video.Limits(max_frames=10)).num_frames == 10
    with pytest.raises(video.VideoError, match=r"Limits\.max_frames=9") as info:
        video.probe(tiny_mp4, limits=video.Limits(max_frames=9))
    assert info.value.reason == "too_large"
    with pytest.raises(ValueError, match="max_frames"):
        video.Limits(max_frames=0)


@pytest.mark.parametrize("backend", [*FILE_BACKENDS, "auto"])
def test_a_duration_of_days_is_too_large(years_long: Path, backend: str) -> None:
    with pytest.raises(
        video.VideoError, match=r"duration 13981\d\d\.\d s exceeds Limits\.max_duration"
    ) as info:
        video.probe(years_long, backend=backend)
    assert info.value.reason == "too_large"
    with pytest.raises(video.VideoError, match=r"Limits\.max_duration") as info:
        video.load(years_long, video.Sampling(fps=1), backend=backend)
    assert info.value.reason == "too_large"


def test_pyav_checks_the_header_before_building_an_index(
    years_long: Path, billions_of_frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the packet index was built before the header was checked")

    monkeypatch.setattr(PyAVReader, "_sample_tables", never)
    monkeypatch.setattr(PyAVReader, "_demux_index", never)
    for path in (years_long, billions_of_frames):
        with pytest.raises(video.VideoError) as info:
            video.load(path, video.Sampling(num_frames=2), backend="pyav")
        assert info.value.reason == "too_large", str(info.value)
    with pytest.raises(video.VideoError) as info:  # frame size, from the decoder's own header parse
        video.load(
            years_long, video.Sampling(num_frames=2), backend="pyav", limits=video.Limits(max_pixels=64)
        )
    assert info.value.reason == "too_large" and "64x32" in info.value.cause


@pytest.mark.skipif("decord" not in FILE_BACKENDS, reason="decord is not installed")
def test_decord_never_sees_a_file_beyond_the_limits(tiny_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decord

    opened: list[str] = []
    real = decord.VideoReader

    def spy(path, *args, **kwargs):
        opened.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decord, "VideoReader", spy)
    with pytest.raises(video.VideoError) as info:
        video.load(
            tiny_mp4, video.Sampling(num_frames=2), backend="decord", limits=video.Limits(max_pixels=64)
        )
    assert info.value.reason == "too_large" and info.value.backend == "decord"
    assert opened == []
    assert len(video.load(tiny_mp4, video.Sampling(num_frames=2), backend="decord")) == 2 and opened


def test_sample_table_of_a_lying_stsz_allocates_nothing(media_dir: Path, tiny_mp4: Path) -> None:
    # constant sample size 100 and a count of 2**26 samples, in 20 bytes: the table would need ~2 GiB
    path = patch_moov_box(tiny_mp4, media_dir / "lying_stsz.mp4", b"stsz", 4, ">II", 100, 2**26)
    moov = read_moov(path)
    tracemalloc.start()
    try:
        assert mp4_sample_table(moov, 1, count=10) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert mp4_sample_table(read_moov(tiny_mp4), 1, count=10) is not None


# -- 3. no backend path can abort the process ------------------------------------------------------------
_HOSTILE_SCRIPT = r"""
import json, sys
import video
from video.backends.base import Backend
from video.errors import VideoError

mode, paths = sys.argv[1], sys.argv[2:]
if mode == "fallback":  # the first backend fails retryably on everything: auto falls back to decord
    class Failing(Backend):
        name = "pyav"
        def open(self, path, options, deadline):
            raise VideoError(path, "stand-in decoder failure", reason="decode", backend="pyav")
        probe = open
    video.register_backend("pyav", Failing, replace=True, position=0)
    assert video.list_backends()[:2] == ["pyav", "decord"]
backend = "decord" if mode == "explicit" else "auto"
out = []
for path in paths:
    for call in ("probe", "load"):
        try:
            if call == "probe":
                video.probe(path, backend=backend)
            else:
                video.load(path, video.Sampling(num_frames=4), backend=backend)
            out.append([path, call, "ok", ""])
        except VideoError as exc:
            last = exc.attempts[-1][1] if exc.attempts else exc
            out.append([path, call, last.reason, last.backend or ""])  # decord's verdict
        sys.stdout.flush()
print(json.dumps(out))
"""


@pytest.mark.skipif("decord" not in FILE_BACKENDS, reason="decord is not installed")
@pytest.mark.parametrize("mode", ["explicit", "fallback"])
def test_hostile_files_never_abort_the_process_with_decord(
    mode: str,
    billions_of_frames: Path,
    years_long: Path,
    garbage: Path,
    truncated_no_index: Path,
    audio_only: Path,
    tiny_mp4: Path,
) -> None:
    hostile = {
        billions_of_frames: "too_large",  # decord itself dies with std::bad_alloc on this one
        years_long: "too_large",
        garbage: "corrupt",
        truncated_no_index: "corrupt",
        audio_only: "no_video_stream",
    }
    paths = [*map(str, hostile), str(tiny_mp4)]
    result = _run_python(_HOSTILE_SCRIPT, mode, *paths, timeout=120)
    assert result.returncode == 0, f"exit code {result.returncode}: {result.stderr[-2000:]}"
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * len(paths)
    for path, call, reason, backend in rows:
        expected = hostile.get(Path(path), "ok")
        assert reason == expected, (path, call, reason)
        if expected != "ok":
            assert backend == "decord", (path, call, backend)


# -- 4. rotation: one rule for every backend -------------------------------------------------------------
@pytest.fixture(scope="session", params=[90, -90, 180])
def turned(request: pytest.FixtureRequest, media_dir: Path) -> tuple[Path, int]:
    degrees = request.param
    path = write_counter_video(
        media_dir / f"turned{degrees}.mp4", num_frames=6, width=64, height=32, rotation=degrees
    )
    return path, degrees


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_frames_are_upright_by_default_in_every_backend(turned: tuple[Path, int], backend: str) -> None:
    path, degrees = turned
    upright = decode_upright(path)  # FFmpeg's own transpose/flip filters
    spec = video.Sampling(num_frames=3)
    clip = video.load(path, spec, backend=backend)
    expected_hw = (64, 32) if degrees % 180 else (32, 64)
    assert clip.frames.shape == (3, *expected_hw, 3) and clip.rotation == degrees
    for frame, index in zip(clip.frames, clip.indices):
        assert np.abs(frame.astype(int) - upright[index]).max() <= MAX_DIFF
    assert clip.frames.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_rotation_keep_returns_stored_frames_in_every_backend(turned: tuple[Path, int], backend: str) -> None:
    path, degrees = turned
    stored = decode_all(path)
    clip = video.load(path, video.Sampling(num_frames=3), backend=backend, rotation="keep")
    assert clip.frames.shape == (3, 32, 64, 3) and clip.rotation == degrees
    for frame, index in zip(clip.frames, clip.indices):
        assert np.abs(frame.astype(int) - stored[index]).max() <= MAX_DIFF
    assert video.probe(path, backend=backend).rotation == degrees


def test_backends_agree_on_rotated_frames(turned: tuple[Path, int]) -> None:
    path, _ = turned
    spec = video.Sampling(num_frames=4, mode="keyframes")
    clips = [video.load(path, spec, backend=name) for name in FILE_BACKENDS]
    for clip in clips[1:]:
        np.testing.assert_array_equal(clip.indices, clips[0].indices)
        assert clip.frames.shape == clips[0].frames.shape
        assert np.abs(clip.frames.astype(int) - clips[0].frames).max() <= MAX_DIFF


def test_rotation_option_is_checked_and_odd_angles_are_reported(media_dir: Path, rotated: Path) -> None:
    with pytest.raises(ValueError, match="rotation must be one of"):
        video.load(rotated, video.Sampling(num_frames=2), rotation="upright")
    path = write_counter_video(media_dir / "turned45.mp4", num_frames=4, width=64, height=32, rotation=45)
    clip = video.load(path, video.Sampling(num_frames=2), backend="pyav")
    assert clip.frames.shape[1:3] == (32, 64) and clip.rotation == 45
    assert any("45 degrees is not a multiple of 90" in w for w in clip.warnings)


@pytest.mark.parametrize("rotates_itself", [False, True])
def test_torchcodec_frames_follow_the_same_rotation_rule(
    rotated: Path, rotates_itself: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_backends import _fake_torchcodec

    frames = decode_upright(rotated) if rotates_itself else decode_all(rotated)
    fake = _fake_torchcodec({str(rotated): frames}, 30.0)
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake.decoders)
    spec = video.Sampling(num_frames=3)
    for mode in ("apply", "keep"):
        a = video.load(rotated, spec, backend="torchcodec", rotation=mode)
        b = video.load(rotated, spec, backend="pyav", rotation=mode)
        assert a.rotation == b.rotation == 90
        np.testing.assert_array_equal(a.frames, b.frames)


def test_frame_limits_cover_animated_images_and_frame_directories(gif: Path, frame_dir: Path) -> None:
    for path in (gif, frame_dir):
        with pytest.raises(video.VideoError, match=r"Limits\.max_frames=3") as info:
            video.load(path, video.Sampling(num_frames=2), backend="pil", limits=video.Limits(max_frames=3))
        assert info.value.reason == "too_large" and info.value.backend == "pil"
