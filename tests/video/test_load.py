"""Loading: frame exactness with seeking and skipping, timestamps, GIFs, frame directories, keyframes, probe."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import video
from video.backends.base import OpenOptions
from video.backends.pyav import PyAVBackend, PyAVReader
from video.limits import Deadline
from video.sampling import snap_to_keyframes
from video.testing import read_counter

from .media import GIF_DURATIONS_MS, LONG_FRAMES, LONG_GOP, VFR_PTS_MS, decode_all, keyframe_indices


def _open_pyav(path: Path) -> PyAVReader:
    reader = PyAVBackend().open(path, OpenOptions(), Deadline(None))
    assert isinstance(reader, PyAVReader)
    return reader


class _Counting:
    """Spy on PyAVReader._decode: packets sent, decoder drains, frames received and seeks, for one read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = self.received = self.seeks = self.drains = 0
        decode, seek = PyAVReader._decode, PyAVReader._seek

        def counting_decode(reader, stream, packet):
            frames = decode(reader, stream, packet)
            self.sent += packet is not None
            self.drains += packet is None
            self.received += len(frames)
            return frames

        def counting_seek(reader, container, stream, key_position):
            self.seeks += key_position > 0  # position 0 = rewinding the indexing container
            return seek(reader, container, stream, key_position)

        monkeypatch.setattr(PyAVReader, "_decode", counting_decode)
        monkeypatch.setattr(PyAVReader, "_seek", counting_seek)


# -- frame exactness -----------------------------------------------------------------------------------
def test_long_gop_clip_really_has_b_frames_and_long_gops(
    long_gop: Path, long_gop_frames: list[np.ndarray]
) -> None:
    import av

    with av.open(str(long_gop)) as container:
        types = {int(frame.pict_type) for frame in container.decode(video=0)}
    assert {1, 2, 3} <= types  # AV_PICTURE_TYPE_I, _P, _B
    assert keyframe_indices(long_gop) == list(range(0, LONG_FRAMES, LONG_GOP))
    assert [read_counter(f) for f in long_gop_frames] == list(range(LONG_FRAMES))


@pytest.mark.parametrize(
    "sampling",
    [
        video.Sampling(num_frames=8),
        video.Sampling(num_frames=32),
        video.Sampling(num_frames=5, uniform="arange"),
        video.Sampling(fps=1),
        video.Sampling(fps=2, max_frames=16),
        video.Sampling(fps=1, max_frames=7, force_sample=True, start=2.5, end=9.0),
    ],
    ids=repr,
)
def test_sampled_frames_equal_decode_all_pixel_for_pixel(
    long_gop: Path, long_gop_frames: list[np.ndarray], sampling: video.Sampling
) -> None:
    clip = video.load(long_gop, sampling, backend="pyav")
    expected = sampling.indices(LONG_FRAMES, 30.0)
    np.testing.assert_array_equal(clip.indices, expected)
    assert clip.frames.shape == (len(expected), 96, 192, 3) and clip.frames.dtype == np.uint8
    for frame, index in zip(clip.frames, clip.indices):
        assert read_counter(frame) == index
        np.testing.assert_array_equal(frame, long_gop_frames[index])
    assert clip.missing == () and clip.backend == "pyav"


