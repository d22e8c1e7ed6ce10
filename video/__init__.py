"""``video``: frame-exact video loading, frame-sampling specs and video token layouts for VLMs.

A standalone layer (it never imports ``onevision`` or ``anyres``) that any vision-language codebase can call::

    import video

    spec = video.Sampling(fps=1, max_frames=32)             # the OneVision training rule
    clip = video.load("clip.mp4", spec)                      # Clip: frames [T, H, W, 3] uint8, indices, timestamps
    info = video.probe("clip.mp4")                           # metadata without decoding
    prompt = video.time_instruction(clip)                     # LLaVA-Video time instruction, verbatim

    pooling = video.FramePooling()                            # bilinear 27x27 -> 14x14, one newline per video
    pooling.layout(len(clip)).num_tokens                      # 196 * T + 1
    tokens = pooling.pack(features, newline=image_newline)    # [num_tokens, D]; needs torch

Decoders are pluggable and imported lazily: PyAV (default, always installed), decord and torchcodec (extras),
PIL (frame directories, animated images). ``load(..., backend="auto")`` falls back to the next backend when one
fails on a file. Every bad input raises :class:`VideoError` (a ``ValueError``) naming the file and the cause.
"""

from __future__ import annotations

from video.backends import get_backend, list_backends, register_backend, unregister_backend
from video.backends.base import Backend, OpenOptions, Reader, VideoInfo
from video.errors import REASONS, BackendUnavailableError, VideoError
from video.io import Clip, load, probe
from video.limits import Limits
from video.pooling import FramePooling, VideoLayout
from video.sampling import Sampling, fps_indices, snap_to_keyframes, time_instruction, uniform_indices

__all__ = [
    "REASONS",
    "Backend",
    "BackendUnavailableError",
    "Clip",
    "FramePooling",
    "Limits",
    "OpenOptions",
    "Reader",
    "Sampling",
    "VideoError",
    "VideoInfo",
    "VideoLayout",
    "fps_indices",
    "get_backend",
    "list_backends",
    "load",
    "probe",
    "register_backend",
    "snap_to_keyframes",
    "time_instruction",
    "uniform_indices",
    "unregister_backend",
]
