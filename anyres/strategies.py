"""The visual-representation strategies (``pad``, ``hd``, ``anyres``, ``anyres_max_<N>``) and their open registry.

A strategy is a frozen, typed configuration with three jobs: ``layout(size)`` (pure geometry),
``preprocess(image)`` (pixels, base tiles first then grid tiles row-major) and ``pack(features, layout, newline)``
(the exact token sequence). The subclass contract (declared metadata and public hooks) is documented on
:class:`Strategy` and checked when a subclass is created; third parties add one with :func:`register_strategy`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from PIL import Image

from anyres.geometry import (
    DEFAULT_INTERP_SLACK,
    ROUNDING_MODES,
    GeometryError,
    ImageSize,
    Layout,
    Rounding,
    hd_pinpoints,
    parse_pinpoints,
    single_tile_layout,
    tiled_layout,
    tokens_per_side,
)
from anyres.images import DEFAULT_MAX_PIXELS, ImageError, describe, load_pixels, open_image, peek_size

if TYPE_CHECKING:
    import torch

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Resampling filters (bicubic is the references' choice).
RESAMPLE_MODES = ("bicubic", "bilinear", "lanczos", "nearest", "box", "hamming")
#: LLaVA-1.6 / LLaVA-NeXT CLIP-336 pinpoints, as transformers reads them: (height, width) pairs.
NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
#: LLaVA-OneVision: every grid from 1x1 to 6x6 tiles.
ONEVISION_PINPOINTS = "(1x1),...,(6x6)"


@dataclass(frozen=True)
class Tiles:
    """Preprocessed pixels of one image: ``pixel_values`` float32 ``[N, 3, S, S]`` and its ``layout``."""

    pixel_values: torch.Tensor
    layout: Layout
    source: str = "<image>"


@dataclass(frozen=True)
class TileBatch:
    """Several images' tiles in one contiguous buffer (no zero-padded patch dimension)."""

    pixel_values: torch.Tensor
    layouts: tuple[Layout, ...]
    sources: tuple[str, ...]

    @property
    def num_tiles(self) -> list[int]:
        return [layout.num_tiles for layout in self.layouts]

    @property
    def num_tokens(self) -> list[int]:
        return [layout.num_tokens for layout in self.layouts]

    def split(self) -> list[Tiles]:
        """One :class:`Tiles` per image (views, no copy)."""
        chunks = self.pixel_values.split(self.num_tiles)
        return [Tiles(pv, lay, src) for pv, lay, src in zip(chunks, self.layouts, self.sources)]


