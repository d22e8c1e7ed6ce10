"""Frame-sampling specs and their index maths (pure numpy, no decoding).

One :class:`Sampling` object describes which frames a model sees. It is frozen, validated, and round-trips
through :meth:`Sampling.to_dict` / :meth:`Sampling.from_dict`, so training, inference and evaluation can read
the same spec from a checkpoint config.

Index rules (``total`` = number of frames in the selected range, ``avg_fps`` = the video's average frame rate):

* ``num_frames=N``, ``uniform="linspace"`` (default, the LLaVA reference): ``np.linspace(0, total-1, N, dtype=int)``
  (both endpoints, truncation toward zero; repeats indices when ``N > total``).
* ``num_frames=N``, ``uniform="arange"`` (the HF ``LlavaOnevisionVideoProcessor`` rule):
  ``np.arange(N) * total // N`` (never includes the last frame unless ``N >= total``).
* ``fps=f``: ``step = max(1, round(avg_fps / f))``; ``indices = range(0, total, step)``; then, if ``max_frames``
  is set and (``len(indices) > max_frames`` or ``force_sample``), the indices are replaced by the uniform rule
  with ``N = max_frames``. (This is the reference's ``process_video_with_decord``; ``round`` is Python's
  round-half-to-even, ``step`` is clamped to at least 1, which fixes the reference's crash for low-fps video.)
* ``start`` / ``end`` (seconds, half-open ``[start, end)``) first restrict the video to the frames whose
  timestamp falls in the range; the rules above then run on that range and are offset back to video indices.
* ``mode="keyframes"`` snaps each index to the nearest keyframe (ties go to the earlier one): cheap, **not
  frame-exact**, for previews and cheap training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from video._fields import strict_from_dict

if TYPE_CHECKING:
    from video.io import Clip

__all__ = [
    "Sampling",
    "fps_indices",
    "snap_to_keyframes",
    "time_instruction",
    "uniform_indices",
]

UniformRule = Literal["linspace", "arange"]
SamplingMode = Literal["exact", "keyframes"]


def uniform_indices(total: int, num: int, rule: UniformRule = "linspace") -> np.ndarray:
    """``num`` indices spread over ``range(total)`` (see the module docstring for the two rules)."""
    _check_count("total", total)
    _check_count("num", num)
    if rule == "linspace":
        return np.linspace(0, total - 1, num, dtype=int).astype(np.int64)
    if rule == "arange":
        return np.arange(num, dtype=np.int64) * total // num
    raise ValueError(f"unknown uniform rule {rule!r}; expected 'linspace' or 'arange'")


def fps_indices(
    total: int,
    avg_fps: float,
    fps: float,
    *,
    max_frames: int | None = None,
    force_sample: bool = False,
    rule: UniformRule = "linspace",
) -> np.ndarray:
    """The reference's fixed-rate rule with an optional uniform cap (see the module docstring)."""
    _check_count("total", total)
    if not (math.isfinite(avg_fps) and avg_fps > 0):
        raise ValueError(f"avg_fps must be a positive finite number, got {avg_fps!r}")
    step = max(1, round(avg_fps / fps))
    indices = np.arange(0, total, step, dtype=np.int64)
    if max_frames is not None and (len(indices) > max_frames or force_sample):
        indices = uniform_indices(total, max_frames, rule)
    return indices


