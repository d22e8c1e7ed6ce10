"""DeepSpeed JSON configs: read one and refuse what would bypass our optimizer, then resolve every ``"auto"``.

Used by recipe validation (before anything runs) and by the engine (when it builds the accelerator).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onevision.errors import RecipeError

#: Keys a DeepSpeed JSON must not define: the optimizer and the schedule are ours (per-component groups).
FORBIDDEN_DS_KEYS = ("optimizer", "scheduler")


def load_deepspeed_config(path: str | os.PathLike, *, stage: int | None = None) -> dict[str, Any]:
    """Read a DeepSpeed JSON and refuse what would bypass our optimizer: an ``optimizer`` or ``scheduler`` block,
    or a ZeRO stage other than ``stage``."""
    path = str(path)
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RecipeError(path, None, "DeepSpeed config not found") from None
    except json.JSONDecodeError as exc:
        raise RecipeError(path, None, f"invalid JSON ({exc})") from None
    for key in FORBIDDEN_DS_KEYS:
        if key in config:
            raise RecipeError(
                path,
                key,
                f"the DeepSpeed config defines its own {key}; remove the block: onevision builds the AdamW "
                "optimizer with one parameter group per component and steps the schedule itself "
                "(a DeepSpeed optimizer silently ignores the per-component learning rates)",
            )
    actual = config.get("zero_optimization", {}).get("stage")
    if stage is not None and actual != stage:
        raise RecipeError(
            path, "zero_optimization.stage", f"expected {stage} for backend zero{stage}, got {actual!r}"
        )
    return config


def resolve_deepspeed_config(
    config: Mapping[str, Any],
    *,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    precision: str,
    max_grad_norm: float | None,
    hidden_size: int | None = None,
    cuda: bool = False,
) -> dict[str, Any]:
    """Replace every ``"auto"`` with a concrete value from the recipe (DeepSpeed on CPU needs integers).

    Bucket sizes follow accelerate's rule from ``hidden_size`` when known.
    """
    cfg = copy.deepcopy(dict(config))
    cfg["train_micro_batch_size_per_gpu"] = micro_batch_size
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg["train_batch_size"] = micro_batch_size * grad_accum * world_size
    cfg["gradient_clipping"] = float(max_grad_norm) if max_grad_norm else 0.0
    cfg["bf16"] = {**cfg.get("bf16", {}), "enabled": precision == "bf16"}
    cfg["fp16"] = {**cfg.get("fp16", {}), "enabled": False}
    zero = dict(cfg.get("zero_optimization", {}))
    h2 = hidden_size * hidden_size if hidden_size else None
    defaults = {
        "reduce_bucket_size": h2 or 500_000_000,
        "stage3_prefetch_bucket_size": int(0.9 * h2) if h2 else 500_000_000,
        "stage3_param_persistence_threshold": 10 * hidden_size if hidden_size else 100_000,
    }
    for key, value in list(zero.items()):
        if value == "auto":
            zero[key] = defaults.get(key, 500_000_000)
    if not cuda:
        zero["overlap_comm"] = False  # no CUDA streams to overlap with
    cfg["zero_optimization"] = zero
    cfg.setdefault("steps_per_print", 10**9)
    cfg.setdefault("wall_clock_breakdown", False)
    leftovers = [k for k, v in _walk(cfg) if v == "auto"]
    if leftovers:
        raise RecipeError(
            "DeepSpeed config", leftovers[0], "cannot resolve this 'auto' value; set it explicitly"
        )
    return cfg


def _walk(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
