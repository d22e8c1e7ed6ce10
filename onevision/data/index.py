"""The shard index (``index.jsonl``): one header line, then one line per sample with its modality, exact length
and the byte extents of its members in the tar shards, so planning never opens a shard or a media file.

Format (version 1), every line one JSON object:

* line 1, the header: ``{"format": "onevision-shards", "version": 1, "fingerprint": "<sha256>", "visual": {...},
  "shards": [{"name": "shard-000000.tar", "bytes": N, "samples": K}, ...], "source": "...", "stats": {...}}``.
  ``fingerprint`` identifies what the lengths depend on (the visual policy, the tokenizer and the chat template);
  ``visual`` is the policy as data, for people and tools.
* every further line, a sample in pack order: ``{"key": "000000000", "shard": 0, "id": "...", "source": "...",
  "modality": "image", "length": 812, "visual_end": 740, "visual_tokens": [729], "members": {"json": [OFFSET,
  SIZE], "0.jpg": [OFFSET, SIZE]}}``. ``shard`` indexes the header's ``shards``; each member is the tar entry
  ``<key>.<member>`` whose data starts at byte ``OFFSET`` of the shard (its 512-byte tar header just before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from onevision.errors import DataError

INDEX_NAME = "index.jsonl"
FORMAT = "onevision-shards"
VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One tar shard: its file name (relative to the index), size in bytes and number of samples."""

    name: str
    bytes: int
    samples: int


@dataclass(frozen=True)
class IndexEntry:
    """One sample of a shard set: where its members are and its exact length under the index's fingerprint."""

    key: str
    shard: int
    id: str
    source: str
    modality: str
    length: int
    visual_end: int
    visual_tokens: tuple[int, ...]
    members: dict[str, tuple[int, int]]  # member name ("json", "0.jpg", "mp4") -> (data offset, size)


@dataclass(frozen=True)
class ShardIndex:
    """A parsed ``index.jsonl``: the header fields and every sample, in pack order."""

    root: str  # the directory (or URL) holding the index and its shards
    fingerprint: str
    shards: tuple[ShardInfo, ...]
    entries: tuple[IndexEntry, ...]
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return join(self.root, INDEX_NAME)

    def shard_url(self, shard: int) -> str:
        return join(self.root, self.shards[shard].name)


def join(root: str, name: str) -> str:
    """``root/name`` for a local directory or any fsspec URL."""
    return root.rstrip("/") + "/" + name


def header_line(fingerprint: str, visual: dict[str, Any], shards: list[ShardInfo], **extra: Any) -> str:
    head = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "visual": visual}
    head["shards"] = [{"name": s.name, "bytes": s.bytes, "samples": s.samples} for s in shards]
    return json.dumps({**head, **extra}, sort_keys=True)


def entry_line(e: IndexEntry) -> str:
    return json.dumps(
        {
            "key": e.key,
            "shard": e.shard,
            "id": e.id,
            "source": e.source,
            "modality": e.modality,
            "length": e.length,
            "visual_end": e.visual_end,
            "visual_tokens": list(e.visual_tokens),
            "members": {k: list(v) for k, v in e.members.items()},
        }
    )


def read_index(root: str) -> ShardIndex:
    """Read ``root/index.jsonl`` (``root`` a local directory or an fsspec URL such as ``s3://bucket/data``).

    Raises :class:`DataError` naming the index file for a missing file, a bad header or a malformed line."""
    import fsspec

    path = join(root, INDEX_NAME)
    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: shard index not found; make one with `onevision data pack`") from None
    lines = raw.splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line 1: the header is not JSON ({exc.msg}); re-run `onevision data pack`"
        ) from None
    if not isinstance(head, dict) or head.get("format") != FORMAT or head.get("version") != VERSION:
        raise DataError(f"{path}: not a version-{VERSION} {FORMAT} index; re-run `onevision data pack`")
    shards = tuple(ShardInfo(str(s["name"]), int(s["bytes"]), int(s["samples"])) for s in head["shards"])
    entries = []
    for lineno, line in enumerate(lines[1:], 2):
        try:
            d = json.loads(line)
            e = IndexEntry(
                d["key"],
                d["shard"],
                d["id"],
                d["source"],
                d["modality"],
                d["length"],
                d["visual_end"],
                tuple(d["visual_tokens"]),
                {k: (int(v[0]), int(v[1])) for k, v in d["members"].items()},
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(
                f"{path}: line {lineno}: malformed entry ({exc}); re-run `onevision data pack`"
            ) from None
        if not 0 <= e.shard < len(shards):
            raise DataError(
                f"{path}: line {lineno}: shard {e.shard} is not in the header's {len(shards)} shards"
            )
        entries.append(e)
    if sum(s.samples for s in shards) != len(entries):
        raise DataError(
            f"{path}: the header lists {sum(s.samples for s in shards)} samples but the index has {len(entries)}"
        )
    return ShardIndex(root.rstrip("/"), str(head["fingerprint"]), shards, tuple(entries), head)
