"""Checkpoints: native save/load, HF ``llava_onevision`` import/export, original LLaVA-NeXT/OneVision import.

Formats are detected from typed fields of ``config.json``, never from names (:func:`detect_format`):

* **native** (``"format": "onevision"``, :mod:`.native`): ``config.json`` (:class:`~onevision.config.OneVisionConfig`,
  rebuildable offline), ``model.safetensors`` (sharded with ``model.safetensors.index.json`` when large) and the
  tokenizer.
* **hf** (``"model_type": "llava_onevision"``, :mod:`.hf`): every on-disk key layout transformers 5 loads.
* **original** (``mm_vision_tower`` / ``mm_projector_type`` fields, :mod:`.original`): import and export.

Modules: :mod:`.io` (tensor and JSON IO), :mod:`.detect` (format detection), :mod:`.native`, :mod:`.hf`,
:mod:`.original`, :mod:`.mapping` (key tables and lookups the converters share) and :mod:`.conversion` (load any
format, convert between them). Loaders return a :class:`~onevision.bundle.Bundle`; ``onevision.load`` wraps it in
a :class:`~onevision.pipeline.Pipeline`.

Weights are read with safetensors; ``.bin`` files only with ``torch.load(weights_only=True)``. Missing or
unexpected weights raise :class:`~onevision.errors.KeyMismatchError` listing them.

This ``__init__`` imports its submodules lazily (on first attribute access), so the model can use :mod:`.io` and
:mod:`.detect`, which sit below it, without loading the formats that are built on the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # io / detect (below the model)
    "WEIGHTS_NAME": "io",
    "INDEX_NAME": "io",
    "read_state_dict": "io",
    "write_state_dict": "io",
    "weight_files": "io",
    "read_config": "io",
    "FORMATS": "detect",
    "detect_format": "detect",
    "resolve_path": "detect",
    # formats
    "native_config": "native",
    "save_native": "native",
    "load_native": "native",
    "native_model_config": "native",
    "native_state_dict": "native",
    "load_weights": "native",
    "save_native_model": "native",
    "load_native_model": "native",
    "HF_TO_NATIVE": "hf",
    "NATIVE_TO_HF": "hf",
    "hf_to_config": "hf",
    "import_hf": "hf",
    "hf_config_dict": "hf",
    "export_hf": "hf",
    "ORIGINAL_TO_NATIVE": "original",
    "original_to_config": "original",
    "import_original": "original",
    "NATIVE_TO_ORIGINAL": "original",
    "original_config_dict": "original",
    "export_original": "original",
    "remap": "mapping",
    "load_checkpoint": "conversion",
    "convert": "conversion",
}

__all__ = [
    "FORMATS",
    "HF_TO_NATIVE",
    "INDEX_NAME",
    "NATIVE_TO_HF",
    "NATIVE_TO_ORIGINAL",
    "ORIGINAL_TO_NATIVE",
    "WEIGHTS_NAME",
    "convert",
    "detect_format",
    "export_hf",
    "export_original",
    "hf_config_dict",
    "hf_to_config",
    "import_hf",
    "import_original",
    "load_checkpoint",
    "load_native",
    "load_native_model",
    "load_weights",
    "native_config",
    "native_model_config",
    "native_state_dict",
    "original_config_dict",
    "original_to_config",
    "read_config",
    "read_state_dict",
    "remap",
    "resolve_path",
    "save_native",
    "save_native_model",
    "weight_files",
    "write_state_dict",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onevision.checkpoints' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from onevision.checkpoints.conversion import convert, load_checkpoint
    from onevision.checkpoints.detect import FORMATS, detect_format, resolve_path
    from onevision.checkpoints.hf import (
        HF_TO_NATIVE,
        NATIVE_TO_HF,
        export_hf,
        hf_config_dict,
        hf_to_config,
        import_hf,
    )
    from onevision.checkpoints.io import (
        INDEX_NAME,
        WEIGHTS_NAME,
        read_config,
        read_state_dict,
        weight_files,
        write_state_dict,
    )
    from onevision.checkpoints.mapping import remap
    from onevision.checkpoints.native import (
        load_native,
        load_native_model,
        load_weights,
        native_config,
        native_model_config,
        native_state_dict,
        save_native,
        save_native_model,
    )
    from onevision.checkpoints.original import (
        NATIVE_TO_ORIGINAL,
        ORIGINAL_TO_NATIVE,
        export_original,
        import_original,
        original_config_dict,
        original_to_config,
    )
