"""Where each weight of a model goes when it is loaded: a device, a ``device_map``, accelerate's ``"auto"`` map
over ``max_memory``, or the disk (weights read from their safetensors file, or a folder we write, at each forward).

Used by :meth:`onevision.model.OneVisionModel.load_checkpoint_state`; the model is built on the meta device first,
so every weight is read once, straight to where this module says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onevision.checkpoints.io import LazyTensor
from onevision.errors import ConfigError

DISK = "disk"
#: the file that marks a folder as one this library writes offloaded weights into (and may overwrite)
OFFLOAD_MARKER = ".onevision-offload"


def resolve_device_map(model: nn.Module, device_map: Any, max_memory: Any, dtype: Any) -> dict[str, Any]:
    """``device_map`` as a dict ``module prefix -> device``: a dict as given, a device for everything, or
    ``"auto"`` (accelerate's ``infer_auto_device_map`` over ``max_memory``, decoder blocks never split; what does
    not fit goes to ``"disk"``)."""
    if isinstance(device_map, dict):
        return _without_overlaps(model, dict(device_map))
    if device_map == "auto":
        from accelerate import infer_auto_device_map

        no_split = sorted({c for m in model.modules() for c in (getattr(m, "_no_split_modules", None) or ())})
        return dict(
            infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
        )
    if isinstance(device_map, (str, torch.device, int)):
        return {"": device_map}
    raise ConfigError(f"device_map={device_map!r}: expected a dict, a device or 'auto'")


def _without_overlaps(model: nn.Module, placement: dict[str, Any]) -> dict[str, Any]:
    """Split every entry that has a more specific entry below it (``{"language_model": "disk",
    "language_model.model.embed_tokens": "cpu"}``) into its children and own tensors: accelerate's hooks need
    non-overlapping modules. The more specific entries win."""
    while True:
        parent = next((k for k in placement if any(_below(o, k) for o in placement if o != k)), None)
        if parent is None:
            return placement
        device = placement.pop(parent)
        try:
            module = model.get_submodule(parent)
        except AttributeError as e:
            raise ConfigError(f"device_map key {parent!r}: the model has no such module") from e
        prefix = f"{parent}." if parent else ""
        names = [n for n, _ in module.named_children()]
        names += [n for n, _ in module.named_parameters(recurse=False)]
        names += [n for n, _ in module.named_buffers(recurse=False)]
        for name in names:
            placement.setdefault(prefix + name, device)


def _below(name: str, parent: str) -> bool:
    return parent == "" or name.startswith(parent + ".")


def placed(placement: dict[str, Any], name: str) -> str | torch.device:
    """The device of weight ``name`` under ``placement`` (longest matching module prefix), or ``"disk"``."""
    best = max(
        (p for p in placement if p == "" or name == p or name.startswith(p + ".")), key=len, default=None
    )
    if best is None:
        raise ConfigError(f"device_map places no module holding {name!r}")
    device = placement[best]
    if str(device) == DISK:
        return DISK
    return torch.device(f"cuda:{device}" if isinstance(device, int) else device)


def execution_device(placement: dict[str, Any]) -> torch.device:
    """Where disk-offloaded modules run: the first accelerator in the map, else the CPU (accelerate's rule)."""
    for device in placement.values():
        if str(device) not in (DISK, "cpu"):
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return torch.device("cpu")


class DiskOffload:
    """The offload index accelerate's hooks read weights from at each forward.

    A weight read lazily from a safetensors file is indexed by file and key (and cast on the fly when ``dtype``
    differs): nothing is copied. Any other tensor (a ``*.bin`` checkpoint, a converted weight) is written once to
    ``offload_folder`` as accelerate's ``.dat`` memmap; that folder must be new, empty, or one written here before
    (it holds :data:`OFFLOAD_MARKER`), so no file of the user's is ever overwritten.
    """

    def __init__(self, offload_folder: str | os.PathLike[str] | None):
        self.folder = None if offload_folder is None else Path(offload_folder)
        self.index: dict[str, dict[str, Any]] = {}
        self._prepared = False

    def add(self, name: str, value: Any, dtype: Any) -> None:
        """Index weight ``name`` (a tensor or a :class:`LazyTensor`), to be served in ``dtype``."""
        if isinstance(value, LazyTensor):
            entry: dict[str, Any] = {"safetensors_file": str(value.path), "weight_name": value.key}
            if dtype is not None and value.dtype.is_floating_point and value.dtype != dtype:
                entry["dtype"] = str(dtype).removeprefix("torch.")
            self.index[name] = entry
            return
        from accelerate.utils import offload_weight

        tensor = value
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        offload_weight(tensor.detach().cpu(), name, str(self._writable_folder(name)), index=self.index)

    def _writable_folder(self, name: str) -> Path:
        if self.folder is None:
            raise ConfigError(
                f"device_map puts {name!r} on 'disk' but it is not read from a safetensors file; "
                "pass offload_folder=DIR (a new or empty folder) to write offloaded weights there"
            )
        if not self._prepared:
            folder = self.folder
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"offload_folder={folder}: not a directory")
            if folder.is_dir() and any(folder.iterdir()) and not (folder / OFFLOAD_MARKER).is_file():
                raise ConfigError(
                    f"offload_folder={folder}: not empty and not an offload folder written by onevision; "
                    "pass a new or empty folder"
                )
            folder.mkdir(parents=True, exist_ok=True)
            (folder / OFFLOAD_MARKER).write_text("weights offloaded by onevision.load; safe to delete\n")
            self._prepared = True
        return self.folder

    def dispatch(self, model: nn.Module, placement: dict[str, Any]) -> None:
        """Attach accelerate's hooks: disk modules load their weights from the index at each forward."""
        from accelerate import dispatch_model

        if self._prepared:
            with open(self.folder / "index.json", "w", encoding="utf-8") as f:
                json.dump(self.index, f, indent=1)
        dispatch_model(
            model,
            device_map=placement,
            main_device=str(execution_device(placement)),  # accelerate compares it with "cpu"
            offload_dir=None if self.folder is None or not self._prepared else str(self.folder),
            offload_index=self.index,
        )
