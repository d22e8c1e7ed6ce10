"""LoRA on ``OneVisionModel`` components with ``peft``: choose target layers per component, inject, list, merge.

Targets are chosen per component from the module tree, never from component names in parameter paths: the
component's root module (``vision_tower``, ``projector``, ``language_model``) is walked, and a linear layer is a
target when its name relative to that root equals, or ends with ``.`` + , one of ``target_modules``; with no
``target_modules`` every linear layer the component's features use is a target (the LLM's output head excepted).
All components share one ``peft.LoraConfig`` whose ``target_modules`` are the chosen layers' full names and whose
``rank_pattern`` / ``alpha_pattern`` carry each component's own ``r`` and ``alpha``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from onevision.errors import ComponentError

#: component -> the attribute of ``OneVisionModel`` that holds it (``newline`` is a bare vector: no layers)
COMPONENT_ROOTS: dict[str, str] = {
    "vision": "vision_tower",
    "projector": "projector",
    "llm": "language_model",
}


@dataclass(frozen=True)
class ComponentLora:
    """The LoRA of one component: rank, scale numerator, dropout, target layers and fully-trained modules."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the component
    modules_to_save: tuple[str, ...] = ()


@dataclass
class LoraState:
    """What :func:`apply_lora` did to a model (kept on it as ``model.lora``)."""

    config: Any  # the peft.LoraConfig
    components: dict[str, ComponentLora]
    targets: dict[str, list[str]]  # component -> full names of the wrapped layers
    saved: dict[str, list[str]] = field(
        default_factory=dict
    )  # component -> full names of fully-trained modules


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.endswith(f".{p}") for p in patterns)


def _linear_layers(model: nn.Module, component: str) -> list[tuple[str, str]]:
    """``(name relative to the component root, full name)`` of the component's usable linear layers."""
    root_name = COMPONENT_ROOTS[component]
    root = getattr(model, root_name)
    used = None
    if component == "vision":
        used = {id(p) for p in root.feature_parameters()}
    skip = set()
    if component == "llm":
        head = root.get_output_embeddings()
        skip = {id(head)} if head is not None else set()
    out = []
    for rel, module in root.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in skip or not rel:
            continue
        if used is not None and id(module.weight) not in used:
            continue
        out.append((rel, f"{root_name}.{rel}"))
    return out


def resolve_targets(model: nn.Module, component: str, spec: ComponentLora, *, source: str | None = None):
    """Full names of the layers ``spec`` wraps in ``component``; :class:`ComponentError` if none matches."""
    if component not in COMPONENT_ROOTS:
        raise ComponentError(
            source,
            f"components.{component}.trainable",
            f"lora needs linear layers and {component} has none; use full or frozen",
        )
    layers = _linear_layers(model, component)
    chosen = [
        full for rel, full in layers if spec.target_modules is None or _matches(rel, spec.target_modules)
    ]
    if not chosen:
        names = sorted({rel.rsplit(".", 1)[-1] for rel, _ in layers})
        raise ComponentError(
            source,
            f"components.{component}.lora.target_modules",
            f"no linear layer of {component} matches {list(spec.target_modules or [])}; its layers are named "
            f"{names[:12]}",
        )
    return chosen


def _resolve_saved(model: nn.Module, component: str, spec: ComponentLora, source: str | None) -> list[str]:
    root_name = COMPONENT_ROOTS[component]
    root = getattr(model, root_name)
    out = []
    for pattern in spec.modules_to_save:
        found = [f"{root_name}.{n}" for n, _ in root.named_modules() if n and _matches(n, [pattern])]
        if not found:
            raise ComponentError(
                source,
                f"components.{component}.lora.modules_to_save",
                f"no module of {component} is named {pattern!r}",
            )
        out += found
    return out


def apply_lora(
    model: nn.Module, components: Mapping[str, ComponentLora], *, source: str | None = None
) -> LoraState:
    """Inject LoRA layers into ``model`` in place (``peft.inject_adapter_in_model``) and record a
    :class:`LoraState` as ``model.lora``. LoRA weights are created in the dtype of the layer they wrap."""
    from peft import LoraConfig, inject_adapter_in_model

    if not components:
        raise ValueError("apply_lora needs at least one component")
    targets = {c: resolve_targets(model, c, s, source=source) for c, s in components.items()}
    saved = {c: _resolve_saved(model, c, s, source) for c, s in components.items()}
    dropouts = {s.dropout for s in components.values()}
    if len(dropouts) > 1:
        raise ComponentError(
            source, "components", f"LoRA components must share one lora.dropout, got {sorted(dropouts)}"
        )
    first = next(iter(components.values()))
    ranks, alphas = {}, {}
    for c, s in components.items():
        for name in targets[c]:
            ranks[f"^{re.escape(name)}"] = s.r
            alphas[f"^{re.escape(name)}"] = s.alpha
    config = LoraConfig(
        r=first.r,
        lora_alpha=first.alpha,
        lora_dropout=first.dropout,
        target_modules=sorted(n for names in targets.values() for n in names),
        rank_pattern=ranks,
        alpha_pattern=alphas,
        bias="none",
    )
    inject_adapter_in_model(config, model)
    state = LoraState(config, dict(components), targets, saved)
    model.lora = state
    return state


def load_lora(model: nn.Module, config: Any, components: Mapping[str, ComponentLora]) -> LoraState:
    """Inject the layers of a saved ``peft.LoraConfig`` (an adapter directory's) and record the state."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, model)
    targets = {
        c: [n for n in config.target_modules if n.startswith(f"{COMPONENT_ROOTS[c]}.")] for c in components
    }
    state = LoraState(config, dict(components), targets, {})
    model.lora = state
    return state


def lora_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Per component, the parameters a LoRA stage trains: the LoRA matrices and the fully-trained modules."""
    state: LoraState | None = getattr(model, "lora", None)
    if state is None:
        return {}
    from peft.tuners.lora import LoraLayer

    out: dict[str, list[nn.Parameter]] = {}
    for component in state.components:
        root = getattr(model, COMPONENT_ROOTS[component])
        params = []
        for module in root.modules():
            if isinstance(module, LoraLayer):
                params += list(module.lora_A.parameters()) + list(module.lora_B.parameters())
        for name in state.saved.get(component, []):
            params += list(model.get_submodule(name).parameters())
        out[component] = params
    return out


def lora_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The LoRA tensors in peft's adapter-file naming (``...lora_A.weight``, adapter name dropped)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=dict(state_dict) if state_dict is not None else None)


def set_lora_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load adapter-file tensors into the injected layers; every LoRA weight must be present."""
    from peft import set_peft_model_state_dict

    from onevision.errors import KeyMismatchError

    expected = set(lora_state_dict(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise KeyMismatchError(source, missing, unexpected)
    set_peft_model_state_dict(model, dict(tensors))


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA layer into the weight it wraps and put the plain layer back (in place). Only the wrapped
    layers' weights change; everything else is left bit-identical."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, module.get_base_layer())
    if hasattr(model, "lora"):
        del model.lora
