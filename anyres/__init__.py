"""anyres: LLaVA-style visual representations from one exact, typed geometry core.

Strategies (``get_strategy(name, **params)``):

* ``pad`` - LLaVA-1.5 / OneVision multi-image: pad to square with the mean colour, one tile (+ one newline).
* ``hd`` - LLaVA-1.5-HD: up to 6 native tiles, padding removal, a row-end token per row, plus a global image.
* ``anyres`` - LLaVA-NeXT ``spatial_unpad``: base tile first, unpadded grid, a newline per row.
* ``anyres_max_<N>`` - LLaVA-OneVision: ``anyres`` plus the τ bilinear cap at N tiles.

Add a strategy with one class and one registration: a frozen dataclass subclass of :class:`Strategy` that
declares ``name`` and ``token_rule`` and implements ``layout`` plus ``render`` (or ``tile_pixels``), optionally
``pack``; then ``@register_strategy`` (see :class:`Strategy` for the contract, which is checked at class creation).

The geometry (:mod:`anyres.geometry`) needs no torch; pixel preprocessing and packing import torch lazily.
``SIGLIP_MEAN`` / ``SIGLIP_STD`` and ``CLIP_MEAN`` / ``CLIP_STD`` are the one definition of the encoders'
normalisation constants.
"""

from anyres.geometry import (
    GeometryError,
    GridShape,
    ImageSize,
    Layout,
    Offsets,
    capped_shape,
    hd_pinpoints,
    parse_pinpoints,
    resize_target,
    select_best_resolution,
    unpad_shape,
)
from anyres.images import ImageError, open_image
from anyres.strategies import (
    CLIP_MEAN,
    CLIP_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    AnyResMaxStrategy,
    AnyResStrategy,
    HDStrategy,
    PadStrategy,
    Strategy,
    TileBatch,
    Tiles,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_from_dict,
)


def pack(features, layout, newline=None, *, has_cls=False, out=None):
    """Pack per-tile features ``[num_tiles, P, D]`` into ``[layout.num_tokens, D]`` (imports torch)."""
    from anyres.packing import pack as _pack

    return _pack(features, layout, newline, has_cls=has_cls, out=out)


def draw_layout(image, strategy, **kwargs):
    """Render the layout of ``image`` under ``strategy`` as a PIL image (see :mod:`anyres.draw`)."""
    from anyres.draw import draw_layout as _draw

    return _draw(image, strategy, **kwargs)


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "AnyResMaxStrategy",
    "AnyResStrategy",
    "GeometryError",
    "GridShape",
    "HDStrategy",
    "ImageError",
    "ImageSize",
    "Layout",
    "Offsets",
    "PadStrategy",
    "Strategy",
    "TileBatch",
    "Tiles",
    "capped_shape",
    "draw_layout",
    "get_strategy",
    "hd_pinpoints",
    "list_strategies",
    "open_image",
    "pack",
    "parse_pinpoints",
    "register_strategy",
    "resize_target",
    "select_best_resolution",
    "strategy_from_dict",
    "unpad_shape",
]
