"""Pixel side: resize HWC tensors, then write the base tile and the grid tiles, normalised, straight into the output.

The exact default (``backend="pil"``) resizes with :mod:`anyres.resample`, a bit-identical re-implementation of
Pillow's BICUBIC / BILINEAR filters in compiled loops (other filters, an unrecognised Pillow or a missing numba use
Pillow itself), so the pixels are exactly those of transformers' PIL image processors. ``backend="torch"`` uses
torch's antialiased uint8 kernels for down-scaling (documented deviation). No canvas is built: every tile is written
once into the output, padding included, with the per-channel normalisation fused into that write.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from anyres import kernels as _kernels
from anyres import resample as _resample
from anyres.geometry import Layout

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_TORCH_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}


def from_pil(image: Image.Image) -> torch.Tensor:
    """HWC uint8 tensor of an RGB PIL image (one copy out of PIL's memory)."""
    return as_tensor(np.asarray(image))


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor view of a (possibly read-only) uint8 array; it is only ever read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we never write through it
        return torch.from_numpy(array)


@dataclass(frozen=True)
class Resized:
    """A pending resize of ``image`` (HWC uint8) to ``(height, width)``; :func:`write_tiles` writes it.

    With ``canvas`` set, what is resized is ``image`` pasted at ``offsets`` (top, left) on a ``canvas`` (height,
    width) of colour ``fill`` (the ``pad`` strategy's square), which the exact engine never has to build."""

    image: torch.Tensor
    height: int
    width: int
    resample: str
    canvas: tuple[int, int] | None = None
    offsets: tuple[int, int] = (0, 0)
    fill: tuple[int, int, int] = (0, 0, 0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    def materialize(self, reuse: bool = False) -> torch.Tensor:
        """The resized image as an HWC uint8 tensor (the exact engine, else Pillow; identical pixels). ``reuse``: may
        be a per-thread buffer that the next resize overwrites (for :func:`write_tiles`, which consumes it at once)."""
        image = self.image
        if self.canvas is not None:
            args = (self.canvas, self.offsets, self.fill, self.height, self.width, self.resample)
            exact = _resample.resize_padded(image, *args, reuse=reuse)
            if exact is not None:
                return exact
            image = _paste(image, self.canvas, self.offsets, self.fill)
        exact = _resample.resize_many(image, [(self.height, self.width)], self.resample, reuse=reuse)[0]
        if exact is not None:
            return exact
        pil = Image.fromarray(np.ascontiguousarray(image.numpy()), "RGB")
        return from_pil(pil.resize((self.width, self.height), RESAMPLE[self.resample]))


def resize(
    image: Image.Image | torch.Tensor,
    height: int,
    width: int,
    resample: str,
    backend: str = "pil",
    *,
    lazy: bool = False,
) -> torch.Tensor | Resized:
    """Resize a PIL image or an HWC uint8 tensor to ``(height, width)``.

    Returns an HWC tensor of pixel values 0..255 (uint8, or float32 holding integers), or with ``lazy=True`` a
    :class:`Resized` that :func:`write_tiles` computes (for tensors). ``backend="pil"`` (the default) is
    bit-identical to Pillow's ``Image.resize``: PIL images are resized by Pillow, tensors by Pillow or the exact
    engine (see :func:`anyres.resample.available`). ``backend="torch"`` uses torch's antialiased uint8 kernels for
    down-scaling (several times faster; it always runs the horizontal pass first and rounds its weights to 16 bits,
    so sharp edges can differ by a few levels); up-scaling stays exact.
    """
    size = image_size(image)
    if size == (height, width):
        return from_pil(image) if isinstance(image, Image.Image) else image
    shrink = height <= size[0] and width <= size[1]
    if backend == "torch" and resample in _TORCH_MODES and shrink:
        if isinstance(image, Image.Image):
            image = from_pil(image)
        if not image.is_contiguous():
            image = image.contiguous()
        chw = image.permute(2, 0, 1)[None]  # channels-last NCHW view: the fast uint8 path
        out = torch.nn.functional.interpolate(
            chw, size=(height, width), mode=_TORCH_MODES[resample], antialias=True, align_corners=False
        )
        return out[0].permute(1, 2, 0)
    if isinstance(image, Image.Image):
        if not _resample.available(resample):
            return from_pil(image.resize((width, height), RESAMPLE[resample]))
        image = from_pil(image)
    pending = Resized(image, height, width, resample)
    return pending if lazy else pending.materialize()


def square_pad(
    image: Image.Image | torch.Tensor, layout: Layout, fill: Sequence[int]
) -> Image.Image | torch.Tensor:
    """Pad to a square of side ``max(H, W)`` with ``fill`` colour (``expand2square``), same type as the input."""
    top, left = layout.offsets
    if isinstance(image, Image.Image):
        canvas_img = Image.new("RGB", (layout.canvas.width, layout.canvas.height), tuple(fill))
        canvas_img.paste(image, (left, top))
        return canvas_img
    return _paste(image, tuple(layout.canvas), tuple(layout.offsets), fill)


def _paste(
    image: torch.Tensor, size: tuple[int, int], offsets: tuple[int, int], fill: Sequence[int]
) -> torch.Tensor:
    """HWC uint8 canvas of ``size`` and colour ``fill`` with ``image`` at ``offsets`` (top, left)."""
    (height, width), (top, left) = size, offsets
    h, w = int(image.shape[0]), int(image.shape[1])
    canvas = torch.empty((height, width, 3), dtype=torch.uint8)
    rows = canvas.numpy().reshape(height, width * 3)
    pattern = np.tile(np.asarray(fill, np.uint8), width)  # one padded row; rows are filled by row copies
    rows[:top] = pattern
    rows[top + h :] = pattern
    rows[top : top + h, : left * 3] = pattern[: left * 3]
    rows[top : top + h, (left + w) * 3 :] = pattern[: (width - left - w) * 3]
    canvas[top : top + h, left : left + w] = image
    return canvas


def image_size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or an HWC tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])


