"""The model configuration a recipe's ``model:`` and ``visual:`` sections describe (a named model config or
components), as a :class:`~onevision.config.OneVisionConfig`, without building or downloading anything."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

from onevision.config import OneVisionConfig
from onevision.errors import ConfigError
from onevision.train.recipe import Recipe, RecipeError


def recipe_model_config(recipe: Recipe) -> OneVisionConfig:
    """The ``OneVisionConfig`` of ``recipe``: its preset (``onevision.get_model_config``) or its components
    (``vision_tower`` as ``vision_arch``, ``language_model`` as ``llm_type``, ``projector``), with ``options``
    merged over it, ``attn_implementation`` on both towers and the recipe's visual policy, template and label mask
    as the processor config. Registry keys that disagree with a preset raise :class:`RecipeError`."""
    m = recipe.model

    def fail(key: str, message: str) -> RecipeError:
        return RecipeError(recipe.source or None, key, message)

    options = copy.deepcopy(dict(m.options))
    arch = m.vision_arch
    legacy = options.get("vision", {}).get("arch") if isinstance(options.get("vision"), Mapping) else None
    if legacy is not None:
        warnings.warn(
            "model.options.vision.arch is deprecated: set the typed field model.vision_arch",
            DeprecationWarning,
            2,
        )
        if arch != "siglip" and arch != legacy:
            raise fail("model.options.vision.arch", f"{legacy!r} contradicts model.vision_arch={arch!r}")
        arch = legacy
    if m.preset is not None:
        from onevision.model_configs import list_models, model_config_dict

        if m.preset not in list_models():
            raise fail("model.preset", f"unknown preset {m.preset!r}; known: {', '.join(list_models())}")
        if m.vision_tower or m.language_model:
            raise fail(
                "model.preset", "a preset names its own weights; unset model.vision_tower / language_model"
            )
        data = model_config_dict(m.preset)
    else:
        data = {
            "vision": {"arch": arch, "pretrained": m.vision_tower, "feature_layer": m.vision_select_layer},
            "projector": {"type": m.projector},
            "llm": {"model_type": m.llm_type, "pretrained": m.language_model},
        }
    _merge(data, options)
    for part in ("vision", "llm"):
        data.setdefault(part, {})["attn_implementation"] = m.attn_implementation
    data.pop("processor", None)
    try:
        config = OneVisionConfig.from_dict(data)
    except ConfigError as exc:
        raise fail("model", str(exc)) from None
    declared = (
        ("model.vision_arch", arch, config.vision.arch),
        ("model.llm_type", m.llm_type, config.llm.model_type),
        ("model.projector", m.projector, config.projector.type),
    )
    for key, wanted, built in declared:
        if wanted != built:
            raise fail(key, f"{wanted!r}, but preset {m.preset!r} builds {built!r}; set {key}: {built}")
    config.processor = _processor(recipe, config)
    return config


def _processor(recipe: Recipe, config: OneVisionConfig) -> Any:
    import dataclasses

    return dataclasses.replace(
        config.processor,
        visual=recipe.visual,
        template=recipe.model.template,
        label_mask=recipe.data.label_mask,
    )


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    """Merge ``src`` into ``dst`` key by key (mappings recursively, everything else replaced)."""
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)
