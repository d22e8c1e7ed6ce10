"""``onevision data check`` and ``onevision data stats``: what training would keep and drop (per modality, a
token-length histogram, drop reasons with the first offending ids), a structural scan of shard sets, and the
token budget of a mixture under a recipe."""

from __future__ import annotations

import statistics
import tarfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onevision.data.index import ShardIndex, read_index
from onevision.train.data import DataStats, PlannedSample
from onevision.train.prepare import prepare_data
from onevision.train.recipe import Recipe
from onevision.train.shards import ShardDataset, shard_roots, url_fs


@dataclass(frozen=True)
class ShardProblem:
    """A structural problem of a shard set: a corrupt tar, or an indexed member the tar does not hold."""

    reason: str  # "corrupt tar" | "missing shard member"
    shard: str
    sample: str  # the sample id ("" for a whole shard)


def scan_shards(index: ShardIndex) -> list[ShardProblem]:
    """Read every shard's tar headers (sequentially, no member data) and compare them with the index."""
    problems: list[ShardProblem] = []
    by_shard: dict[int, list[Any]] = {}
    for e in index.entries:
        by_shard.setdefault(e.shard, []).append(e)
    for i in range(len(index.shards)):
        url = index.shard_url(i)
        fs, path = url_fs(url)
        try:
            with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                found = {m.name: (m.offset_data, m.size) for m in tar}
        except (OSError, tarfile.TarError) as exc:
            problems.append(ShardProblem("corrupt tar", url, f"{exc}"))
            continue
        for e in by_shard.get(i, []):
            for name, extent in e.members.items():
                if found.get(f"{e.key}.{name}") != extent:
                    problems.append(ShardProblem("missing shard member", url, e.id))
                    break
    return problems


def length_histogram(lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(low, high, count)`` over power-of-two bins ``[2^k, 2^(k+1))`` that hold samples."""
    bins: Counter = Counter(max(0, int(n).bit_length() - 1) for n in lengths)
    return [(1 << k, (1 << (k + 1)) - 1, bins[k]) for k in sorted(bins)]


def _drops(stats: DataStats) -> list[str]:
    if not stats.dropped:
        return ["dropped: none"]
    out = ["dropped:"]
    for reason, n in sorted(stats.dropped.items()):
        first = ", ".join(stats.examples.get(reason, []))
        out.append(f"  {reason}: {n}" + (f" (first: {first})" if first else ""))
    return out


def check_report(recipe: Recipe, encoder: Any) -> tuple[str, bool]:
    """The report of ``data.path`` under ``recipe`` and whether it is clean (nothing dropped, no shard problem)."""
    lines = [f"source: {recipe.data.path}"]
    problems: list[ShardProblem] = []
    for root in shard_roots(recipe.data.path) or []:
        index = read_index(root)
        problems += scan_shards(index)
        lines.append(f"shard set {root}: {len(index.shards)} shards, {len(index.entries)} samples indexed")
    dataset, stats = prepare_data(recipe, encoder, is_main=False)
    planned: list[PlannedSample] = dataset.planned
    lines.append(
        f"records: {stats.records}; kept {stats.kept}; capped {stats.capped}; tokens {stats.tokens:,}"
    )
    lines.append(
        "per modality: " + (", ".join(f"{k} {v}" for k, v in sorted(stats.by_modality.items())) or "none")
    )
    lengths = [p.length for p in planned]
    if lengths:
        lines.append(
            f"token length: min {min(lengths):,} / median {int(statistics.median(lengths)):,} / max {max(lengths):,}"
        )
        width = max(c for _, _, c in length_histogram(lengths))
        for low, high, count in length_histogram(lengths):
            bar = "#" * max(1, round(40 * count / width))
            lines.append(f"  {low:>7,}-{high:<7,} {count:>8,} {bar}")
    lines += _drops(stats)
    if problems:
        lines.append("shard problems:")
        for reason in sorted({p.reason for p in problems}):
            hits = [p for p in problems if p.reason == reason]
            first = ", ".join(f"{p.sample} ({p.shard})" if p.sample else p.shard for p in hits[:5])
            lines.append(f"  {reason}: {len(hits)} (first: {first})")
    return "\n".join(lines), not stats.dropped and not problems


def stats_report(recipe: Recipe, encoder: Any) -> str:
    """The token budget of ``recipe``'s data: per source file (a mixture's datasets) and modality, and per epoch."""
    from onevision.train.sampler import GroupedBatchSampler

    dataset, stats = prepare_data(recipe, encoder, is_main=False)
    planned: list[PlannedSample] = dataset.planned
    where = dataset.where if isinstance(dataset, ShardDataset) else {}
    rows: dict[tuple[str, str], list[int]] = {}
    for p in planned:
        source = where[p.sample.source].record_source if where else p.sample.source  # the record's file#index
        rows.setdefault((source.rpartition("#")[0], p.sample.modality), []).append(p.length)
    lines = [
        f"# {recipe.name}: {stats.summary()}",
        "| source | modality | samples | tokens | mean | max |",
        "|---|---|---|---|---|---|",
    ]
    for (source, modality), lens in sorted(rows.items()):
        lines.append(
            f"| {source} | {modality} | {len(lens):,} | {sum(lens):,} | {sum(lens) / len(lens):,.0f} | {max(lens):,} |"
        )
    visual = sum(sum(p.visual_tokens) for p in planned)
    lines.append(
        f"visual tokens: {visual:,} of {stats.tokens:,} ({100 * visual / max(1, stats.tokens):.1f}%)"
    )
    if planned:
        sampler = GroupedBatchSampler.from_recipe(recipe, dataset.lengths, dataset.modalities)
        steps = sampler.steps_per_epoch(0)
        lines.append(
            f"per epoch: {steps:,} optimizer steps, {sampler.describe()}; planned padding "
            f"{100 * sampler.padding_fraction(0):.1f}%; {recipe.train.epochs} epoch(s)"
        )
    lines += _drops(stats)
    return "\n".join(lines)
