"""The PyAV backend's packet index: built from the MP4 sample tables, it must equal the demuxed one exactly."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import video
from video._mp4 import mp4_sample_table, read_moov
from video.backends.base import OpenOptions
from video.backends.pyav import PyAVBackend, PyAVReader
from video.limits import Deadline
from video.testing import read_counter, write_counter_video

from .media import decode_all

INDEX_ATTRIBUTES = (
    "_pts",
    "_keyframe",
    "_indexed",
    "_dpos",
    "_key_positions",
    "num_frames",
    "declared_frames",
    "fps",
    "cfr",
    "duration",
)


def _open(path: Path) -> PyAVReader:
    reader = PyAVBackend().open(path, OpenOptions(), Deadline(None))
    assert isinstance(reader, PyAVReader)
    return reader


def _open_demuxing(path: Path, monkeypatch: pytest.MonkeyPatch) -> PyAVReader:
    with monkeypatch.context() as patch:
        patch.setattr(PyAVReader, "_sample_tables", lambda self, stream, moov: None)
        return _open(path)


def _assert_same_index(a: PyAVReader, b: PyAVReader) -> None:
    for name in INDEX_ATTRIBUTES:
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.timestamps(), b.timestamps())
    np.testing.assert_array_equal(a.keyframes(), b.keyframes())


@pytest.fixture(scope="session")
def trimmed(media_dir: Path, long_gop: Path) -> Path:
    """The long-GOP clip remuxed 5 frames early: an edit list hides them (``discard`` packets)."""
    path = media_dir / "trimmed.mp4"
    with av.open(str(long_gop)) as source, av.open(str(path), "w") as out:
        video_in = source.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        shift = 5 * round(1 / (30 * video_in.time_base))
        for packet in source.demux(video_in):
            if packet.size:
                packet.pts -= shift
                packet.dts -= shift
                packet.stream = video_out
                out.mux(packet)
    return path


@pytest.fixture(scope="session")
def with_audio(media_dir: Path, long_gop: Path) -> Path:
    """The long-GOP clip remuxed with an interleaved AAC track: chunks of 1 and 2 video samples."""
    path = media_dir / "with_audio.mp4"
    with av.open(str(long_gop)) as source, av.open(str(path), "w") as out:
        video_in = source.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        audio = out.add_stream("aac", rate=16000)
        silence = np.zeros((1, 1024), dtype=np.float32)
        packets = [p for p in source.demux(video_in) if p.size]
        for k, packet in enumerate(packets):
            packet.stream = video_out
            out.mux(packet)
            if k % 2 == 0:
                frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, k // 2 * 1024
                out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


@pytest.fixture(scope="session")
def fragmented(media_dir: Path) -> Path:
    return write_counter_video(
        media_dir / "fragmented.mp4",
        num_frames=60,
        gop=20,
        bframes=2,
        container_options={"movflags": "frag_keyframe+empty_moov"},
    )


@pytest.fixture(scope="session")
def negative_cts(media_dir: Path) -> Path:
    return write_counter_video(
        media_dir / "negative_cts.mp4",
        num_frames=60,
        gop=20,
        bframes=3,
        container_options={"movflags": "negative_cts_offsets"},
    )


@pytest.mark.parametrize(
    "clip_name",
    ["long_gop", "hevc_clip", "open_gop", "ntsc", "vfr", "rotated", "trimmed", "negative_cts", "with_audio"],
)
def test_sample_table_index_equals_the_demuxed_one(
    clip_name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = request.getfixturevalue(clip_name)
    with _open(path) as fast, _open_demuxing(path, monkeypatch) as slow:
        assert fast._sample_pos is not None  # built from the tables, not by demuxing
        assert slow._sample_pos is None
        _assert_same_index(fast, slow)


def test_edit_list_discarded_frames_are_not_frames(trimmed: Path) -> None:
    reference = decode_all(trimmed)  # FFmpeg drops the discarded frames too
    with _open(trimmed) as reader:
        assert reader._sample_pos is not None and any(not k for k in reader._keyframe)
        assert reader.num_frames == len(reference) == 355
        assert reader.keyframes()[0] == 85  # keyframe 0 is hidden by the edit list: 90 - 5
    clip = video.load(trimmed, video.Sampling(num_frames=6, mode="keyframes"))
    for frame, index in zip(clip.frames, clip.indices):
        assert read_counter(frame) == index + 5
        np.testing.assert_array_equal(frame, reference[index])


@pytest.mark.parametrize(
    "spec", [video.Sampling(num_frames=9), video.Sampling(num_frames=4, mode="keyframes")]
)
def test_fragmented_mp4_is_indexed_by_demuxing(fragmented: Path, spec: video.Sampling) -> None:
    assert mp4_sample_table(read_moov(fragmented), 1) is None  # samples live in moof boxes
    with _open(fragmented) as reader:
        assert reader._sample_pos is None and reader.num_frames == 60
    reference = decode_all(fragmented)
    clip = video.load(fragmented, spec)
    for frame, index in zip(clip.frames, clip.indices):
        np.testing.assert_array_equal(frame, reference[index])


def test_truncated_mp4_is_indexed_by_demuxing(truncated_faststart: tuple[Path, int]) -> None:
    path, declared = truncated_faststart
    with _open(path) as reader:  # the tables list samples past the end of the file
        assert reader._sample_pos is None
        assert reader.declared_frames == declared and reader.num_frames < declared


def test_a_table_index_that_disagrees_with_the_demuxer_is_rebuilt(
    long_gop: Path, long_gop_frames: list[np.ndarray]
) -> None:
    with _open(long_gop) as reader:
        reader._sample_pos[100] += 1  # as if the table had mapped packet 100 elsewhere
        targets = np.array([95, 100, 200])
        frames = reader.read(targets, Deadline(None))
        assert reader._sample_pos is None  # re-indexed by demuxing
        assert any("re-indexed by demuxing" in w for w in reader.warnings)
    assert sorted(frames) == targets.tolist()
    for index, frame in frames.items():
        np.testing.assert_array_equal(frame, long_gop_frames[index])


@pytest.mark.parametrize("clip_name", ["long_gop", "with_audio"])
def test_sample_table_matches_ffmpeg_index(clip_name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(clip_name)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # read the entries before demuxing: they point into FFmpeg's index, which demuxing may reallocate
        entries = [(e.pos, e.size, e.timestamp) for e in stream.index_entries]
        table = mp4_sample_table(read_moov(path), stream.id)
        packets = [p for p in container.demux(stream) if p.size]
    assert table is not None and len(table.offsets) == len(entries) == len(packets)
    assert table.offsets.tolist() == [e[0] for e in entries] == [p.pos for p in packets]
    assert table.sizes.tolist() == [e[1] for e in entries] == [p.size for p in packets]
    assert [e[2] + c for e, c in zip(entries, table.composition)] == [p.pts for p in packets]
    assert mp4_sample_table(read_moov(path), 99) is None  # no such track
