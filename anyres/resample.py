"""Pillow-exact BICUBIC / BILINEAR resampling of 8-bit RGB images, in compiled loops (:mod:`anyres.kernels`).

Pillow resamples 8-bit images in two separable passes: horizontal then vertical (from Pillow 13 on, vertical first
when the height shrinks by more than twice as many pixels as the width). For every output pixel of a pass it computes
the filter weights in double precision (support scaled by the down-scaling factor, centre ``(i + 0.5) * scale``,
window clamped at the image edge, weights normalised to sum 1), rounds them to integers with 22 fractional bits
(half away from zero), accumulates ``sum(weight * pixel)`` in integers starting from ``2**21``, then shifts right by
22 and clips to 0..255 after *each* pass.

:func:`coefficients` reproduces those weights (same formulas, same operation order) and the kernels the integer
arithmetic, so the result is bit-identical to ``Image.resize`` (``tests/anyres/test_resample.py`` checks it). They are
faster because the loops are vectorised: the vertical pass runs along whole rows, and the horizontal pass transposes
blocks of 32 rows so that it, too, runs along contiguous memory. Like Pillow, the first pass only computes the rows
or columns the second one reads.

:func:`resize` returns ``None`` when it cannot vouch for Pillow's result (another filter, a Pillow whose pass order it
does not recognise, or numba missing); callers then use Pillow itself.
"""

from __future__ import annotations

import functools
import math
import mmap
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from anyres import kernels

PRECISION_BITS = kernels.PRECISION_BITS
SUPPORTED = ("bicubic", "bilinear")


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Pillow's cubic convolution with a = -0.5, evaluated in the same operation order
    a = -0.5
    x = np.abs(x)
    out = np.zeros_like(x)
    near = x < 1.0
    far = (x >= 1.0) & (x < 2.0)
    xn, xf = x[near], x[far]
    out[near] = ((a + 2.0) * xn - (a + 3.0)) * xn * xn + 1
    out[far] = (((xf - 5) * xf + 8) * xf - 4) * a
    return out


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@dataclass(frozen=True)
class Coefficients:
    """Pillow's fixed-point weights for one axis: output ``i`` reads ``count[i]`` inputs from ``start[i]``."""

    start: np.ndarray  # int64 [out]
    count: np.ndarray  # int64 [out]
    weights: np.ndarray  # int64 [out, ksize], zero past count


@functools.lru_cache(maxsize=512)
def coefficients(in_size: int, out_size: int, resample: str) -> Coefficients:
    """The integer weights Pillow uses to resample ``in_size`` pixels to ``out_size`` along one axis."""
    filt, base_support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    ksize = math.ceil(support) * 2 + 1
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    inv = 1.0 / filterscale
    start = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    stop = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), in_size)
    count = stop - start
    weights = np.zeros((out_size, ksize))
    total = np.zeros(out_size)
    for k in range(ksize):  # a sequential sum, as Pillow's loop
        w = np.where(k < count, filt(((k + start).astype(np.float64) - centre + 0.5) * inv), 0.0)
        weights[:, k] = w
        total = total + w
    nonzero = total != 0.0
    weights[nonzero] /= total[nonzero, None]
    fixed = weights * float(1 << PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + fixed), np.trunc(0.5 + fixed)).astype(np.int64)
    return Coefficients(start, count, fixed)


@functools.lru_cache(maxsize=512)
def _kernel_weights(in_size: int, out_size: int, resample: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start, count, weights)`` as the contiguous int32 arrays the kernels take."""
    coef = coefficients(in_size, out_size, resample)
    width = max(1, int(coef.count.max()))
    return (
        np.ascontiguousarray(coef.start, dtype=np.int32),
        np.ascontiguousarray(coef.count, dtype=np.int32),
        np.ascontiguousarray(coef.weights[:, :width], dtype=np.int32),
    )


class _Scratch(threading.local):
    """Per-thread reusable byte buffers for intermediates: fresh large allocations cost more in page faults than the
    pass that fills them. They are anonymous memory maps of their own, outside the malloc heap: long-lived buffers
    inside it would split the free space that the caller's (and other libraries') large, short-lived buffers are
    reused from, and those would then page-fault afresh on every call."""

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        buf = self.buffers.get(name)
        if buf is None or buf.size < n:
            buf = self.buffers[name] = mapped_bytes(n)
        return buf[:n].view(dtype).reshape(shape)

    def work(self, width: int, outs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(block, result, acc)`` for a horizontal pass over ``width``-pixel rows to ``outs`` pixels."""
        return (
            self.get("block", (width, kernels.ROW)),
            self.get(f"result{outs}", (outs, kernels.ROW)),
            self.get("acc", (kernels.LANES,), np.int32),
        )


def mapped_bytes(n: int) -> np.ndarray:
    """A writable uint8 array of ``n`` bytes in an anonymous memory map of its own (freed with the array)."""
    return np.frombuffer(mmap.mmap(-1, max(1, n)), np.uint8)[:n]


scratch = _Scratch()


