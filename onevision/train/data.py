"""Training data: LLaVA JSON/JSONL conversations, OneVision mixture YAMLs, exact lengths, lazy loading.

Pipeline:

1. :func:`read_records` reads a ``.json`` list, a ``.jsonl`` file, the brace form ``dir/{a,b}.json`` or a mixture
   YAML (``datasets: [{json_path, sampling_strategy}]``); ``random:`` selection is seeded from the recipe seed, so
   every rank selects the same records (the reference does not seed it). A ``.jsonl`` line that is not valid JSON
   is skipped like a bad record (a warning names ``file:line``; counted as ``invalid JSON line``), or fatal with
   ``data.strict``.
2. :func:`parse_record` turns one record into an immutable, typed :class:`Sample` (``image``, ``multi_image``,
   ``video`` or ``text``; ``{"from","value"}`` and ``{"role","content"}`` turns). Records are never mutated.
   Media paths are confined to their data roots. A relative path is joined with ``data.image_root`` /
   ``data.video_root`` (or, with no root set, stays relative to the current directory, as in the reference); it
   is refused if it is absolute, if it leaves its root through ``..``, or, when a root is set, if it resolves
   (``os.path.realpath``, symbolic links followed) outside the resolved root. A refused record is skipped and
   counted as ``media path outside data root`` (fatal with ``data.strict``); ``data.allow_outside_roots: true``
   turns the check off.
3. :func:`plan_samples` measures the **exact** multimodal length of every sample before any pixel is decoded: visual
   tokens from the ``anyres`` geometry of the image header size (EXIF orientation applied) and, for videos, from the
   frame-sampling rule and a container probe; text tokens from the encoder. Over-length samples are dropped, capped
   (trailing text cut, never a visual span) or fatal; unreadable media are skipped with a counted warning (or fatal
   with ``data.strict``). Samples of modalities the stage does not use are left out, counted.
4. :class:`TrainDataset` loads media lazily (in DataLoader workers) and asks the encoder for ``input_ids``,
   ``labels`` (assistant turns only by default) and visual inputs.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import yaml

from onevision.errors import DataError, MediaError, MediaPathError
from onevision.train.recipe import Recipe, RecipeError
from onevision.train.visual import (  # noqa: F401 (public names of this module since the start)
    load_video,
    video_frame_count,
    video_sampling,
    video_tokens,
    visual_token_counts,
)

if TYPE_CHECKING:
    import video

logger = logging.getLogger("onevision.train")

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
MIXTURE_KEYS = ("json_path", "sampling_strategy")
_SAMPLING = re.compile(r"(first|end|random):(\d+)(%?)")
_BRACE = re.compile(r"(.*)\{([^{}]+)\}(.*)")  # dir/{a,b}.json


# ----------------------------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class Turn:
    role: Literal["system", "user", "assistant"]
    text: str


@dataclass(frozen=True)
class Sample:
    """One training conversation. Media paths are resolved; ``source`` is ``file#index`` for messages."""

    id: str
    modality: Literal["image", "multi_image", "video", "text"]
    turns: tuple[Turn, ...]
    images: tuple[str, ...] = ()
    video: str | None = None
    source: str = ""

    @property
    def media(self) -> tuple[str, ...]:
        return self.images + ((self.video,) if self.video else ())


@dataclass(frozen=True)
class Measure:
    """Exact encoded length of a sample, and the position just after its last visual token (0 if none)."""

    length: int
    visual_end: int = 0


@dataclass(frozen=True)
class PlannedSample:
    """A kept sample with its exact length, visual token counts and (``cap`` mode) the length it is cut to."""

    sample: Sample
    length: int
    visual_tokens: tuple[int, ...]
    truncate_to: int | None = None
    visual_end: int = 0  # the position just after the last visual token (0 if none)


