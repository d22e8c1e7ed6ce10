"""Build the model and its sample encoder from a recipe (``model.builder`` is a registry key, never a name match).

* ``onevision``: ``onevision.model.OneVisionModel`` and ``onevision.processor.OneVisionProcessor`` (adapted to
  :class:`onevision.train.data.SampleEncoder` by :mod:`onevision.train.adapters`).

A stage with ``init_from`` loads the previous stage's output directory; the recipe's visual policy is applied on
top (a later stage may change the image strategy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from onevision.train.recipe import Recipe, RecipeError

STAGE_FILE = "stage.json"


def check_init_from(recipe: Recipe) -> Path | None:
    """The previous stage's directory, checked to be a finished stage (``stage.json`` is written last)."""
    if not recipe.init_from:
        return None
    d = Path(recipe.init_from)
    if not d.is_dir():
        raise RecipeError(recipe.source, "init_from", f"{d} does not exist; run the previous stage first")
    if not (d / STAGE_FILE).is_file():
        raise RecipeError(
            recipe.source,
            "init_from",
            f"{d} is not a finished stage (no {STAGE_FILE}); the previous "
            "stage was interrupted or is still running",
        )
    return d


def _onevision_model(recipe: Recipe, *, weights: bool = True) -> Any:
    from onevision.train.adapters import build_onevision_model

    return build_onevision_model(recipe, check_init_from(recipe), weights=weights)


def _onevision_encoder(recipe: Recipe, model: Any) -> Any:
    from onevision.train.adapters import build_onevision_encoder

    return build_onevision_encoder(recipe, model)


def _onevision_save(model: Any, encoder: Any, directory: Path, state_dict: dict[str, Any] | None) -> None:
    from onevision.train.adapters import save_onevision

    save_onevision(model, encoder, directory, state_dict)


#: builder -> (build model (``recipe, *, weights``), build encoder, save a self-contained model directory)
MODEL_BUILDERS: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., None]]] = {
    "onevision": (_onevision_model, _onevision_encoder, _onevision_save),
}


def build_model(recipe: Recipe, *, weights: bool = True) -> Any:
    """The model for ``recipe`` (fresh, or loaded from ``init_from``). ``weights=False``: its structure, config
    and processor only, parameters on the meta device (nothing is read or initialised: for planning and the data
    tools; components the recipe names by hub id are still fetched by their library)."""
    return MODEL_BUILDERS[recipe.model.builder][0](recipe, weights=weights)


def build_sample_encoder(recipe: Recipe) -> Any:
    """The sample encoder training would use (exact lengths, encoding), from a model built without weights."""
    return build_encoder(recipe, build_model(recipe, weights=False))


def build_encoder(recipe: Recipe, model: Any = None) -> Any:
    """The :class:`~onevision.train.data.SampleEncoder` matching ``model``."""
    return MODEL_BUILDERS[recipe.model.builder][1](recipe, model)


def enable_gradient_checkpointing(recipe: Recipe, model: Any) -> None:
    """Activation checkpointing through the model's own switch (``OneVisionModel`` copes with transformers'
    input-require-grads hook itself, also with a frozen LLM)."""
    model.gradient_checkpointing_enable()


def save_model(
    recipe: Recipe, model: Any, encoder: Any, directory: Path, state_dict: dict[str, Any] | None
) -> None:
    """Write a self-contained, loadable model directory (the next stage's ``init_from``)."""
    MODEL_BUILDERS[recipe.model.builder][2](model, encoder, Path(directory), state_dict)