def _rows(image: np.ndarray) -> np.ndarray:
    """``[H, W * 3]`` view of a C-contiguous HWC array."""
    return image.reshape(image.shape[0], -1)


def _horizontal(
    src: np.ndarray, width: int, resample: str, first: int = 0, rows: int | None = None, out_name: str = ""
) -> np.ndarray:
    in_w = src.shape[1] // 3
    rows = src.shape[0] - first if rows is None else rows
    start, count, weights = _kernel_weights(in_w, width, resample)
    shape = (rows, width * 3)
    out = scratch.get(out_name, shape) if out_name else np.empty(shape, np.uint8)
    kernels.horizontal(src, first, start, count, weights, out, *scratch.work(in_w, width))
    return out


def _vertical(
    src: np.ndarray,
    height: int,
    resample: str,
    offset: int = 0,
    in_h: int | None = None,
    out_name: str = "",
) -> np.ndarray:
    """Rows of ``src`` hold input rows ``offset ..``; ``in_h`` is the full input height (for the weights)."""
    start, count, weights = _kernel_weights(src.shape[0] if in_h is None else in_h, height, resample)
    shape = (height, src.shape[1])
    out = scratch.get(out_name, shape) if out_name else np.empty(shape, np.uint8)
    acc = scratch.get("vacc", (src.shape[1],), np.int32)
    kernels.vertical(src, start - offset if offset else start, count, weights, out, acc)
    return out


def _exact(
    image: np.ndarray, height: int, width: int, resample: str, vertical_first: bool, out_name: str = ""
) -> np.ndarray:
    """``Image.resize`` of a C-contiguous HWC uint8 RGB array, with the given pass order (output in the scratch
    buffer ``out_name`` if given)."""
    in_h, in_w = image.shape[:2]
    src = _rows(image)
    if (height, width) == (in_h, in_w):
        return image.copy()
    if width == in_w:
        out = _vertical(src, height, resample, out_name=out_name)
    elif height == in_h:
        out = _horizontal(src, width, resample, out_name=out_name)
    elif vertical_first:
        mid = _vertical(src, height, resample, out_name="mid")
        out = _horizontal(mid, width, resample, out_name=out_name)
    else:
        start, count, _ = _kernel_weights(in_h, height, resample)
        first, last = (
            int(start[0]),
            int((start + count).max()),
        )  # Pillow's ybox: the rows the vertical pass reads
        mid = _horizontal(src, width, resample, first, last - first, out_name="mid")
        out = _vertical(mid, height, resample, offset=first, in_h=in_h, out_name=out_name)
    return out.reshape(height, width, 3)


@functools.lru_cache(maxsize=1)
def _pillow_order() -> str | None:
    """The installed Pillow's pass order: ``"legacy"`` (always horizontal first), ``"pillow13"`` (vertical first
    when the height shrinks by more than twice as many pixels as the width) or ``None`` (neither matches, or the
    kernels are unavailable)."""
    if not kernels.AVAILABLE:
        return None
    from PIL import Image

    rng = np.random.default_rng(0)
    # (w, h, ow, oh): the two rules disagree on the first two and agree on the last
    probes = [(60, 100, 30, 20), (40, 90, 37, 30), (90, 60, 30, 40)]
    found = []
    for w, h, ow, oh in probes:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(arr).resize((ow, oh), Image.Resampling.BICUBIC))
        found.append(tuple(np.array_equal(_exact(arr, oh, ow, "bicubic", vf), ref) for vf in (False, True)))
    if all(hv for hv, _ in found):
        return "legacy"
    if found[0] == found[1] == (False, True) and found[2][0]:
        return "pillow13"
    return None


def _vertical_first(shape: tuple[int, ...], height: int, width: int, resample: str) -> bool | None:
    """Whether Pillow runs the vertical pass first; ``None`` when the exact path does not apply."""
    if resample not in SUPPORTED or len(shape) != 3 or shape[2] != 3 or not kernels.AVAILABLE:
        return None
    order = _pillow_order()
    if order is None:
        return None
    in_h, in_w = int(shape[0]), int(shape[1])
    return order == "pillow13" and height < in_h and (in_h - height) > 2 * (in_w - width)


def available(resample: str) -> bool:
    """Whether :func:`resize` computes ``resample`` itself (else it returns ``None`` and Pillow must)."""
    return resample in SUPPORTED and kernels.AVAILABLE and _pillow_order() is not None


