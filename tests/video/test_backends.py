"""Backend registry, fallback, missing-backend errors, lazy imports, and the torchcodec adapter."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import video
from video.backends import DecordBackend, PyAVBackend, TorchCodecBackend
from video.backends.base import Backend, OpenOptions, Reader
from video.limits import Deadline

from .media import decode_all


def test_builtin_backends_in_fallback_order() -> None:
    assert video.list_backends()[:4] == ["pyav", "decord", "torchcodec", "pil"]
    assert {"pyav", "pil"} <= set(video.list_backends(available_only=True))
    assert video.get_backend("pyav") is PyAVBackend


def test_register_backend_validation(registered) -> None:
    with pytest.raises(TypeError):
        video.register_backend("bad", object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        video.register_backend("pyav", PyAVBackend)
    with pytest.raises(ValueError):
        video.register_backend("auto", PyAVBackend)
    with pytest.raises(video.BackendUnavailableError, match="unknown video backend 'nope'"):
        video.load(__file__, video.Sampling(num_frames=1), backend="nope")

    class Alias(PyAVBackend):
        pass

    registered("first", Alias, position=0)
    assert video.list_backends()[0] == "first"


class _FailingBackend(Backend):
    name = "failing"
    reason = "decode"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        raise video.VideoError(path, "simulated decoder crash", reason=self.reason, backend=self.name)


class _FatalBackend(_FailingBackend):
    name = "fatal"
    reason = "too_large"


class _BuggyBackend(_FailingBackend):
    name = "buggy"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        raise RuntimeError("library exploded")


def test_auto_falls_back_to_the_next_backend(long_gop: Path, registered, caplog) -> None:
    registered("failing", _FailingBackend, position=0)
    with caplog.at_level(logging.WARNING, logger="video"):
        clip = video.load(long_gop, video.Sampling(num_frames=3))
    assert clip.backend == "pyav" and len(clip) == 3
    assert any(
        "failing failed" in r.getMessage() and "trying the next backend" in r.getMessage()
        for r in caplog.records
    )
    with pytest.raises(
        video.VideoError, match="simulated decoder crash"
    ):  # an explicit choice never falls back
        video.load(long_gop, video.Sampling(num_frames=3), backend="failing")


def test_non_retryable_errors_stop_the_fallback(long_gop: Path, registered) -> None:
    registered("fatal", _FatalBackend, position=0)
    with pytest.raises(video.VideoError) as info:
        video.load(long_gop, video.Sampling(num_frames=3))
    assert info.value.reason == "too_large" and info.value.backend == "fatal"


def test_library_exceptions_become_video_errors(long_gop: Path, registered) -> None:
    registered("buggy", _BuggyBackend, position=0)
    assert video.load(long_gop, video.Sampling(num_frames=2)).backend == "pyav"
    with pytest.raises(video.VideoError, match="RuntimeError: library exploded") as info:
        video.load(long_gop, video.Sampling(num_frames=2), backend="buggy")
    assert str(long_gop) in str(info.value) and isinstance(info.value.__cause__, RuntimeError)


# -- missing backends ----------------------------------------------------------------------------------
def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import <module>`` fail as if the package were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_torchcodec_names_the_extra(long_gop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "torchcodec", "torchcodec.decoders")
    assert not TorchCodecBackend.available()
    assert "torchcodec" not in video.list_backends(available_only=True)
    with pytest.raises(video.BackendUnavailableError) as info:
        video.load(long_gop, video.Sampling(num_frames=2), backend="torchcodec")
    message = str(info.value)
    assert 'pip install "onevision[torchcodec]"' in message and str(long_gop) in message
    assert info.value.reason == "backend_unavailable" and isinstance(info.value, ValueError)


def test_missing_decord_names_the_extra_and_auto_still_works(long_gop: Path, monkeypatch) -> None:
    _hide(monkeypatch, "decord")
    assert not DecordBackend.available()
    with pytest.raises(video.BackendUnavailableError, match=r'pip install "onevision\[decord\]"'):
        video.load(long_gop, video.Sampling(num_frames=2), backend="decord")
    assert video.load(long_gop, video.Sampling(num_frames=2)).backend == "pyav"


def test_no_usable_backend_lists_every_install_hint(long_gop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "av", "decord", "torchcodec", "torchcodec.decoders")
    with pytest.raises(video.BackendUnavailableError) as info:
        video.load(long_gop, video.Sampling(num_frames=2))
    message = str(info.value)
    assert "no usable video backend" in message
    for hint in ("pip install av", 'pip install "onevision[decord]"', 'pip install "onevision[torchcodec]"'):
        assert hint in message


def test_import_needs_no_decoder() -> None:
    code = (
        "import sys\n"
        "for name in ('decord', 'torchcodec', 'torchcodec.decoders'):\n"
        "    sys.modules[name] = None\n"
        "import video\n"
        "heavy = {'av', 'decord', 'torch', 'torchcodec', 'PIL', 'onevision', 'anyres'}\n"
        "loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
        "assert video.FramePooling().layout(8).num_tokens == 1569\n"
        "assert video.list_backends(available_only=True)[0] == 'pyav'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_video_never_imports_onevision_or_anyres() -> None:
    root = Path(video.__file__).parent
    for source in root.rglob("*.py"):
        text = source.read_text()
        for banned in ("import onevision", "from onevision", "import anyres", "from anyres"):
            assert banned not in text, f"{source} contains {banned!r}"


# -- torchcodec adapter against a stand-in module ------------------------------------------------------
def _fake_torchcodec(path_frames: dict[str, list[np.ndarray]], fps: float) -> types.ModuleType:
    """A stand-in with the slice of torchcodec's API the adapter uses (decoded by PyAV underneath)."""
    import torch

    class FrameBatch:
        def __init__(self, data: torch.Tensor, pts: torch.Tensor) -> None:
            self.data, self.pts_seconds = data, pts

    class Metadata:
        def __init__(self, frames: list[np.ndarray]) -> None:
            self.num_frames, self.average_fps = len(frames), fps
            self.height, self.width = frames[0].shape[:2]
            self.codec = "h264"

    class VideoDecoder:
        def __init__(
            self, source, *, dimension_order="NCHW", num_ffmpeg_threads=1, seek_mode="exact"
        ) -> None:
            assert dimension_order == "NHWC" and seek_mode == "exact"
            if source not in path_frames:
                raise RuntimeError("Could not open input file")
            self._frames = path_frames[source]
            self.metadata = Metadata(self._frames)

        def get_frames_at(self, indices):
            data = torch.from_numpy(np.stack([self._frames[i] for i in indices]))
            return FrameBatch(data, torch.tensor([i / fps for i in indices]))

    package = types.ModuleType("torchcodec")
    decoders = types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = VideoDecoder
    package.decoders = decoders
    return package


def test_torchcodec_adapter(long_gop: Path, garbage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_torchcodec({str(long_gop): decode_all(long_gop)}, 30.0)
    monkeypatch.setitem(sys.modules, "torchcodec", fake)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", fake.decoders)
    assert TorchCodecBackend.available()
    spec = video.Sampling(fps=2, max_frames=10)
    a = video.load(long_gop, spec, backend="torchcodec")
    b = video.load(long_gop, spec, backend="pyav")
    assert a.backend == "torchcodec"
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(a.timestamps, b.timestamps)
    with pytest.raises(video.VideoError, match="torchcodec cannot read this file") as info:
        video.load(garbage, spec, backend="torchcodec")
    assert info.value.backend == "torchcodec"
    with pytest.raises(video.VideoError, match="cannot list keyframes"):
        video.load(long_gop, video.Sampling(num_frames=2, mode="keyframes"), backend="torchcodec")
