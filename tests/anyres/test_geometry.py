"""Geometry core: reference token tables, rounding modes, the τ cap, pinpoint parsing and validation."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

import anyres
from anyres import GeometryError, GridShape, ImageSize
from anyres.geometry import capped_shape, hd_pinpoints, parse_pinpoints, select_best_resolution, unpad_shape

# llava-onevision-algorithms.md §5.2: (W, H) -> tokens under anyres_max_9, SigLIP-384, 36 pinpoints
ONEVISION_TABLE = [
    ((100, 100), 1485),
    ((224, 224), 1485),
    ((384, 384), 1485),
    ((640, 480), 2929),
    ((480, 640), 2943),
    ((800, 600), 4725),
    ((1000, 750), 4725),
    ((1024, 768), 4725),
    ((750, 1000), 4744),
    ((1280, 720), 5967),
    ((1280, 960), 7309),
    ((944, 1153), 8765),
    ((1920, 1080), 7269),
    ((1080, 1920), 7317),
    ((2000, 500), 7249),
    ((500, 2000), 7371),
    ((2304, 2304), 7371),
    ((5000, 5000), 7371),
    ((3840, 2160), 7317),
    ((4032, 3024), 7309),
    ((3024, 4032), 7332),
]


@pytest.mark.parametrize(("wh", "tokens"), ONEVISION_TABLE)
def test_onevision_reference_table(wh, tokens):
    width, height = wh
    assert anyres.get_strategy("anyres_max_9").num_tokens(ImageSize(height, width)) == tokens


def test_onevision_worked_example_1000x750():
    layout = anyres.get_strategy("anyres_max_9").layout(ImageSize(750, 1000))
    assert layout.canvas == ImageSize(768, 1152)
    assert layout.grid == GridShape(2, 3)
    assert layout.resized == ImageSize(768, 1024)
    assert layout.offsets.left == 64
    assert layout.stitched == GridShape(54, 81)
    assert layout.unpadded == GridShape(54, 73)
    assert not layout.is_capped
    assert layout.num_tiles == 7
    assert layout.num_tokens == 729 + 54 * 74 == 4725


def test_capped_layout_1920x1080():
    layout = anyres.get_strategy("anyres_max_9").layout(ImageSize(1080, 1920))
    assert (layout.grid, layout.num_tiles) == (GridShape(3, 5), 16)
    assert layout.unpadded == GridShape(75, 135)
    assert layout.capped == GridShape(60, 108)
    assert layout.newlines == 60
    assert layout.breakdown == {"base": 729, "grid": 60 * 108, "newlines": 60}


# §5.3: LLaVA-1.6 CLIP-336 (5 pinpoints, no cap) and SigLIP "a4"
NEXT_TABLE = [
    ((336, 336), 1176),
    ((640, 480), 2340),
    ((1000, 750), 2340),
    ((750, 1000), 2352),
    ((1280, 720), 1948),
    ((1920, 1080), 1948),
    ((2000, 500), 1890),
]
A4 = "[(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]"
A4_TABLE = [
    ((336, 336), 1513),
    ((384, 384), 1513),
    ((640, 480), 2929),
    ((750, 1000), 2943),
    ((1280, 720), 2379),
    ((2000, 500), 2451),
]


@pytest.mark.parametrize(("wh", "tokens"), NEXT_TABLE)
def test_next_clip_table(wh, tokens):
    assert anyres.get_strategy("anyres").num_tokens(ImageSize(wh[1], wh[0])) == tokens


@pytest.mark.parametrize(("wh", "tokens"), A4_TABLE)
def test_a4_table(wh, tokens):
    # the reference reads these pairs as (w, h): import them with order="wh"
    strategy = anyres.get_strategy(
        "anyres",
        tile_size=384,
        has_cls=False,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
        grid_pinpoints=A4,
        pinpoint_order="wh",
    )
    assert strategy.num_tokens(ImageSize(wh[1], wh[0])) == tokens


def test_tie_break_first_candidate_wins_and_order_matters():
    # 300x320 (WxH) fits 336x336 pinpoints tie between 336x672 and 672x336: the first listed wins (§1.4)
    size = ImageSize(320, 300)
    hf_reading = anyres.get_strategy("anyres")  # (h, w) pairs, as transformers
    ref_reading = anyres.get_strategy("anyres", pinpoint_order="wh")  # (w, h) pairs, as LLaVA-NeXT
    assert hf_reading.layout(size).canvas == ImageSize(336, 672)
    assert ref_reading.layout(size).canvas == ImageSize(672, 336)
    assert ref_reading.num_tokens(size) == 1226
    assert hf_reading.num_tokens(size) == 1128


@pytest.mark.parametrize(
    ("wh", "llava", "hf"),
    [
        ((1500, 1750), 7341, 7254),
        ((1640, 738), 7209, 7317),
        ((2214, 1640), 7284, 7309),
        ((94, 423), 1377, 1485),
    ],
)
def test_rounding_modes_differ_exactly_where_documented(wh, llava, hf):
    size = ImageSize(wh[1], wh[0])
    assert anyres.get_strategy("anyres_max_9", rounding="llava").num_tokens(size) == llava
    assert anyres.get_strategy("anyres_max_9", rounding="hf").num_tokens(size) == hf


def test_unpad_rounding_example():
    # 1750 * (108 / 1500) = 125.99999999999999: int() gives 125 (pad 5), int(round(x, 7)) gives 126 (pad 4)
    assert 1750 * (108 / 1500) < 126
    assert unpad_shape(ImageSize(1750, 1500), GridShape(135, 108), "llava") == (GridShape(125, 108), (5, 0))
    assert unpad_shape(ImageSize(1750, 1500), GridShape(135, 108), "hf") == (GridShape(127, 108), (4, 0))


def test_cap_uses_python_float_floor_division():
    # ratio = sqrt(162*50 / (9*729)) = 1.1111111111111112; 50 // ratio = 44.0 but floor(50 / ratio) = 45
    capped = capped_shape(GridShape(162, 50), 9, 27)
    ratio = math.sqrt(162 * 50 / (9 * 729))
    assert math.floor(50 / ratio) == 45
    assert capped == GridShape(int(162 // ratio), 44)


def test_cap_slack_and_maximum():
    assert capped_shape(GridShape(98, 81), 9, 27) == GridShape(98, 81)  # ratio 1.0999 <= 1.1
    assert anyres.get_strategy("anyres_max_9").num_tokens(ImageSize(1153, 944)) == 8765


@pytest.mark.parametrize(("n", "expected_grid"), [(4, GridShape(40, 72)), (16, GridShape(75, 135))])
def test_cap_follows_max_num_patches(n, expected_grid):
    layout = anyres.get_strategy(f"anyres_max_{n}").layout(ImageSize(1080, 1920))
    assert layout.capped == expected_grid


def test_hd_grids_and_bounds():
    pins = hd_pinpoints(224)
    grids = {(p.height // 224, p.width // 224) for p in pins}
    assert len(pins) == 14
    assert grids == {(1, k) for k in range(1, 7)} | {(k, 1) for k in range(1, 7)} | {(2, 2), (2, 3), (3, 2)}
    hd = anyres.get_strategy("hd")
    assert hd.tokens_per_tile == 256
    # upper bound 256 + h(w+1) when nothing is unpadded: an image exactly filling a 2x3 (rows x cols) canvas
    assert hd.num_tokens(ImageSize(448, 672)) == 256 + 32 * 49 == 1824
    assert hd.num_tokens(ImageSize(672, 448)) == 1840
    assert hd.num_tokens(ImageSize(224, 1344)) == 1808


def test_pad_layout_counts():
    pad = anyres.get_strategy("pad")
    assert pad.num_tokens(ImageSize(480, 640)) == 730
    assert anyres.get_strategy("pad", newline=False).num_tokens(ImageSize(480, 640)) == 729
    layout = pad.layout(ImageSize(300, 500))
    assert layout.canvas == ImageSize(500, 500)
    assert layout.offsets == (100, 0)
    assert layout.num_tiles == 1


class TestPinpoints:
    def test_range_form_expands_like_reference(self):
        pins = parse_pinpoints("(1x1),...,(6x6)", 384)
        assert len(pins) == 36
        assert pins[0] == ImageSize(384, 384)
        assert pins[1] == ImageSize(384, 768)
        assert pins[-1] == ImageSize(2304, 2304)

    def test_range_form_uses_first_and_last_only(self):
        assert parse_pinpoints("(1x1),(3x3),(2x2)", 64) == parse_pinpoints("(1x1),...,(2x2)", 64)

    def test_literal_pixels_tiles_and_lists_agree(self):
        a = parse_pinpoints("[(384, 768), (768, 384)]", 384)
        b = parse_pinpoints([(1, 2), (2, 1)], 384)
        c = parse_pinpoints([[384, 768], [768, 384]], 384, unit="pixels")
        assert a == b == c == (ImageSize(384, 768), ImageSize(768, 384))

    def test_wh_order_swaps(self):
        assert parse_pinpoints([(384, 768)], 384, order="wh") == (ImageSize(768, 384),)

    @pytest.mark.parametrize(
        ("spec", "match"),
        [
            ([(384, 700)], "not multiples of the tile size 384"),
            ([(1, 400)], "mixes tile units and pixels"),
            ("[(1, 2", "cannot parse"),
            ([], "no pinpoints"),
            ([(0, 1)], "positive"),
            ("(3x3),...,(1x1)", "invalid range"),
        ],
    )
    def test_invalid_specs_name_the_field(self, spec, match):
        with pytest.raises(GeometryError, match=match) as err:
            parse_pinpoints(spec, 384, field_name="image_grid_pinpoints")
        assert "image_grid_pinpoints" in str(err.value) or "image_grid_pinpoints" not in match

    def test_strategy_validates_pinpoints_at_construction(self):
        with pytest.raises(GeometryError, match=r"grid_pinpoints.*not multiples"):
            anyres.get_strategy("anyres_max_9", grid_pinpoints=[(384, 500)])


def test_select_best_resolution_prefers_smallest_canvas_holding_the_image():
    pins = parse_pinpoints("(1x1),...,(6x6)", 384)
    assert select_best_resolution(ImageSize(10, 10), pins) == ImageSize(384, 384)
    assert select_best_resolution(ImageSize(700, 700), pins) == ImageSize(768, 768)


def test_image_size_is_height_first():
    assert ImageSize.from_pil((640, 480)) == ImageSize(height=480, width=640)
    with pytest.raises(GeometryError):
        ImageSize(0, 5).validate()
    with pytest.raises(GeometryError, match="positive"):
        anyres.get_strategy("anyres_max_9").layout(ImageSize(0, 10))


def test_geometry_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import anyres\n"
        "s = anyres.get_strategy('anyres_max_9')\n"
        "print(s.num_tokens(anyres.ImageSize(480, 640)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2929"
