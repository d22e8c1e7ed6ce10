"""Padding-free packing: the samples of a micro-batch laid into few rows, each sample attending only to itself.

The sampler still decides which samples make a micro-batch (modality- and length-grouped, resumable exactly);
packing only changes how they are laid out. Samples are placed first-fit, longest first, into rows of at most
``train.max_tokens_per_row`` tokens (``None``: one row for the whole micro-batch); a sample longer than the budget
gets a row of its own, so a sample, and with it every visual span, is never split. Inside a row each sample's
``position_ids`` restart at 0; the padding that fills a row up to the longest row is one more run restarting at 0,
with no labels; ``packed_spans`` lists every row's spans for :mod:`onevision.attention`, which computes an SDPA or
eager LLM's attention span by span (flash-attention LLMs get varlen ``cu_seq_lens`` from the model). The first
label of every sample is dropped (it would be predicted from the previous sample's last token; alone it is never a
target), so the loss, a mean over the same supervised tokens, equals the unpacked one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onevision.attention import packable, spans_of, use_packed_attention
from onevision.batch import IGNORE_INDEX
from onevision.errors import RecipeError


def first_fit_rows(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of ``lengths`` in rows of at most ``budget`` tokens: first-fit, longest first (ties by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if budget is None:
        return [order] if order else []
    rows: list[list[int]] = []
    used: list[int] = []
    for i in order:
        for r, u in enumerate(used):
            if u + lengths[i] <= budget:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


class PackingEncoder:
    """A sample encoder whose ``collate`` packs (everything else is the wrapped encoder's)."""

    def __init__(self, encoder: Any, max_tokens_per_row: int | None, pad_token_id: int):
        self.encoder = encoder
        self.max_tokens_per_row = max_tokens_per_row
        self.pad_token_id = pad_token_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return pack(items, self.encoder.collate, self.max_tokens_per_row, self.pad_token_id)


def pack(
    items: list[dict[str, Any]], collate: Any, max_tokens_per_row: int | None, pad_token_id: int
) -> dict[str, Any]:
    """One packed batch of ``items``: ``input_ids``, ``labels``, ``position_ids``, ``attention_mask`` (1 = a real
    token) ``[rows, width]``, ``packed=True``, ``packed_spans``, and the visual inputs of ``collate`` over the items in row order."""
    import torch

    lengths = [int(x["input_ids"].shape[0]) for x in items]
    rows = first_fit_rows(lengths, max_tokens_per_row)
    order = [i for row in rows for i in row]
    batch = dict(collate([items[i] for i in order]))  # visual inputs in placeholder (row-major) order
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            n = lengths[i]
            ids[r, col : col + n] = items[i]["input_ids"]
            labels[r, col + 1 : col + n] = items[i]["labels"][1:]
            positions[r, col : col + n] = torch.arange(n)
            mask[r, col : col + n] = 1
            col += n
        positions[r, col:] = torch.arange(width - col)
    spans = spans_of([[lengths[i] for i in row] for row in rows], width)
    batch.update(
        input_ids=ids,
        labels=labels,
        position_ids=positions,
        attention_mask=mask,
        packed=True,
        packed_spans=spans,
    )
    return batch


def enable_packing(recipe: Any, model: Any, encoder: Any) -> Any:
    """The encoder the trainer collates with: packing when ``train.packing`` is on (the model's SDPA or eager LLM
    then switched to span-by-span attention), else ``encoder`` itself."""
    if not recipe.train.packing:
        return encoder
    implementation = model.language_model.config._attn_implementation
    if not packable(implementation):
        raise RecipeError(
            recipe.source or None,
            "train.packing",
            f"the LLM's attention {implementation!r} cannot keep the samples of a packed row apart; use "
            "model.attn_implementation sdpa, eager, flash_attention_2 or flash_attention_3, or train.packing: false",
        )
    use_packed_attention(model.language_model)
    return PackingEncoder(encoder, recipe.train.max_tokens_per_row, encoder.processor.pad_token_id)
