"""Load a checkpoint of any supported format as a :class:`~onevision.bundle.Bundle`, and convert between formats."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onevision.bundle import Bundle
from onevision.checkpoints.adapter import load_adapter
from onevision.checkpoints.detect import detect_format, resolve_path
from onevision.checkpoints.hf import export_hf, import_hf
from onevision.checkpoints.native import load_native, save_native
from onevision.checkpoints.original import export_original, import_original
from onevision.errors import CheckpointError, ConfigError, UnknownComponentError

#: format -> loader; each loader takes the directory and its own keyword options.
LOADERS: dict[str, Callable[..., Bundle]] = {
    "onevision": load_native,
    "hf": import_hf,
    "original": import_original,
    "adapter": load_adapter,
}
#: the formats :func:`convert` writes.
TARGETS = ("onevision", "hf", "original")


def load_checkpoint(
    path_or_hub_id: str,
    *,
    format: str = "auto",
    quantization: str | None = None,
    quantization_skip: Sequence[str] = ("vision",),
    **kwargs: Any,
) -> Bundle:
    """Load a local directory or hub id of any supported format (``format="auto"``: detected from config.json).

    ``quantization`` (``nf4`` / ``int8``) quantizes the components except ``quantization_skip`` layer by layer
    as the weights are read (:class:`onevision.quantization.QuantizePlan`: the full-precision model never exists;
    an adapter's base is quantized after loading, before its LoRA layers are added). Options that the format's loader does not take raise :class:`ConfigError` listing the accepted ones.
    """
    directory = resolve_path(path_or_hub_id)
    fmt = detect_format(directory) if format == "auto" else format
    if fmt not in LOADERS:
        raise UnknownComponentError("checkpoint format", fmt, LOADERS)
    if quantization is not None and fmt == "adapter":
        kwargs.update(quantization=quantization, quantization_skip=quantization_skip)
    elif quantization is not None:
        from onevision.quantization import QuantizePlan

        if str(kwargs.get("device")) == "meta":
            raise ConfigError("quantization needs the weights: it cannot be combined with device='meta'")
        kwargs["quantize"] = QuantizePlan(quantization, tuple(quantization_skip))  # layer by layer as read
    accepted = set(inspect.signature(LOADERS[fmt]).parameters) - {"directory"}
    extra = sorted(set(kwargs) - accepted)
    if extra:
        raise ConfigError(
            f"option(s) {extra} do not apply to {fmt} checkpoints (accepted: {sorted(accepted)})"
        )
    return LOADERS[fmt](directory, **kwargs)


def convert(
    src: str,
    dst: str,
    *,
    to: str = "onevision",
    src_format: str = "auto",
    force: bool = False,
    **load_kwargs: Any,
) -> Path:
    """Load ``src`` (any format) and write ``dst`` as ``onevision``, ``hf`` or ``original`` (``force``: see
    :func:`export_hf` / :func:`~onevision.checkpoints.original.export_original`)."""
    if to not in TARGETS:
        raise UnknownComponentError("target format", to, TARGETS)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CheckpointError("source and destination are the same directory")
    bundle = load_checkpoint(src, format=src_format, **load_kwargs)
    if getattr(bundle.model, "lora", None) is not None:  # an adapter converts as its merged model
        from onevision.lora import merge_lora

        merge_lora(bundle.model)
    if to == "hf":
        return export_hf(bundle, dst, force=force)
    if to == "original":
        return export_original(bundle, dst, force=force)
    return save_native(bundle, dst)
