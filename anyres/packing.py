"""Feature side: turn per-tile encoder features into the exact token sequence a :class:`Layout` describes.

The grid is written tile by tile straight into the (channels-last) output, cropping the padding on the way, so
there is no channel-first stitched copy; only the τ cap needs an intermediate map for bilinear interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anyres.geometry import GeometryError, Layout


def _drop_cls(features: torch.Tensor, layout: Layout, has_cls: bool) -> torch.Tensor:
    expected = layout.tokens_per_tile
    if has_cls and features.shape[1] == expected + 1:
        return features[:, 1:]
    if features.shape[1] != expected:
        raise GeometryError(
            f"features have {features.shape[1]} tokens per tile, expected {expected}"
            + (f" (or {expected + 1} with CLS)" if has_cls else "")
            + f" for tile {layout.tile_size} / {layout.tokens_per_side} tokens per side"
        )
    return features


def _check(features: torch.Tensor, layout: Layout, out: torch.Tensor | None) -> None:
    if features.ndim != 3:
        raise GeometryError(f"features must be [num_tiles, tokens, dim], got shape {tuple(features.shape)}")
    if features.shape[0] != layout.num_tiles:
        raise GeometryError(
            f"got features for {features.shape[0]} tiles but the layout of a {layout.image_size} image under "
            f"'{layout.strategy}' has {layout.num_tiles} tiles"
        )
    if out is not None and tuple(out.shape) != (layout.num_tokens, features.shape[-1]):
        raise GeometryError(
            f"out must have shape {(layout.num_tokens, features.shape[-1])}, got {tuple(out.shape)}"
        )


def stitch_crop(grid: torch.Tensor, layout: Layout, dest: torch.Tensor) -> None:
    """Write the unpadded region of the stitched tile grid into ``dest`` ``[h, w, D]`` (any strides)."""
    s = layout.tokens_per_side
    top, left = layout.unpad_offsets
    h, w = layout.unpadded
    cols = layout.grid.cols
    tiles = grid.view(layout.grid.rows, cols, s, s, grid.shape[-1])
    for r in range(layout.grid.rows):
        r0, r1 = max(top, r * s), min(top + h, (r + 1) * s)
        if r0 >= r1:
            continue
        for c in range(cols):
            c0, c1 = max(left, c * s), min(left + w, (c + 1) * s)
            if c0 >= c1:
                continue
            dest[r0 - top : r1 - top, c0 - left : c1 - left] = tiles[
                r, c, r0 - r * s : r1 - r * s, c0 - c * s : c1 - c * s
            ]


def pack(
    features: torch.Tensor,
    layout: Layout,
    newline: torch.Tensor | None = None,
    *,
    has_cls: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pack ``features`` ``[num_tiles, P, D]`` (base tile first) into ``[layout.num_tokens, D]``.

    ``newline`` ``[D]`` is required when the layout has newlines. ``out`` may be a view into a larger buffer
    (e.g. the LLM's ``inputs_embeds``) to avoid a copy. With ``has_cls`` a leading CLS token per tile is dropped.
    """
    _check(features, layout, out)
    features = _drop_cls(features, layout, has_cls)
    dim = features.shape[-1]
    if layout.newlines and newline is None:
        raise GeometryError(
            f"layout '{layout.strategy}' has {layout.newlines} newline tokens but no newline was given"
        )
    if out is None:
        out = features.new_empty(layout.num_tokens, dim)
    base_tokens = layout.base_tokens
    if layout.grid.count == 0:  # single tile: [base, newline?]
        out[:base_tokens] = features[0]
        if layout.newlines:
            out[base_tokens] = newline.to(out.dtype)
        return out
    grid_len = layout.num_tokens - base_tokens
    if layout.base_position == "first":
        out[:base_tokens] = features[0]
        grid_out = out[base_tokens:]
    else:
        grid_out = out[:grid_len]
        out[grid_len:] = features[0]
    h, w = layout.capped
    width = w + (1 if layout.newlines else 0)
    rows_view = grid_out.view(h, width, dim)
    if layout.is_capped:
        uh, uw = layout.unpadded
        stitched = features.new_empty(uh, uw, dim)
        stitch_crop(features[1:], layout, stitched)
        # channels-last NCHW view of the map: bilinear, align_corners=False, no antialias (as the references)
        resized = F.interpolate(stitched.permute(2, 0, 1)[None], size=[h, w], mode="bilinear")
        rows_view[:, :w] = resized[0].permute(1, 2, 0)
    else:
        stitch_crop(features[1:], layout, rows_view[:, :w])
    if layout.newlines:
        rows_view[:, w] = newline.to(out.dtype)
    return out