def _array(image: torch.Tensor | np.ndarray) -> np.ndarray | None:
    array = image.numpy() if isinstance(image, torch.Tensor) else image
    if array.dtype != np.uint8:
        return None
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def resize_padded(
    image: torch.Tensor | np.ndarray,
    canvas: tuple[int, int],
    offsets: tuple[int, int],
    fill: Sequence[int],
    height: int,
    width: int,
    resample: str,
    *,
    reuse: bool = False,
) -> torch.Tensor | None:
    """:func:`resize` of ``image`` pasted at ``offsets`` (top, left) on a ``canvas`` (height, width) of colour
    ``fill`` — LLaVA's ``expand2square`` then resize — without building the canvas: rows of pure padding are
    resampled once, the others read the padding as they go. ``None`` where the canvas must be built (a pass order or
    shape this shortcut does not cover, or no exact engine)."""
    array = _array(image)
    if array is None or len(array.shape) != 3 or array.shape[2] != 3:
        return None
    (canvas_h, canvas_w), (top, left) = canvas, offsets
    in_h, in_w = array.shape[:2]
    vertical_first = _vertical_first((canvas_h, canvas_w, 3), height, width, resample)
    if vertical_first is None or vertical_first or height == canvas_h or width == canvas_w:
        return None
    if top < 0 or left < 0 or top + in_h > canvas_h or left + in_w > canvas_w:
        return None
    colour = np.asarray(fill, np.uint8)
    vstart, vcount, _ = _kernel_weights(canvas_h, height, resample)
    first, last = int(vstart[0]), int((vstart + vcount).max())  # Pillow's ybox
    hs, hc, hw = _kernel_weights(canvas_w, width, resample)
    mid = scratch.get("mid", (last - first, width * 3))
    a, b = max(first, top), min(last, top + in_h)  # canvas rows that hold image pixels
    if a > first or b < last:  # rows of pure padding: all equal to one resampled padding row
        padding = np.empty((1, width * 3), np.uint8)
        kernels.horizontal(
            np.tile(colour, canvas_w)[None], 0, hs, hc, hw, padding, *scratch.work(canvas_w, width)
        )
        mid[: max(0, a - first)] = padding
        mid[max(0, b - first) :] = padding
    if b > a:
        kernels.horizontal_padded(
            _rows(array),
            a - top,
            hs,
            hc,
            hw,
            mid[a - first : b - first],
            left,
            colour,
            *scratch.work(canvas_w, width),
        )
    out = _vertical(mid, height, resample, offset=first, in_h=canvas_h, out_name="padded" if reuse else "")
    return torch.from_numpy(out.reshape(height, width, 3))


def resize(image: torch.Tensor | np.ndarray, height: int, width: int, resample: str) -> torch.Tensor | None:
    """Pillow-identical resize of an HWC uint8 RGB tensor (or array) to ``(height, width)``.

    Returns an HWC uint8 tensor equal to ``Image.resize((width, height), resample)``, or ``None``: use Pillow (the
    filter is not one of :data:`SUPPORTED`, the installed Pillow's pass order is not recognised, or numba is
    missing).
    """
    return resize_many(image, [(height, width)], resample)[0]


def resize_many(
    image: torch.Tensor | np.ndarray,
    sizes: Sequence[tuple[int, int]],
    resample: str,
    *,
    reuse: bool = False,
) -> list[torch.Tensor | None]:
    """:func:`resize` to several ``(height, width)`` at once: two outputs whose first pass is horizontal share the
    transposed row blocks of the source (the costly half of that pass), e.g. a 384x384 base tile and a grid canvas.

    ``reuse=True`` returns views of per-thread buffers that the next call on the same thread overwrites (for callers
    that consume the result at once, like :func:`anyres.tiling.write_tiles`): no page faults on fresh memory."""
    array = _array(image)
    if array is None:
        return [None] * len(sizes)
    order = [_vertical_first(array.shape, h, w, resample) for h, w in sizes]
    in_h, in_w = array.shape[:2]
    # targets whose first pass is a horizontal one over source rows: pair the first two
    horizontal_first = [
        i for i, ((h, w), vf) in enumerate(zip(sizes, order)) if vf is False and w != in_w and h != in_h
    ]
    results: list[torch.Tensor | None] = [None] * len(sizes)
    if len(horizontal_first) >= 2:
        pair = horizontal_first[:2]
        src = _rows(array)
        args, mids = [], []
        for i in pair:
            h, w = sizes[i]
            start, count, _ = _kernel_weights(in_h, h, resample)
            first, last = int(start[0]), int((start + count).max())
            hs, hc, hw = _kernel_weights(in_w, w, resample)
            mid = scratch.get(f"mid{i}", (last - first, w * 3))
            args += [first, hs, hc, hw, mid]
            mids.append((i, mid, first))
        block, result_a, acc = scratch.work(in_w, sizes[pair[0]][1])
        result_b = scratch.get(f"result{sizes[pair[1]][1]}b", (sizes[pair[1]][1], kernels.ROW))
        kernels.horizontal_pair(src, *args, block, result_a, result_b, acc)
        for i, mid, first in mids:
            h, w = sizes[i]
            out = _vertical(mid, h, resample, offset=first, in_h=in_h, out_name=f"out{i}" if reuse else "")
            results[i] = torch.from_numpy(out.reshape(h, w, 3))
    for i, ((h, w), vf) in enumerate(zip(sizes, order)):
        if results[i] is None and vf is not None:
            results[i] = torch.from_numpy(_exact(array, h, w, resample, vf, f"out{i}" if reuse else ""))
    return results