@dataclass
class DataStats:
    """What planning kept and dropped, and why (logged at start-up)."""

    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    by_modality: Counter = field(default_factory=Counter)
    tokens: int = 0
    capped: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first offending ids/sources

    def drop(self, reason: str, where: str, n: int = 1) -> None:
        """Count ``n`` dropped records under ``reason``; keep the first few ``where`` (an id or ``file:line``)."""
        self.dropped[reason] += n
        if len(first := self.examples.setdefault(reason, [])) < 5:
            first.append(where)

    def summary(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        mods = ", ".join(f"{k} {v}" for k, v in sorted(self.by_modality.items()))
        return (
            f"{self.kept}/{self.records} samples kept ({mods}); {self.tokens:,} tokens; "
            f"capped {self.capped}; dropped: {drops}"
        )


@dataclass(frozen=True)
class Media:
    """Decoded media of one sample: PIL images (in placeholder order) and/or one ``video.Clip`` (frames
    ``[T, H, W, 3]`` uint8 with their indices and timestamps, as the recipe's sampling spec chose them)."""

    images: tuple[Any, ...] = ()
    video: video.Clip | None = None


class SampleEncoder(Protocol):
    """What the trainer needs from a processor (the real ``OneVisionProcessor`` is adapted to this)."""

    def measure(self, sample: Sample, visual_tokens: Sequence[int]) -> Measure:
        """Exact encoded length given the visual token count of each media item (no pixels decoded)."""
        ...

    def encode(self, sample: Sample, media: Media) -> dict[str, Any]:
        """``input_ids`` and ``labels`` (1-D long tensors of the measured length) plus visual inputs."""
        ...

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A padded batch for ``model(**batch)``, with an ``attention_mask`` built from lengths."""
        ...


# ----------------------------------------------------------------------------------------------------------------
# Reading records


@dataclass(frozen=True)
class BadLine:
    """A line of a ``.jsonl`` file that is not valid JSON (skipped and reported unless ``strict``)."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: invalid JSON line ({self.reason})"


def data_parts(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files or shard sets that ``data.path`` names: each entry of a list, and each alternative of a brace
    pattern (``dir/{a,b}.jsonl``, ``s3://b/{set0,set1}``) unless a local path exists exactly as written."""
    out = []
    for p in [path] if isinstance(path, (str, os.PathLike)) else path:
        brace = _BRACE.fullmatch(str(p))
        if brace and not os.path.exists(p):
            out += [f"{brace.group(1)}{alt.strip()}{brace.group(3)}" for alt in brace.group(2).split(",")]
        else:
            out.append(str(p))
    return out


def read_records(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    seed: int = 0,
    strict: bool = False,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(source, record)`` pairs from a JSON/JSONL file, a mixture YAML, or a list or brace pattern of them.

    A ``.jsonl`` line that is not valid JSON is skipped with a warning naming ``file:line`` and passed to
    ``on_bad_line`` (a :class:`BadLine`); with ``strict`` it raises :class:`DataError` instead. A ``.json`` file
    that does not parse is one unusable file and always raises.
    """
    parts = data_parts(path)
    if parts != [str(path)]:
        return [
            r for part in parts for r in read_records(part, seed=seed, strict=strict, on_bad_line=on_bad_line)
        ]
    p = Path(parts[0])
    if p.suffix in (".yaml", ".yml"):
        return _read_mixture(p, seed, strict, on_bad_line)
    return [(f"{p}#{i}", r) for i, r in enumerate(_read_json_file(p, strict, on_bad_line))]


def _read_json_file(
    p: Path, strict: bool = False, on_bad_line: Callable[[BadLine], None] | None = None
) -> list[Any]:
    if not p.is_file():
        raise DataError(f"{p}: data file not found")
    if p.suffix == ".jsonl":
        records = []
        with open(p, "rb") as f:  # bytes: a line that is not UTF-8 is one bad line, not a failed file
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    records.append(json.loads(raw))
                except UnicodeDecodeError:
                    _bad_line(BadLine(str(p), lineno, "not UTF-8 text"), strict, on_bad_line)
                except json.JSONDecodeError as exc:
                    reason = f"{exc.msg} at column {exc.colno}"
                    _bad_line(BadLine(str(p), lineno, reason), strict, on_bad_line)
                except RecursionError:
                    _bad_line(BadLine(str(p), lineno, "nested too deeply"), strict, on_bad_line)
        return records
    try:
        records = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: invalid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{p}: invalid JSON (nested too deeply)") from None
    if not isinstance(records, list):
        raise DataError(
            f"{p}: expected a JSON list of samples (or a .jsonl file), got {type(records).__name__}"
        )
    return records


def _bad_line(bad: BadLine, strict: bool, on_bad_line: Callable[[BadLine], None] | None) -> None:
    if strict:
        raise DataError(f"{bad}; fix or delete the line (data.strict is true, so it is not skipped)")
    logger.warning("skipping %s", bad)
    if on_bad_line is not None:
        on_bad_line(bad)


def _read_mixture(
    p: Path, seed: int, strict: bool = False, on_bad_line: Callable[[BadLine], None] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    if not p.is_file():
        raise DataError(f"{p}: mixture file not found")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{p}: invalid YAML ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("datasets"), list):
        raise DataError(
            f"{p}: a mixture needs a top-level 'datasets:' list of {{json_path, sampling_strategy}}"
        )
    out: list[tuple[str, dict[str, Any]]] = []
    for k, entry in enumerate(spec["datasets"]):
        where = f"{p}: datasets[{k}]"
        if not isinstance(entry, dict) or "json_path" not in entry:
            raise DataError(f"{where}: needs json_path")
        for key in entry:
            if key not in MIXTURE_KEYS:
                close = difflib.get_close_matches(str(key), MIXTURE_KEYS, n=1)
                hint = (
                    f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(MIXTURE_KEYS)}"
                )
                raise DataError(f"{where}: unknown key {key!r}{hint}")
        json_path = Path(str(entry["json_path"])).expanduser()
        if not json_path.is_absolute():
            json_path = p.parent / json_path
        records = read_records(json_path, seed=seed, strict=strict, on_bad_line=on_bad_line)
        chosen = select(records, str(entry.get("sampling_strategy", "all")), seed=seed, stream=k, where=where)
        out.extend(chosen)
    return out


def select(
    records: Sequence[Any], strategy: str, *, seed: int, stream: int = 0, where: str = ""
) -> list[Any]:
    """Apply a mixture ``sampling_strategy``: ``all``, ``first:N``/``first:N%``, ``end:N``/``end:N%``,
    ``random:N``/``random:N%`` (percentages are integers, ``N = ceil(pct * len / 100)`` as in the reference).

    ``random`` is a permutation seeded by ``(seed, stream)``: identical on every rank and every run.
    """
    strategy = strategy.strip()
    if strategy == "all":
        return list(records)
    m = _SAMPLING.fullmatch(strategy)
    if not m:
        raise DataError(
            f"{where}: sampling_strategy {strategy!r} is not one of all, first:N[%], end:N[%], "
            "random:N[%] (N an integer)"
        )
    kind, number, pct = m.group(1), int(m.group(2)), m.group(3)
    n = math.ceil(number * len(records) / 100) if pct else number
    n = min(n, len(records))
    if kind == "first":
        return list(records[:n])
    if kind == "end":
        return list(records[len(records) - n :]) if n else []
    order = np.random.default_rng([seed, stream, 0x5EED]).permutation(len(records))[:n]
    return [records[i] for i in order]


# ----------------------------------------------------------------------------------------------------------------
# Parsing


def parse_record(
    record: Any,
    *,
    source: str,
    image_root: str | None = None,
    video_root: str | None = None,
    allow_outside_roots: bool = False,
) -> Sample:
    """A typed :class:`Sample` from one LLaVA record (raises :class:`DataError` naming ``source``).

    Media paths are confined to their roots (module docstring; :class:`MediaPathError`) unless
    ``allow_outside_roots``."""
    if not isinstance(record, dict):
        raise DataError(f"{source}: a sample must be a JSON object, got {type(record).__name__}")
    convs = record.get("conversations", record.get("messages"))
    if not isinstance(convs, list) or not convs:
        raise DataError(f"{source}: needs a non-empty 'conversations' list")
    turns = []
    for i, t in enumerate(convs):
        if not isinstance(t, dict):
            raise DataError(f"{source}: conversations[{i}] must be an object")
        if "from" in t or "value" in t:
            role, text = t.get("from"), t.get("value")
        else:
            role, text = t.get("role"), t.get("content")
        if role not in ROLE_NAMES:
            raise DataError(
                f"{source}: conversations[{i}]: unknown role {role!r}; use human/gpt, user/assistant "
                "or system"
            )
        if not isinstance(text, str):
            raise DataError(f"{source}: conversations[{i}]: the text must be a string")
        turns.append(Turn(ROLE_NAMES[role], text))  # type: ignore[arg-type]
    if not any(t.role == "assistant" for t in turns):
        raise DataError(f"{source}: no assistant turn (nothing to train on)")
    sid = str(record.get("id", source))
    image, video = record.get("image"), record.get("video")
    if image is not None and video is not None:
        raise DataError(f"{source}: has both 'image' and 'video'; one sample holds one kind of media")
    images: tuple[str, ...] = ()
    if image is not None:
        paths = [image] if isinstance(image, str) else image
        if not isinstance(paths, list) or not paths or not all(isinstance(x, str) for x in paths):
            raise DataError(f"{source}: 'image' must be a path or a non-empty list of paths")
        images = tuple(_media_path(image_root, x, "image", source, allow_outside_roots) for x in paths)
    modality = "text"
    n_placeholders = sum(t.text.count(IMAGE_PLACEHOLDER) + t.text.count(VIDEO_PLACEHOLDER) for t in turns)
    if images:
        modality = "image" if len(images) == 1 else "multi_image"
        if len(images) == 1:
            turns = _single_placeholder_first(turns, source)
        elif n_placeholders != len(images):
            raise DataError(
                f"{source}: {len(images)} images but {n_placeholders} {IMAGE_PLACEHOLDER} placeholders"
            )
    elif video is not None:
        if not isinstance(video, str):
            raise DataError(f"{source}: 'video' must be one path")
        modality = "video"
        turns = _single_placeholder_first(turns, source)
    elif n_placeholders:
        raise DataError(f"{source}: text-only sample contains {n_placeholders} media placeholder(s)")
    vid = (
        _media_path(video_root, video, "video", source, allow_outside_roots)
        if isinstance(video, str)
        else None
    )
    return Sample(id=sid, modality=modality, turns=tuple(turns), images=images, video=vid, source=source)  # type: ignore[arg-type]


def _join(root: str | None, path: str) -> str:
    return path if (root is None or os.path.isabs(path)) else os.path.join(root, path)


def _media_path(root: str | None, path: str, kind: str, source: str, allow: bool) -> str:
    """``path`` joined with its root as before, refused (:class:`MediaPathError`) if it is absolute or leaves the
    root: lexically (``..``) and, when a root is set, after resolving symbolic links on both sides."""
    joined = _join(root, path)
    if allow:
        return joined
    key = f"data.{kind}_root"
    fix = (
        f"keep the media under {key} and use paths relative to it, or set data.allow_outside_roots: true "
        "if the recipe's data is trusted"
    )
    if os.path.isabs(path):
        raise MediaPathError(f"{source}: {kind} path {path!r} is absolute; {fix}")
    base = os.path.curdir if root is None else root
    where = "the current directory (no root is set)" if root is None else f"{key} ({root})"
    if not _inside(os.path.normpath(os.path.join(base, path)), os.path.normpath(base)):
        raise MediaPathError(f"{source}: {kind} path {path!r} leaves {where} through '..'; {fix}")
    if root is not None:
        real, real_root = os.path.realpath(joined), os.path.realpath(root)
        if not _inside(real, real_root):
            raise MediaPathError(
                f"{source}: {kind} path {path!r} resolves to {real} through a symbolic link, outside {key} "
                f"({real_root}); {fix}"
            )
    return joined


def _inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both normalised, both absolute or both relative)."""
    if root == os.path.curdir:
        return path != os.pardir and not path.startswith(os.pardir + os.sep)
    return os.path.commonpath([path, root]) == root


def _single_placeholder_first(turns: list[Turn], source: str) -> list[Turn]:
    """One media item: exactly one placeholder, at the start of its turn (reference ``preprocess_multimodal``);
    a conversation without one gets ``<image>\\n`` at the start of the first user turn."""
    count = sum(t.text.count(IMAGE_PLACEHOLDER) + t.text.count(VIDEO_PLACEHOLDER) for t in turns)
    if count > 1:
        raise DataError(f"{source}: one image/video but {count} placeholders")
    out = []
    placed = count == 1
    for t in turns:
        text = t.text.replace(VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER)
        if IMAGE_PLACEHOLDER in text and not text.startswith(IMAGE_PLACEHOLDER):
            text = IMAGE_PLACEHOLDER + "\n" + text.replace(IMAGE_PLACEHOLDER, "").strip()
        elif not placed and t.role == "user":
            text = IMAGE_PLACEHOLDER + "\n" + text
            placed = True
        out.append(Turn(t.role, text))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Planning


def load_samples(recipe: Recipe) -> tuple[list[Sample], DataStats]:
    """Parse every record of ``recipe.data.path`` (invalid JSONL lines and bad records are skipped and counted in
    the returned stats unless ``data.strict``)."""
    _check_data_path(recipe)
    stats = DataStats()
    samples = []
    bad_lines: list[BadLine] = []
    records = read_records(
        recipe.data.path, seed=recipe.seed, strict=recipe.data.strict, on_bad_line=bad_lines.append
    )
    stats.records += len(bad_lines)
    for bad in bad_lines:
        stats.drop("invalid JSON line", f"{bad.path}:{bad.line}")
    for source, record in records:
        stats.records += 1
        try:
            samples.append(
                parse_record(
                    record,
                    source=source,
                    image_root=recipe.data.image_root,
                    video_root=recipe.data.video_root,
                    allow_outside_roots=recipe.data.allow_outside_roots,
                )
            )
        except MediaPathError as exc:
            if recipe.data.strict:
                raise MediaPathError(f"{exc} [data.strict is true]") from None
            stats.drop("media path outside data root", source)
            logger.warning("skipping sample: %s", exc)
        except DataError as exc:
            if recipe.data.strict:
                raise
            stats.drop("invalid record", source)
            logger.warning("skipping invalid sample: %s", exc)
    return samples, stats


def _check_data_path(recipe: Recipe) -> None:
    """``data.path`` (each file of a list or brace pattern) exists and is a file: a :class:`RecipeError` naming the key."""
    path = recipe.data.path
    if not path:
        raise RecipeError(
            recipe.source, "data.path", "set the training data: a LLaVA .json/.jsonl file or a mixture .yaml"
        )
    for part in data_parts(path):
        if os.path.isfile(part):
            continue
        what = "is not a file" if os.path.exists(part) else "does not exist"
        where = "" if os.path.isabs(part) else f" (relative to the current directory {os.getcwd()})"
        hint = (
            ""
            if recipe.data.synthetic is not None
            else ", or set data.synthetic to generate a small demo set"
        )
        raise RecipeError(
            recipe.source,
            "data.path",
            f"{part} {what}{where}; point data.path at a LLaVA .json/.jsonl file or a mixture .yaml{hint}",
        )


def plan_samples(
    samples: Iterable[Sample],
    recipe: Recipe,
    encoder: SampleEncoder,
    stats: DataStats | None = None,
    *,
    log: bool = True,
    measured: Sequence[tuple[tuple[int, ...], Measure | None] | MediaError] | None = None,
) -> tuple[list[PlannedSample], DataStats]:
    """Measure every sample exactly and apply the modality filter, the media check and the length policy.

    ``measured[i]`` (optional) is sample ``i``'s visual counts and :class:`Measure` taken ahead (in parallel by
    ``onevision.train.lengths``, or from a shard index); a :class:`MediaError` there is its media failure."""
    stats = stats or DataStats()
    strategies = {m: recipe.image_strategy(m) for m in ("image", "multi_image")}
    budget = recipe.data.model_max_length
    wanted = set(recipe.data.modalities)
    kept: list[PlannedSample] = []
    warn = logger.warning if log else logger.debug
    for i, s in enumerate(samples):
        if s.modality not in wanted:
            stats.drop(f"modality {s.modality} not in data.modalities", s.id)
            continue
        try:
            ahead = measured[i] if measured is not None else None
            if isinstance(ahead, MediaError):
                raise ahead
            counts, m = ahead or (visual_token_counts(s, recipe, strategies), None)
        except MediaError as exc:
            if recipe.data.strict:
                raise MediaError(f"{s.source} (id {s.id}): {exc} [data.strict is true]") from None
            stats.drop("bad or missing media", s.id)
            warn("skipping sample %s (%s): %s", s.id, s.source, exc)
            continue
        m = m or encoder.measure(s, counts)
        truncate = None
        if m.length > budget:
            policy = recipe.data.over_length
            if policy == "error":
                raise DataError(
                    f"{s.source} (id {s.id}): {m.length} tokens exceed data.model_max_length={budget} "
                    "(set data.over_length to drop or cap)"
                )
            if policy == "cap" and m.visual_end < budget:
                truncate = budget
                stats.capped += 1
            else:
                stats.drop("over length", s.id)
                warn(
                    "dropping sample %s (%s): %d tokens > model_max_length %d%s",
                    s.id,
                    s.source,
                    m.length,
                    budget,
                    " (a cut would fall inside a visual span)" if policy == "cap" else "",
                )
                continue
        length = truncate or m.length
        kept.append(PlannedSample(s, length, counts, truncate, m.visual_end))
        stats.kept += 1
        stats.tokens += length
        stats.by_modality[s.modality] += 1
    return kept, stats


# ----------------------------------------------------------------------------------------------------------------
# Loading


def load_media(sample: Sample, recipe: Recipe) -> Media:
    """Decode the media of one sample (raises :class:`MediaError`); a video as the ``video.Clip`` of the recipe's
    sampling spec (:func:`load_video`)."""
    import anyres

    if sample.modality in ("image", "multi_image"):
        images = []
        for path in sample.images:
            try:
                images.append(anyres.open_image(path).image)
            except anyres.ImageError as exc:
                raise MediaError(str(exc)) from None
        return Media(images=tuple(images))
    if sample.modality == "video":
        assert sample.video is not None
        return Media(video=load_video(sample.video, recipe.visual.video))
    return Media()


class TrainDataset:
    """Map-style dataset over planned samples; ``__getitem__`` returns an encoded item, or ``None`` for a sample
    whose media fail to decode (counted by the collate function; fatal with ``data.strict``)."""

    def __init__(self, planned: Sequence[PlannedSample], recipe: Recipe, encoder: SampleEncoder):
        self.planned = list(planned)
        self.recipe = recipe
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.planned)

    @property
    def lengths(self) -> list[int]:
        return [p.length for p in self.planned]

    @property
    def modalities(self) -> list[str]:
        return [p.sample.modality for p in self.planned]

    def fetch(self, sample: Sample) -> tuple[Sample, Media]:
        """The sample to encode and its decoded media (loose files; shard datasets read their members)."""
        return sample, load_media(sample, self.recipe)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        p = self.planned[index]
        try:
            sample, media = self.fetch(p.sample)
            item = self.encoder.encode(sample, media)
        except MediaError as exc:
            if self.recipe.data.strict:
                raise MediaError(
                    f"{p.sample.source} (id {p.sample.id}): {exc} [data.strict is true]"
                ) from None
            logger.warning("skipping sample %s (%s) at load time: %s", p.sample.id, p.sample.source, exc)
            return None
        n = int(item["input_ids"].shape[0])
        expected = p.truncate_to or p.length
        if p.truncate_to is not None:
            item["input_ids"] = item["input_ids"][: p.truncate_to]
            item["labels"] = item["labels"][: p.truncate_to]
            n = p.truncate_to
        if n != expected:
            raise DataError(
                f"{p.sample.source} (id {p.sample.id}): encoded length {n} != measured {expected}; "
                "the encoder's measure() and encode() disagree"
            )
        item["sample_id"] = p.sample.id
        return item


class Collator:
    """Drops failed items (``None``) and counts them in ``batch["skipped"]``; an all-failed micro-batch becomes
    ``{"empty": True, "skipped": n}`` (the trainer still runs a zero-weight step to keep ranks in lockstep)."""

    def __init__(self, encoder: SampleEncoder):
        self.encoder = encoder

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, Any]:
        good = [x for x in items if x is not None]
        skipped = len(items) - len(good)
        if not good:
            return {"empty": True, "skipped": skipped}
        ids = [g.pop("sample_id") for g in good]
        batch = self.encoder.collate(good)
        batch["skipped"] = skipped
        batch["sample_ids"] = ids
        return batch
