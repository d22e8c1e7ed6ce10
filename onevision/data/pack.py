"""``onevision data pack``: LLaVA JSON/JSONL or a mixture YAML to WebDataset tar shards (media bytes inside, one
sample per key, record order) plus the ``index.jsonl`` that lets planning skip the media entirely.

Each sample ``K`` (a 9-digit running key) is the tar entries ``K.json`` (the parsed conversation: ``id``,
``conversations`` with ``from``/``value`` turns, ``image``/``video`` naming members) and ``K.<i>.<ext>`` per
image (``K.0.jpg``, ``K.1.png``...) or ``K.video.<ext>``. Entries are plain USTAR with zeroed owner and time, so
the same input gives byte-identical shards. Records that fail to parse or whose media do not read are left out
and counted exactly as training would count them; lengths are measured without the over-length policy (that is
applied when training plans from the index).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onevision.data.index import INDEX_NAME, IndexEntry, ShardInfo, entry_line, header_line
from onevision.errors import DataError
from onevision.train.data import DataStats, PlannedSample, load_samples, plan_samples
from onevision.train.lengths import length_fingerprint, measure_samples
from onevision.train.recipe import Recipe

logger = logging.getLogger("onevision.data")

NO_LIMIT = 1 << 62  # packing measures every length; the recipe's budget applies when training plans


@dataclass(frozen=True)
class PackResult:
    out: Path
    shards: tuple[ShardInfo, ...]
    stats: DataStats


def _member_name(path: str, fallback: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    return f"{fallback}.{ext}" if ext else fallback


def sample_record(p: PlannedSample) -> tuple[dict[str, Any], dict[str, str]]:
    """The sample's ``K.json`` record (media named by member) and ``{member: media path}``."""
    s = p.sample
    record: dict[str, Any] = {
        "id": s.id,
        "conversations": [{"from": t.role, "value": t.text} for t in s.turns],
    }
    media: dict[str, str] = {}
    if s.images:
        names = [_member_name(path, str(i)) for i, path in enumerate(s.images)]
        media.update(zip(names, s.images))
        record["image"] = names
    if s.video is not None:
        name = _member_name(s.video, "video")
        media[name] = s.video
        record["video"] = name
    return record, media


def _read_media(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError(f"{path}: only regular media files can be packed (a frame directory cannot)")
    with open(path, "rb") as f:
        return f.read()


class _ShardWriter:
    """Plain, deterministic tar entries; returns the data offset of each one."""

    def __init__(self, path: Path):
        self.path = path
        self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close())

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        start = self.tar.offset
        self.tar.addfile(info, io.BytesIO(data))
        offset = start + tarfile.BLOCKSIZE  # one USTAR header block (names are short)
        assert self.tar.offset == offset + -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return offset, len(data)

    def close(self) -> int:
        self.tar.close()
        return self.path.stat().st_size


def pack(
    recipe: Recipe, encoder: Any, out: str | os.PathLike, *, shard_size: int = 1000, progress: bool = True
) -> PackResult:
    """Pack ``recipe.data.path`` (with its roots) into ``out`` (a new or empty directory; nothing is replaced).

    Lengths are exact for ``recipe``'s visual policy and ``encoder``'s tokenizer; the index records their
    fingerprint so training refuses to use them under a different policy."""
    if shard_size < 1:
        raise DataError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: the output directory must be new or empty (pack never overwrites files)")
    full = dataclasses.replace(
        recipe,
        data=dataclasses.replace(
            recipe.data,
            model_max_length=NO_LIMIT,
            over_length="drop",
            modalities=["image", "multi_image", "video", "text"],
        ),
    )
    samples, stats = load_samples(full)
    measured = measure_samples(samples, full, encoder, progress=progress)
    planned, stats = plan_samples(samples, full, encoder, stats, measured=measured, log=True)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[ShardInfo] = []
    lines: list[str] = []
    writer: _ShardWriter | None = None
    count = 0

    def finish() -> None:
        assert writer is not None
        shards.append(ShardInfo(writer.path.name, writer.close(), count))

    kept = 0
    for p in planned:
        record, media = sample_record(p)
        try:
            blobs = {name: _read_media(path) for name, path in media.items()}
        except (OSError, DataError) as exc:
            stats.drop("bad or missing media", p.sample.id)
            stats.kept, stats.tokens = stats.kept - 1, stats.tokens - p.length
            stats.by_modality[p.sample.modality] -= 1
            logger.warning("skipping sample %s (%s): %s", p.sample.id, p.sample.source, exc)
            continue
        if writer is None or count == shard_size:
            if writer is not None:
                finish()
            writer, count = _ShardWriter(out / f"shard-{len(shards):06d}.tar"), 0
        key = f"{kept:09d}"
        members = {"json": writer.add(f"{key}.json", json.dumps(record, ensure_ascii=False).encode())}
        for name, blob in blobs.items():
            members[name] = writer.add(f"{key}.{name}", blob)
        entry = IndexEntry(
            key, len(shards), p.sample.id, p.sample.source, p.sample.modality, p.length, p.visual_end,
            p.visual_tokens, members,
        )  # fmt: skip
        lines.append(entry_line(entry))
        count += 1
        kept += 1
    if writer is not None:
        finish()
    fingerprint = length_fingerprint(full, encoder)
    summary = {"records": stats.records, "kept": kept, "dropped": dict(stats.dropped)}
    head = header_line(
        fingerprint, dataclasses.asdict(full.visual), shards, source=str(recipe.data.path), stats=summary
    )
    tmp = out / (INDEX_NAME + ".tmp")
    tmp.write_text("\n".join([head, *lines]) + "\n")
    tmp.replace(out / INDEX_NAME)  # the index is written last: a directory with an index is complete
    return PackResult(out, tuple(shards), stats)
