"""A LoRA / QLoRA training stage: record the base, quantize it, add the adapters; write the adapter at the end.

The base is the checkpoint the adapter applies to: ``init_from`` when it is a native checkpoint, otherwise
(a model built from ``model.preset`` or component ids, or an adapter stage merged on the fly) the unmodified
model is written to ``<output_dir>/base`` before anything trains, by the main process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onevision.train.lora_recipe import lora_components, quantization_skip
from onevision.train.recipe import COMPONENTS, Recipe

BASE_DIR = "base"
#: model -> the native checkpoint its adapter is trained on
_BASES: dict[int, Path] = {}
_WRITE_BASE = [True]


@contextlib.contextmanager
def no_base_write() -> Iterator[None]:
    """Build models without writing their base (``--dry-run`` only shows the parameter table)."""
    _WRITE_BASE.append(False)
    try:
        yield
    finally:
        _WRITE_BASE.pop()


def init_from_options(init_from: Path) -> dict[str, Any]:
    """``onevision.load`` options for a previous stage: an adapter stage is merged on the fly."""
    from onevision.checkpoints.adapter import is_adapter

    return {"merge": True} if is_adapter(init_from) else {}


def is_lora_recipe(recipe: Recipe) -> bool:
    return any(recipe.component(n).trainable == "lora" for n in COMPONENTS)


def prepare_model(recipe: Recipe, model: Any, processor: Any, init_from: Path | None) -> None:
    """Quantize (``model.quantization``) and add LoRA layers in place, after recording the base."""
    if recipe.model.quantization is None and not is_lora_recipe(recipe):
        return
    from onevision.checkpoints.adapter import is_adapter

    if is_lora_recipe(recipe):
        if init_from is not None and not is_adapter(init_from):
            _BASES[id(model)] = init_from.resolve()
        else:
            _BASES[id(model)] = _write_base(recipe, model, processor)
    if recipe.model.quantization is not None:
        from onevision.quantization import quantize_model

        quantize_model(model, recipe.model.quantization, skip=quantization_skip(recipe))
    if is_lora_recipe(recipe):
        from onevision.lora import apply_lora

        apply_lora(model, lora_components(recipe), source=recipe.source or None)


def _write_base(recipe: Recipe, model: Any, processor: Any) -> Path:
    from onevision.checkpoints.native import save_native
    from onevision.pipeline import Pipeline

    base = Path(recipe.output_dir) / BASE_DIR
    if _WRITE_BASE[-1] and int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(recipe.output_dir) / f".{BASE_DIR}.tmp"
        save_native(Pipeline(model, processor), tmp)
        base.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):  # config.json last
            os.replace(f, base / f.name)
        tmp.rmdir()
    return base.resolve()


def save_stage(model: Any, encoder: Any, directory: Path, state_dict: dict[str, Any] | None) -> None:
    """Write the stage's adapter directory (the base by path and checksum, LoRA and fully-trained weights)."""
    from onevision.checkpoints.adapter import save_adapter
    from onevision.pipeline import Pipeline

    recipe = encoder.recipe
    full = [n for n in COMPONENTS if recipe.component(n).trainable == "full"]
    save_adapter(
        Pipeline(model, encoder.processor),
        directory,
        base=_BASES[id(model)],
        full_components=full,
        state_dict=state_dict,
    )
