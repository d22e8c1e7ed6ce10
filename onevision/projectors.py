"""Vision-to-LLM projectors behind a small registry: ``linear`` and ``mlp<N>x_gelu``.

``mlp2x_gelu`` is the reference projector: ``Linear(vision -> llm)``, exact (erf) GELU, ``Linear(llm -> llm)``.
Modules are ``nn.Sequential`` so the parameter names (``0.weight``, ``2.weight``) match the original
LLaVA-NeXT ``mm_projector`` keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from onevision.config import ProjectorConfig
from onevision.errors import UnknownComponentError

_MLP = re.compile(r"mlp(\d+)x_gelu")

#: Exact names and ``(pattern, description)`` families.
_FACTORIES: dict[str, Callable[[ProjectorConfig, int, int], nn.Module]] = {}


def register_projector(name: str, factory: Callable[[ProjectorConfig, int, int], nn.Module]) -> None:
    """Register ``factory(config, vision_width, llm_width) -> nn.Module`` under an exact ``type`` name."""
    _FACTORIES[name] = factory


def list_projectors() -> list[str]:
    return sorted([*_FACTORIES, "mlp<N>x_gelu"])


def mlp_depth(projector_type: str) -> int | None:
    """``N`` for an ``mlp<N>x_gelu`` type, else ``None``."""
    match = _MLP.fullmatch(projector_type)
    return int(match.group(1)) if match else None


def build_projector(config: ProjectorConfig, vision_width: int, llm_width: int) -> nn.Module:
    """Build the projector ``config.type`` names."""
    if config.type in _FACTORIES:
        return _FACTORIES[config.type](config, vision_width, llm_width)
    depth = mlp_depth(config.type)
    if depth is not None and depth >= 1:
        return mlp_projector(depth, vision_width, llm_width, bias=config.bias)
    raise UnknownComponentError("projector type", config.type, list_projectors())


def mlp_projector(depth: int, vision_width: int, llm_width: int, *, bias: bool = True) -> nn.Sequential:
    """``depth`` linear layers with exact GELU between them (``mlp2x_gelu`` for ``depth=2``)."""
    layers: list[nn.Module] = [nn.Linear(vision_width, llm_width, bias=bias)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(llm_width, llm_width, bias=bias)]
    return nn.Sequential(*layers)


register_projector("linear", lambda cfg, v, d: nn.Sequential(nn.Linear(v, d, bias=cfg.bias)))
