"""Read the display rotation of an MP4/MOV video track from its ``tkhd`` matrix, without decoding.

PyAV exposes the display matrix only on decoded frames; :func:`video.probe` must not decode, so it reads the
ISO-BMFF boxes directly (``moov/trak/tkhd`` of the first ``vide`` track). The angle follows FFmpeg's
``av_display_rotation_get`` convention (counter-clockwise degrees, like PyAV's ``VideoFrame.rotation``),
normalised to ``(-180, 180]``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator

__all__ = ["mp4_rotation"]

_MAX_MOOV_BYTES = 256 * 2**20


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


def mp4_rotation(path: str | os.PathLike[str]) -> int | None:
    """Counter-clockwise rotation in degrees of the first video track, or ``None`` if it cannot be read."""
    try:
        moov = _read_moov(path)
    except OSError:
        return None
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
