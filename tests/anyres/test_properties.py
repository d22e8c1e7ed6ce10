"""Property tests (hypothesis): pack length equals the layout, tiles reassemble the canvas, unpad keeps content."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import anyres
from anyres import ImageSize

STRATEGIES = {
    "pad": anyres.get_strategy("pad"),
    "pad-no-newline": anyres.get_strategy("pad", newline=False),
    "hd": anyres.get_strategy("hd"),
    "hd-global-last": anyres.get_strategy("hd", base_position="last"),
    "anyres": anyres.get_strategy("anyres"),
    "anyres-llava-rounding": anyres.get_strategy("anyres", rounding="llava"),
    "anyres_max_9": anyres.get_strategy("anyres_max_9"),
    "anyres_max_4-llava": anyres.get_strategy("anyres_max_4", rounding="llava"),
    "tiny": anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8, grid_pinpoints="(1x1),...,(6x6)"),
}

sizes = st.builds(ImageSize, st.integers(1, 5000), st.integers(1, 5000))
aspect_sizes = st.builds(
    lambda long, ratio, tall: (
        ImageSize(long, max(1, long // ratio)) if tall else ImageSize(max(1, long // ratio), long)
    ),
    st.integers(1, 5000),
    st.integers(1, 20),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(STRATEGIES)), size=st.one_of(sizes, aspect_sizes))
def test_pack_length_equals_layout(name, size):
    strategy = STRATEGIES[name]
    layout = strategy.layout(size)
    tokens = strategy.tokens_per_tile + (1 if strategy.has_cls else 0)
    feats = torch.randn(layout.num_tiles, tokens, 4)
    packed = strategy.pack(feats, layout, torch.randn(4))
    assert packed.shape == (layout.num_tokens, 4)
    assert layout.num_tokens == layout.base_tokens + layout.capped.rows * layout.capped.cols + layout.newlines


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["hd", "anyres", "anyres-llava-rounding", "anyres_max_9", "tiny"]),
    size=st.one_of(sizes, aspect_sizes),
)
def test_unpad_never_cuts_image_content(name, size):
    """Every feature row/column whose pixels lie entirely inside the pasted image is kept."""
    layout = STRATEGIES[name].layout(size)
    s, tile = layout.tokens_per_side, layout.tile_size
    (top, left), (rh, rw) = layout.offsets, layout.resized
    (kt, kl), (kh, kw) = layout.unpad_offsets, layout.unpadded
    content_rows = [
        i
        for i in range(layout.stitched.rows)
        if Fraction(top * s, tile) <= i and i + 1 <= Fraction((top + rh) * s, tile)
    ]
    content_cols = [
        j
        for j in range(layout.stitched.cols)
        if Fraction(left * s, tile) <= j and j + 1 <= Fraction((left + rw) * s, tile)
    ]
    assert all(kt <= i < kt + kh for i in content_rows)
    assert all(kl <= j < kl + kw for j in content_cols)
    # both references keep 0 rows for e.g. a 1x17 image under hd (no whole feature row of content); so do we
    assert 0 <= kh <= layout.stitched.rows and 0 <= kw <= layout.stitched.cols


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 900), width=st.integers(1, 900), seed=st.integers(0, 2**16))
def test_tiles_reassemble_to_the_padded_canvas(height, width, seed):
    from anyres import tiling

    strategy = STRATEGIES["tiny"]
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tiles = strategy.preprocess(image)
    layout = tiles.layout
    from PIL import Image

    canvas = tiling.grid_canvas(Image.fromarray(image), layout, strategy.resample)
    pixels = torch.round((tiles.pixel_values * 0.5 + 0.5) * 255).to(torch.uint8)  # undo SigLIP normalisation
    rows, cols = layout.grid
    t = strategy.tile_size
    grid = pixels[1:].view(rows, cols, 3, t, t).permute(0, 3, 1, 4, 2).reshape(rows * t, cols * t, 3)
    assert torch.equal(grid, canvas)
    assert tuple(canvas.shape[:2]) == tuple(layout.canvas)
    # padding is black and the pasted content sits exactly at the layout's offsets
    (top, left), (rh, rw) = layout.offsets, layout.resized
    mask = torch.ones(canvas.shape[:2], dtype=torch.bool)
    mask[top : top + rh, left : left + rw] = False
    assert int(canvas[mask].sum()) == 0


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(STRATEGIES)), size=sizes)
def test_strategy_config_round_trip(name, size):
    strategy = STRATEGIES[name]
    rebuilt = anyres.strategy_from_dict(strategy.to_dict())
    assert rebuilt == strategy
    assert rebuilt.layout(size) == strategy.layout(size)
