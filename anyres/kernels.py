"""Compiled (numba) inner loops of the pixel path: Pillow's two resampling passes and the normalised tile write.

Each kernel is plain integer or float arithmetic over contiguous numpy arrays, written so that LLVM vectorises the
innermost loop; :mod:`anyres.resample` and :mod:`anyres.tiling` decide what to call. numba is a dependency, but
the pixel path does not need it to be correct: when it cannot be imported, :data:`AVAILABLE` is ``False`` and the
callers use Pillow and torch instead (same pixels, slower).

Resampling arithmetic is Pillow's own (``libImaging/Resample.c``, 8-bit images): per output pixel a sum of
``pixel * weight`` over the filter window in 32-bit integers, starting from ``2**21``, shifted right by 22 and
clipped to 0..255 after each pass, so the results are bit-identical by construction.
"""

from __future__ import annotations

import numpy as np

try:  # pragma: no branch - numba is a declared dependency; the fallback keeps exotic platforms working
    import numba

    AVAILABLE = True
except ImportError:  # pragma: no cover
    numba = None
    AVAILABLE = False

if AVAILABLE:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    def _byte_pointer(context, builder, array_type, array, index):
        data = context.make_array(array_type)(context, builder, array).data
        return builder.bitcast(builder.gep(data, [index]), ir.IntType(32).as_pointer())

    @intrinsic
    def _load_word(typingctx, array, index):
        """The 4 bytes at ``array[index:index + 4]`` (1-D uint8) as one unaligned 32-bit load."""
        if not (isinstance(array, types.Array) and array.dtype == types.uint8 and array.ndim == 1):
            return None

        def codegen(context, builder, signature, args):
            return builder.load(_byte_pointer(context, builder, signature.args[0], *args), align=1)

        return types.uint32(array, types.intp), codegen

    @intrinsic
    def _store_word(typingctx, array, index, value):
        """``array[index:index + 4] = value`` (1-D uint8) as one unaligned 32-bit store."""
        if not (isinstance(array, types.Array) and array.dtype == types.uint8 and array.ndim == 1):
            return None

        def codegen(context, builder, signature, args):
            pointer = _byte_pointer(context, builder, signature.args[0], args[0], args[1])
            builder.store(args[2], pointer, align=1)
            return context.get_dummy_value()

        return types.void(array, types.intp, types.uint32), codegen


PRECISION_BITS = 22
#: Rows resampled together by the horizontal pass: their pixels are transposed into one block so that the
#: innermost loop runs over ``BLOCKROWS * 3`` contiguous bytes (vectorised) instead of along a row (a reduction).
BLOCKROWS = 32
_LANES = BLOCKROWS * 3
#: Row length of the transposed blocks: the lanes plus room for the 4th byte of the last lane's 32-bit move.
ROW = _LANES + 4
LANES = _LANES
_HALF = 1 << (PRECISION_BITS - 1)


def _jit(fn):
    if not AVAILABLE:
        return fn
    try:  # compiled once, then loaded from numba's on-disk cache
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache location (read-only install, no home): compile in every process
        return numba.njit(cache=False, nogil=True, boundscheck=False)(fn)


@_jit
def _transpose(src, y0, n, block):  # pragma: no cover - compiled
    """``block[x, r * 3 + c] = src[y0 + r, x * 3 + c]`` for the ``n <= BLOCKROWS`` rows from ``y0``.

    Each pixel moves as one unaligned 32-bit load and store (its 4th byte is overwritten by the next row's pixel,
    or lands in the block's spare bytes); the last pixel of a row, whose 4th byte lies past the row, moves by bytes.
    """
    width = src.shape[1] // 3
    row_bytes = src.shape[1]
    flat = src.reshape(-1)
    out = block.reshape(-1)
    stride = block.shape[1]
    for x in range(width - 1):
        o = x * stride
        q = y0 * row_bytes + x * 3
        for r in range(n):
            _store_word(out, o + r * 3, _load_word(flat, q + r * row_bytes))
    x = width - 1
    for r in range(n):
        for c in range(3):
            block[x, r * 3 + c] = src[y0 + r, x * 3 + c]


