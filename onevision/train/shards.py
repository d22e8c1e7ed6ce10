"""Training from shards: find a shard set behind ``data.path``, plan from its index (no media opened), and a
dataset that reads each sample's members by byte range from local or remote (any fsspec URL) tar shards.

Design: the index gives every sample's shard, key, length and modality, so the existing
:class:`~onevision.train.sampler.GroupedBatchSampler` plans length- and modality-grouped batches exactly as for
loose files, splits them across ranks (and the DataLoader splits them across workers) without overlap, and its
position alone makes a mid-epoch resume exact. Each member is one ranged read (``fs.cat_file(start, end)``) of
its 512-byte tar header plus data; the header is checked against the index, so a shard that disagrees with its
index (a missing member, a truncated or corrupt tar) is a counted skip naming the shard, never a wrong sample.
The trade-off against sequential streaming (``webdataset.WebDataset`` over whole shards): one request per member
instead of one per shard, which on object storage wants larger media or more DataLoader workers; in exchange,
any order, exact resume and grouping without a shuffle buffer. The shards stay plain WebDataset tars, readable by
``webdataset`` itself.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

from onevision.data.index import INDEX_NAME, ShardIndex, join, read_index
from onevision.errors import DataError, MediaError
from onevision.train.data import (
    DataStats,
    Measure,
    Media,
    PlannedSample,
    Sample,
    SampleEncoder,
    TrainDataset,
    data_parts,
    parse_record,
    plan_samples,
)
from onevision.train.lengths import length_fingerprint
from onevision.train.recipe import Recipe
from onevision.train.visual import load_video

logger = logging.getLogger("onevision.train")


class MemberRef(NamedTuple):
    """Where a planned sample's members are: its shard's URL, its key, ``member -> (offset, size)`` and the
    record's original source (``file#index``, for reports)."""

    url: str
    key: str
    members: dict[str, tuple[int, int]]
    record_source: str


