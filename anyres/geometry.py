"""Pure, torch-free token geometry: tiles, canvases, unpadded shapes, the τ cap and exact token counts.

Every other part of onevision (preprocessing, feature packing, dataset length estimates, the processor's
placeholder expansion) asks this module, and only this module, how an image is laid out. All sizes are typed:
:class:`ImageSize` is ``(height, width)`` in pixels and :class:`GridShape` is ``(rows, cols)``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Rounding = Literal["hf", "llava"]
ROUNDING_MODES: tuple[str, ...] = ("hf", "llava")

#: The paper's τ slack: the unpadded grid may hold up to ``(1.1)**2 * N`` tiles' worth of tokens before resizing.
DEFAULT_INTERP_SLACK = 1.1


class GeometryError(ValueError):
    """An invalid geometric configuration (pinpoints, tile size, patch size, image size)."""


class ImageSize(NamedTuple):
    """An image size in pixels, height first. Use :meth:`from_pil` for PIL's ``(width, height)``."""

    height: int
    width: int

    @classmethod
    def from_pil(cls, size: tuple[int, int]) -> ImageSize:
        """Build from PIL's ``Image.size``, which is ``(width, height)``."""
        width, height = size
        return cls(int(height), int(width))

    @classmethod
    def of(cls, value: ImageSize | Sequence[int]) -> ImageSize:
        """Coerce an ``ImageSize`` or an explicit ``(height, width)`` pair (e.g. HF ``image_sizes`` rows)."""
        if isinstance(value, ImageSize):
            return value
        if len(value) != 2:
            raise GeometryError(f"expected a (height, width) pair, got {value!r}")
        return cls(int(value[0]), int(value[1]))

    def validate(self, what: str = "image") -> ImageSize:
        """Raise :class:`GeometryError` unless both sides are positive integers."""
        if self.height <= 0 or self.width <= 0:
            raise GeometryError(f"{what} size must be positive, got height={self.height}, width={self.width}")
        return self

    @property
    def area(self) -> int:
        return self.height * self.width

    def __str__(self) -> str:  # written width-first like a screen resolution, but labelled
        return f"{self.width}x{self.height} (WxH)"


class GridShape(NamedTuple):
    """A tile grid or feature map shape: ``rows`` (vertical) by ``cols`` (horizontal)."""

    rows: int
    cols: int

    @property
    def count(self) -> int:
        return self.rows * self.cols


class Offsets(NamedTuple):
    """Top-left offset of content pasted into a larger canvas or kept inside a feature map."""

    top: int
    left: int


# ----------------------------------------------------------------------------------------------------------------
# Pinpoints


_RANGE_RE = re.compile(r"\((\d+)\s*x\s*(\d+)\)")

#: Most tiles one pinpoint canvas may hold. OneVision's largest grid is 6x6 = 36; 144 (12x12) leaves room for
#: larger encoders' grids while refusing layouts of thousands of tiles (each tile is one encoder input; a
#: 12x12 grid of 384-px tiles is a 4608x4608 canvas and, uncapped, 105,705 SigLIP tokens).
MAX_PINPOINT_TILES = 144


