"""Vision-to-LLM projectors behind an open registry: ``linear`` and the ``mlp<N>x_gelu`` family.

``mlp2x_gelu`` is the reference projector: ``Linear(vision -> llm)``, exact (erf) GELU, ``Linear(llm -> llm)``.
Modules are ``nn.Sequential`` so the parameter names (``0.weight``, ``2.weight``) match the original
LLaVA-NeXT ``mm_projector`` keys. Adding a projector is one :class:`Projector` subclass and one
``@register_projector``; :func:`build_projector` checks that the module maps ``vision_width`` to ``llm_width``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from torch import nn

from onevision.config import ProjectorConfig
from onevision.errors import ConfigError, UnknownComponentError

_MLP = re.compile(r"mlp(\d+)x_gelu")


class Projector:
    """Mixin of every projector module (``class Mine(Projector, nn.Sequential)``).

    **Subclass contract** (checked when the subclass is created):

    * ``name`` (``ClassVar[str]``): the ``ProjectorConfig.type`` it answers to; ``display_name`` names a family
      in listings (``mlp<N>x_gelu``), and :meth:`parse_name` may accept more names than ``name``;
    * :meth:`from_config` ``(config, vision_width, llm_width, **params)``: the module, mapping
      ``[..., vision_width]`` to ``[..., llm_width]`` (checked by :func:`build_projector`).
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        where = f"projector class {cls.__name__}"
        if not issubclass(cls, nn.Module):
            raise TypeError(f"{where} must also subclass torch.nn.Module (e.g. nn.Sequential)")
        if not isinstance(cls.__dict__.get("name"), str) or not cls.__dict__["name"]:
            raise TypeError(f"{where} must declare its registry name: name: ClassVar[str] = '...'")
        if cls.from_config.__func__ is Projector.from_config.__func__:
            raise TypeError(
                f"{where} must implement the classmethod from_config(config, vision_width, llm_width)"
            )

    @classmethod
    def parse_name(cls, type_name: str) -> dict[str, Any] | None:
        """Parameters a ``type`` implies for this class, or ``None`` when it is not this class's."""
        return {} if type_name == cls.name else None

    @classmethod
    def from_config(
        cls, config: ProjectorConfig, vision_width: int, llm_width: int, **params: Any
    ) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - abstract


_PROJECTORS: dict[str, type[Projector]] = {}


def register_projector(cls: type[Projector], *, overwrite: bool = False) -> type[Projector]:
    """Register a projector class under its declared ``name`` (a class decorator; returns the class)."""
    if not (isinstance(cls, type) and issubclass(cls, Projector)) or not cls.__dict__.get("name"):
        raise TypeError(f"{cls!r} is not a Projector subclass declaring its own name")
    if cls.name in _PROJECTORS and not overwrite:
        raise ConfigError(f"projector {cls.name!r} is already registered; pass overwrite=True to replace it")
    _PROJECTORS[cls.name] = cls
    return cls


def list_projectors() -> list[str]:
    """Registered projector types (a family by its display name, e.g. ``mlp<N>x_gelu``)."""
    return sorted(cls.display_name or cls.name for cls in _PROJECTORS.values())


def build_projector(config: ProjectorConfig, vision_width: int, llm_width: int) -> nn.Module:
    """Build the projector ``config.type`` names and check that it maps ``vision_width`` to ``llm_width``."""
    for cls in [_PROJECTORS[config.type]] if config.type in _PROJECTORS else _PROJECTORS.values():
        params = cls.parse_name(config.type)
        if params is not None:
            module = cls.from_config(config, vision_width, llm_width, **params)
            break
    else:
        raise UnknownComponentError("projector type", config.type, list_projectors())
    probe = next(module.parameters(), None)
    if probe is not None and probe.device.type == "meta":
        return module  # no values to run on; the shapes are checked when the weights arrive
    with torch.no_grad():
        out = module(torch.zeros(1, vision_width, dtype=probe.dtype if probe is not None else None))
    if tuple(out.shape) != (1, llm_width):
        raise ConfigError(
            f"projector {config.type!r} maps [1, {vision_width}] to {list(out.shape)}; it must give [1, {llm_width}]"
        )
    return module


def mlp_depth(projector_type: str) -> int | None:
    """``N`` for an ``mlp<N>x_gelu`` type, else ``None``."""
    params = MLPGeluProjector.parse_name(projector_type)
    return None if params is None else params["depth"]


@register_projector
class LinearProjector(Projector, nn.Sequential):
    """One ``Linear(vision -> llm)`` (LLaVA-1.0's projector)."""

    name: ClassVar[str] = "linear"

    @classmethod
    def from_config(
        cls, config: ProjectorConfig, vision_width: int, llm_width: int, **params: Any
    ) -> nn.Module:
        return cls(nn.Linear(vision_width, llm_width, bias=config.bias))


@register_projector
class MLPGeluProjector(Projector, nn.Sequential):
    """``mlp<N>x_gelu``: ``N`` linear layers with exact GELU between them (the reference ``mlp2x_gelu``)."""

    name: ClassVar[str] = "mlp2x_gelu"
    display_name: ClassVar[str] = "mlp<N>x_gelu"

    @classmethod
    def parse_name(cls, type_name: str) -> dict[str, Any] | None:
        match = _MLP.fullmatch(type_name)
        return {"depth": int(match.group(1))} if match and int(match.group(1)) >= 1 else None

    @classmethod
    def from_config(
        cls, config: ProjectorConfig, vision_width: int, llm_width: int, *, depth: int = 2, **params: Any
    ) -> nn.Module:
        return mlp_projector(depth, vision_width, llm_width, bias=config.bias)


def mlp_projector(depth: int, vision_width: int, llm_width: int, *, bias: bool = True) -> MLPGeluProjector:
    """``depth`` linear layers with exact GELU between them (``mlp2x_gelu`` for ``depth=2``)."""
    layers: list[nn.Module] = [nn.Linear(vision_width, llm_width, bias=bias)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(llm_width, llm_width, bias=bias)]
    return MLPGeluProjector(*layers)
