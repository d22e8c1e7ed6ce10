"""Checkpoint format detection from typed fields of ``config.json`` (never from names), and hub-id resolution.

Like :mod:`onevision.checkpoints.io`, it sits below the model: ``OneVisionModel.from_pretrained`` uses it to
refuse a directory that is not in the native format.
"""

from __future__ import annotations

from pathlib import Path

from onevision.checkpoints.io import read_config
from onevision.config import FORMAT_NAME
from onevision.errors import CheckpointError

#: The formats :func:`detect_format` tells apart (``onevision`` is the native one).
FORMATS = ("onevision", "hf", "original", "adapter")
#: the file that makes a directory a LoRA adapter (peft's config name; :mod:`onevision.checkpoints.adapter`)
ADAPTER_CONFIG = "adapter_config.json"

#: What ``resolve_path`` downloads from the hub: configs, safetensors weights and tokenizer files (never pickles).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def resolve_path(path_or_hub_id: str) -> Path:
    """A local directory as is; anything else is a hub id fetched with ``huggingface_hub.snapshot_download``."""
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p}: expected a checkpoint directory, got a file")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_hub_id), allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, ...
        raise CheckpointError(
            f"{path_or_hub_id}: not a local directory and not loadable from the hub ({exc})"
        ) from None


def detect_format(directory: str | Path) -> str:
    """``onevision``, ``hf`` or ``original``, from typed fields of ``config.json``; ``adapter`` when the directory
    holds ``adapter_config.json``."""
    if (Path(directory) / ADAPTER_CONFIG).is_file():
        return "adapter"
    cfg = read_config(directory)
    if cfg.get("format") == FORMAT_NAME:
        return "onevision"
    if cfg.get("model_type") == "llava_onevision":
        return "hf"
    if "mm_vision_tower" in cfg or "mm_projector_type" in cfg:
        return "original"
    raise CheckpointError(
        f"{directory}: config.json is neither a onevision config (format), an HF llava_onevision config "
        f"(model_type={cfg.get('model_type')!r}) nor an original LLaVA-NeXT config (mm_vision_tower)"
    )
