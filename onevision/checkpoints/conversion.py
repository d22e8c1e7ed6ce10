"""Load a checkpoint of any supported format as a :class:`~onevision.bundle.Bundle`, and convert between formats."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onevision.bundle import Bundle
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
}
#: the formats :func:`convert` writes.
TARGETS = ("onevision", "hf", "original")


def load_checkpoint(path_or_hub_id: str, *, format: str = "auto", **kwargs: Any) -> Bundle:
    """Load a local directory or hub id of any supported format (``format="auto"``: detected from config.json).

    Options that the format's loader does not take raise :class:`ConfigError` listing the accepted ones.
    """
    directory = resolve_path(path_or_hub_id)
    fmt = detect_format(directory) if format == "auto" else format
    if fmt not in LOADERS:
        raise UnknownComponentError("checkpoint format", fmt, LOADERS)
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
    if to == "hf":
        return export_hf(bundle, dst, force=force)
    if to == "original":
        return export_original(bundle, dst, force=force)
    return save_native(bundle, dst)
