"""Causal attention of packed spans on CPU (``onevision.span_attention.causal_spans``): equal to PyTorch's causal
SDPA in values and gradients, and the kernel never computes more than the lower triangle plus the diagonal blocks."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from onevision.attention import packed_sdpa_forward
from onevision.span_attention import BLOCKWISE_FROM, CAUSAL_BLOCK, causal_spans

FLASH = (
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
)


class _Kernels(TorchDispatchMode):
    """Records ``(query rows, key rows, causal)`` of every CPU flash-attention kernel call, forward and backward."""

    def __init__(self):
        super().__init__()
        self.calls = {op: [] for op in FLASH}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.calls:
            q, k = (args[0], args[1]) if func is FLASH[0] else (args[1], args[2])
            at = 4 if func is FLASH[0] else 7
            causal = args[at] if len(args) > at else kwargs.get("is_causal", False)
            self.calls[func].append((q.shape[2], k.shape[2], bool(causal)))
        return func(*args, **kwargs)


def _qkv(length, heads=4, kv_heads=2, dim=16, dtype=torch.float64, rows=1):
    torch.manual_seed(length)

    def projected(h):  # as transformers hands them over: [B, H, L, D] views of [B, L, H, D]
        return torch.randn(rows, length, h, dim, dtype=dtype).transpose(1, 2).requires_grad_()

    return projected(heads), projected(kv_heads), projected(kv_heads)


def _sdpa(q, k, v, s, e, r=0, scale=None):
    return F.scaled_dot_product_attention(
        q[r : r + 1, :, s:e],
        k[r : r + 1, :, s:e],
        v[r : r + 1, :, s:e],
        is_causal=True,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    ).transpose(1, 2)


@pytest.mark.parametrize(
    "length, kv_heads", [(1, 2), (CAUSAL_BLOCK, 2), (BLOCKWISE_FROM, 4), (3 * CAUSAL_BLOCK + 5, 1)]
)
def test_one_span_equals_causal_sdpa_in_values_and_gradients(length, kv_heads):
    q, k, v = _qkv(length, kv_heads=kv_heads)
    grad = torch.randn(1, length, 4, 16, dtype=torch.float64)
    ref = _sdpa(q, k, v, 0, length, scale=0.3)
    out = causal_spans(q, k, v, [[(0, length)]], 0.3)
    assert out.shape == (1, length, 4, 16)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for name, g, r in zip(
        "qkv", torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)
    ):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12, msg=name)


def test_rows_of_spans_attend_within_each_span_only():
    """Two rows of long and short spans (and a trailing padding run): each span equals causal SDPA on it alone, in
    values and gradients; positions no span covers stay zero and get no gradient."""
    width = 900
    spans = [[(0, 500), (500, 620), (620, 900)], [(0, 30), (30, 850)]]  # row 1: 850..900 uncovered
    q, k, v = _qkv(width, rows=2)
    grad = torch.randn(2, width, 4, 16, dtype=torch.float64)
    out = causal_spans(q, k, v, spans)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    expected = [torch.zeros_like(t) for t in (q, k, v)]
    for r, row in enumerate(spans):
        for s, e in row:
            ref = _sdpa(q, k, v, s, e, r)
            torch.testing.assert_close(out[r : r + 1, s:e], ref, rtol=1e-12, atol=1e-12)
            for x, g in zip(expected, torch.autograd.grad(ref, (q, k, v), grad[r : r + 1, s:e])):
                x += g
    assert not out[1, 850:].any()
    for name, g, r in zip("qkv", grads, expected):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_spans_stay_within_bf16_of_sdpa():
    length = 2 * CAUSAL_BLOCK + BLOCKWISE_FROM
    q, k, v = _qkv(length)
    ref = _sdpa(q, k, v, 0, length).detach()
    out = causal_spans(*(t.detach().bfloat16() for t in (q, k, v)), [[(0, length)]])
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_long_spans_compute_the_lower_triangle_and_the_diagonal_blocks_only():
    length = 5 * CAUSAL_BLOCK + 17
    q, k, v = _qkv(length)
    with _Kernels() as kernels:
        causal_spans(q, k, v, [[(0, length)]]).sum().backward()
    blocks = -(-length // CAUSAL_BLOCK)
    bound = length * length / 2 + length * CAUSAL_BLOCK / 2
    for op, calls in kernels.calls.items():
        assert len(calls) == 2 * blocks - 1, op
        assert all(rows <= CAUSAL_BLOCK for rows, _, _ in calls), op
        # causal calls see their own block's keys, unmasked calls only the keys before it
        assert all(keys == rows for rows, keys, causal in calls if causal), op
        assert sum(rows * keys for rows, keys, _ in calls) <= bound < 0.6 * length * length, op
    # one causal SDPA call over the span: the kernel is handed the whole square
    with _Kernels() as kernels:
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).sum().backward()
    assert kernels.calls[FLASH[0]] == [(length, length, True)]


def test_packed_attention_on_cpu_cuts_long_spans_into_blocks_and_runs_short_ones_whole():
    short, long = BLOCKWISE_FROM - 1, BLOCKWISE_FROM + 40
    width = short + long + 3
    q, k, v = _qkv(width)
    spans = (((0, short), (short, short + long), (short + long, width)),)
    with _Kernels() as kernels:
        out, _ = packed_sdpa_forward(None, q, k, v, None, scaling=0.25, packed_spans=spans)
    causal_rows = sorted({rows for rows, _, causal in kernels.calls[FLASH[0]] if causal})
    assert causal_rows == sorted({3, long % CAUSAL_BLOCK, CAUSAL_BLOCK, short})
    for s, e in spans[0]:
        torch.testing.assert_close(out[:, s:e], _sdpa(q, k, v, s, e, scale=0.25), rtol=1e-12, atol=1e-12)
