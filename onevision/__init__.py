"""onevision: LLaVA-style AnyRes / OneVision vision-language models (inference, checkpoints, training).

Entry points (imported lazily, so ``import onevision`` stays light; torch/transformers load on first use):

* :func:`load` ``(path_or_hub_id) -> Pipeline``: any native, HF ``llava_onevision`` or original LLaVA-NeXT
  checkpoint, with ``pipe.model`` / ``pipe.processor`` and ``pipe.generate`` / ``pipe.chat`` / ``pipe.batch``.
* :func:`from_config` ``(config, tokenizer) -> Pipeline``: build a model and its matching processor.
* :class:`OneVisionConfig` (+ ``VisionConfig``, ``ProjectorConfig``, ``LLMConfig``, ``ProcessorConfig``).
* :class:`OneVisionModel`, :class:`OneVisionProcessor`, :class:`Pipeline`.
* :func:`convert`, :func:`export_hf`, :func:`save_native`: checkpoint conversion.
* Registries: :func:`list_encoders` / :func:`register_encoder` (+ :func:`list_archs` / :func:`register_arch`),
  :func:`list_projectors` / :func:`register_projector`, :func:`list_llms`, :func:`list_templates`.
* Named model architectures as data (open_clip style): :func:`list_models`, :func:`add_model_config`,
  :func:`get_model_config`.
* The visual policy schema: :class:`VisualPolicy` (+ ``ImagePolicy``, ``VideoPolicy``).

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
    "VisualPolicy": "onevision.policy",
    "ImagePolicy": "onevision.policy",
    "VideoPolicy": "onevision.policy",
    # named model configs (torch-free)
    "list_models": "onevision.model_configs",
    "add_model_config": "onevision.model_configs",
    "get_model_config": "onevision.model_configs",
    # encoder families (torch-free)
    "VisionArch": "onevision.archs",
    "list_archs": "onevision.archs",
    "register_arch": "onevision.archs",
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
    "ModalityPolicy": "onevision.policy",
    "VisionEncoder": "onevision.encoders",
    "EncoderInfo": "onevision.encoders",
    "build_encoder": "onevision.encoders",
    "register_encoder": "onevision.encoders",
    "list_encoders": "onevision.encoders",
    "Projector": "onevision.projectors",
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
    "ImagePolicy",
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
    "Projector",
    "ProjectorConfig",
    "TokenCount",
    "UnknownComponentError",
    "VideoPolicy",
    "VisionArch",
    "VisionConfig",
    "VisionEncoder",
    "VisualPolicy",
    "add_model_config",
    "build_encoder",
    "build_llm",
    "build_projector",
    "convert",
    "detect_format",
    "export_hf",
    "from_config",
    "get_model_config",
    "get_template",
    "list_archs",
    "list_encoders",
    "list_llms",
    "list_models",
    "list_projectors",
    "list_templates",
    "load",
    "register_arch",
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
    from onevision.archs import VisionArch, list_archs, register_arch
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
    from onevision.model_configs import add_model_config, get_model_config, list_models
    from onevision.pipeline import Pipeline, from_config, load
    from onevision.policy import ImagePolicy, ModalityPolicy, VideoPolicy, VisualPolicy
    from onevision.processor import BatchInputs, OneVisionProcessor, TokenCount
    from onevision.projectors import Projector, build_projector, list_projectors, register_projector
    from onevision.templates import ChatTemplate, get_template
