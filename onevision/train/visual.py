"""Exact visual token counts of training samples from headers only (image size, container probe), and the
recipe's frame rule for loading videos; nothing here decodes pixels except :func:`load_video`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onevision.errors import DataError, MediaError
from onevision.policy import VideoPolicy

if TYPE_CHECKING:
    import anyres
    import video
    from onevision.train.data import Sample
    from onevision.train.recipe import Recipe


def video_sampling(policy: VideoPolicy) -> video.Sampling:
    """The recipe's frame rule (reference §6.1) as a ``video.Sampling`` (:meth:`VideoPolicy.sampling`): one frame
    every ``round(avg_fps / video_fps)`` (at least 1), then ``frames_upbound`` uniform frames (``linspace``, both
    ends) if that gives more, or always with ``force_sample``; ``frames_upbound: 0`` means no cap. The model's
    processor reads the same policy, so planning, loading and inference pick identical frames."""
    return policy.sampling()


def video_tokens(num_frames: int, policy: VideoPolicy, tile_size: int, patch_size: int) -> int:
    """Visual tokens of a video (§2.8): ``video.FramePooling.layout`` of the policy's pooling (the one formula)."""
    if policy.newline_position is None:
        raise DataError(
            "visual.video.newline_position must be set (one_token, grid, frame, no_token), got None"
        )
    return policy.pooling(tile_size, patch_size).layout(num_frames).num_tokens


def _media_error(exc: ValueError) -> MediaError:
    """A ``video.VideoError`` (its message names the file and ends with its ``reason``) as the trainer's
    skip-and-count :class:`MediaError`; a missing decoder backend is a setup problem and is re-raised as is."""
    import video

    if isinstance(exc, video.BackendUnavailableError):
        raise exc
    return MediaError(str(exc))


def video_frame_count(path: str, policy: VideoPolicy) -> int:
    """Frames the recipe's spec takes from ``path``, from the container header (``video.probe``, no decoding)."""
    import video

    try:
        info = video.probe(path)
        return len(video_sampling(policy).indices(info.num_frames, info.fps))
    except ValueError as exc:  # VideoError is a ValueError; so is an unusable frame rate
        raise _media_error(exc) from None


def load_video(path: str, policy: VideoPolicy, *, threads: int | None = None) -> video.Clip:
    """Decode the frames the recipe's spec selects (``video.load``; raises :class:`MediaError`).

    ``threads`` defaults to 1 inside a DataLoader worker (the workers are the parallelism; a decoder thread pool
    per worker oversubscribes the cores) and to automatic in the main process.
    """
    import video

    if threads is None:
        threads = 1 if _in_dataloader_worker() else 0
    try:
        return video.load(path, video_sampling(policy), threads=threads)
    except ValueError as exc:
        raise _media_error(exc) from None


def _in_dataloader_worker() -> bool:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover - torch is a dependency of the trainer
        return False
    return get_worker_info() is not None


def visual_token_counts(
    sample: Sample, recipe: Recipe, strategies: dict[str, anyres.Strategy]
) -> tuple[int, ...]:
    """Visual tokens of each media item of ``sample``, from headers only (raises :class:`MediaError`)."""
    import anyres
    from anyres.images import check_regular_file, peek_size

    if sample.modality in ("image", "multi_image"):
        strategy = strategies[sample.modality]
        counts = []
        for path in sample.images:
            try:
                # one os.stat before anything opens the path: a FIFO, socket, device or directory is "not a
                # regular file" (opening a FIFO would block), "does not exist" only when nothing is there
                check_regular_file(path)
                size = peek_size(path)
            except anyres.ImageError as exc:
                raise MediaError(str(exc)) from None
            if size is None or size[0] <= 0 or size[1] <= 0:
                raise MediaError(f"{path}: empty image")
            counts.append(strategy.num_tokens(anyres.ImageSize.from_pil(size)))
        return tuple(counts)
    if sample.modality == "video":
        assert sample.video is not None
        n = video_frame_count(sample.video, recipe.visual.video)
        return (video_tokens(n, recipe.visual.video, recipe.visual.tile_size, recipe.visual.patch_size),)
    return ()
