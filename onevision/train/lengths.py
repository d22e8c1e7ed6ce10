"""What exact sample lengths depend on (a fingerprint), and measuring many raw samples in parallel (media headers
and tokenization in forked worker processes) with a progress bar."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

from onevision.errors import MediaError
from onevision.train.data import Measure, Sample
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


#: (recipe, encoder, samples) of the current parallel measurement, inherited by the forked workers
_WORK: tuple[Recipe, Any, Sequence[Sample]] | None = None
Measured = tuple[tuple[int, ...], Measure | None] | MediaError


def default_processes(n_samples: int, chunk: int) -> int:
    """One process per core (at most 16), and in-process (1) when there are fewer than 8 chunks of work."""
    return 1 if n_samples < 8 * chunk else max(1, min(16, os.cpu_count() or 1))


def _measure_range(bounds: tuple[int, int]) -> list[Measured]:
    assert _WORK is not None
    recipe, encoder, samples = _WORK
    strategies = {m: recipe.image_strategy(m) for m in ("image", "multi_image")}
    wanted = set(recipe.data.modalities)
    out: list[Measured] = []
    for s in samples[bounds[0] : bounds[1]]:
        if s.modality not in wanted:
            out.append(((), None))  # plan_samples drops it before looking
            continue
        try:
            counts = visual_token_counts(s, recipe, strategies)
            out.append((counts, encoder.measure(s, counts)))
        except MediaError as exc:
            out.append(MediaError(str(exc)))
    return out


def measure_samples(
    samples: Sequence[Sample],
    recipe: Recipe,
    encoder: Any,
    *,
    processes: int | None = None,
    chunk: int = 512,
    progress: bool = False,
) -> list[Measured]:
    """Every sample's visual counts (media headers) and exact :class:`Measure`, in sample order, by ``processes``
    forked workers (each reads its own chunks' headers and tokenizes them); a sample whose media fail to read gets
    its :class:`MediaError`. The result is ``plan_samples``'s ``measured`` argument, so the kept/dropped rules stay
    in one place. ``progress`` shows a tqdm bar (samples/s) on stderr. Without ``fork`` (or with one process,
    the default for small sets) it runs in this process."""
    global _WORK
    n = processes or default_processes(len(samples), chunk)
    ranges = [(a, min(a + chunk, len(samples))) for a in range(0, len(samples), chunk)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(samples), desc="measuring samples (media headers)", unit="sample", mininterval=0.5
        )
    out: list[Measured] = []
    _WORK = (recipe, encoder, samples)
    try:
        if n > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(n) as pool:
                results = pool.imap(_measure_range, ranges)
                for part in results:
                    out += part
                    if bar is not None:
                        bar.update(len(part))
        else:
            for r in ranges:
                out += _measure_range(r)
                if bar is not None:
                    bar.update(r[1] - r[0])
    finally:
        _WORK = None
        if bar is not None:
            bar.close()
    return out
