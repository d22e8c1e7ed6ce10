"""Issue #13 hardening of geometry: implausible grid pinpoints (below the tile size, not whole tiles, zero or
negative, fractional, or thousands of tiles) are rejected with a :class:`GeometryError` naming the entry when a
strategy is built; the shipped configurations still build."""

from __future__ import annotations

import pytest

import anyres
from anyres import GeometryError
from anyres.geometry import MAX_PINPOINT_TILES, parse_pinpoints


@pytest.mark.parametrize(
    ("pinpoints", "match"),
    [
        (
            [(384, 768), (768, 384), (768, 768), (100, 100)],
            r"grid_pinpoints\[3\] = \(100, 100\) is smaller than the tile size 384",
        ),
        ([(100, 100)], r"grid_pinpoints\[0\] = \(38400, 38400\) px is a 100x100 grid .*10,000 tiles"),
        ("(1x1),...,(100x100)", r"grid_pinpoints: range .* 100x100 grid \(10,000 tiles\)"),
        ([(384, 384), (384, 384 * 145)], r"grid_pinpoints\[1\] = .* 1x145 grid .*145 tiles"),
        ([(384, 768), (0, 384)], r"grid_pinpoints\[1\] = \(0, 384\): every side must be positive"),
        ([(384, -768)], r"grid_pinpoints\[0\] = \(384, -768\): every side must be positive"),
        (
            [(384, 768), (384, 500)],
            r"grid_pinpoints\[1\] = \(384, 500\): .*not multiples of the tile size 384",
        ),
        ([(384.5, 768)], r"grid_pinpoints\[0\] = \(384.5, 768\): sides must be whole numbers"),
        ([(True, 2)], r"grid_pinpoints\[0\] = \(True, 2\): sides must be whole numbers"),
    ],
)
def test_implausible_pinpoints_are_rejected_at_construction(pinpoints, match):
    with pytest.raises(GeometryError, match=match):
        anyres.get_strategy("anyres_max_9", grid_pinpoints=pinpoints)


def test_pixel_pinpoints_below_the_tile_size_name_the_entry():
    with pytest.raises(GeometryError, match=r"grid_pinpoints\[1\] = \(336, 100\) is smaller than the tile"):
        parse_pinpoints([(336, 672), (336, 100)], 336, unit="pixels")


def test_hd_max_tiles_is_bounded():
    with pytest.raises(GeometryError, match=f"max_tiles must be an integer from 1 to {MAX_PINPOINT_TILES}"):
        anyres.get_strategy("hd", max_tiles=200)


def test_largest_accepted_layouts_and_shipped_defaults_still_build():
    assert len(parse_pinpoints(f"(1x1),...,(1x{MAX_PINPOINT_TILES})", 384)) == MAX_PINPOINT_TILES
    assert len(parse_pinpoints("(1x1),...,(12x12)", 384)) == 144
    assert len(parse_pinpoints([(384.0, 768.0)], 384)) == 1  # integral floats (JSON configs) are fine
    for name in ("pad", "hd", "anyres", "anyres_max_9"):
        anyres.get_strategy(name)
    assert len(anyres.get_strategy("hd", max_tiles=MAX_PINPOINT_TILES).pinpoints) > 0
