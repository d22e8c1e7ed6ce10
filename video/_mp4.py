"""Read MP4/MOV track metadata straight from the ISO-BMFF boxes, without decoding or demuxing.

* :func:`mp4_rotation`: the display rotation of the first video track, from its ``tkhd`` matrix. PyAV exposes
  the display matrix only on decoded frames; :func:`video.probe` must not decode. The angle follows FFmpeg's
  ``av_display_rotation_get`` convention (counter-clockwise degrees, like PyAV's ``VideoFrame.rotation``),
  normalised to ``(-180, 180]``.
* :func:`mp4_sample_table`: per-sample file offsets, sizes and composition offsets (``stbl``: ``stsz``,
  ``stsc``, ``stco``/``co64``, ``ctts``) of one track. The PyAV backend uses them, together with FFmpeg's own
  index (decode timestamps, keyframe and discard flags), to index a video without demuxing all of it.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["SampleTable", "mp4_rotation", "mp4_sample_table", "read_moov"]

_MAX_MOOV_BYTES = 256 * 2**20
_MAX_SAMPLES = 2**26  # about 620 hours at 30 fps; more is a corrupt table


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, payload_start, payload_end)`` for the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def read_moov(path: str | os.PathLike[str]) -> bytes | None:
    """The payload of the file's top-level ``moov`` box (read once, parsed by the functions below), or ``None``."""
    try:
        return _read_moov(path)
    except OSError:
        return None


def _read_moov(path: str | os.PathLike[str]) -> bytes | None:
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= file_size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return None
            size, kind = struct.unpack_from(">I4s", head)
            header = 8
            if size == 1:
                if len(head) < 16:
                    return None
                (size,) = struct.unpack_from(">Q", head, 8)
                header = 16
            elif size == 0:
                size = file_size - pos
            if size < header:
                return None
            if kind == b"moov":
                if size > _MAX_MOOV_BYTES:
                    return None
                f.seek(pos + header)
                return f.read(size - header)
            pos += size
    return None


def _tkhd_rotation(data: bytes, start: int, end: int) -> int | None:
    version = data[start]
    offset = start + (52 if version == 1 else 40)
    if offset + 36 > end:
        return None
    a, b, _u, c, d, _v, _x, _y, _w = struct.unpack_from(">9i", data, offset)
    scale0 = math.hypot(a / 65536.0, c / 65536.0)
    scale1 = math.hypot(b / 65536.0, d / 65536.0)
    if scale0 == 0.0 or scale1 == 0.0:
        return None
    degrees = int(-math.degrees(math.atan2((b / 65536.0) / scale1, (a / 65536.0) / scale0)))
    return 180 if degrees == -180 else degrees


def mp4_rotation(moov: bytes | None) -> int | None:
    """Counter-clockwise rotation in degrees of the first video track, or ``None`` if it cannot be read."""
    if not moov:
        return None
    for kind, start, end in _boxes(moov):
        if kind != b"trak":
            continue
        rotation = None
        is_video = False
        for sub, s_start, s_end in _boxes(moov, start, end):
            if sub == b"tkhd":
                rotation = _tkhd_rotation(moov, s_start, s_end)
            elif sub == b"mdia":
                for box, b_start, b_end in _boxes(moov, s_start, s_end):
                    # hdlr payload: version/flags (4), pre_defined (4), handler_type (4)
                    if (
                        box == b"hdlr"
                        and b_end - b_start >= 12
                        and moov[b_start + 8 : b_start + 12] == b"vide"
                    ):
                        is_video = True
        if is_video:
            return 0 if rotation is None else rotation
    return None


@dataclass(frozen=True)
class SampleTable:
    """One track's samples in decode order (int64 arrays of equal length)."""

    offsets: np.ndarray  # file offset of every sample
    sizes: np.ndarray  # bytes
    composition: np.ndarray  # ``ctts`` offset (signed; 0 when the track has no ``ctts``)


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for sub, s_start, s_end in _boxes(data, start, end):
        if sub == kind:
            return s_start, s_end
    return None


def _full_box_entries(data: bytes, box: tuple[int, int], fmt: str, fields: int) -> np.ndarray | None:
    """The entry table of a full box laid out as ``version/flags, entry_count, entries``."""
    start, end = box
    if end - start < 8:
        return None
    (count,) = struct.unpack_from(">I", data, start + 4)
    width = np.dtype(fmt).itemsize * fields
    if count * width > end - start - 8:
        return None
    table = np.frombuffer(data, dtype=fmt, count=count * fields, offset=start + 8)
    return table.reshape(count, fields).astype(np.int64)