@_jit
def _transpose_padded(src, y0, n, block, left, fill):  # pragma: no cover - compiled
    """:func:`_transpose` of rows placed at column ``left`` of wider rows (``block.shape[0]`` pixels) whose other
    pixels are the colour ``fill`` (uint8 ``[3]``): a padded canvas that is never built."""
    width = src.shape[1] // 3
    canvas = block.shape[0]
    row_bytes = src.shape[1]
    flat = src.reshape(-1)
    out = block.reshape(-1)
    for x in range(canvas):
        if x < left or x >= left + width:
            for r in range(n):
                block[x, r * 3] = fill[0]
                block[x, r * 3 + 1] = fill[1]
                block[x, r * 3 + 2] = fill[2]
        elif x < left + width - 1:
            o = x * block.shape[1]
            q = y0 * row_bytes + (x - left) * 3
            for r in range(n):
                _store_word(out, o + r * 3, _load_word(flat, q + r * row_bytes))
        else:
            x3 = (x - left) * 3
            for r in range(n):
                block[x, r * 3] = src[y0 + r, x3]
                block[x, r * 3 + 1] = src[y0 + r, x3 + 1]
                block[x, r * 3 + 2] = src[y0 + r, x3 + 2]


@_jit
def _filter(rows, start, count, weights, result, acc, lanes):  # pragma: no cover - compiled
    """``result[j, i] = clip((2**21 + sum_k weights[j, k] * rows[start[j] + k, i]) >> 22)`` for the first ``lanes``
    bytes ``i`` of each row: one resampling pass along the first axis (Pillow's arithmetic)."""
    for j in range(start.shape[0]):
        s = start[j]
        w0 = weights[j, 0]
        for i in range(lanes):
            acc[i] = _HALF + np.int32(rows[s, i]) * w0
        for k in range(1, count[j]):
            wk = weights[j, k]
            for i in range(lanes):
                acc[i] += np.int32(rows[s + k, i]) * wk
        for i in range(lanes):
            v = acc[i] >> PRECISION_BITS
            result[j, i] = 0 if v < 0 else (255 if v > 255 else v)


@_jit
def _store(result, r0, r1, dst, d0):  # pragma: no cover - compiled
    """Lanes of block rows ``r0:r1`` of ``result`` back to rows ``d0 ..`` of ``dst`` (uint8 ``[rows, out * 3]``),
    a pixel per unaligned 32-bit move (the last one of a row by bytes)."""
    out = result.shape[0]
    stride = result.shape[1]
    row_bytes = dst.shape[1]
    flat = result.reshape(-1)
    target = dst.reshape(-1)
    for r in range(r0, r1):
        o = (d0 + r - r0) * row_bytes
        for j in range(out - 1):
            _store_word(target, o + j * 3, _load_word(flat, j * stride + r * 3))
        j = out - 1
        for c in range(3):
            dst[d0 + r - r0, j * 3 + c] = result[j, r * 3 + c]


@_jit
def horizontal(src, first, start, count, weights, dst, block, result, acc):  # pragma: no cover - compiled
    """Resample rows ``first : first + len(dst)`` of ``src`` (uint8 ``[H, W * 3]``, interleaved RGB) along the
    width into ``dst`` (uint8 ``[rows, out * 3]``). Output ``j`` reads ``count[j]`` pixels from ``start[j]`` with the
    int32 ``weights[j]``. Work buffers (see :func:`work_shapes`): ``block`` uint8 ``[W, ROW]``, ``result`` uint8
    ``[out, ROW]``, ``acc`` int32 ``[LANES]``; the kernels allocate nothing."""
    rows = dst.shape[0]
    for b0 in range(0, rows, BLOCKROWS):
        n = min(BLOCKROWS, rows - b0)
        _transpose(src, first + b0, n, block)
        _filter(block, start, count, weights, result, acc, _LANES)
        _store(result, 0, n, dst, b0)


