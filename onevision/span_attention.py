"""Causal attention of the samples packed in rows, on PyTorch's CPU flash-attention kernel, skipping the work that
kernel would spend on the masked upper triangle.

The kernel's causal mode computes every key block a query block reaches in full (key blocks are 512 wide), so at
packed-sample lengths it costs about what full attention does. :func:`causal_spans` cuts each long span into query
blocks of :data:`CAUSAL_BLOCK` rows: a block attends to its own keys in one causal call and to the keys before it
in one unmasked call, and the two are merged by their log-sum-exp. The backward pass runs the kernel's backward on
the same pieces with the merged output and log-sum-exp, so the gradients are the causal attention's. Everything stays
in the kernel's ``[B, L, H, D]`` layout, so no piece is copied to be handed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: query rows per block of a long span
CAUSAL_BLOCK = 128
#: shortest span cut into blocks; shorter spans are one causal call
BLOCKWISE_FROM = 3 * CAUSAL_BLOCK

Spans = Sequence[Sequence[tuple[int, int]]]


def causal_spans(
    query: Any, key: Any, value: Any, spans: Spans, scale: float | None = None, block: int = CAUSAL_BLOCK
) -> Any:
    """Causal attention within every span: ``query [B, H, L, D]``, ``key``/``value`` ``[B, Hkv, L, D]`` (``Hkv``
    divides ``H``; CPU tensors), ``spans[b]`` the ``(start, end)`` of each sample of row ``b`` -> ``[B, L, H, D]``.
    Rows not covered by a span are zero. Equal, span by span, to ``scaled_dot_product_attention(is_causal=True)``."""
    return _function().apply(query, key, value, _pieces(spans, block), scale)


def _pieces(spans: Spans, block: int) -> tuple[tuple[int, int, int, int], ...]:
    """``(row, span start, block start, block end)`` of every query block: long spans in ``block`` rows, others
    whole."""
    out = []
    for r, row in enumerate(spans):
        for s, e in row:
            step = block if e - s >= BLOCKWISE_FROM else max(e - s, 1)
            out.extend((r, s, a, min(a + step, e)) for a in range(s, e, step))
    return tuple(out)


_FUNCTION: Any = None


def _function() -> Any:
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _build_function()
    return _FUNCTION


def _build_function() -> Any:
    import torch

    forward_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

    def kernel_layout(q: Any, *dims: int, dtype: Any = None) -> Any:
        """A zeroed ``[B, H, L, *dims]`` view of ``[B, L, H, *dims]`` memory."""
        b, h, n = q.shape[:3]
        return q.new_zeros(b, n, h, *dims, dtype=dtype or q.dtype).transpose(1, 2)

    class CausalSpans(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, q: Any, k: Any, v: Any, pieces: tuple, scale: float | None) -> Any:
            out = kernel_layout(q, q.shape[3])
            lse = None
            for r, s, a, b in pieces:
                qb = q[r : r + 1, :, a:b]
                o, m = forward_kernel(qb, k[r : r + 1, :, a:b], v[r : r + 1, :, a:b], 0.0, True, scale=scale)
                if a > s:  # the keys of the span before this block: no mask
                    p, pm = forward_kernel(
                        qb, k[r : r + 1, :, s:a], v[r : r + 1, :, s:a], 0.0, False, scale=scale
                    )
                    both = torch.logaddexp(m, pm)
                    o = o * (m - both).exp_().unsqueeze(-1) + p * (pm - both).exp_().unsqueeze(-1)
                    m = both
                if lse is None:
                    lse = kernel_layout(q, dtype=m.dtype)
                out[r : r + 1, :, a:b] = o
                lse[r : r + 1, :, a:b] = m
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.pieces, ctx.scale = pieces, scale
            return out.transpose(1, 2)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            q, k, v, out, lse = ctx.saved_tensors
            scale = ctx.scale
            g = grad.contiguous().transpose(1, 2)
            dq, dk, dv = (
                kernel_layout(q, q.shape[3]),
                kernel_layout(k, k.shape[3]),
                kernel_layout(v, v.shape[3]),
            )
            for r, s, a, b in ctx.pieces:
                row = slice(r, r + 1)
                qb, gb, ob, mb = q[row, :, a:b], g[row, :, a:b], out[row, :, a:b], lse[row, :, a:b]
                gq, gk, gv = backward_kernel(
                    gb, qb, k[row, :, a:b], v[row, :, a:b], ob, mb, 0.0, True, scale=scale
                )
                dk[row, :, a:b] += gk
                dv[row, :, a:b] += gv
                if a > s:
                    pq, pk, pv = backward_kernel(
                        gb, qb, k[row, :, s:a], v[row, :, s:a], ob, mb, 0.0, False, scale=scale
                    )
                    gq += pq
                    dk[row, :, s:a] += pk
                    dv[row, :, s:a] += pv
                dq[row, :, a:b] = gq
            return dq, dk, dv, None, None

    return CausalSpans
