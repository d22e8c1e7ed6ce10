"""Padded model-input batches: :class:`BatchInputs` and :func:`collate` (samples -> one right- or left-padded batch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onevision.errors import InputError

#: the label of every position the loss ignores
IGNORE_INDEX = -100


class BatchInputs(dict):
    """Model inputs (a dict usable as ``model(**inputs)``) with attribute access and ``.to(device, dtype)``.

    Keys: ``input_ids``, ``attention_mask`` ``[B, L]``; optionally ``labels``; ``pixel_values``
    ``[sum tiles, 3, S, S]`` with ``image_layouts`` (one ``anyres.Layout`` per image, in placeholder order);
    ``pixel_values_videos`` ``[sum frames, 3, S, S]`` with ``video_layouts`` (one per video).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any = None, dtype: Any = None) -> BatchInputs:
        """Move tensors to ``device``; cast floating tensors (pixels) to ``dtype`` if given."""
        import torch

        out = BatchInputs()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if dtype is not None and value.is_floating_point():
                    value = value.to(device=device, dtype=dtype)
                else:
                    value = value.to(device=device)
            out[key] = value
        return out


def collate(
    samples: Sequence[Mapping[str, Any]], *, pad_token_id: int, padding_side: str = "right"
) -> BatchInputs:
    """Pad samples (``input_ids``, optional ``labels`` and visual inputs) into one batch; the attention mask comes
    from the lengths. ``padding_side="right"`` for training, ``"left"`` for generation. Labels pad with ``-100``."""
    import torch

    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not samples:
        raise InputError("collate needs at least one sample")
    lengths = [int(s["input_ids"].shape[0]) for s in samples]
    width = max(lengths)
    batch = len(samples)
    ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    has_labels = [s.get("labels") is not None for s in samples]
    if any(has_labels) and not all(has_labels):
        raise InputError("either every sample or none must have labels")
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long) if all(has_labels) else None
    for row, (s, n) in enumerate(zip(samples, lengths)):
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, cols] = s["input_ids"]
        mask[row, cols] = 1
        if labels is not None:
            labels[row, cols] = s["labels"]
    out = BatchInputs(input_ids=ids, attention_mask=mask)
    if labels is not None:
        out["labels"] = labels
    pixels = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
    layouts = tuple(lay for s in samples for lay in s.get("image_layouts", ()))
    if pixels:
        out["pixel_values"] = pixels[0] if len(pixels) == 1 else torch.cat(pixels)
        out["image_layouts"] = layouts
    frames = [s["pixel_values_videos"] for s in samples if s.get("pixel_values_videos") is not None]
    if frames:
        out["pixel_values_videos"] = frames[0] if len(frames) == 1 else torch.cat(frames)
        out["video_layouts"] = tuple(lay for s in samples for lay in s.get("video_layouts", ()))
    return out
