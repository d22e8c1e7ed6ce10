"""Quantize a model's frozen linear layers in place with ``bitsandbytes`` (``nf4`` 4-bit or ``int8``), per component.

A registry maps each method to the function that turns one ``nn.Linear`` into its quantized layer; the layers to
convert are chosen per component from the module tree (the same rule as LoRA targets: the features' linear
layers, never the LLM's output head, which stays in the compute dtype like in transformers). Quantized weights
cannot train; LoRA layers injected afterwards train in the compute dtype (QLoRA). Works on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from onevision.errors import ConfigError
from onevision.lora import COMPONENT_ROOTS, _linear_layers


def _nf4(linear: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        quant_type="nf4",
        device="meta",
    )
    q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return q.to(linear.weight.device)


def _int8(linear: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    q = bnb.nn.Linear8bitLt(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        has_fp16_weights=False,
        device="meta",
    )
    q.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return q.to(linear.weight.device)


#: method -> (one linear layer, compute dtype) -> its quantized replacement
QUANTIZERS: dict[str, Callable[[nn.Linear, torch.dtype], nn.Module]] = {"nf4": _nf4, "int8": _int8}
#: method -> what a layer's input width must be a multiple of (bitsandbytes' nf4 blocks of 64, also on CPU);
#: narrower or odd layers stay unquantized (none in real models: 896, 1152, 3584 ... are multiples of 64)
BLOCK: dict[str, int] = {"nf4": 64, "int8": 1}
QUANTIZABLE: tuple[str, ...] = tuple(COMPONENT_ROOTS)


@dataclass(frozen=True)
class QuantizationReport:
    """What :func:`quantize_model` converted."""

    method: str
    components: tuple[str, ...]
    layers: int
    kept: int = 0  # linear layers left unquantized by the block rule


def quantize_model(
    model: nn.Module, method: str, *, skip: Iterable[str] = (), compute_dtype: torch.dtype | None = None
) -> QuantizationReport:
    """Replace the linear layers of every component except ``skip`` with ``method``'s quantized layers (in
    place), and record the report as ``model.quantization``. The originals are freed as they are replaced."""
    if method not in QUANTIZERS:
        raise ConfigError(f"quantization={method!r}: expected one of {sorted(QUANTIZERS)}")
    skip = set(skip)
    unknown = sorted(skip - set(QUANTIZABLE) - {"newline"})
    if unknown:
        raise ConfigError(
            f"quantization_skip: unknown component(s) {unknown}; expected some of {list(QUANTIZABLE)}"
        )
    if getattr(model, "quantization", None) is not None:
        raise ConfigError("the model is already quantized")
    dtype = compute_dtype or getattr(model, "dtype", torch.float32)
    components = tuple(c for c in QUANTIZABLE if c not in skip)
    count = kept = 0
    for component in components:
        for _, full in _linear_layers(model, component):
            owner, _, leaf = full.rpartition(".")
            parent = model.get_submodule(owner)
            layer = getattr(parent, leaf)
            if layer.in_features % BLOCK[method]:
                kept += 1
                continue
            setattr(parent, leaf, QUANTIZERS[method](layer, dtype))
            count += 1
    report = QuantizationReport(method, components, count, kept)
    model.quantization = report
    return report


def quantized_components(model: Any) -> tuple[str, ...]:
    """The components of ``model`` that :func:`quantize_model` converted (empty if none)."""
    report = getattr(model, "quantization", None)
    return report.components if report is not None else ()


def model_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (quantized storage counted as stored, quantization
    constants included)."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += sum(
                v.numel() * v.element_size() for v in vars(state).values() if isinstance(v, torch.Tensor)
            )
        scb = getattr(getattr(module, "weight", None), "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total
