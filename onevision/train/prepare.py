"""The trainer's data preparation: plan from a shard index when ``data.path`` names shard sets, else from the raw
records, measured (media headers and tokenization) by parallel worker processes with a progress bar."""

from __future__ import annotations

from typing import Any

from onevision.train.data import DataStats, TrainDataset, load_samples, plan_samples
from onevision.train.lengths import measure_samples
from onevision.train.recipe import Recipe
from onevision.train.shards import ShardDataset, plan_shards, shard_roots


def prepare_data(recipe: Recipe, encoder: Any, *, is_main: bool = True) -> tuple[TrainDataset, DataStats]:
    """The planned dataset and its kept/dropped table (shards or loose files, same rules either way)."""
    roots = shard_roots(recipe.data.path)
    if roots is not None:
        planned, stats, where = plan_shards(roots, recipe, encoder, log=is_main)
        return ShardDataset(planned, recipe, encoder, where), stats
    samples, stats = load_samples(recipe)
    progress = is_main and recipe.logging.progress
    measured = measure_samples(samples, recipe, encoder, progress=progress)
    planned, stats = plan_samples(samples, recipe, encoder, stats, log=is_main, measured=measured)
    return TrainDataset(planned, recipe, encoder), stats
