"""What exact sample lengths depend on (a fingerprint) and reading the visual counts of many samples in parallel,
with a progress bar, so planning from raw JSONL is bounded by the disk rather than by one thread."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from onevision.errors import MediaError
from onevision.train.data import Sample
from onevision.train.recipe import Recipe
from onevision.train.visual import visual_token_counts


def length_fingerprint(recipe: Recipe, encoder: Any) -> str:
    """sha256 of everything a measured length depends on: the recipe's visual policy and the encoder's processor
    configuration (template, media tokens, its policy) and tokenizer vocabulary. Two recipes with the same
    fingerprint measure every sample to the same length, so an index packed under one serves the other."""
    processor = encoder.processor
    vocab = hashlib.sha256(json.dumps(sorted(processor.tokenizer.get_vocab().items())).encode()).hexdigest()
    data = {
        "visual": dataclasses.asdict(recipe.visual),
        "processor": dataclasses.asdict(processor.config),
        "vocab": vocab,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def default_workers() -> int:
    """Header reads are I/O bound: a few threads per core (at least 4, at most 32)."""
    return max(4, min(32, 4 * (os.cpu_count() or 1)))


def read_visual_counts(
    samples: Sequence[Sample],
    recipe: Recipe,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[tuple[tuple[int, ...], None] | MediaError]:
    """Each sample's visual token counts from its media headers (``visual_token_counts``), read by ``workers``
    threads in sample order; a sample whose media fail to read gets its :class:`MediaError` instead. The result is
    ``plan_samples``'s ``measured`` argument. ``progress`` shows a tqdm bar (samples/s) on stderr."""
    strategies = {m: recipe.image_strategy(m) for m in ("image", "multi_image")}
    wanted = set(recipe.data.modalities)

    def one(s: Sample) -> tuple[tuple[int, ...], None] | MediaError:
        if s.modality not in wanted or s.modality == "text":
            return (), None
        try:
            return visual_token_counts(s, recipe, strategies), None
        except MediaError as exc:
            return exc

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(samples), desc="reading media headers", unit="sample", mininterval=0.5)
    out: list[tuple[tuple[int, ...], None] | MediaError] = []
    n = workers or default_workers()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="headers") as pool:
        for result in pool.map(one, samples):  # map keeps sample order
            out.append(result)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
