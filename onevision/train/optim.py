"""Per-component parameter groups, the trainable-parameter table, and the learning-rate schedule.

Groups are built from the model's ``component_parameters()`` (``vision``, ``projector``, ``llm``, ``newline`` ->
parameter objects), never from parameter-name substrings, so wrappers (DDP, FSDP, checkpointing, compile) cannot
silently empty a group. Within a component, tensors with fewer than two dimensions (biases, norm scales, the
newline vector) get no weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onevision.errors import ComponentError
from onevision.train.recipe import COMPONENTS, Recipe

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ComponentSummary:
    """One row of the trainable-parameter table."""

    component: str
    trainable: bool
    tensors: int
    params: int
    lr: float | None
    weight_decay: float | None
    mode: str = "frozen"  # frozen | full | lora
    trained: int = 0  # parameters that train (a LoRA component: its LoRA matrices and modules_to_save)


def apply_trainable(
    components: Mapping[str, Sequence[nn.Parameter]],
    recipe: Recipe,
    *,
    all_parameters: Sequence[nn.Parameter] | None = None,
    lora: Mapping[str, Sequence[nn.Parameter]] | None = None,
) -> list[ComponentSummary]:
    """Set ``requires_grad`` from the recipe and return the table rows.

    A ``lora`` component trains only its parameters listed in ``lora`` (:func:`onevision.lora.lora_parameters`:
    the LoRA matrices and ``modules_to_save``); the rest of it stays frozen.

    Raises :class:`ComponentError` if the model reports an unknown component, a parameter in two components, or a
    trainable component that has no parameter. Parameters of ``all_parameters`` in no component are frozen and
    reported as an ``(unassigned)`` row.
    """
    source = recipe.source or None
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ComponentError(
            source,
            "components",
            f"the model reports unknown component(s) {unknown}; expected a subset of {list(COMPONENTS)}",
        )
    owner: dict[int, str] = {}
    for name, params in components.items():
        for p in params:
            if id(p) in owner and owner[id(p)] != name:
                raise ComponentError(
                    source,
                    "components",
                    f"a parameter of shape {tuple(p.shape)} is in both "
                    f"{owner[id(p)]!r} and {name!r}; component_parameters() must be a partition",
                )
            owner[id(p)] = name
    rows = []
    unassigned = [p for p in (all_parameters or ()) if id(p) not in owner]
    for name in COMPONENTS:
        cfg = recipe.component(name)
        params = _unique(components.get(name, ()))
        trainable = cfg.trainable != "frozen"
        if trainable and not params:
            raise ComponentError(
                source,
                f"components.{name}.trainable",
                f"is {cfg.trainable!r} but the model has no {name} parameters; set it to frozen "
                "or use a model that has this component",
            )
        for p in params:
            p.requires_grad_(trainable and cfg.trainable != "lora")
        trained = params if cfg.trainable == "full" else []
        if cfg.trainable == "lora":
            trained = _unique((lora or {}).get(name, ()))
            if not trained:
                raise ComponentError(
                    source,
                    f"components.{name}.trainable",
                    "is 'lora' but the model carries no LoRA layers there (build it with the recipe's builder)",
                )
            for p in trained:
                p.requires_grad_(True)
        rows.append(
            ComponentSummary(
                component=name,
                trainable=trainable,
                tensors=len(params),
                params=sum(_numel(p) for p in params),
                lr=recipe.component_lr(name) if trainable else None,
                weight_decay=_wd(recipe, name) if trainable else None,
                mode=cfg.trainable,
                trained=sum(p.numel() for p in trained),
            )
        )
    if (
        unassigned
    ):  # parameters the model keeps outside every component (e.g. an unused post-norm) stay frozen
        for p in unassigned:
            p.requires_grad_(False)
        rows.append(
            ComponentSummary(
                "(unassigned)", False, len(unassigned), sum(_numel(p) for p in unassigned), None, None
            )
        )
    return rows


def build_param_groups(
    components: Mapping[str, Sequence[nn.Parameter]], recipe: Recipe
) -> list[dict[str, Any]]:
    """AdamW parameter groups: one per trainable component (two when weight decay applies: decay / no-decay).

    Each group carries ``name``, ``component``, ``lr``, ``initial_lr`` and ``weight_decay``; frozen components and
    parameters with ``requires_grad=False`` are left out, so they get no optimizer state.
    """
    groups: list[dict[str, Any]] = []
    for name in COMPONENTS:
        cfg = recipe.component(name)
        if cfg.trainable == "frozen":
            continue
        params = [p for p in _unique(components.get(name, ())) if p.requires_grad]
        if not params:
            raise ComponentError(
                recipe.source or None,
                f"components.{name}",
                "is trainable but none of its parameters requires grad (call apply_trainable first)",
            )
        lr, wd = recipe.component_lr(name), _wd(recipe, name)
        decay = [p for p in params if p.ndim >= 2] if wd > 0 else params
        no_decay = [p for p in params if p.ndim < 2] if wd > 0 else []
        for suffix, ps, group_wd in (("", decay, wd), (".no_decay", no_decay, 0.0)):
            if ps:
                groups.append(
                    {
                        "params": ps,
                        "name": f"{name}{suffix}",
                        "component": name,
                        "lr": lr,
                        "initial_lr": lr,
                        "weight_decay": group_wd,
                    }
                )
    if not groups:
        raise ComponentError(recipe.source or None, "components", "no trainable parameters")
    return groups


def build_optimizer(groups: list[dict[str, Any]], recipe: Recipe) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` over ``groups`` (the client optimizer DeepSpeed ZeRO-2/3 keeps, with its groups).

    The fused kernel (one pass over each parameter instead of about ten elementwise ops) when every parameter is a
    floating-point tensor on CPU or CUDA, the single-tensor loop otherwise."""
    import torch

    params = [p for group in groups for p in group["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        groups,
        lr=recipe.optim.lr,
        betas=tuple(recipe.optim.betas),
        eps=recipe.optim.eps,
        weight_decay=recipe.optim.weight_decay,
        **({"fused": True} if fused else {"foreach": False}),
    )


def warmup_steps(recipe: Recipe, total_steps: int) -> int:
    """``optim.warmup_steps`` if set, else ``ceil(warmup_ratio * total_steps)`` (the HF rule)."""
    if recipe.optim.warmup_steps is not None:
        return recipe.optim.warmup_steps
    return math.ceil(recipe.optim.warmup_ratio * total_steps)


def lr_multiplier(
    step: int, *, total_steps: int, warmup: int, schedule: str, min_lr_ratio: float = 0.0
) -> float:
    """The factor applied to every group's initial LR after ``step`` optimizer steps (HF's schedules)."""
    if warmup > 0 and step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule == "linear":
        factor = 1.0 - progress
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * factor


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    """A ``LambdaLR`` for ``optimizer``. Step it yourself once per optimizer step (not through
    ``accelerator.prepare``, which would step it once per process)."""
    from functools import partial

    import torch

    fn = partial(
        lr_multiplier,
        total_steps=total_steps,
        warmup=warmup_steps(recipe, total_steps),
        schedule=recipe.optim.schedule,
        min_lr_ratio=recipe.optim.min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def format_table(rows: Sequence[ComponentSummary]) -> str:
    """The trainable-parameter table printed at start-up."""
    header = ("component", "trainable", "tensors", "parameters", "training", "lr", "weight decay")
    body = [
        (
            r.component,
            {"full": "yes", "lora": "lora"}.get(r.mode, "frozen"),
            str(r.tensors),
            f"{r.params:,}",
            f"{r.trained:,}",
            f"{r.lr:.3g}" if r.lr is not None else "-",
            f"{r.weight_decay:g}" if r.weight_decay is not None else "-",
        )
        for r in rows
    ]
    total = sum(r.params for r in rows)
    trainable = sum(r.trained for r in rows)
    pct = 100.0 * trainable / total if total else 0.0
    body.append(
        (
            "total",
            f"{pct:.1f}%",
            str(sum(r.tensors for r in rows)),
            f"{total:,}",
            f"{trainable:,}",
            "",
            "",
        )
    )
    widths = [max(len(x[i]) for x in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numel(p: nn.Parameter) -> int:
    """Parameters a tensor stands for (a 4-bit quantized weight packs two per byte: its original shape counts)."""
    state = getattr(p, "quant_state", None)
    return math.prod(state.shape) if state is not None else p.numel()


def _wd(recipe: Recipe, name: str) -> float:
    c = recipe.component(name)
    return recipe.optim.weight_decay if c.weight_decay is None else c.weight_decay


def _unique(params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
