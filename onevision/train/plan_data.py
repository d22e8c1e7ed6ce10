"""The tokens one epoch of a recipe's data holds, by modality: measured by the planner on a seeded sample of the
records (scaled to all of them), or declared by a data profile when the data is not at hand.

:func:`epoch_tokens` is the one token source :mod:`onevision.train.plan` reads; a data index with each sample's
exact length (when there is one) replaces the sampling here and nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onevision import schema
from onevision.errors import RecipeError
from onevision.train.yaml_safe import load_yaml


@dataclass(frozen=True)
class ModalityTokens:
    """One modality's share of an epoch (totals over its samples)."""

    samples: int
    text_tokens: int
    visual_tokens: int
    vision_patches: int  # patches through the vision tower (tiles x patches per tile)
    squared_lengths: int  # sum of (sample length)^2, for the attention term
    max_length: int

    @property
    def tokens(self) -> int:
        return self.text_tokens + self.visual_tokens


@dataclass(frozen=True)
class EpochTokens:
    """What one epoch feeds the model, by modality, and where the numbers come from."""

    by_modality: dict[str, ModalityTokens]
    source: str

    def total(self, attr: str) -> int:
        return sum(getattr(m, attr) for m in self.by_modality.values())

    @property
    def max_length(self) -> int:
        return max((m.max_length for m in self.by_modality.values()), default=0)


@dataclass(frozen=True)
class ModalityProfile:
    """Declared per-sample means of one modality (``visual_tokens``: what the LLM sees; ``vision_patches``: what
    the tower computes, default = ``visual_tokens``)."""

    samples: int
    text_tokens: float
    visual_tokens: float = 0.0
    vision_patches: float | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class DataProfile:
    """A dataset described by counts and mean lengths (e.g. from its paper), for planning without the data."""

    name: str
    modalities: dict[str, ModalityProfile]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def with_modalities(self, modalities: dict[str, ModalityProfile]) -> DataProfile:
        return DataProfile(self.name, modalities, self.source, self.notes)


def load_profile(path: str | Path) -> DataProfile:
    """A :class:`DataProfile` YAML file, strictly typed (unknown or mistyped keys name the field)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such data profile")
    data = load_yaml(p.read_text(), str(p))

    def error(key: str | None, message: str) -> RecipeError:
        return RecipeError(str(p), key, message)

    if not isinstance(data, dict) or not isinstance(data.get("modalities"), dict) or not data["modalities"]:
        raise error("modalities", "expected a mapping modality -> {samples, text_tokens, ...}")
    modalities = {
        str(k): schema.from_dict(ModalityProfile, v, prefix=f"modalities.{k}.", error=error)
        for k, v in data["modalities"].items()
    }
    return schema.from_dict(DataProfile, {**data, "modalities": {}}, error=error).with_modalities(modalities)


def profile_tokens(profile: DataProfile) -> EpochTokens:
    """Epoch totals of a profile; the attention term assumes every sample has the mean length."""
    out = {}
    for name, m in profile.modalities.items():
        length = m.text_tokens + m.visual_tokens
        patches = m.visual_tokens if m.vision_patches is None else m.vision_patches
        out[name] = ModalityTokens(
            samples=m.samples,
            text_tokens=round(m.samples * m.text_tokens),
            visual_tokens=round(m.samples * m.visual_tokens),
            vision_patches=round(m.samples * patches),
            squared_lengths=round(m.samples * length * length),
            max_length=m.max_length or round(length),
        )
    return EpochTokens(
        out, f"data profile {profile.name}" + (f" ({profile.source})" if profile.source else "")
    )


def sampled_tokens(recipe: Any, sample: int, *, seed: int = 0) -> EpochTokens:
    """Exact lengths of up to ``sample`` seeded random records through the planner (``plan_samples``), scaled to
    all records. The recipe's processor comes from its model built without weights (:func:`build_sample_encoder`)."""
    from onevision.train.build import build_sample_encoder
    from onevision.train.data import load_samples, plan_samples

    if recipe.data.synthetic is not None:  # the tiny recipes generate their data on first use
        from onevision.train.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(recipe.data.path, recipe.data.synthetic)
    samples, _ = load_samples(recipe)
    if not samples:
        raise RecipeError(recipe.source, "data.path", "no usable record to measure")
    picked = samples if len(samples) <= sample else random.Random(seed).sample(samples, sample)
    encoder = build_sample_encoder(recipe)
    planned, _ = plan_samples(picked, recipe, encoder, log=False)
    if not planned:
        raise RecipeError(recipe.source, "data.path", "no sampled record survives planning")
    scale = len(samples) / len(picked)
    pool = recipe.visual.video.pool_stride**2  # a pooled video token is pool_stride^2 tower patches
    acc: dict[str, list[int]] = {}
    for p in planned:
        visual = sum(p.visual_tokens)
        length = p.truncate_to or p.length
        patches = visual * pool if p.sample.modality == "video" else visual
        row = acc.setdefault(p.sample.modality, [0, 0, 0, 0, 0, 0])
        for i, v in enumerate((1, length - visual, visual, patches, length * length)):
            row[i] += v
        row[5] = max(row[5], length)
    out = {
        m: ModalityTokens(*(round(v * scale) for v in row[:5]), max_length=row[5])
        for m, row in sorted(acc.items())
    }
    return EpochTokens(out, f"planner on {len(picked)} of {len(samples)} records, scaled x{scale:.2f}")


def epoch_tokens(recipe: Any, *, profile: str | Path | None = None, sample: int = 2000) -> EpochTokens:
    """The token source of a plan: the profile when given, else the planner on a sample of the data."""
    if profile is not None:
        return profile_tokens(load_profile(profile))
    return sampled_tokens(recipe, sample, seed=recipe.seed)
