"""onevision: LLaVA-style AnyRes / OneVision vision-language models (inference, checkpoints, training).

Entry points (imported lazily, so ``import onevision`` stays light; torch/transformers load on first use):

* :func:`load` ``(path_or_hub_id) -> Pipeline``: any native, HF ``llava_onevision`` or original LLaVA-NeXT
  checkpoint, with ``pipe.model`` / ``pipe.processor`` and ``pipe.generate`` / ``pipe.chat`` / ``pipe.batch``.
* :func:`from_config` ``(config, tokenizer) -> Pipeline``: build a model and its matching processor.
* :class:`OneVisionConfig` (+ ``VisionConfig``, ``ProjectorConfig``, ``LLMConfig``, ``ProcessorConfig``).
* :class:`OneVisionModel`, :class:`OneVisionProcessor`, :class:`Pipeline`.
* :func:`convert`, :func:`export_hf`, :func:`save_native`: checkpoint conversion.
* Registries: :func:`list_encoders`, :func:`list_projectors`, :func:`list_llms`, :func:`list_templates`.

Tiny offline models for tests and demos live in :mod:`onevision.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # configuration (torch-free)
    "OneVisionConfig": "onevision.config",
    "VisionConfig": "onevision.config",
    "ProjectorConfig": "onevision.config",
    "LLMConfig": "onevision.config",
    "ProcessorConfig": "onevision.config",
    # errors (torch-free)
    "OneVisionError": "onevision.errors",
    "ConfigError": "onevision.errors",
    "UnknownComponentError": "onevision.errors",
    "InputError": "onevision.errors",
    "ContextOverflowError": "onevision.errors",
    "CheckpointError": "onevision.errors",
    "KeyMismatchError": "onevision.errors",
    "ExportError": "onevision.errors",
    # templates (torch-free)
    "ChatTemplate": "onevision.templates",
    "get_template": "onevision.templates",
    # components
    "OneVisionModel": "onevision.model",
    "OneVisionProcessor": "onevision.processor",
    "BatchInputs": "onevision.processor",
    "TokenCount": "onevision.processor",
    "ModalityPolicy": "onevision.processor",
    "VisionEncoder": "onevision.encoders",
    "EncoderInfo": "onevision.encoders",
    "build_encoder": "onevision.encoders",
    "register_encoder": "onevision.encoders",
    "list_encoders": "onevision.encoders",
    "build_projector": "onevision.projectors",
    "register_projector": "onevision.projectors",
    "list_projectors": "onevision.projectors",
    "build_llm": "onevision.llm",
    "register_llm": "onevision.llm",
    "list_llms": "onevision.llm",
    # inference and checkpoints
    "Pipeline": "onevision.pipeline",
    "load": "onevision.pipeline",
    "from_config": "onevision.pipeline",
    "convert": "onevision.checkpoints",
    "export_hf": "onevision.checkpoints",
    "save_native": "onevision.checkpoints",
    "detect_format": "onevision.checkpoints",
}

__all__ = [
    "BatchInputs",
    "ChatTemplate",
    "CheckpointError",
    "ConfigError",
    "ContextOverflowError",
    "EncoderInfo",
    "ExportError",
    "InputError",
    "KeyMismatchError",
    "LLMConfig",
    "ModalityPolicy",
    "OneVisionConfig",
    "OneVisionError",
    "OneVisionModel",
    "OneVisionProcessor",
    "Pipeline",
    "ProcessorConfig",
    "ProjectorConfig",
    "TokenCount",
    "UnknownComponentError",
    "VisionConfig",
    "VisionEncoder",
    "build_encoder",
    "build_llm",
    "build_projector",
    "convert",
    "detect_format",
    "export_hf",
    "from_config",
    "get_template",
    "list_encoders",
    "list_llms",
    "list_projectors",
    "list_templates",
    "load",
    "register_encoder",
    "register_llm",
    "register_projector",
    "save_native",
]


def list_templates() -> list[str]:
    """Registered chat template names (with aliases)."""
    from onevision.templates import TEMPLATES

    return sorted(TEMPLATES)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onevision' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from onevision.checkpoints import convert, detect_format, export_hf, save_native
    from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
    from onevision.encoders import EncoderInfo, VisionEncoder, build_encoder, list_encoders, register_encoder
    from onevision.errors import (
        CheckpointError,
        ConfigError,
        ContextOverflowError,
        ExportError,
        InputError,
        KeyMismatchError,
        OneVisionError,
        UnknownComponentError,
    )
    from onevision.llm import build_llm, list_llms, register_llm
    from onevision.model import OneVisionModel
    from onevision.pipeline import Pipeline, from_config, load
    from onevision.processor import BatchInputs, ModalityPolicy, OneVisionProcessor, TokenCount
    from onevision.projectors import build_projector, list_projectors, register_projector
    from onevision.templates import ChatTemplate, get_template