def snap_to_keyframes(
    indices: Sequence[int] | np.ndarray, keyframes: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Replace each index by the nearest keyframe index (ties go to the earlier keyframe)."""
    idx = np.asarray(indices, dtype=np.int64)
    keys = np.unique(np.asarray(keyframes, dtype=np.int64))
    if keys.size == 0:
        raise ValueError("no keyframes to snap to")
    right = np.clip(np.searchsorted(keys, idx, side="left"), 0, keys.size - 1)
    left = np.clip(right - 1, 0, keys.size - 1)
    take_left = np.abs(idx - keys[left]) <= np.abs(keys[right] - idx)
    return np.where(take_left, keys[left], keys[right])


@dataclass(frozen=True)
class Sampling:
    """Which frames to take from a video. Exactly one of ``num_frames`` and ``fps`` must be given.

    Attributes:
        num_frames: take this many frames spread uniformly over the (range of the) video.
        fps: take frames at about this rate (``step = max(1, round(avg_fps / fps))``).
        max_frames: with ``fps``: upper bound; above it (or always, with ``force_sample``) switch to
            ``max_frames`` uniform frames. The reference calls it ``frames_upbound``.
        force_sample: with ``fps`` and ``max_frames``: always take exactly ``max_frames`` uniform frames.
        start: first second of the range to sample from (inclusive); ``None`` = beginning.
        end: end of the range in seconds (exclusive); ``None`` = end of video.
        uniform: ``"linspace"`` (reference; both endpoints) or ``"arange"`` (HF processor; ``i*total//N``).
        mode: ``"exact"`` (frame-exact, default) or ``"keyframes"`` (snap to nearest keyframes; approximate).
        time_instruction: whether prompts built for this spec carry :func:`time_instruction` (stored so the
            checkpoint records it; :mod:`video` itself never edits prompts).
    """

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    force_sample: bool = False
    start: float | None = None
    end: float | None = None
    uniform: UniformRule = "linspace"
    mode: SamplingMode = "exact"
    time_instruction: bool = False

    def __post_init__(self) -> None:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("Sampling needs exactly one of num_frames=N or fps=f")
        if self.num_frames is not None:
            _check_count("num_frames", self.num_frames)
            if self.max_frames is not None or self.force_sample:
                raise ValueError("max_frames/force_sample only apply to fps sampling, not num_frames")
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float, np.integer, np.floating)):
                raise ValueError(f"fps must be a number, got {self.fps!r}")
            if not (math.isfinite(self.fps) and self.fps > 0):
                raise ValueError(f"fps must be positive and finite, got {self.fps!r}")
        if self.max_frames is not None:
            _check_count("max_frames", self.max_frames)
        if self.force_sample and self.max_frames is None:
            raise ValueError("force_sample=True needs max_frames")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
        if self.start is not None and self.end is not None and not self.end > self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if self.uniform not in ("linspace", "arange"):
            raise ValueError(f"uniform must be 'linspace' or 'arange', got {self.uniform!r}")
        if self.mode not in ("exact", "keyframes"):
            raise ValueError(f"mode must be 'exact' or 'keyframes', got {self.mode!r}")
        if not isinstance(self.force_sample, bool) or not isinstance(self.time_instruction, bool):
            raise ValueError("force_sample and time_instruction must be bools")
        # normalise numpy scalars to plain Python numbers so to_dict() is JSON-serialisable
        for name, kind in (
            ("num_frames", int),
            ("max_frames", int),
            ("fps", float),
            ("start", float),
            ("end", float),
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, kind(value))

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain JSON-serialisable dict (defaults included, so the record is explicit)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sampling:
        """Inverse of :meth:`to_dict`; unknown keys are an error (no silent drift between configs)."""
        return strict_from_dict(cls, data)

    # -- index maths -----------------------------------------------------------------------------------
    def frame_range(
        self, total: int, avg_fps: float, timestamps: np.ndarray | None = None
    ) -> tuple[int, int]:
        """``(first, stop)`` of the frames inside ``[start, end)``; timestamps default to ``i / avg_fps``."""
        _check_count("total", total)
        if self.start is None and self.end is None:
            return 0, total
        if timestamps is None:
            times = np.arange(total, dtype=np.float64) / float(avg_fps)
        else:
            times = np.asarray(timestamps, dtype=np.float64)
            if times.shape != (total,):
                raise ValueError(f"timestamps must have shape ({total},), got {times.shape}")
        first = 0 if self.start is None else int(np.searchsorted(times, self.start - 1e-9, side="left"))
        stop = total if self.end is None else int(np.searchsorted(times, self.end - 1e-9, side="left"))
        if stop <= first:
            raise ValueError(
                f"the range [{self.start}, {self.end}) s selects no frame "
                f"(video spans {times[0]:.3f}..{times[-1]:.3f} s)"
            )
        return first, stop

    def indices(self, total: int, avg_fps: float, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Frame indices (int64, sorted, may repeat) for a video of ``total`` frames at ``avg_fps``.

        ``timestamps`` (seconds per frame) only matter for ``start``/``end`` on variable-frame-rate video.
        ``mode="keyframes"`` snapping is applied by :func:`video.load`, which knows the keyframes.
        """
        first, stop = self.frame_range(total, avg_fps, timestamps)
        count = stop - first
        if self.num_frames is not None:
            local = uniform_indices(count, self.num_frames, self.uniform)
        else:
            assert self.fps is not None
            local = fps_indices(
                count,
                float(avg_fps),
                float(self.fps),
                max_frames=self.max_frames,
                force_sample=self.force_sample,
                rule=self.uniform,
            )
        return local + first


def time_instruction(
    clip_or_timestamps: Clip | Sequence[float] | np.ndarray,
    duration: float | None = None,
) -> str:
    """The LLaVA-Video time instruction, verbatim (including the missing space in ``.Please``).

    ``clip_or_timestamps`` is a :class:`video.Clip` (its ``timestamps`` and ``duration`` are used) or a
    sequence of frame times in seconds, in which case ``duration`` (seconds) is required.
    """
    timestamps = getattr(clip_or_timestamps, "timestamps", None)
    if timestamps is None:
        timestamps = clip_or_timestamps
        if duration is None:
            raise ValueError(
                "time_instruction(timestamps, duration): duration is required with raw timestamps"
            )
    elif duration is None:
        duration = clip_or_timestamps.duration  # type: ignore[union-attr]
    times = [float(t) for t in np.asarray(timestamps, dtype=np.float64).reshape(-1)]
    video_time = float(duration)
    num_frames = len(times)
    frame_time = ",".join(f"{t:.2f}s" for t in times)
    return (
        f"The video lasts for {video_time:.2f} seconds, and {num_frames} frames are uniformly sampled from it. "
        f"These frames are located at {frame_time}.Please answer the following questions related to this video."
    )


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
