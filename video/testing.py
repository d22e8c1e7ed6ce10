"""Synthetic media with a frame counter burned into every frame, for tests and benchmarks.

Frame ``i`` carries ``i`` as 16 bits in two rows of eight big black/white blocks at the top of the frame, large
enough that lossy compression cannot flip a bit; the rest of the frame is a moving texture so the encoder
produces real motion-compensated P/B frames. :func:`read_counter` recovers ``i`` from a decoded RGB frame, an
oracle independent of any decoder. Needs PyAV (and PIL for GIFs / frame directories).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "COUNTER_BITS",
    "counter_image",
    "read_counter",
    "write_audio_only",
    "write_counter_gif",
    "write_counter_video",
    "write_frame_directory",
]

COUNTER_BITS = 16
_COLS = 8
_ROWS = COUNTER_BITS // _COLS


def _block(width: int, height: int) -> int:
    block = min(width // _COLS, height // (2 * _ROWS), 32)
    if block < 4:
        raise ValueError(f"frame {width}x{height} is too small for the frame counter (need >= 32x16)")
    return block


def _counter_bits(index: int) -> np.ndarray:
    if not 0 <= index < 2**COUNTER_BITS:
        raise ValueError(f"frame index {index} does not fit in {COUNTER_BITS} bits")
    return np.array([(index >> b) & 1 for b in range(COUNTER_BITS)], dtype=np.uint8).reshape(_ROWS, _COLS)


def _texture(width: int, height: int, num_frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(40, 216, size=(height // 8 + num_frames // 8 + 4, width // 8 + num_frames // 4 + 4))
    return np.kron(cells.astype(np.uint8), np.ones((8, 8), dtype=np.uint8))


def _luma(index: int, width: int, height: int, texture: np.ndarray) -> np.ndarray:
    dy, dx = index % (texture.shape[0] - height + 1), (2 * index) % (texture.shape[1] - width + 1)
    y = texture[dy : dy + height, dx : dx + width].copy()
    block = _block(width, height)
    bits = _counter_bits(index)
    for r in range(_ROWS):
        for c in range(_COLS):
            y[r * block : (r + 1) * block, c * block : (c + 1) * block] = 235 if bits[r, c] else 16
    return y


def counter_image(index: int, width: int = 160, height: int = 96) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` image carrying ``index`` (grey background, for images and GIFs)."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[..., 0] = (np.arange(width, dtype=np.int64)[None, :] * 255 // max(1, width - 1)).astype(np.uint8)
    block = _block(width, height)
    bits = _counter_bits(index)
    for r in range(_ROWS):
        for c in range(_COLS):
            image[r * block : (r + 1) * block, c * block : (c + 1) * block] = 255 if bits[r, c] else 0
    return image


def read_counter(frame: np.ndarray) -> int:
    """Recover the frame index from a decoded RGB frame ``[H, W, 3]`` made by this module."""
    height, width = frame.shape[:2]
    block = _block(width, height)
    margin = block // 4
    value = 0
    for r in range(_ROWS):
        for c in range(_COLS):
            patch = frame[
                r * block + margin : (r + 1) * block - margin, c * block + margin : (c + 1) * block - margin
            ]
            if patch.mean() > 128:
                value |= 1 << (r * _COLS + c)
    return value


def write_counter_video(
    path: str | os.PathLike[str],
    *,
    num_frames: int,
    width: int = 160,
    height: int = 96,
    fps: int | Fraction = 30,
    codec: str = "libx264",
    gop: int | None = None,
    bframes: int | None = None,
    preset: str = "ultrafast",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Encode a counter video with PyAV.

    Args:
        gop, bframes: libx264/libx265 keyframe interval and B-frames (scene-cut keyframes are disabled so the
            GOP is exactly ``gop``).
        pts, time_base: explicit presentation timestamps (variable frame rate).
        rotation: display rotation (degrees, counter-clockwise) written to the container.
        options: extra codec options; container_options: muxer options (e.g. ``{"movflags": "faststart"}``).
    """
    import av

    if width % 2 or height % 4:
        raise ValueError("width must be even and height a multiple of 4 (yuv420p planes)")
    path = Path(path)
    codec_options = dict(options or {})
    params = []
    if gop is not None:
        params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
    if bframes is not None:
        params.append(f"bframes={bframes}")
    if codec == "libx264":
        codec_options.setdefault("preset", preset)
        if params:
            codec_options["x264-params"] = ":".join(params)
    elif codec == "libx265":
        codec_options.setdefault("preset", preset)
        codec_options["x265-params"] = ":".join([*params, "log-level=error"])
    elif gop is not None:
        codec_options.setdefault("g", str(gop))
        if bframes is not None:
            codec_options.setdefault("bf", str(bframes))
    texture = _texture(width, height, num_frames, seed)
    u_plane = (
        (np.add.outer(np.arange(height // 2), np.arange(width // 2 + num_frames)) * 3) % 160 + 48
    ).astype(np.uint8)
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation and hasattr(stream, "set_display_rotation"):  # PyAV >= 16; older: the tkhd matrix below
            stream.set_display_rotation(rotation)
        stream.options = codec_options
        buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)
        quarter = height // 4
        block = _block(width, height)
        band_rows, band_cols = _ROWS * block // 2, _COLS * block // 2
        for i in range(num_frames):
            buffer[:height] = _luma(i, width, height, texture)
            u = u_plane[:, i % num_frames : i % num_frames + width // 2]
            buffer[height : height + quarter] = u.reshape(quarter, width)
            buffer[height + quarter :] = u[::-1].reshape(quarter, width)
            # neutral chroma behind the counter so it decodes to pure black/white
            for plane in (height, height + quarter):
                view = buffer[plane : plane + quarter].reshape(height // 2, width // 2)
                view[:band_rows, :band_cols] = 128
            frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
            if pts is not None:
                frame.pts = int(pts[i])
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        patch_rotation = bool(rotation) and not hasattr(stream, "set_display_rotation")
    if patch_rotation:
        _set_tkhd_rotation(path, int(rotation))
    return path


def _set_tkhd_rotation(path: Path, degrees: int) -> None:
    """Write FFmpeg's display matrix for ``degrees`` (``av_display_rotation_set``) into the video track's
    ``tkhd``, as FFmpeg's MP4/MOV muxer does for a stream's display matrix (PyAV < 16 cannot set one)."""
    import math
    import struct

    from video._mp4 import _boxes

    data = bytearray(path.read_bytes())
    moov = next(((s, e) for kind, s, e in _boxes(data) if kind == b"moov"), None)
    if moov is None:
        raise ValueError(f"{path}: rotation needs an MP4/MOV container with PyAV < 16 (no moov box)")
    for kind, start, end in _boxes(data, *moov):
        if kind != b"trak":
            continue
        boxes = {k: (s, e) for k, s, e in _boxes(data, start, end)}
        mdia = boxes.get(b"mdia")
        handlers = [data[s + 8 : s + 12] for k, s, e in _boxes(data, *mdia) if k == b"hdlr"] if mdia else []
        if b"tkhd" not in boxes or handlers != [b"vide"]:
            continue
        tkhd = boxes[b"tkhd"][0]
        offset = tkhd + (52 if data[tkhd] == 1 else 40)
        radians = math.radians(degrees)
        c, s = round(math.cos(radians) * 65536), round(math.sin(radians) * 65536)
        struct.pack_into(">9i", data, offset, c, -s, 0, s, c, 0, 0, 0, 1 << 30)
        path.write_bytes(bytes(data))
        return
    raise ValueError(f"{path}: no video track to rotate")


def write_counter_gif(
    path: str | os.PathLike[str], durations_ms: Sequence[int], width: int = 64, height: int = 32
) -> Path:
    """An animated GIF whose frame ``i`` carries ``i`` and lasts ``durations_ms[i]``."""
    from PIL import Image

    frames = [Image.fromarray(counter_image(i, width, height)) for i in range(len(durations_ms))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations_ms), loop=0)
    return Path(path)


def write_frame_directory(
    directory: str | os.PathLike[str],
    num_frames: int,
    *,
    width: int = 64,
    height: int = 32,
    pattern: str = "{:d}.png",
) -> Path:
    """A directory of PNG frames named with ``pattern`` (unpadded by default, to exercise natural sorting)."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(counter_image(i, width, height)).save(directory / pattern.format(i))
    return directory


def write_audio_only(path: str | os.PathLike[str], seconds: float = 0.5, rate: int = 16000) -> Path:
    """An AAC audio-only file (no video stream)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = 1024
        t = np.arange(samples, dtype=np.float32) / rate
        for k in range(max(1, int(seconds * rate) // samples)):
            tone = (0.1 * np.sin(2 * np.pi * 440 * (t + k * samples / rate))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k * samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
