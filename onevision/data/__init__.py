"""Data at scale: WebDataset shards with a length index, fast planning, checks and GPT-assisted generation.

Only the index reader is imported here (cheap, and what ``onevision plan`` and other tools need); the packer,
the shard dataset, the checks and the generator live in their own modules and are imported where used.
"""

from onevision.data.index import INDEX_NAME, IndexEntry, ShardIndex, ShardInfo, read_index

__all__ = ["INDEX_NAME", "IndexEntry", "ShardIndex", "ShardInfo", "read_index"]