def _sample_table(moov: bytes, stbl: tuple[int, int], expected: int | None) -> SampleTable | None:
    start, end = stbl
    stsz = _child(moov, start, end, b"stsz")
    stsc = _child(moov, start, end, b"stsc")
    stco = _child(moov, start, end, b"stco")
    co64 = _child(moov, start, end, b"co64")
    if stsz is None or stsc is None or (stco is None) == (co64 is None):
        return None  # compact sizes (stz2), no chunk table, or two chunk tables: not handled here
    if stsz[1] - stsz[0] < 12:
        return None
    sample_size, count = struct.unpack_from(">II", moov, stsz[0] + 4)
    chunks = _full_box_entries(moov, stco, ">u4", 1) if stco else _full_box_entries(moov, co64, ">u8", 1)
    runs = _full_box_entries(moov, stsc, ">u4", 3)
    if expected is not None and count != expected:
        return None  # checked before allocating: a constant-size stsz may claim 2**32 samples in 20 bytes
    if not 0 < count <= _MAX_SAMPLES or chunks is None or runs is None or not len(chunks) or not len(runs):
        return None
    if sample_size:
        sizes = np.full(count, sample_size, dtype=np.int64)
    elif count * 4 <= stsz[1] - stsz[0] - 12:
        sizes = np.frombuffer(moov, dtype=">u4", count=count, offset=stsz[0] + 12).astype(np.int64)
    else:
        return None

    # stsc: runs of chunks (first chunk, 1-based) holding the same number of samples
    chunk_offsets = chunks[:, 0]
    first_chunk = runs[:, 0]
    if first_chunk[0] != 1 or np.any(np.diff(first_chunk) <= 0) or first_chunk[-1] > len(chunk_offsets):
        return None
    run_lengths = np.diff(np.append(first_chunk, len(chunk_offsets) + 1))
    chunk_end = np.cumsum(np.repeat(runs[:, 1], run_lengths))  # samples up to the end of every chunk
    if chunk_end[-1] < count:
        return None
    chunk_of_sample = np.searchsorted(chunk_end, np.arange(count), side="right")
    chunk_first_sample = chunk_end[chunk_of_sample] - np.repeat(runs[:, 1], run_lengths)[chunk_of_sample]
    before = np.cumsum(sizes) - sizes  # bytes of the track's earlier samples
    within = before - before[chunk_first_sample]  # bytes before the sample in its own chunk
    offsets = chunk_offsets[chunk_of_sample] + within

    composition = np.zeros(count, dtype=np.int64)
    ctts = _child(moov, start, end, b"ctts")
    if ctts is not None:
        entries = _full_box_entries(moov, ctts, ">u4", 2)
        if entries is None or int(entries[:, 0].sum()) != count:
            return None
        signed = entries[:, 1].astype(np.uint32).view(np.int32).astype(np.int64)  # FFmpeg reads it signed
        composition = np.repeat(signed, entries[:, 0])
    return SampleTable(offsets=offsets, sizes=sizes, composition=composition)


def mp4_sample_table(moov: bytes | None, track_id: int, *, count: int | None = None) -> SampleTable | None:
    """The sample table of the track with ``track_id`` (``tkhd``), or ``None`` if it cannot be read simply.

    With ``count``, a table that does not hold exactly ``count`` samples is ``None`` before any array is built.

    ``None`` for fragmented files (their samples live in ``moof`` boxes), compact sample sizes (``stz2``),
    malformed or inconsistent tables: callers then fall back to demuxing.
    """
    if not moov:
        return None
    try:
        for kind, start, end in _boxes(moov):
            if kind != b"trak":
                continue
            tkhd = _child(moov, start, end, b"tkhd")
            if tkhd is None or tkhd[1] - tkhd[0] < 24:
                continue
            version = moov[tkhd[0]]
            (found,) = struct.unpack_from(">I", moov, tkhd[0] + (20 if version == 1 else 12))
            if found != track_id:
                continue
            box: tuple[int, int] | None = (start, end)
            for name in (b"mdia", b"minf", b"stbl"):
                box = _child(moov, box[0], box[1], name) if box else None
            return _sample_table(moov, box, count) if box else None
    except (struct.error, ValueError, IndexError):
        return None
    return None
