"""The causal-LM loss computed over token chunks, so full ``[tokens, vocab]`` fp32 logits never exist at once.

``loss.kind == "hf"`` leaves the loss to transformers (logits for every position, then cross-entropy). ``"chunked"``
takes the LLM's last hidden states instead, keeps only the positions whose shifted label is supervised, and runs the
LM head + cross-entropy chunk by chunk under activation checkpointing: the forward pass keeps no logits, the backward
pass recomputes one chunk's logits at a time. On CUDA, when ``liger-kernel`` is installed, Liger's fused
linear-cross-entropy kernel replaces the PyTorch chunks. Either way the value is the one transformers computes: the
sum of per-token cross-entropies divided by the number of supervised tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch is imported where it is used: recipes read LossKind without it
    import torch
    from torch import nn

IGNORE_INDEX = -100
LossKind = Literal["hf", "chunked"]


@dataclass(frozen=True)
class LossConfig:
    """Which causal-LM loss the model computes when it is given labels."""

    kind: LossKind = "hf"
    chunk_tokens: int = 4096  # supervised tokens per LM-head chunk ("chunked" only)


def liger_loss() -> Any | None:
    """Liger's ``LigerFusedLinearCrossEntropyLoss`` class, or ``None`` when liger-kernel is not installed."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss


def _chunk_sum(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
    from torch.nn import functional as F

    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def _partitioned(weight: torch.Tensor) -> bool:
    """A ZeRO-3 partitioned weight is only whole inside its module's forward: it must be used through the module."""
    return hasattr(weight, "ds_id")


def chunked_lm_loss(
    hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Mean next-token cross-entropy of ``head(hidden)`` against ``labels`` (``[B, L]``, ``-100`` ignored),
    equal to transformers' causal-LM loss, computed over at most ``chunk_tokens`` supervised tokens at a time."""
    import torch
    from torch.utils.checkpoint import checkpoint

    width = hidden.shape[-1]
    targets = labels[:, 1:].reshape(-1)
    keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    if keep.numel() == 0:  # nothing supervised: transformers gives NaN (0/0); keep the graph, loss 0
        return hidden.sum() * 0.0
    states = hidden[:, :-1].reshape(-1, width).index_select(0, keep)
    targets = targets.index_select(0, keep)
    weight = getattr(head, "weight", None)
    fused = liger_loss()
    if (
        fused is not None
        and states.is_cuda
        and weight is not None
        and getattr(head, "bias", None) is None
        and not _partitioned(weight)
    ):
        return fused(ignore_index=IGNORE_INDEX, reduction="mean")(weight, states, targets)
    total = states.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        total = total + checkpoint(_chunk_sum, states[part], targets[part], head, use_reentrant=False)
    return total / targets.numel()
