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


def _components(method: str, skip: Iterable[str]) -> tuple[str, ...]:
    """The components ``method`` quantizes when ``skip`` is left out (:class:`ConfigError` for bad values)."""
    if method not in QUANTIZERS:
        raise ConfigError(f"quantization={method!r}: expected one of {sorted(QUANTIZERS)}")
    skipped = set(skip)
    unknown = sorted(skipped - set(QUANTIZABLE) - {"newline"})
    if unknown:
        raise ConfigError(
            f"quantization_skip: unknown component(s) {unknown}; expected some of {list(QUANTIZABLE)}"
        )
    return tuple(c for c in QUANTIZABLE if c not in skipped)


def _targets(model: nn.Module, method: str, components: Iterable[str]) -> tuple[list[str], int]:
    """Full names of the linear layers to quantize, and how many the block rule keeps."""
    names, kept = [], 0
    for component in components:
        for _, full in _linear_layers(model, component):
            if model.get_submodule(full).in_features % BLOCK[method]:
                kept += 1
            else:
                names.append(full)
    return names, kept


def _replace(model: nn.Module, full: str, method: str, dtype: torch.dtype) -> None:
    owner, _, leaf = full.rpartition(".")
    parent = model.get_submodule(owner)
    setattr(parent, leaf, QUANTIZERS[method](getattr(parent, leaf), dtype))


def quantize_model(
    model: nn.Module, method: str, *, skip: Iterable[str] = (), compute_dtype: torch.dtype | None = None
) -> QuantizationReport:
    """Replace the linear layers of every component except ``skip`` with ``method``'s quantized layers (in
    place), and record the report as ``model.quantization``. The originals are freed as they are replaced."""
    components = _components(method, skip)
    if getattr(model, "quantization", None) is not None:
        raise ConfigError("the model is already quantized")
    dtype = compute_dtype or getattr(model, "dtype", torch.float32)
    names, kept = _targets(model, method, components)
    for full in names:
        _replace(model, full, method, dtype)
    report = QuantizationReport(method, components, len(names), kept)
    model.quantization = report
    return report


@dataclass(frozen=True)
class QuantizePlan:
    """Quantize while loading (the loaders' ``quantize`` option): each linear layer of the components but
    ``skip`` is quantized as soon as its weight (and bias) are read from the checkpoint, so the load never holds
    the model in full precision: about the quantized model plus one layer."""

    method: str
    skip: tuple[str, ...] = ("vision",)

    def __post_init__(self) -> None:
        _components(self.method, self.skip)  # bad values fail before anything is read

    def start(self, model: nn.Module, dtype: torch.dtype | None) -> StreamingQuantizer:
        """The quantizer for one load of ``model`` (built on meta) in compute dtype ``dtype``."""
        return StreamingQuantizer(model, self, dtype or torch.float32)


class StreamingQuantizer:
    """Tracks which tensors of each target layer are read; replaces a layer the moment all of them are."""

    def __init__(self, model: nn.Module, plan: QuantizePlan, dtype: torch.dtype):
        self.model, self.plan, self.dtype = model, plan, dtype
        self.components = _components(plan.method, plan.skip)
        names, self.kept = _targets(model, plan.method, self.components)
        self.pending: dict[str, set[str]] = {}
        self.owner: dict[str, str] = {}
        for full in names:
            layer = model.get_submodule(full)
            keys = {f"{full}.weight"} | ({f"{full}.bias"} if layer.bias is not None else set())
            self.pending[full] = keys
            self.owner.update(dict.fromkeys(keys, full))
        self.count = 0

    def assigned(self, key: str) -> None:
        """``key`` now holds its checkpoint tensor."""
        full = self.owner.pop(key, None)
        if full is None:
            return
        self.pending[full].discard(key)
        if not self.pending[full]:
            del self.pending[full]
            _replace(self.model, full, self.plan.method, self.dtype)
            self.count += 1

    def finish(self) -> QuantizationReport:
        """Record the report as ``model.quantization`` (layers whose tensors were never read stay as they are,
        and the load reports them as unset)."""
        report = QuantizationReport(self.plan.method, self.components, self.count, self.kept)
        self.model.quantization = report
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
