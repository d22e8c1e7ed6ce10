"""Constants and reference helpers shared by the video tests (decoder-independent oracles)."""

from __future__ import annotations

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