def grid_canvas(
    image: Image.Image | torch.Tensor, layout: Layout, resample: str, backend: str = "pil"
) -> torch.Tensor:
    """The black-padded ``canvas`` (HWC uint8) with the aspect-preserving resize pasted at the layout's offsets.

    (Preprocessing writes the tiles directly without building it; this is the reference picture of what they hold.)
    """
    canvas = torch.zeros((layout.canvas.height, layout.canvas.width, 3), dtype=torch.uint8)
    rh, rw = layout.resized
    top, left = layout.offsets
    canvas[top : top + rh, left : left + rw] = resize(image, rh, rw, resample, backend).to(torch.uint8)
    return canvas


class _Tiles:
    """Writes pixel rows of an image placed at ``(top, left)`` on a black canvas into the ``[n, 3, S, S]`` tiles
    (row-major grid of ``cols`` columns), normalised with the per-channel ``shift + scale * x``."""

    def __init__(self, tiles: torch.Tensor, cols: int, top: int, left: int, mean, std):
        self.tiles, self.cols, self.top, self.left = tiles, cols, top, left
        self.size = int(tiles.shape[-1])
        self.affine = [
            (torch.tensor(-m / s, dtype=torch.float32), 1.0 / (255.0 * s)) for m, s in zip(mean, std)
        ]
        self.planar = np.empty(0, np.uint8)

    def lut(self) -> np.ndarray:
        """float32 ``[3, 256]``: every byte value normalised per channel, with the same float32 arithmetic as
        :meth:`byte_rows` (``shift + scale * x``)."""
        levels = torch.arange(256, dtype=torch.float32)
        return torch.stack([torch.add(shift, levels, alpha=scale) for shift, scale in self.affine]).numpy()

    def pad(self, height: int, width: int) -> None:
        """Fill every tile area outside the ``height x width`` image with normalised black."""
        s = self.size
        black = torch.stack([shift for shift, _ in self.affine]).view(3, 1, 1)
        for index in range(self.tiles.shape[0]):
            ty, tx = divmod(index, self.cols)
            y0, y1 = max(ty * s, self.top), min((ty + 1) * s, self.top + height)
            x0, x1 = max(tx * s, self.left), min((tx + 1) * s, self.left + width)
            tile = self.tiles[index]
            if y1 <= y0 or x1 <= x0:
                bands = [(0, s, 0, s)]
            else:
                y0, y1, x0, x1 = y0 - ty * s, y1 - ty * s, x0 - tx * s, x1 - tx * s
                bands = [(0, y0, 0, s), (y1, s, 0, s), (y0, y1, 0, x0), (y0, y1, x1, s)]
            for a, b, c0, c1 in bands:
                if b > a and c1 > c0:  # all three channels in one broadcast copy
                    tile[:, a:b, c0:c1].copy_(black.expand(3, b - a, c1 - c0))

    def _pieces(self, y0: int, n: int, width: int):
        """``(tile, tile_rows, tile_cols, src_rows, src_cols)`` for image rows ``y0:y0 + n`` of an image of ``width``."""
        s = self.size
        y = y0
        while y < y0 + n:
            cy = self.top + y
            ty = cy // s
            rows = min(y0 + n, (ty + 1) * s - self.top) - y
            for tx in range(self.left // s, (self.left + width - 1) // s + 1):
                x0, x1 = max(tx * s, self.left), min((tx + 1) * s, self.left + width)
                yield (
                    self.tiles[ty * self.cols + tx],
                    slice(cy - ty * s, cy - ty * s + rows),
                    slice(x0 - tx * s, x1 - tx * s),
                    slice(y - y0, y - y0 + rows),
                    slice(x0 - self.left, x1 - self.left),
                )
            y += rows

    def float_rows(self, y0: int, rows: torch.Tensor, width: int) -> None:
        """Image rows ``y0:`` given as float32 ``[n, >= width * 3]`` (interleaved RGB)."""
        hwc = rows[:, : width * 3].view(rows.shape[0], width, 3)
        for tile, trows, tcols, srows, scols in self._pieces(y0, rows.shape[0], width):
            for c, (shift, scale) in enumerate(self.affine):
                torch.add(shift, hwc[srows, scols, c], alpha=scale, out=tile[c, trows, tcols])

    def byte_rows(self, y0: int, hwc: torch.Tensor) -> None:
        """Image rows ``y0:`` given as HWC uint8: de-interleaved with numpy (fast for bytes), then converted."""
        array = hwc.numpy()
        for tile, trows, tcols, srows, scols in self._pieces(y0, hwc.shape[0], hwc.shape[1]):
            dst = tile[:, trows, tcols]
            h, w = dst.shape[1], dst.shape[2]
            if self.planar.size < 3 * h * w:
                self.planar = np.empty(3 * h * w, np.uint8)
            planar = self.planar[: 3 * h * w].reshape(3, h, w)
            np.copyto(planar, array[srows, scols].transpose(2, 0, 1))
            dst.copy_(torch.from_numpy(planar))
            for c, (shift, scale) in enumerate(self.affine):
                torch.add(shift, dst[c], alpha=scale, out=dst[c])

    def write(self, content: torch.Tensor | Resized) -> None:
        if isinstance(content, Resized):
            content = content.materialize(reuse=True)
        if content.dtype == torch.uint8:
            array = content.numpy()
            if _kernels.AVAILABLE and array.flags.c_contiguous and self.tiles.is_contiguous():
                rows = array.reshape(array.shape[0], -1)
                _kernels.write_tiles(rows, self.tiles.numpy(), self.cols, self.top, self.left, self.lut())
            else:
                self.byte_rows(0, content)
        else:
            self.float_rows(0, content.reshape(content.shape[0], -1), int(content.shape[1]))


def empty_tiles(count: int, size: int) -> torch.Tensor:
    """An uninitialised float32 ``[count, 3, size, size]`` buffer for :func:`write_tiles`.

    Buffers of at least :data:`HUGE_PAGES_FROM` bytes ask Linux for transparent huge pages: glibc always maps such
    sizes fresh from the kernel, so their first touch page-faults every 4 KiB page; a huge page costs one fault per
    2 MiB. Smaller buffers are left alone: glibc hands a freed one out again without any fault, and the advice
    would defeat that (measured: slower at 1920x1080, faster at 4032x3024)."""
    out = torch.empty((count, 3, size, size), dtype=torch.float32)
    if out.numel() * 4 >= HUGE_PAGES_FROM:
        _advise_huge_pages(out)
    return out


#: glibc's largest mmap threshold on 64-bit systems: allocations this large are always fresh mappings.
HUGE_PAGES_FROM = 32 << 20
_HUGE_PAGE = 2 << 20


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - not a glibc-like libc
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _advise_huge_pages(tensor: torch.Tensor) -> None:
    """MADV_HUGEPAGE on the whole 2 MiB pages inside ``tensor``'s memory, before they are first touched; failure
    (THP disabled, not Linux) only loses the speed-up."""
    madvise = _madvise()
    if madvise is None:
        return
    nbytes = tensor.numel() * tensor.element_size()
    begin = -(-tensor.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    end = (tensor.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if end > begin:
        madvise(begin, end - begin, 14)  # MADV_HUGEPAGE


def write_tiles(
    out: torch.Tensor,
    base: torch.Tensor | Resized | Sequence[torch.Tensor | Resized] | None,
    content: torch.Tensor | Resized | None,
    layout: Layout,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """Fill ``out`` ``[N, 3, S, S]``: the base tiles, then the grid tiles (row-major) of the black-padded canvas that
    holds ``content`` (HWC: the resized image, placed at ``layout.offsets``, or the whole canvas); normalised as
    ``(x / 255 - mean) / std``. ``base`` is one tile, a sequence of ``layout.base_tiles`` tiles, or ``None`` when the
    layout has no base tile. Tensors hold pixel values 0..255 (uint8 or float32); :class:`Resized` items are
    computed here."""
    bases = _base_list(base, layout)
    if (
        len(bases) == 1
        and isinstance(bases[0], Resized)
        and isinstance(content, Resized)
        and bases[0].image is content.image
        and bases[0].resample == content.resample
    ):
        done = _resample.resize_many(
            content.image, [(r.height, r.width) for r in (bases[0], content)], content.resample
        )
        if all(d is not None for d in done):
            bases, content = [done[0]], done[1]  # both computed in one pass over the source rows
    for index, tile in enumerate(bases):
        _Tiles(out[index : index + 1], 1, 0, 0, mean, std).write(tile)
    if content is not None:
        rh, rw = int(content.shape[0]), int(content.shape[1])
        top, left = (0, 0) if (rh, rw) == tuple(layout.canvas) else layout.offsets
        grid = _Tiles(out[layout.base_tiles :], layout.grid.cols, top, left, mean, std)
        grid.pad(rh, rw)
        grid.write(content)


def _base_list(base: Any, layout: Layout) -> list[Any]:
    """``base`` as a list of ``layout.base_tiles`` tiles (a strategy returns one tile, a sequence or ``None``)."""
    if base is None:
        bases: list[Any] = []
    elif isinstance(base, (torch.Tensor, Resized)):
        bases = [base]
    else:
        bases = list(base)
    if len(bases) != layout.base_tiles:
        raise ValueError(
            f"the strategy rendered {len(bases)} base tile(s) but its layout declares {layout.base_tiles}"
        )
    return bases
