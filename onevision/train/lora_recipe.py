"""The recipe's LoRA / QLoRA schema (``components.<name>.lora``, ``model.quantization``) and its validation.

``components.<name>.trainable: lora`` trains low-rank adapters on the component's linear layers instead of its
weights; ``lora`` sets their rank, scale, dropout, target layers (default: every linear layer of the component,
the LLM's output head excepted) and the modules trained fully beside them. ``model.quantization`` loads the
frozen base with ``bitsandbytes`` (``nf4`` or ``int8``) while LoRA weights train in the compute dtype; components
in ``model.quantization_skip`` and components trained ``full`` stay unquantized.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Quantization = Literal["nf4", "int8"]
QuantizableComponent = Literal["vision", "projector", "llm"]


@dataclass
class LoraSpec:
    """LoRA of one component (used when its ``trainable`` is ``lora``); ``alpha / r`` scales the update."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] | None = None  # layer names (or name endings); null = every linear layer
    modules_to_save: list[str] = field(default_factory=list)  # modules of the component trained fully


def lora_ranges(components: tuple[str, ...], count: Any, positive: Any, fraction: Any) -> dict[str, Any]:
    """The numeric ranges of the LoRA fields of every component (merged into the recipe's ``NUMERIC_RANGES``)."""
    out: dict[str, Any] = {}
    for n in components:
        out[f"components.{n}.lora.r"] = count
        out[f"components.{n}.lora.alpha"] = positive
        out[f"components.{n}.lora.dropout"] = fraction
    return out


def lora_components(recipe: Any) -> dict[str, Any]:
    """``component -> onevision.lora.ComponentLora`` for every component the recipe trains with LoRA."""
    from onevision.lora import ComponentLora

    out = {}
    for name in _names(recipe):
        c = recipe.component(name)
        if c.trainable == "lora":
            s = c.lora
            out[name] = ComponentLora(
                r=s.r,
                alpha=float(s.alpha),
                dropout=float(s.dropout),
                target_modules=tuple(s.target_modules) if s.target_modules is not None else None,
                modules_to_save=tuple(s.modules_to_save),
            )
    return out


def quantization_skip(recipe: Any) -> tuple[str, ...]:
    """Components left unquantized: the recipe's ``quantization_skip`` and every component trained ``full``."""
    from onevision.lora import COMPONENT_ROOTS

    full = [n for n in COMPONENT_ROOTS if recipe.component(n).trainable == "full"]
    return tuple(sorted({*recipe.model.quantization_skip, *full}))


def validate_lora(recipe: Any, err: Any) -> None:
    """Cross-field rules of LoRA and quantization (raise ``err(key, message)``)."""
    from onevision.lora import COMPONENT_ROOTS

    lora = [n for n in _names(recipe) if recipe.component(n).trainable == "lora"]
    for name in lora:
        if name not in COMPONENT_ROOTS:
            raise err(
                f"components.{name}.trainable",
                f"lora needs linear layers and {name} is a single vector; use full or frozen",
            )
        spec = recipe.component(name).lora
        if spec.target_modules is not None and not spec.target_modules:
            raise err(
                f"components.{name}.lora.target_modules", "list at least one layer name, or null for all"
            )
    dropouts = sorted({recipe.component(n).lora.dropout for n in lora})
    if len(dropouts) > 1:
        raise err(f"components.{lora[-1]}.lora.dropout", f"LoRA components share one dropout, got {dropouts}")
    if recipe.model.quantization is not None and recipe.engine.backend in ("zero2", "zero3"):
        raise err(
            "model.quantization",
            "quantized weights cannot be partitioned by DeepSpeed; use single or ddp",
        )


def _names(recipe: Any) -> list[str]:
    """The recipe's component names, in schema order."""
    return [f.name for f in dataclasses.fields(recipe.components)]
