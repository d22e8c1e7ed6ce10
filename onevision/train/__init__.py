"""Training for onevision: YAML recipes, the LLaVA-OneVision curriculum, data, and a distributed engine.

Typical use is the command line (``onevision recipes``, ``onevision train RECIPE [key=value ...] [--dry-run]``).
The same pieces are importable:

* recipes: :func:`load_recipe`, :func:`list_recipes`, :func:`find_recipe`, :class:`Recipe`, :class:`RecipeError`
* data: :func:`read_records`, :func:`parse_record`, :func:`load_samples`, :func:`plan_samples`,
  :class:`TrainDataset`, :class:`Sample`, :class:`SampleEncoder`, :class:`DataError`, :class:`MediaError`
* batching: :class:`GroupedBatchSampler`
* optimisation: :func:`apply_trainable`, :func:`build_param_groups`, :func:`build_optimizer`,
  :func:`build_scheduler`, :func:`format_table`, :class:`ComponentError`
* checkpoints: :class:`CheckpointManager`, :func:`capture_rng`, :func:`restore_rng`
* running: :func:`train`, :func:`make_accelerator`, :func:`launch_training`, :func:`dry_run`

Modules import torch / accelerate lazily where they can, so reading recipes stays cheap.
"""

from __future__ import annotations

from typing import Any

from onevision.train.checkpoint import CheckpointError, CheckpointManager, capture_rng, restore_rng
from onevision.train.data import (
    DataError,
    MediaError,
    Sample,
    SampleEncoder,
    TrainDataset,
    load_samples,
    parse_record,
    plan_samples,
    read_records,
)
from onevision.train.launch import launch_training
from onevision.train.optim import (
    ComponentError,
    apply_trainable,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    format_table,
)
from onevision.train.recipe import Recipe, RecipeError, find_recipe, list_recipes, load_recipe, recipes_root
from onevision.train.sampler import GroupedBatchSampler


def train(recipe: Recipe, **kwargs: Any):
    """Run one stage (see :func:`onevision.train.engine.train`)."""
    from onevision.train.engine import train as _train

    return _train(recipe, **kwargs)


def make_accelerator(recipe: Recipe, **kwargs: Any):
    """An ``Accelerator`` that really runs the recipe's backend (see :mod:`onevision.train.launch`)."""
    from onevision.train.engine import make_accelerator as _make

    return _make(recipe, **kwargs)


def dry_run(recipe: Recipe, *, build: bool = True) -> str:
    """The resolved recipe, trainable-parameter table and token budget, as text."""
    from onevision.train.dryrun import dry_run as _dry

    return _dry(recipe, build=build)


__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "ComponentError",
    "DataError",
    "GroupedBatchSampler",
    "MediaError",
    "Recipe",
    "RecipeError",
    "Sample",
    "SampleEncoder",
    "TrainDataset",
    "apply_trainable",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "capture_rng",
    "dry_run",
    "find_recipe",
    "format_table",
    "launch_training",
    "list_recipes",
    "load_recipe",
    "load_samples",
    "make_accelerator",
    "parse_record",
    "plan_samples",
    "read_records",
    "recipes_root",
    "restore_rng",
    "train",
]
