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


def init_from_options(recipe: Recipe, init_from: Path, *, weights: bool = True) -> dict[str, Any]:
    """``onevision.load`` options for a previous stage: an adapter stage is merged on the fly; a QLoRA stage on a
    checkpoint quantizes its layers as they are read (never the full-precision model in memory). An adapter
    stage's merged model is this stage's base and is written unquantized first, so it is quantized after."""
    from onevision.checkpoints.adapter import is_adapter

    if is_adapter(init_from):
        return {"merge": True}
    if weights and recipe.model.quantization is not None:
        return {"quantization": recipe.model.quantization, "quantization_skip": quantization_skip(recipe)}
    return {}


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
    if recipe.model.quantization is not None and getattr(model, "quantization", None) is None:
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


def resume_load_options(model: Any, state_dir: Path) -> dict[str, Any]:
    """Options for ``Accelerator.load_state`` when resuming ``model`` from ``state_dir``.

    bitsandbytes' 4/8-bit layers do not consume their quantization-state keys (``weight.absmax``,
    ``weight.quant_map``...) when a state dict is loaded into them, so a strict load of a QLoRA checkpoint fails
    although every key is there. For a quantized model the saved keys are compared with the model's here (a
    checkpoint of another model is refused naming the file), then the load is not strict: the LoRA weights, the
    fully-trained modules and the packed quantized weights are restored, and the quantization constants are the
    ones this build computed from the same recorded base."""
    if getattr(model, "quantization", None) is None:
        return {}
    from safetensors import safe_open

    from onevision.errors import CheckpointError

    weights = state_dir / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as handle:
            saved = set(handle.keys())
        own = set(model.state_dict())
        if saved != own:
            odd = sorted(saved ^ own)
            raise CheckpointError(
                f"{weights}: its tensors differ from this model's ({len(saved - own)} unknown, {len(own - saved)} "
                f"missing; first: {odd[0]}); it is not a checkpoint of this QLoRA stage"
            )
    return {"strict": False}