@pytest.mark.parametrize("seed", range(4))
def test_random_index_sets_with_seeks_are_exact(
    long_gop: Path, long_gop_frames: list[np.ndarray], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # sparse sets force seeks; include GOP boundaries (last frame of a GOP, first of the next)
    picks = rng.choice(LONG_FRAMES, size=int(rng.integers(1, 12)), replace=False)
    indices = np.unique(np.concatenate([picks, [LONG_GOP - 1, LONG_GOP, 2 * LONG_GOP + 1, LONG_FRAMES - 1]]))
    with _open_pyav(long_gop) as reader:
        frames = reader.read(indices, Deadline(None))
    assert sorted(frames) == indices.tolist()
    for index, frame in frames.items():
        np.testing.assert_array_equal(frame, long_gop_frames[index])


def test_decodes_only_what_targets_need(
    long_gop: Path, long_gop_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Counting(monkeypatch)
    targets = np.array([5, LONG_GOP + 40, 3 * LONG_GOP + 10])  # one frame in GOPs 0, 1 and 3
    with _open_pyav(long_gop) as reader:
        frames = reader.read(targets, Deadline(None))
    for index in targets:
        np.testing.assert_array_equal(frames[int(index)], long_gop_frames[int(index)])
    # seeks to GOP 1 and GOP 3: GOP 2 and the tails of the GOPs are never sent to the decoder
    assert spy.seeks == 2
    assert spy.sent < 5 + 40 + 10 + 3 * 8  # keyframe-to-target packets plus the reorder delay
    # unrequested non-reference B-frames are skipped (sent, but never produced a frame)
    assert spy.received < spy.sent


def test_dense_read_skips_non_reference_frames_but_stays_exact(
    long_gop: Path, long_gop_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Counting(monkeypatch)
    targets = np.arange(3, LONG_FRAMES, 7)
    with _open_pyav(long_gop) as reader:
        frames = reader.read(targets, Deadline(None))
    assert sorted(frames) == targets.tolist()
    for index, frame in frames.items():
        np.testing.assert_array_equal(frame, long_gop_frames[index])
    assert spy.seeks == 0  # every GOP holds a target: no seek saves work
    assert spy.received < 0.75 * spy.sent


def test_hevc_open_gop_is_exact(hevc_clip: Path) -> None:
    reference = decode_all(hevc_clip)
    n = len(reference)
    keys = keyframe_indices(hevc_clip)
    around = {k + d for k in keys for d in (-3, -2, -1, 0, 1)} | {n - 1}
    indices = np.array(sorted(i for i in around if 0 <= i < n))
    with _open_pyav(hevc_clip) as reader:
        assert reader.num_frames == n
        frames = reader.read(indices, Deadline(None))
    assert sorted(frames) == indices.tolist()
    for index, frame in frames.items():
        assert read_counter(frame) == index
        np.testing.assert_array_equal(frame, reference[index])


def test_open_gop_h264_is_exact(open_gop: Path) -> None:
    reference = decode_all(open_gop)
    keys = keyframe_indices(open_gop)
    assert keys == list(range(0, 150, 30))
    around = {k + d for k in keys for d in (-3, -1, 0, 1, 2)} | {len(reference) - 1}
    indices = np.array(sorted(i for i in around if 0 <= i < len(reference)))
    with _open_pyav(open_gop) as reader:
        frames = reader.read(indices, Deadline(None))
    assert sorted(frames) == indices.tolist()
    for index, frame in frames.items():
        assert read_counter(frame) == index
        np.testing.assert_array_equal(frame, reference[index])


def test_duplicate_indices_are_returned_in_request_order(ntsc: Path) -> None:
    clip = video.load(ntsc, video.Sampling(num_frames=90))  # more frames than the video has
    np.testing.assert_array_equal(clip.indices, np.linspace(0, 44, 90, dtype=int))
    assert [read_counter(f) for f in clip.frames] == clip.indices.tolist()


def test_decord_and_pyav_return_the_same_frames(long_gop: Path) -> None:
    spec = video.Sampling(num_frames=16)
    a = video.load(long_gop, spec, backend="pyav")
    b = video.load(long_gop, spec, backend="decord")
    assert b.backend == "decord"
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.timestamps, b.timestamps)
    assert [read_counter(f) for f in b.frames] == b.indices.tolist()
    diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 16  # same FFmpeg decoder family; colour conversion may differ


# -- timestamps ----------------------------------------------------------------------------------------
def test_fractional_fps_timestamps_are_index_over_fps(ntsc: Path) -> None:
    clip = video.load(ntsc, video.Sampling(num_frames=7))
    assert clip.fps == pytest.approx(30000 / 1001, rel=1e-12)
    np.testing.assert_allclose(clip.timestamps, clip.indices * 1001 / 30000, rtol=0, atol=1e-12)
    assert clip.duration == pytest.approx(45 * 1001 / 30000, abs=1e-12)
    assert clip.timestamps[-1] == pytest.approx(44 * 1001 / 30000, abs=1e-12)  # not 44/30


def test_fps_sampling_uses_round_of_avg_fps(ntsc: Path) -> None:
    clip = video.load(ntsc, video.Sampling(fps=10))  # round(29.97 / 10) = 3
    np.testing.assert_array_equal(clip.indices, np.arange(0, 45, 3))


def test_vfr_timestamps_come_from_presentation_timestamps(vfr: Path) -> None:
    clip = video.load(vfr, video.Sampling(num_frames=len(VFR_PTS_MS)))
    np.testing.assert_array_equal(clip.indices, np.arange(len(VFR_PTS_MS)))
    np.testing.assert_allclose(clip.timestamps, np.array(VFR_PTS_MS) / 1000, atol=1e-9)
    assert [read_counter(f) for f in clip.frames] == list(range(len(VFR_PTS_MS)))
    assert VFR_PTS_MS[-1] / 1000 < clip.duration <= VFR_PTS_MS[-1] / 1000 + 0.25


def test_vfr_start_end_use_real_timestamps(vfr: Path) -> None:
    clip = video.load(vfr, video.Sampling(num_frames=3, start=0.2, end=0.7))
    # frames at 0.2, 0.23, 0.4, 0.41, 0.6 s are in [0.2, 0.7): indices 3..7
    np.testing.assert_array_equal(clip.indices, [3, 5, 7])
    np.testing.assert_allclose(clip.timestamps, [0.2, 0.4, 0.6])


def test_vfr_decord_agrees(vfr: Path) -> None:
    spec = video.Sampling(num_frames=6)
    a, b = video.load(vfr, spec, backend="pyav"), video.load(vfr, spec, backend="decord")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-4)


# -- GIF and frame directories -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["pyav", "pil", "auto"])
def test_gif_frames_and_durations(gif: Path, backend: str) -> None:
    clip = video.load(gif, video.Sampling(num_frames=len(GIF_DURATIONS_MS)), backend=backend)
    assert clip.backend == ("pyav" if backend == "auto" else backend)
    assert [read_counter(f) for f in clip.frames] == list(range(len(GIF_DURATIONS_MS)))
    starts = np.concatenate([[0], np.cumsum(GIF_DURATIONS_MS)[:-1]]) / 1000
    np.testing.assert_allclose(clip.timestamps, starts, atol=1e-9)
    assert clip.duration == pytest.approx(sum(GIF_DURATIONS_MS) / 1000)


def test_gif_backends_agree_on_pixels(gif: Path) -> None:
    spec = video.Sampling(num_frames=3)
    a, b = video.load(gif, spec, backend="pyav"), video.load(gif, spec, backend="pil")
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 2


def test_frame_directory_natural_order_and_dir_fps(frame_dir: Path) -> None:
    clip = video.load(frame_dir, video.Sampling(num_frames=4), dir_fps=2.0)
    assert clip.backend == "pil"
    np.testing.assert_array_equal(clip.indices, [0, 3, 7, 11])
    assert [read_counter(f) for f in clip.frames] == [0, 3, 7, 11]  # 10.png sorts after 9.png
    np.testing.assert_allclose(clip.timestamps, [0, 1.5, 3.5, 5.5])
    assert clip.duration == 6.0 and clip.total_frames == 12


def test_frame_directory_fps_sampling(frame_dir: Path) -> None:
    clip = video.load(frame_dir, video.Sampling(fps=1), dir_fps=2.0)  # step = round(2 / 1) = 2
    np.testing.assert_array_equal(clip.indices, np.arange(0, 12, 2))


# -- keyframes mode ------------------------------------------------------------------------------------
def test_keyframes_mode_returns_nearest_keyframes(long_gop: Path, long_gop_frames: list[np.ndarray]) -> None:
    spec = video.Sampling(num_frames=6, mode="keyframes")
    clip = video.load(long_gop, spec)
    keys = keyframe_indices(long_gop)
    exact = np.linspace(0, LONG_FRAMES - 1, 6, dtype=int)
    nearest = [min(keys, key=lambda k, i=i: (abs(k - i), k)) for i in exact]
    np.testing.assert_array_equal(clip.indices, nearest)
    assert set(clip.indices.tolist()) <= set(keys)
    for frame, index in zip(clip.frames, clip.indices):
        np.testing.assert_array_equal(frame, long_gop_frames[index])
    np.testing.assert_allclose(clip.timestamps, clip.indices / 30.0)
    assert any("distinct keyframes" in w for w in clip.warnings)  # 6 requests, 4 keyframes


def test_keyframes_mode_decodes_only_keyframe_packets(
    long_gop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Counting(monkeypatch)
    clip = video.load(long_gop, video.Sampling(num_frames=4, mode="keyframes"), backend="pyav")
    np.testing.assert_array_equal(clip.indices, [0, 90, 270, 270])  # linspace 0,119,239,359 snapped
    assert spy.sent == 3  # one packet per distinct keyframe ...
    assert spy.drains == 1  # ... sent back to back (frame threads overlap them), drained once at the end
    assert spy.seeks == 2


@pytest.mark.parametrize("num_frames", [3, 8, 16, 40])
@pytest.mark.parametrize("clip_name", ["long_gop", "hevc_clip", "open_gop"])
def test_keyframes_mode_returns_exactly_the_keyframe_frames(
    clip_name: str, num_frames: int, request: pytest.FixtureRequest
) -> None:
    """Pixel for pixel equal to a decode-everything pass at the snapped indices, with their timestamps."""
    path = request.getfixturevalue(clip_name)
    reference = decode_all(path)
    keys = keyframe_indices(path)
    clip = video.load(path, video.Sampling(num_frames=num_frames, mode="keyframes"), backend="pyav")
    expected = snap_to_keyframes(np.linspace(0, len(reference) - 1, num_frames, dtype=int), keys)
    np.testing.assert_array_equal(clip.indices, expected)
    assert clip.frames.shape[0] == num_frames and clip.missing == ()
    for frame, index in zip(clip.frames, clip.indices):
        assert read_counter(frame) == index
        np.testing.assert_array_equal(frame, reference[index])
    np.testing.assert_allclose(clip.timestamps, clip.indices / 30.0)


def test_exact_requests_on_keyframes_decode_only_those_packets(
    long_gop: Path, long_gop_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Counting(monkeypatch)
    targets = np.arange(0, LONG_FRAMES, LONG_GOP)  # every keyframe
    with _open_pyav(long_gop) as reader:
        frames = reader.read(targets, Deadline(None))
    assert sorted(frames) == targets.tolist()
    for index, frame in frames.items():
        np.testing.assert_array_equal(frame, long_gop_frames[index])
    assert (spy.sent, spy.drains, spy.seeks) == (len(targets), 1, len(targets) - 1)


def test_keyframes_that_are_not_intra_coded_are_decoded_the_normal_way(
    long_gop: Path, long_gop_frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-to-back decoding is only trusted for intra pictures; anything else is re-read from its keyframe."""
    import video.backends.pyav as pyav_backend

    monkeypatch.setattr(pyav_backend, "_is_intra", lambda frame: False)
    spy = _Counting(monkeypatch)
    clip = video.load(long_gop, video.Sampling(num_frames=4, mode="keyframes"), backend="pyav")
    np.testing.assert_array_equal(clip.indices, [0, 90, 270, 270])
    for frame, index in zip(clip.frames, clip.indices):
        np.testing.assert_array_equal(frame, long_gop_frames[index])
    assert spy.sent == 6  # three back to back (rejected), then each again on its own


def test_keyframes_mode_with_decord(long_gop: Path) -> None:
    clip = video.load(long_gop, video.Sampling(num_frames=4, mode="keyframes"), backend="decord")
    np.testing.assert_array_equal(clip.indices, [0, 90, 270, 270])  # linspace 0,119,239,359 snapped


# -- probe ---------------------------------------------------------------------------------------------
def test_probe_metadata(long_gop: Path, ntsc: Path, rotated: Path, gif: Path, frame_dir: Path) -> None:
    info = video.probe(long_gop)
    assert (info.num_frames, info.fps, info.duration) == (LONG_FRAMES, 30.0, 12.0)
    assert (info.width, info.height, info.rotation, info.codec) == (192, 96, 0, "h264")
    assert info.size == (LONG_FRAMES, 96, 192) and "mp4" in info.container
    ntsc_info = video.probe(ntsc)
    assert ntsc_info.fps == pytest.approx(30000 / 1001) and ntsc_info.duration == pytest.approx(
        45 * 1001 / 30000
    )
    assert video.probe(rotated).rotation == 90
    gif_info = video.probe(gif)
    assert (gif_info.num_frames, gif_info.codec, gif_info.duration) == (6, "gif", pytest.approx(0.57))
    dir_info = video.probe(frame_dir)
    assert (dir_info.num_frames, dir_info.width, dir_info.height, dir_info.codec) == (12, 64, 32, "png")


def test_probe_rotation_matches_decoded_frame_rotation(rotated: Path) -> None:
    import av

    with av.open(str(rotated)) as container:
        decoded = next(container.decode(video=0)).rotation
    assert video.probe(rotated).rotation == decoded == 90
    assert video.load(rotated, video.Sampling(num_frames=2)).rotation == 90


def test_probe_reads_the_header_without_decoding(truncated_faststart: tuple[Path, int]) -> None:
    path, declared = truncated_faststart
    info = video.probe(path)  # the frames are gone, the header is intact: probe only reads the header
    assert info.num_frames == declared and info.fps == 30.0


def test_probe_and_load_agree_with_reader_metadata(long_gop: Path) -> None:
    clip = video.load(long_gop, video.Sampling(num_frames=2))
    info = video.probe(long_gop)
    assert (clip.total_frames, clip.fps, clip.duration) == (info.num_frames, info.fps, info.duration)
    assert clip.shape == (2, info.height, info.width)


def test_fraction_fps_is_exact_in_reader(ntsc: Path) -> None:
    with _open_pyav(ntsc) as reader:
        assert reader.fps == Fraction(30000, 1001) and reader.cfr
