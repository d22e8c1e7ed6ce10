"""The native onevision checkpoint: the model's own directory (``save_pretrained``) plus the tokenizer.

Layout: ``config.json`` (:class:`~onevision.config.OneVisionConfig` with the processor's resolved policy and the
placeholder ids, rebuildable offline), ``model.safetensors`` (sharded with an index when large) and the tokenizer
files; ``config.json`` is written last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onevision.bundle import Bundle, restore_bundle
from onevision.checkpoints.io import open_state_dict, read_config
from onevision.config import OneVisionConfig
from onevision.errors import CheckpointError
from onevision.llm import load_tokenizer
from onevision.model import OneVisionModel


def native_config(pipe: Bundle) -> OneVisionConfig:
    """The config a native checkpoint stores: the model's :meth:`~onevision.model.OneVisionModel.export_config`
    with the processor's resolved policy (incl. its length budget) and token ids."""
    processor = dataclasses.replace(pipe.processor.config, max_length=pipe.processor.max_length)
    return dataclasses.replace(
        pipe.model.export_config(),
        processor=processor,
        image_token_id=pipe.processor.image_token_id,
        video_token_id=pipe.processor.video_token_id,
    )


def save_native(
    pipe: Bundle,
    directory: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer of a pipeline (or any :class:`Bundle`).

    ``state_dict`` replaces the model's own tensors (e.g. a full state gathered from ZeRO-3 shards).
    """
    if getattr(pipe.model, "quantization", None) is not None or getattr(pipe.model, "lora", None) is not None:
        raise CheckpointError(
            f"{directory}: a quantized model or one carrying LoRA layers is not a native checkpoint; save the "
            "adapter (a LoRA stage does) or merge it (onevision merge), and load quantized instead of saving so"
        )
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = native_config(pipe)
    pipe.processor.tokenizer.save_pretrained(str(d))
    pipe.model.save_pretrained(d, config=config, state_dict=state_dict, max_shard_bytes=max_shard_bytes)
    return d


def load_native(
    directory: str | Path,
    *,
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | None = None,
    attn_implementation: str | None = None,
    quantize: Any = None,
) -> Bundle:
    """Load a native checkpoint (offline: components are rebuilt from the stored config); the placement options
    are :func:`~onevision.bundle.restore_bundle`'s."""
    d = Path(directory)
    config = OneVisionConfig.from_dict(read_config(d))
    bundle = restore_bundle(
        config,
        load_tokenizer(str(d)),
        open_state_dict(d),
        str(d),
        dtype=dtype,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        attn_implementation=attn_implementation,
        quantize=quantize,
    )
    if config.image_token_id is not None and bundle.processor.image_token_id != config.image_token_id:
        raise CheckpointError(
            f"{d}: tokenizer's image token id {bundle.processor.image_token_id} differs from the "
            f"config's {config.image_token_id}"
        )
    return bundle


# -- the model-level functions, kept as names; the model owns the implementation ----------------------------------


def native_model_config(model: OneVisionModel) -> OneVisionConfig:
    """Same as ``model.export_config()``."""
    return model.export_config()


def native_state_dict(model: OneVisionModel, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """Same as ``model.checkpoint_state_dict(state_dict)``."""
    return model.checkpoint_state_dict(state_dict)


def load_weights(
    model: OneVisionModel, state: dict[str, Any], source: str, *, drop: Iterable[str] = ()
) -> None:
    """Same as ``model.load_checkpoint_state(state, source, drop=drop)``."""
    model.load_checkpoint_state(state, source, drop=drop)


def save_native_model(
    model: OneVisionModel,
    directory: str | Path,
    *,
    config: OneVisionConfig | None = None,
    state_dict: dict[str, Any] | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Same as ``model.save_pretrained(directory, ...)`` (no tokenizer)."""
    return model.save_pretrained(
        directory, config=config, state_dict=state_dict, max_shard_bytes=max_shard_bytes
    )


def load_native_model(directory: str | Path, *, dtype: Any = None, model_cls: Any = None) -> OneVisionModel:
    """Same as ``(model_cls or OneVisionModel).from_pretrained(directory, dtype=dtype)``."""
    return (model_cls or OneVisionModel).from_pretrained(directory, dtype=dtype)
