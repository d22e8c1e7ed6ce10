"""The causal-LM loss computed over token chunks, so full ``[tokens, vocab]`` fp32 logits never exist at once.

``loss.kind == "hf"`` leaves the loss to transformers (logits for every position, then cross-entropy). ``"chunked"``
takes the LLM's last hidden states instead, keeps only the positions whose shifted label is supervised, and runs the
LM head + cross-entropy chunk by chunk. For a plain ``nn.Linear`` head the gradients are computed in the forward pass,
chunk by chunk (softmax minus the one-hot target, through the head's weight): no logits are kept and none are
recomputed, and the backward pass only scales the stored gradients. Any other head (a ZeRO-3 partitioned weight, a
quantized or adapted layer) runs through its module under activation checkpointing, one chunk's logits recomputed at
a time in the backward pass. On CUDA, when ``liger-kernel`` is installed, Liger's fused linear-cross-entropy kernel
replaces the PyTorch chunks. Either way the value is the one transformers computes: the sum of per-token
cross-entropies divided by the number of supervised tokens.
"""

from __future__ import annotations

import functools
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


def _plain_linear(head: nn.Module) -> bool:
    """A head whose output is exactly ``states @ weight.T + bias`` (not a subclass: quantized and adapted layers
    subclass ``nn.Linear`` with other weights), with its weight whole on this rank."""
    from torch import nn

    return type(head) is nn.Linear and not _partitioned(head.weight)


@functools.cache
def _linear_cross_entropy() -> type[torch.autograd.Function]:
    """The fused linear cross-entropy autograd function (defined on first use: torch is imported lazily)."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Mean cross-entropy of ``states @ weight.T (+ bias)`` against ``targets`` with the gradients computed in
        the forward pass, ``chunk`` rows at a time: the backward pass scales them by the incoming gradient."""

        forward = staticmethod(_lce_forward)
        backward = staticmethod(_lce_backward)

    return LinearCrossEntropy


def _lce_forward(ctx, states, weight, bias, targets, chunk: int, grads: bool):
    """The loss, and (when ``grads``) each input's gradient for an incoming gradient of 1, stored on ``ctx``."""
    import torch
    from torch.nn import functional as F

    n = targets.numel()
    total = torch.zeros((), dtype=torch.float32, device=states.device)
    need = ctx.needs_input_grad[:3] if grads else (False, False, False)
    g_states = torch.empty_like(states) if need[0] else None
    g_weight = torch.zeros_like(weight, dtype=torch.float32) if need[1] else None
    g_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and need[2] else None
    for start in range(0, states.shape[0], chunk):
        part, target = states[start : start + chunk], targets[start : start + chunk]
        logits = F.linear(part, weight, bias).float()  # the model's dtype, then fp32, as transformers does
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, target[:, None]).squeeze(1)).sum()
        if not any(need):
            continue
        # d(sum of CE)/d logits = softmax - one-hot, computed in the logits' place
        grad = logits.sub_(lse[:, None]).exp_()
        grad[torch.arange(len(target), device=grad.device), target] -= 1.0
        grad = grad.div_(n).to(weight.dtype)
        if g_states is not None:
            g_states[start : start + chunk] = grad @ weight
        if g_weight is not None:
            g_weight.addmm_(grad.t().float(), part.float())
        if g_bias is not None:
            g_bias += grad.float().sum(0)
    ctx.grads = (g_states, g_weight, g_bias)
    ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
    return total / n


def _lce_backward(ctx, grad_out):
    """The stored gradients scaled by ``grad_out`` (a scalar), in each input's dtype."""
    g_states, g_weight, g_bias = ctx.grads
    w_dtype, b_dtype = ctx.dtypes
    return (
        None if g_states is None else g_states * grad_out.to(g_states.dtype),
        None if g_weight is None else (g_weight * grad_out).to(w_dtype),
        None if g_bias is None else (g_bias * grad_out).to(b_dtype),
        None,
        None,
        None,
    )


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
    plain = _plain_linear(head)
    fused = liger_loss() if plain and states.is_cuda and head.bias is None else None
    if fused is not None:
        return fused(ignore_index=IGNORE_INDEX, reduction="mean")(head.weight, states, targets)
    if plain:
        return _linear_cross_entropy().apply(
            states, head.weight, head.bias, targets, chunk_tokens, torch.is_grad_enabled()
        )
    total = states.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        total = total + checkpoint(_chunk_sum, states[part], targets[part], head, use_reentrant=False)
    return total / targets.numel()
