"""The one strict ``from_dict`` of the video package's dataclasses: unknown keys are an error naming them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def strict_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls(**data)``, refusing keys that are not ``cls``'s fields (no silent drift between configs)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys: {sorted(unknown)}; expected a subset of {sorted(names)}"
        )
    return cls(**dict(data))
