"""Tensor and JSON IO of checkpoint directories: safetensors read/write with sharding and its index, config.json.

This module sits below the model (it imports only :mod:`onevision.errors`), so ``OneVisionModel.save_pretrained``
and ``from_pretrained`` can use it. Which weight files a directory holds is decided by one rule,
:func:`weight_files`: the index JSON when there is one, else the single weights file; several weight files and no
index are refused instead of being merged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from onevision.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
#: The index of sharded ``.bin`` weights (old checkpoints; read with ``torch.load(weights_only=True)`` only).
BIN_INDEX_NAME = "pytorch_model.bin.index.json"

#: The weight files :func:`write_state_dict` writes (and so the only ones it may replace): ``model.safetensors``,
#: its shards ``model-00001-of-00003.safetensors`` and the shard index.
_WEIGHT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json")


def _indexed_files(directory: Path, index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a weight index (needs a 'weight_map' object): {exc!r}") from None
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(f"{index}: lists weight file(s) that are missing: {missing}")
    return [directory / n for n in names]


def weight_files(directory: str | Path) -> list[Path]:
    """The weight files of a checkpoint directory: the files its index JSON lists (``model.safetensors.index.json``,
    else ``pytorch_model.bin.index.json``), else its one ``*.safetensors`` file, else its one ``*.bin`` file.

    Raises :class:`CheckpointError` for a directory without weights, and for one with several ``*.safetensors``
    (or ``*.bin``) files and no index: which of them form the model is not knowable, so nothing is guessed.
    """
    d = Path(directory)
    for index in (d / INDEX_NAME, d / BIN_INDEX_NAME):
        if index.is_file():
            return _indexed_files(d, index)
    for pattern in ("*.safetensors", "*.bin"):
        found = sorted(d.glob(pattern))
        if len(found) == 1:
            return found
        if found:
            names = ", ".join(p.name for p in found)
            raise CheckpointError(
                f"{d}: {len(found)} {pattern} files ({names}) and no index JSON; add the index that lists the "
                f"shards ({INDEX_NAME}), or keep only the model's weight file in the directory"
            )
    raise CheckpointError(f"{d}: no weights (*.safetensors or *.bin)")


def read_state_dict(directory: str | Path) -> dict[str, Any]:
    """All tensors of a checkpoint directory's :func:`weight_files`: safetensors, or ``*.bin`` read with
    ``torch.load(weights_only=True)`` (nothing is unpickled)."""
    state: dict[str, Any] = {}
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(path)))
        else:
            state.update(_load_bin(path))
    return state


class _Shard:
    """One safetensors file, opened once (``safe_open`` memory-maps it); tensors read from it are views of the
    mapping until cast or moved, and keep it alive themselves."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        self.handle = safe_open(str(path), framework="pt")


class LazyTensor:
    """One tensor of a safetensors file, read only when :meth:`load` is called (memory-mapped, no copy on CPU).

    ``shape`` and ``dtype`` come from the file header, so keys and shapes can be checked before any weight is read.
    """

    __slots__ = ("dtype", "key", "shape", "shard")

    def __init__(self, shard: _Shard, key: str, shape: tuple[int, ...], dtype: Any):
        self.shard, self.key, self.shape, self.dtype = shard, key, shape, dtype

    @property
    def path(self) -> Path:
        return self.shard.path

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def load(self, device: Any = "cpu", dtype: Any = None) -> Any:
        """The tensor on ``device`` in ``dtype``: a view of the mapped file when both match it, else one copy; on
        the ``meta`` device, its shape and dtype only (nothing is read)."""
        import torch

        if torch.device(device).type == "meta":
            floating = self.dtype.is_floating_point and dtype is not None
            return torch.empty(self.shape, dtype=dtype if floating else self.dtype, device="meta")
        tensor = self.shard.handle.get_tensor(self.key)
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(device=device, dtype=dtype)
        return tensor.to(device)

    def __repr__(self) -> str:
        return f"LazyTensor({self.path.name}:{self.key}, shape={self.shape}, dtype={self.dtype})"


def as_tensor(value: Any, device: Any = None, dtype: Any = None) -> Any:
    """A loaded tensor for ``value`` (a tensor or a :class:`LazyTensor`) on ``device`` in ``dtype`` (floats only)."""
    if isinstance(value, LazyTensor):
        return value.load("cpu" if device is None else device, dtype)
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        value = value.to(dtype)
    return value if device is None else value.to(device)


def open_state_dict(directory: str | Path) -> dict[str, Any]:
    """The tensors of :func:`weight_files` without reading them: :class:`LazyTensor` per safetensors tensor
    (sharded or not); ``*.bin`` files in torch's zip format are memory-mapped (``torch.load(weights_only=True,
    mmap=True)``, nothing unpickled), a legacy ``*.bin`` is read whole."""
    state: dict[str, Any] = {}
    for path in weight_files(directory):
        if path.suffix != ".safetensors":
            state.update(_load_bin(path))
            continue
        shard = _Shard(path)
        for key in shard.handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
            sl = shard.handle.get_slice(key)
            dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype())
            if dtype is None:
                raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {sl.get_dtype()}")
            state[key] = LazyTensor(shard, key, tuple(sl.get_shape()), dtype)
    return state


def _load_bin(path: Path) -> dict[str, Any]:
    """The tensors of a ``*.bin`` weights file, memory-mapped when its format allows (torch's zip format)."""
    import zipfile

    import torch

    mmap = zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def _dtypes() -> dict[str, Any]:
    import torch

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64"}
    names.update({"I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"})
    names.update({"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"})
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


class _LazyDtypes(dict):
    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if not self:
            self.update(_dtypes())
        return super().get(key, default)


_SAFETENSORS_DTYPES = _LazyDtypes()


def _is_weights_file(name: str) -> bool:
    return _WEIGHT_FILE.fullmatch(name) is not None


def write_state_dict(
    state: dict[str, Any],
    directory: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write safetensors (sharded with an HF-style index above ``max_shard_bytes``); returns the file names.

    Weight files an earlier call wrote (``model.safetensors``, ``model-*-of-*.safetensors``, the index) are
    replaced; any other file in ``directory`` is kept.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    meta = {"format": "pt", **(metadata or {})}
    for stale in [*d.glob("model*.safetensors"), d / INDEX_NAME]:
        if _is_weights_file(stale.name) and stale.is_file():  # only names this function writes
            stale.unlink()
    if len(shards) == 1:
        save_file(shards[0], str(d / WEIGHTS_NAME), metadata=meta)
        return [WEIGHTS_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(d / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    write_json({"metadata": {"total_size": total}, "weight_map": weight_map}, d / INDEX_NAME)
    return names


def read_config(directory: str | Path) -> dict[str, Any]:
    """A checkpoint directory's ``config.json`` as a dict (:class:`CheckpointError` if missing or invalid)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented, key-sorted JSON with a final newline (config, index and processor files)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