def parse_pinpoints(
    spec: str | Iterable[Sequence[int]],
    tile_size: int,
    *,
    unit: Literal["auto", "tiles", "pixels"] = "auto",
    order: Literal["hw", "wh"] = "hw",
    field_name: str = "grid_pinpoints",
) -> tuple[ImageSize, ...]:
    """Expand and validate a grid-pinpoint specification into candidate canvases.

    Accepted forms:

    * the range form ``"(1x1),...,(6x6)"`` in tile units: only the first and last pair count, expanded with the
      first number as the outer loop, exactly like the references;
    * a literal string ``"[(384, 768), ...]"`` or any list of pairs, in tile units or pixels.

    ``order`` says how pairs are read: ``"hw"`` (HF, onevision) or ``"wh"`` (original LLaVA-NeXT configs). The
    result is always ``(height, width)`` in pixels, in the given order (order breaks ties in selection).
    With ``unit="auto"`` a list whose values are all below ``tile_size`` is in tile units, one whose values are
    all at least ``tile_size`` is in pixels; anything else is ambiguous and rejected.
    Every side must be a positive multiple of ``tile_size`` (a known source of shape errors otherwise).
    """
    if not isinstance(tile_size, int) or tile_size <= 0:
        raise GeometryError(f"tile_size must be a positive integer, got {tile_size!r}")
    pairs: list[tuple[int, int]]
    if isinstance(spec, str):
        text = spec.strip()
        if "x" in text:
            matches = _RANGE_RE.findall(text)
            if not matches:
                raise GeometryError(
                    f"{field_name}: cannot parse range form {spec!r}; expected e.g. '(1x1),...,(6x6)'"
                )
            (a0, a1), (b0, b1) = (tuple(map(int, m)) for m in (matches[0], matches[-1]))
            if a0 > b0 or a1 > b1 or min(a0, a1) < 1:
                raise GeometryError(f"{field_name}: invalid range {spec!r}: start must be >= 1 and <= end")
            if b0 * b1 > MAX_PINPOINT_TILES:
                raise GeometryError(
                    f"{field_name}: range {spec!r} ends at a {b0}x{b1} grid ({b0 * b1:,} tiles); at most "
                    f"{MAX_PINPOINT_TILES} tiles per pinpoint are accepted (OneVision uses up to 6x6 = 36)"
                )
            pairs = [(i, j) for i in range(a0, b0 + 1) for j in range(a1, b1 + 1)]
            unit = "tiles"
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise GeometryError(f"{field_name}: cannot parse {spec!r}: {exc}") from None
            pairs = _as_pairs(value, field_name)
    else:
        pairs = _as_pairs(spec, field_name)
    if not pairs:
        raise GeometryError(f"{field_name}: no pinpoints given")
    values = [v for p in pairs for v in p]
    if any(v <= 0 for v in values):
        i = next(i for i, p in enumerate(pairs) if min(p) <= 0)
        raise GeometryError(f"{field_name}[{i}] = {pairs[i]}: every side must be positive, got {pairs}")
    if unit == "auto":
        if all(v < tile_size for v in values):
            unit = "tiles"
        elif all(v >= tile_size for v in values):
            unit = "pixels"
        else:
            i = next(i for i, p in enumerate(pairs) if min(p) < tile_size)
            raise GeometryError(
                f"{field_name}[{i}] = {pairs[i]} is smaller than the tile size {tile_size}, but other pinpoints "
                f"are in pixels: {pairs} mixes tile units and pixels; give every pinpoint in pixels "
                f"(multiples of {tile_size}) or every one in tiles (or pass unit='tiles' / unit='pixels')"
            )
    if unit == "tiles":
        pairs = [(a * tile_size, b * tile_size) for a, b in pairs]
    elif unit != "pixels":
        raise GeometryError(f"unit must be 'auto', 'tiles' or 'pixels', got {unit!r}")
    for i, (h, w) in enumerate(pairs):
        if min(h, w) < tile_size:
            raise GeometryError(
                f"{field_name}[{i}] = {(h, w)} is smaller than the tile size {tile_size}; "
                "every canvas side must be a whole number of tiles"
            )
    bad = [p for p in pairs if p[0] % tile_size or p[1] % tile_size]
    if bad:
        i = pairs.index(bad[0])
        raise GeometryError(
            f"{field_name}[{i}] = {bad[0]}: pinpoints {bad} are not multiples of the tile size {tile_size}; "
            "every canvas side must be a whole number of tiles"
        )
    for i, (h, w) in enumerate(pairs):
        tiles = (h // tile_size) * (w // tile_size)
        if tiles > MAX_PINPOINT_TILES:
            raise GeometryError(
                f"{field_name}[{i}] = {(h, w)} px is a {h // tile_size}x{w // tile_size} grid of {tile_size}-px "
                f"tiles ({tiles:,} tiles); at most {MAX_PINPOINT_TILES} tiles per pinpoint are accepted "
                "(OneVision uses up to 6x6 = 36; values below the tile size are read as tile counts)"
            )
    if order == "wh":
        pairs = [(b, a) for a, b in pairs]
    elif order != "hw":
        raise GeometryError(f"order must be 'hw' or 'wh', got {order!r}")
    return tuple(ImageSize(h, w) for h, w in pairs)


def _as_pairs(value: object, field_name: str) -> list[tuple[int, int]]:
    try:
        raw = [(a, b) for a, b in value]  # type: ignore[misc,union-attr]
    except (TypeError, ValueError):
        raise GeometryError(f"{field_name}: expected a list of (a, b) pairs, got {value!r}") from None
    pairs = []
    for i, pair in enumerate(raw):
        try:
            ints = tuple(_whole(v) for v in pair)
        except (TypeError, ValueError):
            raise GeometryError(f"{field_name}[{i}] = {pair!r}: sides must be whole numbers") from None
        pairs.append(ints)
    return pairs  # type: ignore[return-value]


def _whole(value: object) -> int:
    """``value`` as an int; refuses booleans and fractional numbers (``int(384.5)`` would silently truncate)."""
    if isinstance(value, bool):
        raise TypeError(value)
    number = int(value)  # type: ignore[call-overload]
    if isinstance(value, float) and value != number:
        raise ValueError(value)
    return number


def pinpoints_range(max_rows: int, max_cols: int, tile_size: int) -> tuple[ImageSize, ...]:
    """All canvases from 1x1 to ``max_rows x max_cols`` tiles (the OneVision ``(1x1),...,(6x6)`` list)."""
    return parse_pinpoints(f"(1x1),...,({max_rows}x{max_cols})", tile_size)


def hd_pinpoints(tile_size: int, max_tiles: int = 6) -> tuple[ImageSize, ...]:
    """LLaVA-1.5-HD canvases: every grid of at most ``max_tiles`` cells with at most 2 cells on its short side.

    For 6 tiles: 1x1..1x6, 2x2, 2x3 and their transposes (14 grids), as ``(height, width)`` in pixels.
    ``max_tiles`` must be 1 to :data:`MAX_PINPOINT_TILES`.
    """
    if (
        isinstance(max_tiles, bool)
        or not isinstance(max_tiles, int)
        or not 1 <= max_tiles <= MAX_PINPOINT_TILES
    ):
        raise GeometryError(
            f"max_tiles must be an integer from 1 to {MAX_PINPOINT_TILES}, got {max_tiles!r} (LLaVA-1.5-HD uses 6)"
        )
    grids: list[tuple[int, int]] = []
    for rows in range(1, max_tiles + 1):
        for cols in range(1, max_tiles + 1):
            if rows * cols <= max_tiles and min(rows, cols) <= 2 and (rows, cols) not in grids:
                grids.append((rows, cols))
    return tuple(ImageSize(r * tile_size, c * tile_size) for r, c in grids)


# ----------------------------------------------------------------------------------------------------------------
# Pixel side


def select_best_resolution(size: ImageSize, candidates: Sequence[ImageSize]) -> ImageSize:
    """The candidate canvas that keeps the most image pixels, then wastes the fewest; the first wins exact ties.

    Identical (including float truncation order) to ``select_best_resolution`` in LLaVA-NeXT and transformers.
    """
    if not candidates:
        raise GeometryError("select_best_resolution: no candidate resolutions")
    orig_h, orig_w = size
    best: ImageSize | None = None
    max_effective = 0
    min_wasted = math.inf
    for cand in candidates:
        height, width = cand
        scale = min(width / orig_w, height / orig_h)
        down_w, down_h = int(orig_w * scale), int(orig_h * scale)
        effective = min(down_w * down_h, orig_w * orig_h)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best = effective, wasted, cand
    assert best is not None
    return best


def resize_target(size: ImageSize, canvas: ImageSize) -> ImageSize:
    """Aspect-preserving size that fits ``canvas`` (the references' ``math.ceil`` rule)."""
    orig_h, orig_w = size
    target_h, target_w = canvas
    scale_w = target_w / orig_w
    scale_h = target_h / orig_h
    if scale_w < scale_h:
        new_w = target_w
        new_h = min(math.ceil(orig_h * scale_w), target_h)
    else:
        new_h = target_h
        new_w = min(math.ceil(orig_w * scale_h), target_w)
    return ImageSize(new_h, new_w)


def paste_offsets(content: ImageSize, canvas: ImageSize) -> Offsets:
    """Centre offsets of ``content`` on ``canvas``; the odd pixel of padding goes bottom/right."""
    return Offsets((canvas.height - content.height) // 2, (canvas.width - content.width) // 2)


def square_canvas(size: ImageSize) -> tuple[ImageSize, Offsets]:
    """The pad-to-square canvas (side ``max(H, W)``) and where the image sits on it (``expand2square``)."""
    side = max(size)
    return ImageSize(side, side), paste_offsets(size, ImageSize(side, side))


# ----------------------------------------------------------------------------------------------------------------
# Feature side


def _round(x: float, rounding: Rounding) -> int:
    if rounding == "hf":
        return int(round(x, 7))
    if rounding == "llava":
        return int(x)
    raise GeometryError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def unpad_shape(size: ImageSize, stitched: GridShape, rounding: Rounding = "hf") -> tuple[GridShape, Offsets]:
    """Rows and columns of the stitched feature map that hold image content, and where they start.

    ``rounding="hf"`` is transformers' ``int(round(x, 7))`` (the default); ``"llava"`` is the reference's ``int(x)``.
    Padding is removed symmetrically with a floor-halved pad, so an odd difference keeps one partly padded row.
    """
    orig_h, orig_w = size
    cur_h, cur_w = stitched
    original_aspect = orig_w / orig_h
    current_aspect = cur_w / cur_h
    if original_aspect > current_aspect:
        new_h = _round(orig_h * (cur_w / orig_w), rounding)
        pad = (cur_h - new_h) // 2
        return GridShape(cur_h - 2 * pad, cur_w), Offsets(pad, 0)
    new_w = _round(orig_w * (cur_h / orig_h), rounding)
    pad = (cur_w - new_w) // 2
    return GridShape(cur_h, cur_w - 2 * pad), Offsets(0, pad)


def capped_shape(
    shape: GridShape, max_num_patches: int, tokens_per_side: int, interp_slack: float = DEFAULT_INTERP_SLACK
) -> GridShape:
    """Apply the LLaVA-OneVision τ cap: shrink ``shape`` when it exceeds ``max_num_patches`` tiles' worth.

    Uses float64 ``math.sqrt`` and Python float floor division, exactly like both references.
    """
    h, w = shape
    ratio = math.sqrt(h * w / (max_num_patches * tokens_per_side**2))
    if ratio > interp_slack:
        return GridShape(int(h // ratio), int(w // ratio))
    return GridShape(h, w)


# ----------------------------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class Layout:
    """The complete token layout of one image under one strategy.

    Encoder inputs are ``base_tiles`` whole-image (global) tiles followed by the grid tiles, row-major. Token order
    is ``[base tokens] + for each row of the (capped) grid: [row tokens, newline?]`` (for ``base_position="last"``
    the base tokens come after the grid). ``base_tiles`` is 1 for every built-in strategy; a strategy may declare
    0 (grid only) or several. For single-tile layouts (``pad``) the base is the only tile and ``newlines`` is 0 or 1.
    """

    strategy: str
    image_size: ImageSize
    tile_size: int
    tokens_per_side: int
    canvas: ImageSize
    grid: GridShape
    resized: ImageSize
    offsets: Offsets
    base_tokens: int
    stitched: GridShape
    unpadded: GridShape
    unpad_offsets: Offsets
    capped: GridShape
    newlines: int
    base_position: Literal["first", "last"] = "first"
    breakdown: dict[str, int] = field(default_factory=dict, compare=False)
    base_tiles: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.base_tiles, bool) or not isinstance(self.base_tiles, int) or self.base_tiles < 0:
            raise GeometryError(f"Layout.base_tiles must be a non-negative int, got {self.base_tiles!r}")
        if self.base_tiles + self.grid.count == 0:
            raise GeometryError("a layout needs at least one tile (base_tiles + grid tiles is 0)")

    @property
    def num_tiles(self) -> int:
        """Encoder inputs for this image: the base tiles plus the grid tiles (grid is 0x0 for single-tile layouts)."""
        return self.base_tiles + self.grid.count

    @property
    def tokens_per_tile(self) -> int:
        return self.tokens_per_side**2

    @property
    def grid_tokens(self) -> int:
        return self.capped.rows * self.capped.cols

    @property
    def num_tokens(self) -> int:
        """Exact number of visual tokens this image contributes to the LLM sequence."""
        return self.base_tokens + self.grid_tokens + self.newlines

    @property
    def is_capped(self) -> bool:
        return self.capped != self.unpadded

    def summary(self) -> dict[str, object]:
        """A flat, JSON-friendly description (used by the CLI and docs)."""
        return {
            "strategy": self.strategy,
            "height": self.image_size.height,
            "width": self.image_size.width,
            "canvas": [self.canvas.height, self.canvas.width],
            "grid": [self.grid.rows, self.grid.cols],
            "tiles": self.num_tiles,
            "base_tiles": self.base_tiles,
            "base_tokens": self.base_tokens,
            "unpadded": [self.unpadded.rows, self.unpadded.cols],
            "capped": [self.capped.rows, self.capped.cols],
            "newlines": self.newlines,
            "num_tokens": self.num_tokens,
        }


def tiled_layout(
    size: ImageSize,
    *,
    strategy: str,
    tile_size: int,
    patch_size: int,
    pinpoints: Sequence[ImageSize],
    rounding: Rounding = "hf",
    max_num_patches: int | None = None,
    interp_slack: float = DEFAULT_INTERP_SLACK,
    unpad: bool = True,
    newline: bool = True,
    base_position: Literal["first", "last"] = "first",
) -> Layout:
    """Layout of a grid-tiled image (LLaVA-1.5-HD, LLaVA-NeXT ``anyres``, OneVision ``anyres_max_N``)."""
    size = ImageSize.of(size).validate()
    s = tokens_per_side(tile_size, patch_size)
    canvas = select_best_resolution(size, pinpoints)
    grid = GridShape(canvas.height // tile_size, canvas.width // tile_size)
    resized = resize_target(size, canvas)
    offsets = paste_offsets(resized, canvas)
    stitched = GridShape(grid.rows * s, grid.cols * s)
    if unpad:
        unpadded, unpad_offsets = unpad_shape(size, stitched, rounding)
    else:
        unpadded, unpad_offsets = stitched, Offsets(0, 0)
    capped = unpadded if max_num_patches is None else capped_shape(unpadded, max_num_patches, s, interp_slack)
    newlines = capped.rows if newline else 0
    return Layout(
        strategy=strategy,
        image_size=size,
        tile_size=tile_size,
        tokens_per_side=s,
        canvas=canvas,
        grid=grid,
        resized=resized,
        offsets=offsets,
        base_tokens=s * s,
        stitched=stitched,
        unpadded=unpadded,
        unpad_offsets=unpad_offsets,
        capped=capped,
        newlines=newlines,
        base_position=base_position,
        breakdown={"base": s * s, "grid": capped.rows * capped.cols, "newlines": newlines},
    )


def single_tile_layout(
    size: ImageSize, *, strategy: str, tile_size: int, patch_size: int, newline: bool = True
) -> Layout:
    """Layout of an image padded to a square and resized to one tile (LLaVA-1.5 ``pad``, OV multi-image)."""
    size = ImageSize.of(size).validate()
    s = tokens_per_side(tile_size, patch_size)
    canvas, offsets = square_canvas(size)
    empty = GridShape(0, 0)
    return Layout(
        strategy=strategy,
        image_size=size,
        tile_size=tile_size,
        tokens_per_side=s,
        canvas=canvas,
        grid=empty,
        resized=size,
        offsets=offsets,
        base_tokens=s * s,
        stitched=empty,
        unpadded=empty,
        unpad_offsets=Offsets(0, 0),
        capped=empty,
        newlines=1 if newline else 0,
        breakdown={"base": s * s, "grid": 0, "newlines": 1 if newline else 0},
    )


def tokens_per_side(tile_size: int, patch_size: int) -> int:
    """Feature tokens along one side of a tile: ``S // p`` (a "valid" patch convolution; SigLIP 384/14 -> 27)."""
    if patch_size <= 0 or tile_size <= 0 or patch_size > tile_size:
        raise GeometryError(
            f"need 0 < patch_size <= tile_size, got tile_size={tile_size}, patch_size={patch_size}"
        )
    return tile_size // patch_size