@_jit
def horizontal_padded(
    src, first, start, count, weights, dst, left, fill, block, result, acc
):  # pragma: no cover
    """:func:`horizontal` of ``src`` rows placed at column ``left`` of ``len(block)``-pixel rows padded with the
    colour ``fill``."""
    rows = dst.shape[0]
    for b0 in range(0, rows, BLOCKROWS):
        n = min(BLOCKROWS, rows - b0)
        _transpose_padded(src, first + b0, n, block, left, fill)
        _filter(block, start, count, weights, result, acc, _LANES)
        _store(result, 0, n, dst, b0)


@_jit
def horizontal_pair(
    src,
    first_a,
    start_a,
    count_a,
    weights_a,
    dst_a,
    first_b,
    start_b,
    count_b,
    weights_b,
    dst_b,
    block,
    result_a,
    result_b,
    acc,
):  # pragma: no cover - compiled
    """:func:`horizontal` for two outputs of the same rows' source (e.g. a base tile and a grid canvas), sharing the
    transposed blocks: each target resamples the block rows inside its own range ``first_x : first_x + len(dst_x)``."""
    end_a, end_b = first_a + dst_a.shape[0], first_b + dst_b.shape[0]
    lo, hi = min(first_a, first_b), max(end_a, end_b)
    for y0 in range(lo, hi, BLOCKROWS):
        n = min(BLOCKROWS, hi - y0)
        _transpose(src, y0, n, block)
        a0, a1 = max(y0, first_a), min(y0 + n, end_a)
        if a1 > a0:
            _filter(block, start_a, count_a, weights_a, result_a, acc, _LANES)
            _store(result_a, a0 - y0, a1 - y0, dst_a, a0 - first_a)
        b0, b1 = max(y0, first_b), min(y0 + n, end_b)
        if b1 > b0:
            _filter(block, start_b, count_b, weights_b, result_b, acc, _LANES)
            _store(result_b, b0 - y0, b1 - y0, dst_b, b0 - first_b)


@_jit
def vertical(src, start, count, weights, dst, acc):  # pragma: no cover - compiled
    """Resample ``src`` (uint8 ``[H, L]``) along the height into ``dst`` (uint8 ``[out, L]``); output row ``j`` reads
    ``count[j]`` rows from ``start[j]`` with the int32 ``weights[j]``."""
    _filter(src, start, count, weights, dst, acc, src.shape[1])


@_jit
def write_tiles(src, tiles, cols, top, left, lut):  # pragma: no cover - compiled
    """Write ``src`` (uint8 ``[h, w * 3]``, interleaved RGB), placed at ``(top, left)`` on the canvas that the
    row-major grid of ``cols`` square tiles ``tiles`` (float32 ``[n, 3, S, S]``) covers, as ``lut[c, x]`` (float32
    ``[3, 256]``: the normalised value of byte ``x`` in channel ``c``). Only the pixels the image covers are written."""
    size = tiles.shape[2]
    height = src.shape[0]
    width = src.shape[1] // 3
    lut0, lut1, lut2 = lut[0], lut[1], lut[2]
    for y in range(height):
        cy = top + y
        ty = cy // size
        ry = cy - ty * size
        row = src[y]
        x = 0
        while x < width:
            cx = left + x
            tx = cx // size
            rx = cx - tx * size
            n = min(size - rx, width - x)
            tile = tiles[ty * cols + tx]
            row0, row1, row2 = tile[0, ry], tile[1, ry], tile[2, ry]
            for i in range(n):
                p = (x + i) * 3
                row0[rx + i] = lut0[row[p]]
                row1[rx + i] = lut1[row[p + 1]]
                row2[rx + i] = lut2[row[p + 2]]
            x += n
