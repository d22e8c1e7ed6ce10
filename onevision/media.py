"""Media items of a sample: matching them to tags, their sizes and frame counts (no pixels when counting), and video
frames to normalised encoder inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyres
from onevision.errors import InputError

if TYPE_CHECKING:
    import torch


@dataclass
class Media:
    """One media item of one sample, resolved to what is needed for layout and pixels."""

    kind: str
    source: Any
    layout: Any = None
    strategy: Any = None
    image: Any = None  # loaded PIL image
    frames: Any = None  # uint8 [T, H, W, 3]
    timestamps: Any = None  # seconds of each sampled frame (paths and video.Clip inputs)
    duration: float | None = None


def image_size(item: Media, load: bool) -> anyres.ImageSize:
    """The size of an image item (an ``anyres.ImageSize`` as given; a path's header when only counting, ``load``
    False; otherwise the decoded image, kept on the item)."""
    src = item.source
    if isinstance(src, anyres.ImageSize):
        if load:
            raise InputError("an ImageSize can only be counted, not processed; pass the image itself")
        return src
    if not load:  # counting only: read the size without decoding pixels where possible
        from anyres.images import peek_size

        if isinstance(src, str) or hasattr(src, "__fspath__"):
            return anyres.ImageSize.from_pil(peek_size(src, max_pixels=item.strategy.max_pixels))
    loaded = anyres.open_image(src, max_pixels=item.strategy.max_pixels)
    item.image = loaded.image
    return anyres.ImageSize.from_pil(loaded.image.size)


def video_frames(item: Media, load: bool, sampling: Callable[[], Any]) -> int:
    """Frames of a video item: a count as given, a file's sampled frames (``sampling()`` gives the
    ``video.Sampling``; from the header when only counting), a ``video.Clip``'s or an array's frames (kept on the
    item)."""
    import numpy as np

    src = item.source
    if isinstance(src, int) and not isinstance(src, bool):
        if load:
            raise InputError("a frame count can only be counted, not processed; pass the video itself")
        if src < 1:
            raise InputError(f"a video needs at least one frame, got {src}")
        return src
    if isinstance(src, str) or hasattr(src, "__fspath__"):
        import video

        if not load:  # counting only: the container header is enough
            info = video.probe(src)
            indices = sampling().indices(info.num_frames, info.fps)
            item.timestamps, item.duration = indices / info.fps, float(info.duration)
            return len(indices)
        clip = video.load(src, sampling())
        frames, item.timestamps, item.duration = clip.frames, clip.timestamps, float(clip.duration)
    elif hasattr(src, "frames"):
        frames = src.frames
        item.timestamps = getattr(src, "timestamps", None)
        item.duration = getattr(src, "duration", None)
    else:
        frames = src
    if hasattr(frames, "detach"):  # torch uint8 [T, 3, H, W] -> numpy [T, H, W, 3]
        frames = frames.detach().cpu()
        if frames.ndim == 4 and frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):
            frames = frames.permute(0, 2, 3, 1)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise InputError(
            f"video frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {tuple(frames.shape)}"
        )
    item.frames = frames
    return int(frames.shape[0])


def preprocess_frames(
    frames: Any, tile_size: int, image_mean: Sequence[float], image_std: Sequence[float]
) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, S, S]``: bicubic (antialiased) squash to one tile, then
    normalised like images (the transformers video processor's rule)."""
    import numpy as np
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    s = tile_size
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != (s, s):
        x = tvf.resize(x, [s, s], interpolation=InterpolationMode.BICUBIC, antialias=True)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return (x.to(torch.float32) - mean) / std


def merge_media(from_parts: list[Any], given: Sequence[Any] | None) -> list[Any]:
    """Media from message parts or from the arguments (never both)."""
    if from_parts and given:
        raise InputError("media were given both inside message parts and as arguments; use one of the two")
    return list(from_parts or given or ())


def assign_media(media: Any, tags_per_sample: list[int], kind: str, token: str) -> list[list[Any]]:
    """Split a flat (or per-sample nested) media list over the samples' tags, checking counts."""
    if media is None:
        media = []
    elif not isinstance(media, (list, tuple)) or isinstance(media, anyres.ImageSize):
        media = [media]
    media = list(media)
    # images may be nested per sample (an image is never a list); videos are always a flat list
    nested = (
        kind == "image"
        and bool(media)
        and all(isinstance(m, (list, tuple)) and not isinstance(m, anyres.ImageSize) for m in media)
    )
    if nested:
        if len(media) != len(tags_per_sample):
            raise InputError(f"{len(media)} per-sample {kind} lists for {len(tags_per_sample)} texts")
        for i, (given, n) in enumerate(zip(media, tags_per_sample)):
            if len(given) != n:
                raise InputError(f"sample {i}: {n} {token} tag(s) but {len(given)} {kind}(s)")
        return [list(m) for m in media]
    total = sum(tags_per_sample)
    if total != len(media):
        where = (
            ", ".join(f"sample {i}: {n}" for i, n in enumerate(tags_per_sample))
            if len(tags_per_sample) > 1
            else ""
        )
        raise InputError(
            f"the text has {total} {token} tag(s) but {len(media)} {kind}(s) were given"
            + (f" (tags per sample: {where})" if where else "")
            + (f"; add {token} where each {kind} goes" if total < len(media) else "")
        )
    out, start = [], 0
    for n in tags_per_sample:
        out.append(media[start : start + n])
        start += n
    return out
