"""What the HF and original-LLaVA converters share: key renaming by prefix tables and the typed name lookups.

The lookups translate typed config fields of foreign formats (a vision ``model_type``, an LLM family, an
``anyres_max_<N>`` aspect-ratio value) to ours; nothing is read from a path or a model name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from onevision.errors import KeyMismatchError

#: ``anyres_max_<N>``: the aspect-ratio value of HF ``vision_aspect_ratio`` and original ``image_aspect_ratio``.
ANYRES_MAX = re.compile(r"anyres_max_(\d+)")

#: LLM family -> default chat template on import (overridable with ``template=``).
DEFAULT_TEMPLATE = {
    "qwen2": "qwen_1_5",
    "qwen2_moe": "qwen_1_5",
    "qwen3": "qwen_1_5",
    "llama": "vicuna_v1",
    "mistral": "vicuna_v1",
    "gemma": "vicuna_v1",
}


def default_template(llm_type: str) -> str:
    """The chat template an imported checkpoint of this LLM family gets unless ``template=`` is given."""
    return DEFAULT_TEMPLATE.get(llm_type, "qwen_1_5")


def remap(state: dict[str, Any], table: Iterable[tuple[str, str]], source: str) -> dict[str, Any]:
    """Rename keys by the first matching prefix; keys no rule covers raise :class:`KeyMismatchError`."""
    rules = list(table)
    out, unknown = {}, []
    for key, value in state.items():
        for old, new in rules:
            if key.startswith(old):
                out[new + key[len(old) :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyMismatchError(source, [], unknown)
    return out