@functools.lru_cache(maxsize=64)
def url_fs(url: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of a local path or any fsspec URL (cached per URL)."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def shard_roots(path: str | Sequence[str]) -> list[str] | None:
    """The shard-set directories ``data.path`` names (a directory, a list or a brace pattern of them; each holds
    an ``index.jsonl``), or ``None`` for loose files. A ``data.path`` mixing both is refused."""
    if not path:
        return None
    parts = data_parts(path)
    found = []
    for part in parts:
        fs, p = url_fs(part)
        try:
            found.append(fs.isfile(join(p, INDEX_NAME)))
        except OSError:
            found.append(False)
    if not any(found):
        return None
    if not all(found):
        missing = [p for p, f in zip(parts, found) if not f]
        raise DataError(f"{missing[0]}: no {INDEX_NAME} there, but other parts of data.path are shard sets")
    return [p.rstrip("/") for p in parts]


def check_shards(index: ShardIndex) -> None:
    """Every shard exists with the size the index recorded (one metadata call per shard), else one line naming
    the shard and the index."""
    for i, info in enumerate(index.shards):
        url = index.shard_url(i)
        fs, p = url_fs(url)
        try:
            size = fs.size(p)
        except FileNotFoundError:
            raise DataError(
                f"{url}: shard listed in {index.path} is missing; re-pack or restore it"
            ) from None
        if size != info.bytes:
            raise DataError(
                f"{url}: {size} bytes but {index.path} recorded {info.bytes}; the index and its shards disagree "
                "(re-pack)"
            )


def index_samples(
    index: ShardIndex,
) -> tuple[list[Sample], list[tuple[tuple[int, ...], Measure]], dict[str, MemberRef]]:
    """Planning inputs from an index: media-less samples (their media named by member), their stored measures,
    and ``source -> (shard url, key, members, the record's original source)`` for the dataset."""
    samples, measured, where = [], [], {}
    urls = [index.shard_url(i) for i in range(len(index.shards))]
    for e in index.entries:
        url = urls[e.shard]
        source = f"{url}#{e.key}"
        media = tuple(m for m in e.members if m != "json")
        if e.modality == "video":
            s = Sample(e.id, "video", (), (), media[0], source)
        else:
            s = Sample(e.id, e.modality, (), media, None, source)  # type: ignore[arg-type]
        samples.append(s)
        measured.append((e.visual_tokens, Measure(e.length, e.visual_end)))
        where[source] = MemberRef(url, e.key, e.members, e.source)
    return samples, measured, where


def plan_shards(
    roots: Sequence[str],
    recipe: Recipe,
    encoder: SampleEncoder,
    stats: DataStats | None = None,
    *,
    log: bool = True,
) -> tuple[list[PlannedSample], DataStats, dict[str, MemberRef]]:
    """Plan from the indexes of ``roots``: the same modality filter, over-length policy and kept/dropped table as
    for loose files, from stored lengths. Refused (one line naming the index) when the index was packed under
    another visual policy or tokenizer, or when its shards are missing or changed size."""
    stats = stats or DataStats()
    fingerprint = length_fingerprint(recipe, encoder)
    samples, measured, where = [], [], {}
    for root in roots:
        index = read_index(root)
        if index.fingerprint != fingerprint:
            raise DataError(
                f"{index.path}: packed under another visual policy or tokenizer (fingerprint "
                f"{index.fingerprint[:12]}, this recipe {fingerprint[:12]}); re-pack with this recipe: "
                f"onevision data pack SRC --recipe RECIPE --out DIR"
            )
        check_shards(index)
        s, m, w = index_samples(index)
        samples += s
        measured += m
        where.update(w)
    stats.records += len(samples)
    planned, stats = plan_samples(samples, recipe, encoder, stats, log=log, measured=measured)
    return planned, stats, where


def read_member(url: str, key: str, name: str, extent: tuple[int, int]) -> bytes:
    """One member's bytes by a ranged read, its tar header checked against the index (raises MediaError)."""
    offset, size = extent
    fs, path = url_fs(url)
    start = offset - tarfile.BLOCKSIZE
    try:
        blob = fs.cat_file(path, start=start, end=offset + size)
        header = tarfile.TarInfo.frombuf(blob[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except (OSError, tarfile.TarError) as exc:
        raise MediaError(
            f"{url}: cannot read member {key}.{name} at byte {start} ({exc}); corrupt shard?"
        ) from None
    if header.name != f"{key}.{name}" or header.size != size or len(blob) != tarfile.BLOCKSIZE + size:
        raise MediaError(
            f"{url}: member {key}.{name} is not at byte {start} (found {header.name!r}); the shard and its "
            "index disagree (missing member or changed shard): re-pack"
        )
    return blob[tarfile.BLOCKSIZE :]


def decode_image(data: bytes, source: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    import anyres

    try:
        return anyres.open_image(Image.open(io.BytesIO(data))).image
    except (anyres.ImageError, UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"{source}: {exc}") from None


def decode_video(data: bytes, name: str, recipe: Recipe) -> Any:
    """The recipe's frames of a video member (the decoders want a file: a private temporary one, removed at once)."""
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(name)[1], prefix="onevision-member-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_video(tmp, recipe.visual.video)
    finally:
        os.unlink(tmp)


class ShardDataset(TrainDataset):
    """:class:`TrainDataset` whose samples live in tar shards: ``fetch`` reads the sample's ``json`` member (the
    conversation) and its media members, then the encoder encodes exactly as for loose files."""

    def __init__(
        self,
        planned: Sequence[PlannedSample],
        recipe: Recipe,
        encoder: SampleEncoder,
        where: dict[str, MemberRef],
    ):
        super().__init__(planned, recipe, encoder)
        self.where = where

    def fetch(self, sample: Sample) -> tuple[Sample, Media]:
        url, key, members, _ = self.where[sample.source]
        try:
            record = json.loads(read_member(url, key, "json", members["json"]))
            full = parse_record(record, source=sample.source, allow_outside_roots=True)
        except (ValueError, DataError) as exc:  # JSONDecodeError is a ValueError
            raise MediaError(f"{sample.source}: unusable json member ({exc})") from None
        for name in full.media:
            if name not in members:
                raise MediaError(f"{url}: {key}.json names member {name!r}, which the index does not list")
        if full.video is not None:
            clip = decode_video(
                read_member(url, key, full.video, members[full.video]), full.video, self.recipe
            )
            return full, Media(video=clip)
        images = tuple(
            decode_image(read_member(url, key, n, members[n]), f"{url}#{key}.{n}") for n in full.images
        )
        return full, Media(images=images)
