"""Named model architectures as data (open_clip style): the JSON files beside this module, plus any added at run time.

Each entry is a partial :class:`~onevision.config.OneVisionConfig` mapping (what differs from the defaults) with
an optional ``description``, read by the one strict reader, so a bad file fails when it is added. Recipes name an
entry with ``model.preset``; :func:`get_model_config` returns a fresh config each time.

    >>> import onevision
    >>> onevision.list_models()
    ['llava-next-vicuna-7b', 'llava-onevision-qwen2-0.5b', 'llava-onevision-qwen2-7b', 'llava15-hd-vicuna-7b', 'tiny']
    >>> onevision.get_model_config("tiny").vision.arch
    'siglip'

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onevision.config import OneVisionConfig
from onevision.errors import ConfigError, UnknownComponentError

_HERE = Path(__file__).parent
_CONFIGS: dict[str, dict[str, Any]] = {}
_SUFFIXES = (".json", ".yaml", ".yml")


def add_model_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *, name: str | None = None
) -> list[str]:
    """Register named model configs: a ``.json`` / ``.yaml`` file (named after its stem), a directory of them, or
    a mapping (``name`` required). Each is validated now; an existing name is replaced. Returns the names added."""
    if isinstance(path_or_dict, Mapping):
        if not name:
            raise ConfigError("add_model_config(mapping) needs name=...")
        _CONFIGS[name] = _checked(dict(path_or_dict), name)
        return [name]
    path = Path(path_or_dict)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
    elif path.is_file() and path.suffix in _SUFFIXES:
        files = [path]
    else:
        raise ConfigError(f"add_model_config: {path} is not a .json/.yaml file or a directory of them")
    added = []
    for file in files:
        key = name if name and len(files) == 1 else file.stem
        _CONFIGS[key] = _checked(_read(file), f"{file}")
        added.append(key)
    return added


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(_CONFIGS)


def describe_model(name: str) -> str:
    """The one-line description of model config ``name``."""
    return str(_entry(name).get("description", ""))


def get_model_config(name: str) -> OneVisionConfig:
    """A fresh :class:`OneVisionConfig` of the named architecture."""
    data = copy.deepcopy(_entry(name))
    data.pop("description", None)
    return OneVisionConfig.from_dict(data)


def model_config_dict(name: str) -> dict[str, Any]:
    """The stored mapping of model config ``name`` (a copy, ``description`` removed), e.g. to merge overrides on."""
    data = copy.deepcopy(_entry(name))
    data.pop("description", None)
    return data


def _entry(name: str) -> dict[str, Any]:
    if name not in _CONFIGS:
        raise UnknownComponentError("model config", name, _CONFIGS)
    return _CONFIGS[name]


def _read(file: Path) -> dict[str, Any]:
    text = file.read_text()
    if file.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a model config must be a mapping, got {type(data).__name__}")
    return data


def _checked(data: dict[str, Any], where: str) -> dict[str, Any]:
    body = {k: v for k, v in data.items() if k != "description"}
    try:
        OneVisionConfig.from_dict(copy.deepcopy(body))
    except ConfigError as exc:
        raise ConfigError(f"model config {where}: {exc}") from None
    return data


add_model_config(_HERE)