#: the hooks renamed when the extension contract became public (a subclass defining one gets a clear error)
_RENAMED_HOOKS = {"_render": "render", "_pixels": "tile_pixels", "_draft_size": "draft_size"}


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Common parameters (transformers' names where it has one) and the shared pixel / packing machinery.

    **Subclass contract** (checked when the subclass is created; a violation is a ``TypeError`` naming it):

    * declared metadata: ``name`` (``ClassVar[str]``, the registry name, set on the class itself) and
      ``token_rule`` (``ClassVar[str]``, one line saying how the token count follows from the layout);
      ``tile_size`` / ``patch_size`` are fields, validated on construction;
    * :meth:`layout` (required): the exact :class:`Layout` of an image, including ``base_tiles`` (0, 1 or more
      whole-image tiles before the grid tiles);
    * :meth:`render` or :meth:`tile_pixels` (at least one): the pixels of the base tiles and of the grid;
    * optional hooks: :meth:`draft_size` (a decode-time size hint for ``fast=True``), :meth:`pack` (a token
      structure of your own; the model packs every image through it) and :meth:`parse_name` (a family of names,
      like ``anyres_max_<N>``).

    Pass ``abstract=True`` in the class statement (``class Base(Strategy, abstract=True)``) for an intermediate
    base class that is not registered itself.
    """

    name: ClassVar[str] = ""
    token_rule: ClassVar[str] = ""

    tile_size: int = 384
    patch_size: int = 14
    image_mean: tuple[float, ...] = SIGLIP_MEAN
    image_std: tuple[float, ...] = SIGLIP_STD
    has_cls: bool = False
    rounding: Rounding = "hf"
    resample: str = "bicubic"
    resize_backend: Literal["pil", "torch"] = "pil"
    max_pixels: int = DEFAULT_MAX_PIXELS
    fast: bool = False

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in _RENAMED_HOOKS.items():
            if old in cls.__dict__:
                raise TypeError(f"{cls.__name__} defines {old}(); the public hook is now {new}()")
        if abstract:
            return
        where = f"strategy class {cls.__name__}"
        if not isinstance(cls.__dict__.get("name"), str) or not cls.__dict__["name"]:
            raise TypeError(f"{where} must declare its registry name: name: ClassVar[str] = '...'")
        if not isinstance(cls.token_rule, str) or not cls.token_rule:
            raise TypeError(f"{where} must declare token_rule: ClassVar[str] (how its token count is made)")
        if cls.layout is Strategy.layout:
            raise TypeError(f"{where} must implement layout(size) -> Layout")
        if cls.render is Strategy.render and cls.tile_pixels is Strategy.tile_pixels:
            raise TypeError(f"{where} must implement render(pixels, layout) or tile_pixels(pixels, layout)")

    def __post_init__(self) -> None:
        tokens_per_side(self.tile_size, self.patch_size)  # validates
        if self.rounding not in ROUNDING_MODES:
            raise GeometryError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")
        if self.resample not in RESAMPLE_MODES:
            raise GeometryError(f"resample must be one of {RESAMPLE_MODES}, got {self.resample!r}")
        if self.resize_backend not in ("torch", "pil"):
            raise GeometryError(f"resize_backend must be 'torch' or 'pil', got {self.resize_backend!r}")
        for what, value in (("image_mean", self.image_mean), ("image_std", self.image_std)):
            if len(value) != 3:
                raise GeometryError(f"{what} must have 3 values (RGB), got {value!r}")
            object.__setattr__(self, what, tuple(float(v) for v in value))
        if any(v <= 0 for v in self.image_std):
            raise GeometryError(f"image_std must be positive, got {self.image_std!r}")

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def strategy_name(self) -> str:
        """The registry name that recreates this strategy (e.g. ``anyres_max_9``)."""
        return self.name

    @property
    def tokens_per_side(self) -> int:
        return self.tile_size // self.patch_size

    @property
    def tokens_per_tile(self) -> int:
        return self.tokens_per_side**2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly config; ``get_strategy(**d)``-compatible via :func:`strategy_from_dict`."""
        out: dict[str, Any] = {"name": self.strategy_name}
        for f in dataclasses.fields(self):
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = (
                    [list(v) for v in value]
                    if f.name == "grid_pinpoints" and isinstance(value, tuple)
                    else (list(value) if isinstance(value, tuple) else value)
                )
        return out

    # -- geometry -------------------------------------------------------------------------------------------
    def layout(self, size: ImageSize | Sequence[int]) -> Layout:
        """The full token layout of an image of ``size`` (``ImageSize(height, width)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement layout()")

    def num_tokens(self, size: ImageSize | Sequence[int]) -> int:
        """Exact number of visual tokens for an image of ``size``."""
        return self.layout(size).num_tokens

    @classmethod
    def parse_name(cls, name: str) -> dict[str, Any] | None:
        """The parameters a registry ``name`` implies for this class, or ``None`` if the name is not this class's.

        The default answers to ``cls.name`` alone; override it for a family of names (``anyres_max_<N>``)."""
        return {} if name == cls.name else None

    # -- pixels (hooks) -------------------------------------------------------------------------------------
    def render(self, pixels: Any, layout: Layout) -> tuple[Any, torch.Tensor | None]:
        """The base tiles and the grid canvas as HWC uint8 tensors: ``(base, canvas)``.

        ``pixels`` is a PIL image or an HWC uint8 tensor. ``base`` is one ``[S, S, 3]`` tile, a list of
        ``layout.base_tiles`` tiles, or ``None`` for a layout without base tiles; ``canvas`` is the whole grid
        canvas (``layout.canvas``), or ``None`` for a layout without grid. Defaults to :meth:`tile_pixels`,
        materialised onto the canvas (used by :func:`anyres.draw_layout`)."""
        import torch

        base, content = self.tile_pixels(pixels, layout)
        bases = None if base is None else [_materialize(b) for b in _as_list(base)]
        if bases is not None and len(bases) == 1 and not isinstance(base, (list, tuple)):
            bases = bases[0]
        if content is None:
            return bases, None
        content = _materialize(content)
        if tuple(content.shape[:2]) == tuple(layout.canvas):
            return bases, content
        canvas = torch.zeros((layout.canvas.height, layout.canvas.width, 3), dtype=torch.uint8)
        (top, left), (rh, rw) = layout.offsets, layout.resized
        canvas[top : top + rh, left : left + rw] = content
        return bases, canvas

    def tile_pixels(self, pixels: Any, layout: Layout) -> tuple[Any, Any]:
        """What :meth:`preprocess_batch` writes into the tiles: ``(base, content)``.

        Like :meth:`render`, but items may be pending resizes (:class:`anyres.tiling.Resized`) or float32 tensors
        holding integers 0..255, and ``content`` may be either the whole canvas or just the resized image
        (``layout.resized``), which then sits at ``layout.offsets`` on a black canvas. Defaults to :meth:`render`."""
        return self.render(pixels, layout)

    def draft_size(self, size: ImageSize) -> tuple[int, int] | None:
        """``(width, height)`` the decoder may shrink a JPEG to before resizing (``fast=True``), or ``None``."""
        return None

    def _wants_pil(self, image: Any, draft: tuple[int, int] | None) -> bool:
        """Whether to keep the pixels a PIL image and resize with Pillow: in the exact mode when the exact engine
        cannot compute this strategy's filter (another filter, or numba missing); the pixels are the same."""
        from anyres import resample

        if self.resize_backend != "pil" or draft is not None:
            return False
        return isinstance(image, (Image.Image, str, os.PathLike)) and not resample.available(self.resample)

    def preprocess(self, image: Any) -> Tiles:
        """Pixels for one image: float32 ``[num_tiles, 3, S, S]``, base tiles first, grid tiles row-major."""
        return self.preprocess_batch([image]).split()[0]

    def preprocess_batch(self, images: Sequence[Any]) -> TileBatch:
        """Pixels for many images in one contiguous ``[sum(num_tiles), 3, S, S]`` buffer."""

        from anyres import tiling

        loaded, layouts = [], []
        for image in images:
            draft = peeked = None
            if self.fast:
                peeked = peek_size(image, max_pixels=self.max_pixels)
                if peeked is not None:
                    draft = self.draft_size(ImageSize.from_pil(peeked))
            if self._wants_pil(image, draft):
                item = open_image(image, max_pixels=self.max_pixels)
                pixels, source = item.image, item.source
            elif draft is None and (header := peeked or _header_size(image, self.max_pixels)) is not None:
                # a file: decoded in the second loop, one at a time, into a reused buffer
                pixels, source, peeked = None, describe(image), header
            else:
                pixels, source = load_pixels(image, max_pixels=self.max_pixels, draft_size=draft)
            size = ImageSize.from_pil(peeked) if pixels is None or draft is not None else None
            loaded.append((image if pixels is None else pixels, source, pixels is None))
            layouts.append(self.layout(size or ImageSize(*tiling.image_size(pixels))))
        total = sum(layout.num_tiles for layout in layouts)
        s = self.tile_size
        out = tiling.empty_tiles(total, s)
        start = 0
        for (pixels, source, deferred), layout in zip(loaded, layouts):
            if deferred:
                pixels, source = load_pixels(pixels, max_pixels=self.max_pixels, reuse=True)
                if ImageSize(*tiling.image_size(pixels)) != layout.image_size:
                    raise ImageError(
                        source,
                        f"the header says {layout.image_size.width}x{layout.image_size.height} but the file "
                        f"decodes to {pixels.shape[1]}x{pixels.shape[0]}; the file is corrupt",
                    )
            try:
                base, content = self.tile_pixels(pixels, layout)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ImageError(source, f"cannot process image ({exc})") from None
            tiles = out[start : start + layout.num_tiles]
            tiling.write_tiles(tiles, base, content, layout, self.image_mean, self.image_std)
            start += layout.num_tiles
        return TileBatch(out, tuple(layouts), tuple(source for _, source, _ in loaded))

    # -- features -------------------------------------------------------------------------------------------
    def pack(
        self,
        features: torch.Tensor,
        layout: Layout,
        newline: torch.Tensor | None = None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pack per-tile features ``[num_tiles, P, D]`` into ``[layout.num_tokens, D]`` (a hook: the default is
        :func:`anyres.pack`, the base tokens then each grid row plus its newline; override it for another token
        structure; ``OneVisionModel`` packs every image through its strategy's ``pack``)."""
        from anyres.packing import pack

        return pack(features, layout, newline, has_cls=self.has_cls, out=out)


@dataclass(frozen=True, kw_only=True)
class PadStrategy(Strategy):
    """LLaVA-1.5 ``pad`` and OneVision multi-image: pad to a square with the mean colour, one tile, one newline."""

    name: ClassVar[str] = "pad"
    token_rule: ClassVar[str] = "one tile's tokens, plus one newline when newline=True"
    newline: bool = True

    @property
    def fill(self) -> tuple[int, int, int]:
        """The padding colour: ``int(mean * 255)`` per channel, as both references."""
        return tuple(int(m * 255) for m in self.image_mean)  # type: ignore[return-value]

    def layout(self, size: ImageSize | Sequence[int]) -> Layout:
        return single_tile_layout(
            ImageSize.of(size),
            strategy=self.strategy_name,
            tile_size=self.tile_size,
            patch_size=self.patch_size,
            newline=self.newline,
        )

    def draft_size(self, size: ImageSize) -> tuple[int, int] | None:
        side = max(size)
        return (
            max(1, -(-size.width * self.tile_size // side)),
            max(1, -(-size.height * self.tile_size // side)),
        )

    def tile_pixels(self, pixels: Any, layout: Layout) -> tuple[Any, Any]:
        from anyres import tiling

        decoded = self.layout(ImageSize(*tiling.image_size(pixels)))  # differs from `layout` in fast mode
        s = self.tile_size
        if self.resize_backend == "pil" and not isinstance(pixels, Image.Image) and decoded.canvas != (s, s):
            # resized straight from the image: the exact engine reads the square's padding without building it
            square = tuple(decoded.canvas)
            return tiling.Resized(
                pixels, s, s, self.resample, square, tuple(decoded.offsets), self.fill
            ), None
        square = tiling.square_pad(pixels, decoded, self.fill)
        return tiling.resize(square, s, s, self.resample, self.resize_backend, lazy=True), None


@dataclass(frozen=True, kw_only=True)
class AnyResStrategy(Strategy):
    """LLaVA-NeXT ``anyres`` with ``spatial_unpad``: base tile first, unpadded grid, a newline per row, no cap."""

    name: ClassVar[str] = "anyres"
    token_rule: ClassVar[str] = "base tile tokens + unpadded grid rows, each followed by a newline"

    tile_size: int = 336
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    has_cls: bool = True
    grid_pinpoints: str | tuple[tuple[int, int], ...] | None = NEXT_PINPOINTS
    pinpoint_order: Literal["hw", "wh"] = "hw"
    max_num_patches: int | None = None
    interp_slack: float = DEFAULT_INTERP_SLACK
    unpad: bool = True
    newline: bool = True
    base_image: Literal["squash", "letterbox"] = "squash"
    base_position: Literal["first", "last"] = "first"
    pinpoints: tuple[ImageSize, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = self._default_pinpoints() if self.grid_pinpoints is None else self.grid_pinpoints
        # validated as given (a fractional side is an error, not truncated), then stored as plain ints
        object.__setattr__(
            self, "pinpoints", parse_pinpoints(spec, self.tile_size, order=self.pinpoint_order)
        )
        if not isinstance(spec, str):
            object.__setattr__(self, "grid_pinpoints", tuple(tuple(int(v) for v in pair) for pair in spec))
        if self.max_num_patches is not None and self.max_num_patches < 1:
            raise GeometryError(f"max_num_patches must be >= 1, got {self.max_num_patches}")
        if self.base_image not in ("squash", "letterbox"):
            raise GeometryError(f"base_image must be 'squash' or 'letterbox', got {self.base_image!r}")
        if self.base_position not in ("first", "last"):
            raise GeometryError(f"base_position must be 'first' or 'last', got {self.base_position!r}")

    def _default_pinpoints(self) -> str | tuple[tuple[int, int], ...]:
        return NEXT_PINPOINTS

    def layout(self, size: ImageSize | Sequence[int]) -> Layout:
        return tiled_layout(
            ImageSize.of(size),
            strategy=self.strategy_name,
            tile_size=self.tile_size,
            patch_size=self.patch_size,
            pinpoints=self.pinpoints,
            rounding=self.rounding,
            max_num_patches=self.max_num_patches,
            interp_slack=self.interp_slack,
            unpad=self.unpad,
            newline=self.newline,
            base_position=self.base_position,
        )

    def draft_size(self, size: ImageSize) -> tuple[int, int] | None:
        layout = self.layout(size)
        return (max(layout.resized.width, self.tile_size), max(layout.resized.height, self.tile_size))

    def tile_pixels(self, pixels: Any, layout: Layout) -> tuple[Any, Any]:
        from anyres import tiling

        s = self.tile_size
        rh, rw = layout.resized
        content = tiling.resize(pixels, rh, rw, self.resample, self.resize_backend, lazy=True)
        if self.base_image == "squash":
            return tiling.resize(pixels, s, s, self.resample, self.resize_backend, lazy=True), content
        pad = PadStrategy(tile_size=s, patch_size=self.patch_size, image_mean=self.image_mean)
        square = tiling.square_pad(pixels, pad.layout(ImageSize(*tiling.image_size(pixels))), pad.fill)
        return tiling.resize(square, s, s, self.resample, self.resize_backend, lazy=True), content


@dataclass(frozen=True, kw_only=True)
class AnyResMaxStrategy(AnyResStrategy):
    """LLaVA-OneVision ``anyres_max_<N>``: AnyRes on SigLIP-384 tiles with the τ bilinear cap at N tiles."""

    name: ClassVar[str] = "anyres_max"
    token_rule: ClassVar[str] = "anyres, with the unpadded grid bilinearly capped at about N tiles' tokens"

    tile_size: int = 384
    image_mean: tuple[float, ...] = SIGLIP_MEAN
    image_std: tuple[float, ...] = SIGLIP_STD
    has_cls: bool = False
    grid_pinpoints: str | tuple[tuple[int, int], ...] | None = ONEVISION_PINPOINTS
    max_num_patches: int | None = 9

    def __post_init__(self) -> None:
        if self.max_num_patches is None:
            raise GeometryError("anyres_max needs max_num_patches (use 'anyres' for no cap)")
        super().__post_init__()

    @property
    def strategy_name(self) -> str:
        return f"anyres_max_{self.max_num_patches}"

    @classmethod
    def parse_name(cls, name: str) -> dict[str, Any] | None:
        """``anyres_max_<N>`` means ``max_num_patches=N`` (``anyres_max`` alone takes the parameter)."""
        if name == cls.name:
            return {}
        match = _ANYRES_MAX.fullmatch(name)
        return {"max_num_patches": int(match.group(1))} if match else None


@dataclass(frozen=True, kw_only=True)
class HDStrategy(AnyResStrategy):
    """LLaVA-1.5-HD: grids of at most ``max_tiles`` native tiles, unpadded, a row-end token per row, plus the
    squashed global image's features (first by default; ``base_position="last"`` puts them after the grid)."""

    name: ClassVar[str] = "hd"
    token_rule: ClassVar[str] = "global tile tokens + unpadded grid rows, each followed by a row-end token"

    tile_size: int = 224
    grid_pinpoints: str | tuple[tuple[int, int], ...] | None = None
    max_tiles: int = 6

    def _default_pinpoints(self) -> tuple[tuple[int, int], ...]:
        if self.max_tiles < 1:
            raise GeometryError(f"max_tiles must be >= 1, got {self.max_tiles}")
        return tuple((p.height, p.width) for p in hd_pinpoints(self.tile_size, self.max_tiles))


def _header_size(image: Any, max_pixels: int) -> tuple[int, int] | None:
    """``(width, height)`` of an image file from its header; ``None`` for other inputs or unreadable headers (which
    are then loaded at once, so that the loader reports the precise problem)."""
    if not isinstance(image, (str, os.PathLike)):
        return None
    try:
        return peek_size(image, max_pixels=max_pixels)
    except ImageError:
        return None


def _as_list(base: Any) -> list[Any]:
    return list(base) if isinstance(base, (list, tuple)) else [base]


def _materialize(pixels: Any) -> torch.Tensor:
    """HWC uint8 from a tensor of pixel values or a pending :class:`anyres.tiling.Resized`."""
    import torch

    from anyres import tiling

    if isinstance(pixels, tiling.Resized):
        pixels = pixels.materialize()
    return pixels.to(torch.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, type[Strategy]] = {}
_ANYRES_MAX = re.compile(r"anyres_max_(\d+)")


def register_strategy(
    name_or_cls: str | type[Strategy], cls: type[Strategy] | None = None, *, overwrite: bool = False
):
    """Register a strategy class; ``get_strategy(cls.name, **params)`` then builds it.

    One call, ``register_strategy(MyStrategy)``, or a class decorator, ``@register_strategy``. The older form
    ``register_strategy("mine", MyStrategy)`` is accepted when the name equals the class's declared ``name``.
    Returns the class."""
    if cls is None:
        if isinstance(name_or_cls, str):
            raise TypeError("register_strategy(name, cls): the class is missing; or use @register_strategy")
        cls, name = name_or_cls, getattr(name_or_cls, "name", None)
    else:
        name = name_or_cls
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{cls!r} is not a subclass of anyres.Strategy")
    if not cls.__dict__.get("name") or name != cls.name:
        raise ValueError(
            f"{cls.__name__} declares name {cls.__dict__.get('name')!r} but is registered as {name!r}; the "
            "registry name is the class's declared name (to_dict() writes it, get_strategy() reads it)"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"strategy {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = cls
    return cls


def list_strategies() -> list[str]:
    """Registered strategy names (``anyres_max`` also answers to ``anyres_max_<N>``)."""
    return sorted(_REGISTRY)


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by name, e.g. ``get_strategy("anyres_max_9", rounding="llava")``."""
    cls = _REGISTRY.get(name)
    implied = {} if cls is not None else None
    if cls is None:
        for candidate in _REGISTRY.values():
            implied = candidate.parse_name(name)
            if implied is not None:
                cls = candidate
                break
    if cls is None or implied is None:
        raise ValueError(
            f"unknown strategy {name!r}; registered: {', '.join(list_strategies())} (or anyres_max_<N>)"
        )
    for key, value in implied.items():
        if key in params and params[key] != value:
            raise ValueError(f"{name!r} conflicts with {key}={params[key]}")
        params[key] = value
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise TypeError(f"strategy {name!r} has no parameter(s) {unknown}; valid: {sorted(fields)}")
    return cls(**params)


def strategy_from_dict(config: dict[str, Any]) -> Strategy:
    """Rebuild a strategy from :meth:`Strategy.to_dict` output."""
    params = dict(config)
    name = params.pop("name")
    if isinstance(params.get("grid_pinpoints"), list):
        params["grid_pinpoints"] = tuple(tuple(p) for p in params["grid_pinpoints"])
    return get_strategy(name, **params)


for _cls in (PadStrategy, HDStrategy, AnyResStrategy, AnyResMaxStrategy):
    register_strategy(_cls)
