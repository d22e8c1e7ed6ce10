"""PyAV backend (the default): frame-exact, and decodes only what the requested frames need.

How a read works (indexed mode, the normal case):

1. **Index.** On open, every packet of the video stream is listed, **not decoded**, with its presentation
   timestamp (pts), keyframe flag and decode position. Frame ``i`` is the ``i``-th smallest pts (edit-list
   ``discard`` packets excluded), exactly like decord's frame index. A frame is decodable from the last
   keyframe before it in decode order whose pts is not after its own (so open-GOP leading pictures start one
   GOP earlier). For MP4/MOV the list comes without reading the media data: FFmpeg's own index (decode
   timestamps, keyframe/discard flags, byte positions) plus the ``ctts`` composition offsets from the sample
   table (:func:`video._mp4.mp4_sample_table`), accepted only when the sample table matches FFmpeg's index
   byte for byte and the first packets demux to exactly the predicted values; every packet demuxed later is
   checked again (a mismatch re-indexes by demuxing). Other containers and fragmented or truncated MP4s are
   indexed by demuxing every packet (still no decoding).
2. **Seek only where it saves work.** Targets are visited in decode order. After each packet, if the earliest
   keyframe still needed lies more than ``MIN_SEEK_GAP`` packets ahead, frames whose packets were already sent
   are drained out of the decoder and the demuxer seeks to that keyframe; otherwise decoding continues. Every seek is
   verified (the first packet must be at or before the wanted keyframe), else we seek to an earlier keyframe or
   re-read from the start without seeking.
3. **Skip what nobody looks at.** For H.264/HEVC, packets that are not requested are sent with
   ``skip_frame="NONREF"``: non-reference pictures are then not decoded at all, while every reference picture
   still is, so the requested frames are bit-identical to a decode-everything pass. Requested packets are
   sent with ``skip_frame="DEFAULT"``. The setting is copied per packet into FFmpeg's frame-threading workers.
4. Decoded frames are matched to requests by pts, converted to RGB24 and returned.
5. **Keyframe-only requests** (``mode="keyframes"``, or exact requests that all land on keyframes) fetch
   just the requested keyframe packets (seeking between them) and decode them back to back, with no drain in
   between, so FFmpeg's frame threads decode several at once. This is exact for intra-coded keyframes (every
   frame's picture type is checked; anything else is re-read the normal way).

Codecs outside the seek/skip allow-lists are decoded sequentially from the start (still stopping after the last
requested frame). Streams whose packets lack unique pts are read in "ordinal" mode: frame ``i`` is the
``i``-th decoded frame.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from video._mp4 import mp4_rotation, mp4_sample_table, read_moov
from video.backends.base import (
    Backend,
    OpenOptions,
    Reader,
    VideoInfo,
    frame_rate_from_timestamps,
    require_regular_file,
)
from video.errors import VideoError
from video.limits import Deadline, Limits

__all__ = ["PyAVBackend", "PyAVReader", "read_header"]

log = logging.getLogger(__name__)

NAME = "pyav"

#: Codecs whose container keyframe flags are reliable seek points and that emit one frame per packet.
SEEKABLE_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "mpeg4",
        "mpeg1video",
        "mpeg2video",
        "vp9",
        "libvpx-vp9",
        "av1",
        "libdav1d",
        "libaom-av1",
        "mjpeg",
        "prores",
        "dnxhd",
        "h263",
        "ffv1",
        "rawvideo",
        "png",
    }
)
#: Codecs read by pts index but never seeked (frames depend on all earlier ones, e.g. GIF disposal).
INDEXED_CODECS = SEEKABLE_CODECS | {"gif", "apng", "webp"}
#: Codecs for which ``skip_frame="NONREF"`` is used on packets nobody asked for.
NONREF_CODECS = frozenset({"h264", "hevc"})
#: Seek only when it skips at least this many packets: a seek flushes the decoder and restarts its frame
#: threads, which costs about as much as decoding a few (mostly skipped) packets.
MIN_SEEK_GAP = 12
#: Containers whose header frame count is exact (MP4 sample tables): a shortfall means truncation.
_EXACT_COUNT_FORMATS = ("mov", "mp4")
#: Packets demuxed on open to check an index built from the MP4 sample tables (more are checked on every read).
TABLE_CHECK_PACKETS = 16
#: Keyframe-only reads decode at most this many packets (or bytes) back to back before draining the decoder.
KEY_BATCH_PACKETS = 16
KEY_BATCH_BYTES = 64 * 2**20
_AVINDEX_KEYFRAME, _AVINDEX_DISCARD_FRAME = 1, 2  # AVIndexEntry.flags
_AV_PICTURE_TYPE_I = 1


class _SeekFailed(Exception):
    """Internal: the demuxer could not position before the wanted keyframe."""


class _IndexMismatch(Exception):
    """Internal: a demuxed packet disagrees with an index built from the MP4 sample tables."""


_Index = tuple[list[int | None], list[bool], list[bool], list[int]]  # pts, keyframe, discard, duration


def _av() -> Any:
    import av  # lazy: importing `video` must not import PyAV

    return av


def _open_container(path: Path, backend: str = NAME) -> Any:
    require_regular_file(path, backend=backend)  # FFmpeg would block on a FIFO or read /dev/zero forever
    av = _av()
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FileNotFoundError as exc:
        raise VideoError(path, "file not found", reason="not_found", backend=backend) from exc
    except av.error.EOFError as exc:
        raise VideoError(
            path, f"unexpected end of file while opening ({exc})", reason="corrupt", backend=backend
        ) from exc
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(path, f"cannot open container ({exc})", reason="corrupt", backend=backend) from exc


def _video_stream(container: Any, path: Path, backend: str = NAME) -> Any:
    attached_pic = _av().stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not (s.disposition & attached_pic)]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(
            path,
            f"no video stream (streams: {', '.join(kinds)})",
            reason="no_video_stream",
            backend=backend,
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(
            path,
            "unsupported codec: FFmpeg has no decoder for this video stream",
            reason="unsupported_codec",
            backend=backend,
        )
    return stream


def _is_intra(frame: Any) -> bool:
    """Whether a decoded picture is intra-coded (its pixels do not depend on earlier pictures)."""
    kind = frame.pict_type  # an int (PyAV 18), a PictureType enum (PyAV 13-17) or an enum item (older)
    name = getattr(kind, "name", None)
    return name == "I" if name is not None else int(kind) == _AV_PICTURE_TYPE_I


def _moov(path: Path, container: Any) -> bytes | None:
    """The ``moov`` box of an MP4/MOV file (``None`` for other containers)."""
    return read_moov(path) if any(f in container.format.name for f in _EXACT_COUNT_FORMATS) else None


def _rotation(moov: bytes | None, stream: Any) -> int:
    rotation = mp4_rotation(moov)
    if rotation is not None:
        return rotation
    try:
        return int(float(stream.metadata.get("rotate", 0)))
    except (TypeError, ValueError):
        return 0


def _rate_and_duration(container: Any, stream: Any, frames: int) -> tuple[Fraction, float]:
    """Average frame rate and duration in seconds from the header (``frames``: header or counted frames)."""
    time_base = Fraction(stream.time_base) if stream.time_base else None
    rate = stream.average_rate or stream.guessed_rate
    base = stream.base_rate
    constant = bool(rate and base and abs(float(rate) - float(base)) <= 1e-3 * float(base))
    if constant and frames:  # like the reference's video_time = total / avg_fps (MP4 header durations drift)
        duration = float(frames / Fraction(rate))
    elif stream.duration and time_base:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    elif rate and frames:
        duration = float(frames / Fraction(rate))
    else:
        duration = 0.0
    if not rate:
        rate = Fraction(frames) / Fraction(duration) if frames and duration > 0 else Fraction(0)
    return Fraction(rate), duration


def _header_info(path: Path, container: Any, stream: Any, limits: Limits, backend: str) -> VideoInfo:
    """The stream header (no demuxing, no decoding), checked against ``limits`` before anything is allocated.

    ``num_frames`` is the header's count (0 when the container has none, e.g. Matroska).
    """
    cc = stream.codec_context
    frames = int(stream.frames or 0)
    rate, duration = _rate_and_duration(container, stream, frames)
    width, height = int(cc.width), int(cc.height)
    limits.check_stream(
        path, width=width, height=height, duration=duration, num_frames=frames, backend=backend
    )
    return VideoInfo(
        path=str(path),
        backend=backend,
        num_frames=frames,
        fps=float(rate),
        duration=duration,
        width=width,
        height=height,
        rotation=_rotation(_moov(path, container), stream),
        codec=str(cc.name),
        container=str(container.format.name),
    )


def read_header(path: Path, limits: Limits, backend: str = NAME) -> VideoInfo:
    """Open ``path`` with PyAV and read its video stream header, checked against ``limits`` (no decoding).

    Other backends call it before handing a file to their library: a FIFO, an unparsable container or a
    header claiming absurd sizes is refused here with a :class:`VideoError` naming ``backend``, instead of
    reaching a C++ decoder that may abort the process (decord throws ``std::bad_alloc`` on such headers).
    """
    try:
        container = _open_container(path, backend)
        try:
            return _header_info(path, container, _video_stream(container, path, backend), limits, backend)
        finally:
            container.close()
    except VideoError as exc:
        if backend == NAME:
            raise
        raise VideoError(
            path,
            f"{backend} cannot read this file: {exc.cause} (PyAV header check, before {backend} opens it)",
            reason=exc.reason,
            backend=backend,
        ) from exc


class PyAVReader(Reader):
    """A video opened with PyAV, with its packet index built (see the module docstring)."""

    backend = NAME

    def __init__(self, path: Path, options: OpenOptions, deadline: Deadline) -> None:
        self.path = path
        self.warnings = []
        self._threads = options.threads
        self._limits = options.limits
        container = _open_container(path)
        try:
            stream = _video_stream(container, path)
            self._stream_index = stream.index
            cc = stream.codec_context
            self.codec = str(cc.name)
            self.width = int(cc.width)
            self.height = int(cc.height)
            self.container = str(container.format.name)
            frames = int(stream.frames or 0)
            _rate, duration = _rate_and_duration(container, stream, frames)
            self._limits.check_stream(  # before the index (one entry per packet) is built
                path, width=self.width, height=self.height, duration=duration, num_frames=frames, backend=NAME
            )
            moov = _moov(path, container)  # read once: rotation and the sample table both come from it
            self.rotation = _rotation(moov, stream)
            self._time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
            self._header_rate = stream.average_rate or stream.guessed_rate
            self._declared = int(stream.frames or 0)
            self._mp4 = any(f in self.container for f in _EXACT_COUNT_FORMATS)
            tables = self._sample_tables(stream, moov) if moov else None
            indexed = tables is not None and self._index_from_tables(container, stream, tables)
            if tables is not None and not indexed:  # packets were demuxed while checking: open afresh
                container.close()
                container = _open_container(path)
                stream = container.streams[self._stream_index]
            if not indexed:
                self._set_index(*self._demux_index(container, stream, deadline))
        except BaseException:
            container.close()
            raise
        # kept for the first read (saves re-opening, which probes the stream again); rewound or seeked then
        self._container: Any = container

    # -- indexing ------------------------------------------------------------------------------------
    def _demux_index(self, container: Any, stream: Any, deadline: Deadline) -> tuple[_Index, None]:
        """Demux every packet of the stream (no decoding)."""
        av = _av()
        pts: list[int | None] = []
        keyframe: list[bool] = []
        discard: list[bool] = []
        duration: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts.append(packet.pts)
                keyframe.append(bool(packet.is_keyframe))
                discard.append(bool(packet.is_discard))
                duration.append(int(packet.duration or 0))
                if len(pts) % 512 == 0:
                    deadline.check(self.path, NAME)
                    self._check_count(len(pts))
        except av.error.FFmpegError as exc:
            if not pts:
                raise VideoError(
                    self.path, f"cannot demux the video stream ({exc})", reason="corrupt", backend=NAME
                ) from exc
            self.warnings.append(f"demuxing stopped after {len(pts)} packets: {exc}")
        return (pts, keyframe, discard, duration), None

    def _check_count(self, packets: int) -> None:
        """Raise ``too_large`` once the stream holds more packets than ``Limits.max_frames``."""
        limit = self._limits.max_frames
        if limit is not None and packets > limit:
            raise VideoError(
                self.path,
                f"the video stream holds more than Limits.max_frames={limit} frames",
                reason="too_large",
                backend=NAME,
            )

    def _sample_tables(self, stream: Any, moov: bytes) -> tuple[np.ndarray, ...] | None:
        """FFmpeg's MP4 index next to the file's sample table, if they agree sample for sample (no demuxing).

        Returns ``(dts, byte positions, composition offsets, FFmpeg index flags)``. They must agree on every
        sample's byte position and size (so no edit list dropped or repeated samples) and every sample
        must lie inside the file (else it is truncated).
        """
        entries = getattr(stream, "index_entries", None)  # PyAV >= 17
        if entries is None or len(entries) == 0:
            return None
        self._check_count(len(entries))
        table = mp4_sample_table(moov, int(stream.id), count=len(entries))
        if table is None or len(table.offsets) != len(entries):
            return None
        # copied at once: the entries point into FFmpeg's index, which demuxing may reallocate
        rows = np.array([(e.timestamp, e.pos, e.size, e.flags) for e in entries[:]], dtype=np.int64)
        dts, positions, sizes, flags = rows.T
        try:
            file_size = os.stat(self.path).st_size
        except OSError:
            return None
        if (
            not np.array_equal(positions, table.offsets)
            or not np.array_equal(sizes, table.sizes)
            or int(sizes.min()) <= 0
            or int((positions + sizes).max()) > file_size
        ):
            return None
        return dts, positions, table.composition, flags

    def _index_from_tables(self, container: Any, stream: Any, tables: tuple[np.ndarray, ...]) -> bool:
        """Index from :meth:`_sample_tables`, checked against the demuxer; ``False`` if it cannot be trusted.

        The demuxer reports ``dts = index timestamp`` and ``pts = dts + shift + ctts`` for every sample
        (``shift`` is constant per track); the first ``TABLE_CHECK_PACKETS`` packets must demux to exactly
        the predicted position, timestamps and flags. Variable-frame-rate streams also need the demuxer's
        duration of their last frame: that packet is fetched with a seek and checked too.
        """
        dts, positions, composition, flags = tables
        count = len(dts)
        pts = dts + composition
        keyframe = (flags & _AVINDEX_KEYFRAME) != 0
        discard = (flags & _AVINDEX_DISCARD_FRAME) != 0
        want = min(count, TABLE_CHECK_PACKETS)
        shift: int | None = None
        checked = 0
        av = _av()

        def matches(packet: Any, k: int) -> bool:
            return (
                packet.size > 0
                and packet.pts is not None
                and packet.pos == positions[k]
                and packet.dts == dts[k]
                and packet.pts == pts[k] + shift
                and bool(packet.is_keyframe) == keyframe[k]
                and bool(packet.is_discard) == discard[k]
            )

        try:
            for packet in container.demux(stream):
                if shift is None:
                    shift = int(packet.pts) - int(pts[0]) if packet.pts is not None else 0
                if not matches(packet, checked):
                    log.debug("%s: MP4 sample table disagrees with packet %d; demuxing", self.path, checked)
                    return False
                checked += 1
                if checked == want:
                    break
        except av.error.FFmpegError:
            return False
        if checked < want or shift is None:
            return False
        pts += shift
        durations = [0] * count
        self._set_index((pts.tolist(), keyframe.tolist(), discard.tolist(), durations), positions.tolist())
        if self.cfr or not self._indexed:
            return True
        last = self._dpos[-1]  # variable frame rate: the last frame's duration is part of the video's
        sample_of_pos = {int(pos): k for k, pos in enumerate(positions)}
        try:  # lands at or a little before it (FFmpeg applies the edit-list offset)
            container.seek(int(dts[last]), stream=stream, backward=True, any_frame=True)
            for packet in container.demux(stream):
                k = sample_of_pos.get(packet.pos, -1)
                if k < 0 or k > last or not matches(packet, k):
                    return False
                if k == last:
                    durations[last] = int(packet.duration or 0)
                    break
            else:
                return False
        except av.error.FFmpegError:
            return False
        self._set_index((pts.tolist(), keyframe.tolist(), discard.tolist(), durations), positions.tolist())
        return True

    def _set_index(self, index: _Index, sample_pos: list[int] | None) -> None:
        pts, keyframe, discard, duration = index
        self._pts = pts
        self._keyframe = keyframe
        # byte position of every packet when the index came from the sample tables (checked on every read)
        self._sample_pos = sample_pos
        total_packets = len(pts)
        self.declared_frames = None
        if self._declared > total_packets and self._mp4:
            self.declared_frames = self._declared

        shown = [i for i in range(total_packets) if not discard[i]]
        shown_pts = [pts[i] for i in shown]
        self._indexed = (
            self.codec in INDEXED_CODECS
            and all(p is not None for p in shown_pts)
            and len(set(shown_pts)) == len(shown_pts)
        )
        self._seekable = self._indexed and self.codec in SEEKABLE_CODECS
        self._nonref = self._seekable and self.codec in NONREF_CODECS
        self.num_frames = len(shown)
        tick = float(self._time_base)

        if self._indexed:
            order = sorted(range(len(shown)), key=lambda k: shown_pts[k])
            self._present_pts = [shown_pts[k] for k in order]  # frame i -> pts
            self._dpos = [shown[k] for k in order]  # frame i -> decode position
            self._pos_of_pts = {p: i for i, p in enumerate(pts) if p is not None}
            self._index_of_pts = {p: i for i, p in enumerate(self._present_pts)}
            self._key_positions = [i for i in range(total_packets) if keyframe[i]]
            start = self._present_pts[0] if self._present_pts else 0
            self._times = np.array([(p - start) for p in self._present_pts], dtype=np.float64) * tick
            last_duration = duration[self._dpos[-1]] * tick if self._dpos else 0.0
        else:
            self._times = None
            last_duration = 0.0

        header_rate = self._header_rate
        if self._times is not None and self.num_frames > 0:
            self.fps, self.cfr = frame_rate_from_timestamps(self._times, header_rate, tick)
        else:
            self.fps = Fraction(header_rate).limit_denominator(1_000_000) if header_rate else Fraction(1)
            self.cfr = True
        if not self.cfr and self._times is not None:
            step = float(self._times[-1]) / max(1, self.num_frames - 1)
            self._vfr_duration = float(self._times[-1]) + (last_duration if last_duration > 0 else step)

    def _position(self, packet: Any, previous: int) -> int:
        """Decode position of a demuxed packet; checks it against a sample-table index."""
        position = self._pos_of_pts.get(packet.pts)
        if self._sample_pos is not None and (position is None or self._sample_pos[position] != packet.pos):
            raise _IndexMismatch(f"packet at byte {packet.pos} with pts {packet.pts} is not in the index")
        return previous + 1 if position is None else position

    # -- metadata ------------------------------------------------------------------------------------
    def timestamps(self) -> np.ndarray:
        if self.cfr or self._times is None:
            return super().timestamps()
        return self._times.copy()

    @property
    def duration(self) -> float:
        if self.cfr or self._times is None:
            return super().duration
        return self._vfr_duration

    def keyframes(self) -> np.ndarray:
        if self._indexed:
            keys = {self._index_of_pts.get(self._pts[p]) for p in self._key_positions}
            keys.discard(None)
        else:  # ordinal: keyframe packets counted in decode order (approximate for B-frame streams)
            keys = {k for k, is_key in enumerate(self._keyframe) if is_key and k < self.num_frames}
        if not keys:
            keys = {0}
        return np.array(sorted(keys), dtype=np.int64)

    # -- decoding ------------------------------------------------------------------------------------
    def _configure(self, stream: Any) -> Any:
        cc = stream.codec_context
        if not cc.is_open:  # threading can only be set before the decoder opens
            cc.thread_type = "AUTO"
            cc.thread_count = self._threads
        return cc

    def _take_container(self) -> tuple[Any, bool]:
        """The container to read with, and whether it was already demuxed (the indexing one)."""
        container, self._container = self._container, None
        if container is not None:
            return container, True
        return _open_container(self.path), False

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _key_for(self, i: int) -> int:
        """Decode position of the keyframe to start from for frame ``i``."""
        d = self._dpos[i]
        j = bisect.bisect_right(self._key_positions, d) - 1
        while j >= 0 and self._pts[self._key_positions[j]] > self._present_pts[i]:
            j -= 1
        return self._key_positions[j] if j >= 0 else 0

    def read(self, indices: np.ndarray, deadline: Deadline) -> dict[int, np.ndarray]:
        targets = sorted({int(i) for i in indices})
        if not targets:
            return {}
        self._reformatter = None
        self._decode_errors = 0
        if not self._indexed:
            return self._read_ordinal(targets, deadline)
        try:
            return self._read_seekable(targets, deadline)
        except _IndexMismatch as exc:  # never seen in practice: the checks on open make it very unlikely
            message = f"the MP4 sample table disagreed with the demuxer ({exc}); re-indexed by demuxing"
            log.warning("%s: %s", self.path, message)
            self.warnings.append(message)
            self.close()
            container = _open_container(self.path)
            try:
                self._set_index(
                    *self._demux_index(container, container.streams[self._stream_index], deadline)
                )
            finally:
                container.close()
            if not self._indexed:
                return self._read_ordinal([t for t in targets if t < self.num_frames], deadline)
            return self._read_seekable([t for t in targets if t < self.num_frames], deadline)

    def _read_seekable(self, targets: list[int], deadline: Deadline) -> dict[int, np.ndarray]:
        if self._seekable and all(self._key_for(i) == self._dpos[i] for i in targets):
            out = self._read_keyframes(targets, deadline)
            rest = [i for i in targets if i not in out]
            if not rest:
                return out
            targets = rest  # not intra-coded, or lost by the decoder: decode them the normal way
        else:
            out = {}
        try:
            out.update(self._read_indexed(targets, deadline, seek=self._seekable))
        except _SeekFailed as exc:
            log.debug("%s: %s; re-reading from the start without seeking", self.path, exc)
            out.update(self._read_indexed(targets, deadline, seek=False))
        return out

    def _read_keyframes(self, targets: list[int], deadline: Deadline) -> dict[int, np.ndarray]:
        """Frames that are keyframes decodable on their own: fetch only their packets, decode back to back.

        Packets are collected first (a seek resets the decoder) in batches of ``KEY_BATCH_PACKETS``, then
        sent without draining in between, so frame threads work on several keyframes at once. A frame is
        accepted only if it is intra-coded (its pixels cannot depend on what was decoded before it); the
        caller re-reads anything missing (not intra-coded, dropped by the decoder, or after a failed seek).
        """
        want = {self._present_pts[i]: i for i in targets}
        positions = sorted(self._dpos[i] for i in targets)
        out: dict[int, np.ndarray] = {}
        container, _ = self._take_container()
        try:
            stream = container.streams[self._stream_index]
            cc = self._configure(stream)

            def collect(frames: Iterable[Any]) -> None:
                for frame in frames:
                    index = want.get(frame.pts)
                    if index is not None and index not in out and _is_intra(frame):
                        self._convert(frame, out, index)

            def decode(batch: list[Any]) -> None:
                for packet in batch:
                    deadline.check(self.path, NAME)
                    collect(self._decode(stream, packet))
                collect(self._decode(stream, None))
                cc.flush_buffers()  # accept packets again after draining

            batch: list[Any] = []
            size = 0
            packets: Iterator[Any] = iter(())
            position = None  # decode position of the last packet demuxed
            for key in positions:
                deadline.check(self.path, NAME)
                if position is None or not position < key <= position + MIN_SEEK_GAP:
                    packets = self._seek(container, stream, key)  # resets the decoder: it holds nothing now
                    position = None
                found = None
                for packet in packets:
                    if packet.size == 0:
                        break
                    position = self._position(packet, -1 if position is None else position)
                    if position == key:
                        found = packet
                        break
                    if position > key:
                        break
                if found is None:
                    raise _SeekFailed(f"keyframe packet {key} not found after seeking")
                batch.append(found)
                size += found.size
                if len(batch) >= KEY_BATCH_PACKETS or size >= KEY_BATCH_BYTES:
                    decode(batch)
                    batch, size = [], 0
            if batch:
                decode(batch)
        except _SeekFailed as exc:
            log.debug("%s: %s; decoding keyframes the normal way", self.path, exc)
        finally:
            container.close()
        return out

    def _convert(self, frame: Any, out: dict[int, np.ndarray], index: int) -> None:
        if self._reformatter is None:  # one reformatter per read keeps swscale's context across frames
            self._reformatter = _av().video.reformatter.VideoReformatter()
        if (frame.height, frame.width) == (self.height, self.width) or not (self.height and self.width):
            rgb = self._reformatter.reformat(frame, format="rgb24")
        else:  # mid-stream resolution change: keep one output size
            rgb = self._reformatter.reformat(frame, format="rgb24", width=self.width, height=self.height)
        out[index] = rgb.to_ndarray()

    def _decode(self, stream: Any, packet: Any) -> list[Any]:
        av = _av()
        try:
            return stream.decode(packet)
        except av.error.EOFError:
            return []
        except av.error.FFmpegError as exc:  # keep going: the caller reports frames that never came out
            self._decode_errors += 1
            if self._decode_errors == 1:
                self.warnings.append(f"decoder error: {exc}")
            return []

    def _read_indexed(self, targets: list[int], deadline: Deadline, *, seek: bool) -> dict[int, np.ndarray]:
        want = {self._present_pts[i]: i for i in targets}
        by_decode = sorted((self._dpos[i], self._key_for(i)) for i in targets)
        target_dpos = [d for d, _ in by_decode]
        # earliest keyframe still needed by the targets whose packets come after a given decode position
        suffix_key = [k for _, k in by_decode]
        for j in range(len(suffix_key) - 2, -1, -1):
            suffix_key[j] = min(suffix_key[j], suffix_key[j + 1])

        def next_key(position: int) -> int | None:
            j = bisect.bisect_right(target_dpos, position)
            return suffix_key[j] if j < len(suffix_key) else None

        out: dict[int, np.ndarray] = {}
        pending: set[int] = set()  # pts sent to the decoder but not yet received
        container, used = self._take_container()
        try:
            stream = container.streams[self._stream_index]
            cc = self._configure(stream)
            skip_state = "DEFAULT"

            def collect(frames: Iterable[Any]) -> None:
                for frame in frames:
                    index = want.get(frame.pts)
                    if index is not None and index not in out:
                        self._convert(frame, out, index)
                        pending.discard(frame.pts)

            position = -1
            first_key = suffix_key[0]
            packets: Iterator[Any]
            if seek and first_key > 0:
                packets = self._seek(container, stream, first_key)
            elif used:  # rewind the indexing container (verified, else re-read from a fresh one)
                if not self._key_positions or self._key_positions[0] != 0:
                    raise _SeekFailed("cannot rewind: the stream does not start with a keyframe")
                packets = self._seek(container, stream, 0)
            else:
                packets = iter(container.demux(stream))
            while True:
                jumped = False
                for packet in packets:
                    deadline.check(self.path, NAME)
                    if packet.size == 0:  # end of stream: flush the decoder
                        collect(self._decode(stream, None))
                        return out
                    position = self._position(packet, position)
                    needed = packet.pts in want
                    if self._nonref:
                        desired = "DEFAULT" if needed else "NONREF"
                        if desired != skip_state:
                            cc.skip_frame = desired
                            skip_state = desired
                    if needed:
                        pending.add(packet.pts)
                    collect(self._decode(stream, packet))
                    if len(out) == len(want):
                        return out
                    key = next_key(position)
                    if key is None:  # every requested packet is in the decoder: drain and stop
                        collect(self._decode(stream, None))
                        return out
                    if seek and key > position + MIN_SEEK_GAP:
                        if pending:
                            collect(self._decode(stream, None))
                            pending.clear()
                            if len(out) == len(want):
                                return out
                        packets = self._seek(container, stream, key)
                        jumped = True
                        break
                if not jumped:  # demuxer ended without a flush packet
                    collect(self._decode(stream, None))
                    return out
        finally:
            container.close()

    def _seek(self, container: Any, stream: Any, key_position: int) -> Iterator[Any]:
        """Position the demuxer at or before the keyframe at ``key_position``; verify it."""
        av = _av()
        j = bisect.bisect_left(self._key_positions, key_position)
        candidates = [
            self._key_positions[k] for k in range(min(j, len(self._key_positions) - 1), max(-1, j - 4), -1)
        ]
        for candidate in candidates:
            target_pts = self._pts[candidate]
            try:
                container.seek(int(target_pts), stream=stream, backward=True)
                packets = iter(container.demux(stream))
                first = next((p for p in packets if p.size > 0), None)
            except av.error.FFmpegError as exc:
                raise _SeekFailed(f"seek failed: {exc}") from exc
            if first is None:
                continue
            position = self._position(first, -1)
            if first.pts in self._pos_of_pts and position <= key_position:
                return itertools.chain([first], packets)
        raise _SeekFailed(f"could not position before packet {key_position}")

    def _read_ordinal(self, targets: list[int], deadline: Deadline) -> dict[int, np.ndarray]:
        want = set(targets)
        out: dict[int, np.ndarray] = {}
        self._decode_errors = 0
        self.close()  # ordinal streams cannot be verified after a rewind: always start from a fresh open
        container = _open_container(self.path)
        try:
            stream = container.streams[self._stream_index]
            self._configure(stream)
            count = 0
            last = targets[-1]
            for packet in container.demux(stream):
                deadline.check(self.path, NAME)
                for frame in self._decode(stream, None if packet.size == 0 else packet):
                    if count in want:
                        self._convert(frame, out, count)
                    count += 1
                if count > last:
                    break
            return out
        finally:
            container.close()


class PyAVBackend(Backend):
    """PyAV (FFmpeg bindings); always installed with ``onevision``."""

    name = NAME
    modules = ("av",)
    extra = None

    @classmethod
    def install_hint(cls) -> str:
        return "pip install av"

    def open(self, path: Path, options: OpenOptions, deadline: Deadline) -> Reader:
        return PyAVReader(path, options, deadline)

    def probe(self, path: Path, options: OpenOptions, deadline: Deadline) -> VideoInfo:
        av = _av()
        limits = options.limits
        container = _open_container(path)
        try:
            stream = _video_stream(container, path)
            info = _header_info(path, container, stream, limits, NAME)
            if info.num_frames:
                return info
            frames = 0  # header has no count (Matroska, WebM, ...): count packets, still no decoding
            try:
                for packet in container.demux(stream):
                    if packet.size and not packet.is_discard:
                        frames += 1
                        if frames % 512 == 0:
                            deadline.check(path, NAME)
                            limits.check_stream(
                                path, width=0, height=0, duration=None, num_frames=frames, backend=NAME
                            )
            except av.error.FFmpegError as exc:
                if frames == 0:
                    raise VideoError(path, f"cannot demux ({exc})", reason="corrupt", backend=NAME) from exc
            rate, duration = _rate_and_duration(container, stream, frames)
            limits.check_stream(
                path, width=info.width, height=info.height, duration=duration, num_frames=frames, backend=NAME
            )
            return dataclasses.replace(info, num_frames=frames, fps=float(rate), duration=duration)
        finally:
            container.close()
