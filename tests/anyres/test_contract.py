"""The public strategy extension contract: declared metadata, public hooks, registration, and layouts with zero or
several base tiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import anyres
from anyres import ImageSize
from anyres.strategies import _REGISTRY

from .conftest import natural_image

TINY = {"tile_size": 32, "patch_size": 8}
GRID = {**TINY, "grid_pinpoints": "(1x1),...,(3x3)"}


@dataclass(frozen=True, kw_only=True)
class GridOnly(anyres.AnyResStrategy):
    """AnyRes without the base tile: only the unpadded grid, a newline per row."""

    name: ClassVar[str] = "test_grid_only"
    token_rule: ClassVar[str] = "unpadded grid rows, each followed by a newline"

    def layout(self, size):
        full = super().layout(size)
        return dataclasses.replace(full, base_tiles=0, base_tokens=0, breakdown={**full.breakdown, "base": 0})

    def tile_pixels(self, pixels, layout):
        _, content = super().tile_pixels(pixels, layout)
        return None, content


@dataclass(frozen=True, kw_only=True)
class TwoViews(anyres.AnyResStrategy):
    """Two global tiles (squashed, then letterboxed) before the AnyRes grid."""

    name: ClassVar[str] = "test_two_views"
    token_rule: ClassVar[str] = "two global tiles' tokens + unpadded grid rows, each followed by a newline"

    def layout(self, size):
        full = super().layout(size)
        return dataclasses.replace(full, base_tiles=2, base_tokens=2 * full.tokens_per_tile)

    def tile_pixels(self, pixels, layout):
        squashed, content = super().tile_pixels(pixels, layout)
        boxed, _ = anyres.AnyResStrategy.tile_pixels(
            dataclasses.replace(self, base_image="letterbox"), pixels, layout
        )
        return [squashed, boxed], content


@pytest.fixture
def registered():
    for cls in (GridOnly, TwoViews):
        anyres.register_strategy(cls)
    yield
    for cls in (GridOnly, TwoViews):
        _REGISTRY.pop(cls.name)


def test_missing_metadata_and_hooks_fail_at_class_creation():
    with pytest.raises(TypeError, match="must declare its registry name"):

        @dataclass(frozen=True, kw_only=True)
        class NoName(anyres.PadStrategy):
            token_rule: ClassVar[str] = "x"

    with pytest.raises(TypeError, match="must declare token_rule"):

        class NoRule(anyres.Strategy):
            name: ClassVar[str] = "no_rule"

    with pytest.raises(TypeError, match=r"must implement layout\(size\)"):

        class NoLayout(anyres.Strategy):
            name: ClassVar[str] = "no_layout"
            token_rule: ClassVar[str] = "x"

    with pytest.raises(TypeError, match=r"must implement render\(pixels, layout\) or tile_pixels"):

        class NoPixels(anyres.Strategy):
            name: ClassVar[str] = "no_pixels"
            token_rule: ClassVar[str] = "x"

            def layout(self, size):
                raise NotImplementedError

    with pytest.raises(TypeError, match=r"defines _render\(\); the public hook is now render\(\)"):

        class OldHook(anyres.PadStrategy):
            name: ClassVar[str] = "old_hook"

            def _render(self, pixels, layout):
                raise NotImplementedError

    class Intermediate(anyres.Strategy, abstract=True):  # a base for others: no metadata needed
        pass

    assert issubclass(Intermediate, anyres.Strategy)


def test_registration_is_one_decorator_and_names_must_agree():
    @anyres.register_strategy
    @dataclass(frozen=True, kw_only=True)
    class Flat(anyres.PadStrategy):
        name: ClassVar[str] = "test_flat"
        newline: bool = False

    try:
        strategy = anyres.get_strategy("test_flat", **TINY)
        assert type(strategy) is Flat and strategy.num_tokens(ImageSize(10, 30)) == 16
        assert anyres.strategy_from_dict(strategy.to_dict()) == strategy
        with pytest.raises(ValueError, match="registered as 'other'"):
            anyres.register_strategy("other", Flat)
    finally:
        _REGISTRY.pop("test_flat")


def test_parametric_names_go_through_the_class_hook():
    assert anyres.AnyResMaxStrategy.parse_name("anyres_max_4") == {"max_num_patches": 4}
    assert anyres.AnyResMaxStrategy.parse_name("anyres_maxi") is None
    assert anyres.PadStrategy.parse_name("pad") == {} and anyres.PadStrategy.parse_name("pads") is None


def test_zero_base_tiles(registered):
    strategy = anyres.get_strategy("test_grid_only", **GRID)
    reference = anyres.get_strategy("anyres", **GRID)
    image = natural_image(40, 70)
    size = ImageSize(40, 70)
    layout, full = strategy.layout(size), reference.layout(size)
    assert layout.base_tiles == 0 and layout.num_tiles == full.num_tiles - 1
    assert layout.num_tokens == full.num_tokens - full.tokens_per_tile
    tiles = strategy.preprocess(image).pixel_values
    assert torch.equal(tiles, reference.preprocess(image).pixel_values[1:])
    features = torch.randn(full.num_tiles, full.tokens_per_tile, 5)
    newline = torch.randn(5)
    packed = strategy.pack(features[1:], layout, newline)
    assert torch.equal(packed, reference.pack(features, full, newline)[full.tokens_per_tile :])
    _, canvas = strategy.render(image, layout)
    assert tuple(canvas.shape[:2]) == tuple(layout.canvas)
    assert anyres.draw_layout(image, strategy).width > 0


def test_several_base_tiles(registered):
    strategy = anyres.get_strategy("test_two_views", **GRID)
    squash = anyres.get_strategy("anyres", **GRID)
    boxed = anyres.get_strategy("anyres", base_image="letterbox", **GRID)
    image = natural_image(40, 70)
    layout, full = strategy.layout(ImageSize(40, 70)), squash.layout(ImageSize(40, 70))
    assert layout.base_tiles == 2 and layout.num_tiles == full.num_tiles + 1
    tiles = strategy.preprocess(image).pixel_values
    assert torch.equal(tiles[0], squash.preprocess(image).pixel_values[0])
    assert torch.equal(tiles[1], boxed.preprocess(image).pixel_values[0])
    assert torch.equal(tiles[2:], squash.preprocess(image).pixel_values[1:])
    t = layout.tokens_per_tile
    features = torch.randn(layout.num_tiles, t, 5)
    newline = torch.randn(5)
    packed = strategy.pack(features, layout, newline)
    assert packed.shape[0] == layout.num_tokens == full.num_tokens + t
    assert torch.equal(packed[:t], features[0]) and torch.equal(packed[t : 2 * t], features[1])
    grid_only = torch.cat([features[:1], features[2:]])
    assert torch.equal(packed[2 * t :], squash.pack(grid_only, full, newline)[t:])
    last = dataclasses.replace(layout, base_position="last")
    packed_last = strategy.pack(features, last, newline)
    assert torch.equal(packed_last[-2 * t :], features[:2].reshape(-1, 5))


def test_a_render_that_disagrees_with_its_layout_is_refused():
    @dataclass(frozen=True, kw_only=True)
    class Liar(anyres.PadStrategy):
        name: ClassVar[str] = "test_liar"

        def tile_pixels(self, pixels, layout):
            base, content = super().tile_pixels(pixels, layout)
            return [base, base], content

    with pytest.raises(ValueError, match="rendered 2 base tile"):
        Liar(**TINY).preprocess(natural_image(20, 30))


def test_layout_needs_a_tile():
    layout = anyres.get_strategy("pad", **TINY).layout(ImageSize(10, 10))
    with pytest.raises(anyres.GeometryError, match="at least one tile"):
        dataclasses.replace(layout, base_tiles=0)
