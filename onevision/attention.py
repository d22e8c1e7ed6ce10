"""Per-sample causal attention for packed rows on PyTorch SDPA: each sample's span attends only to itself,
computed span by span, so a row of several samples costs what the samples cost alone.

Registered in transformers' ``AttentionInterface`` as :data:`PACKED_SDPA`. Given ``packed_spans`` (per row, the
``(start, end)`` of every sample and of the trailing padding run, covering the row), it runs causal attention on
each span: on CPU :func:`onevision.span_attention.causal_spans` (which skips the upper triangle the CPU kernel would
compute), elsewhere ``scaled_dot_product_attention(is_causal=True)`` span by span. Without a 2D attention mask the spans are the mask,
so its mask function builds none (transformers would otherwise build a ``[rows, 1, width, width]`` block-diagonal
mask from the restarting positions for every forward, which nothing reads); without ``packed_spans`` the spans come
from restarting ``position_ids``, and with a 2D mask (padded, unpacked batches) it is transformers' SDPA. On
flash-attention models nothing is needed: transformers already runs varlen kernels from the restarting position ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from onevision.span_attention import causal_spans

#: the attention implementation name packed training switches an SDPA or eager LLM to
PACKED_SDPA = "onevision_packed_sdpa"
#: implementations that :func:`use_packed_attention` replaces by :data:`PACKED_SDPA`
REPLACEABLE = ("sdpa", "eager")
#: implementations whose transformers kernels run varlen from explicit ``cu_seq_lens_*`` (:func:`varlen_kwargs`)
VARLEN = ("flash_attention_2", "flash_attention_3")


def packed_sdpa_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    packed_spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function contract: ``query [B, H, L, D]``, ``key``/``value`` ``[B, Hkv, L, D]`` ->
    ``([B, L, H, D], None)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_spans is None and attention_mask is None and key.shape[2] == query.shape[2]:
        packed_spans = spans_from_positions(kwargs.get("position_ids"), query.shape[0], query.shape[2])
    if packed_spans is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout == 0.0 and query.device.type == "cpu":
        return causal_spans(query, key, value, packed_spans, scaling), None
    import torch
    from torch.nn import functional as F

    gqa = query.shape[1] != key.shape[1]
    rows = []
    for r, spans in enumerate(packed_spans):
        parts = [
            F.scaled_dot_product_attention(
                query[r : r + 1, :, s:e],
                key[r : r + 1, :, s:e],
                value[r : r + 1, :, s:e],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
                enable_gqa=gqa,
            )
            for s, e in spans
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def packed_sdpa_mask(*, attention_mask: Any = None, **kwargs: Any) -> Any:
    """:data:`PACKED_SDPA`'s mask function: no mask without a 2D attention mask (causal spans are the mask), else
    transformers' SDPA mask."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(attention_mask=attention_mask, **kwargs)


def spans_from_positions(
    position_ids: Any, rows: int, length: int
) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """``packed_spans`` of ``rows`` whose ``position_ids`` (``[rows or 1, length]``) restart: a new span wherever a
    position is not the previous one + 1. ``None`` when no row restarts or positions are not given (an unpacked
    batch: causal over the row)."""
    if position_ids is None or position_ids.shape[-1] != length or length < 2:
        return None
    import torch

    position_ids = position_ids.reshape(-1, length).expand(rows, length)
    starts = torch.diff(position_ids, dim=-1) != 1
    if not bool(starts.any()):
        return None
    out = []
    for row in starts:
        cuts = [0, *(int(c) + 1 for c in row.nonzero().flatten()), length]
        out.append(tuple(pairwise(cuts)))
    return tuple(out)


def register_packed_attention() -> None:
    """Register :data:`PACKED_SDPA` with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, packed_sdpa_mask)


def packable(implementation: str | None) -> bool:
    """Whether packed rows keep their samples apart under this LLM attention implementation."""
    return implementation in (*REPLACEABLE, PACKED_SDPA, *VARLEN)


def varlen_kwargs(
    packed_spans: Sequence[Sequence[tuple[int, int]]], width: int, device: Any
) -> dict[str, Any]:
    """transformers' flash-attention varlen kwargs for rows of ``width`` tokens flattened into one sequence: every
    span (sample or padding run) of ``packed_spans`` is one sequence of ``cu_seq_lens_q``/``cu_seq_lens_k``."""
    import torch

    starts = [r * width + s for r, spans in enumerate(packed_spans) for s, _ in spans]
    cu = torch.tensor([*starts, len(packed_spans) * width], dtype=torch.int32, device=device)
    longest = max(e - s for spans in packed_spans for s, e in spans)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def use_packed_attention(language_model: Any) -> bool:
    """Switch an SDPA or eager transformers LLM to :data:`PACKED_SDPA`; returns whether it was switched (a
    :data:`VARLEN` LLM keeps its kernel)."""
    if language_model.config._attn_implementation not in REPLACEABLE:
        return False
    register_packed_attention()
    language_model.set_attn_implementation(PACKED_SDPA)
    return True


def spans_of(row_lengths: Sequence[Sequence[int]], width: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """``packed_spans`` of rows holding samples of ``row_lengths``, padded to ``width`` (padding is a span too)."""
    out = []
    for lengths in row_lengths:
        spans, col = [], 0
        for n in lengths:
            spans.append((col, col + n))
            col += n
        if col < width:
            spans.append((col, width))
        out.append(tuple(spans))
    return tuple(out)
