"""Constants and reference helpers shared by the video tests (decoder-independent oracles)."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np

LONG_GOP = 90  # keyframe interval of the long-GOP clip
LONG_FRAMES = 360
VFR_PTS_MS = [0, 40, 60, 200, 230, 400, 410, 600, 700, 710, 800, 1000]
GIF_DURATIONS_MS = [100, 50, 200, 70, 30, 120]


def decode_all(path: Path) -> list[np.ndarray]:
    """Reference: every frame, in output order, decoded by PyAV with no seeking and no skipping."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def packet_table(path: Path) -> list[tuple[int, bool]]:
    """``(pts, is_keyframe)`` of every video packet, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.size]


def keyframe_indices(path: Path) -> list[int]:
    """Presentation indices of keyframes, computed independently of the backends."""
    table = packet_table(path)
    order = sorted(pts for pts, _ in table)
    return sorted(order.index(pts) for pts, key in table if key)


def decode_upright(path: Path) -> list[np.ndarray]:
    """Reference: every frame turned upright by FFmpeg's own filters, chosen as ``ffmpeg``'s autorotate does.

    ``frame.rotation`` is FFmpeg's ``av_display_rotation_get`` (counter-clockwise degrees); the CLI negates it
    and inserts ``transpose=clock`` for 90, ``hflip,vflip`` for 180 and ``transpose=cclock`` for 270.
    """
    filters = {
        90: [("transpose", "clock")],
        180: [("hflip", ""), ("vflip", "")],
        270: [("transpose", "cclock")],
    }
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            chain = filters.get(round(-frame.rotation) % 360, [])
            if not chain:
                out.append(frame.to_ndarray(format="rgb24"))
                continue
            graph = av.filter.Graph()
            node = graph.add_buffer(template=stream)
            for name, args in chain:
                nxt = graph.add(name, args)
                node.link_to(nxt)
                node = nxt
            node.link_to(graph.add("buffersink"))
            graph.configure()
            graph.push(frame)
            out.append(graph.pull().to_ndarray(format="rgb24"))
    return out


def patch_moov_box(source: Path, target: Path, box: bytes, offset: int, fmt: str, *values: int) -> Path:
    """Copy an MP4, overwriting ``struct`` ``fmt`` fields at ``offset`` bytes into the payload of ``box``.

    ``box`` is found inside ``moov`` (after its header), so media data that happens to contain the same four
    bytes is never touched. Offsets count from the byte after the box type (the full-box version byte).
    """
    data = bytearray(source.read_bytes())
    moov = data.index(b"moov")
    at = data.index(box, moov) + 4
    struct.pack_into(fmt, data, at + offset, *values)
    target.write_bytes(bytes(data))
    return target
