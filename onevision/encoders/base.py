"""The vision-encoder contract: declared metadata (:class:`EncoderInfo`), the :class:`VisionEncoder` base class
that enforces it, and the backend registry (families are :mod:`onevision.archs`).

An encoder maps ``pixel_values`` ``[N, 3, S, S]`` to patch features ``[N, (S // p)**2, width]`` (CLS already
removed) following its architecture's feature rule. Adding a backend is one :class:`VisionEncoder` subclass and one
``@register_encoder``; adding a family is one :func:`register_arch`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from onevision.archs import _ARCHS, VisionArch, get_arch
from onevision.errors import ConfigError, UnknownComponentError

if TYPE_CHECKING:
    from onevision.config import VisionConfig


# ----------------------------------------------------------------------------------------------------------------
# Declared metadata


@dataclass(frozen=True)
class EncoderInfo:
    """Declared metadata of a built encoder; every token count derives from it (validated by
    :meth:`VisionEncoder.declare`)."""

    backend: str
    arch: str
    tile_size: int
    patch_size: int
    width: int
    has_cls: bool
    num_layers: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    feature_rule: str

    @property
    def grid_side(self) -> int:
        return self.tile_size // self.patch_size

    @property
    def tokens_per_tile(self) -> int:
        return self.grid_side**2


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# ----------------------------------------------------------------------------------------------------------------
# The base class


class VisionEncoder(nn.Module):
    """Base class of every encoder backend.

    **Subclass contract** (checked when the subclass is created, and after construction by :func:`build_encoder`):

    * declared class metadata: ``backend`` (``ClassVar[str]``, the registry key with the arch), ``arches``
      (``ClassVar[tuple[str, ...] | None]``: the families it builds, ``None`` for any registered family) and
      ``block_pattern`` (``ClassVar[str]``: a regex over the encoder's own parameter names matching one block's
      parameters, group 1 the block index; checkpoint importers drop blocks past the feature layer with it);
    * ``__init__(config)`` builds the tower, keeps only the blocks up to the feature layer and calls
      :meth:`declare` with the :class:`EncoderInfo` (tile size, patch size, width, CLS, normalisation, feature
      rule), which is validated there;
    * :meth:`forward` returns ``[N, info.tokens_per_tile, info.width]`` (CLS removed) and :meth:`export_config`
      a ``VisionConfig`` that rebuilds the (truncated) tower offline;
    * optional: :meth:`set_grad_checkpointing`, ``unused_prefixes`` (stored but unused weights, frozen).

    Pass ``abstract=True`` in the class statement for an intermediate base that is not registered itself.
    """

    backend: ClassVar[str] = ""
    arches: ClassVar[tuple[str, ...] | None] = ()
    block_pattern: ClassVar[str] = ""
    #: parameter-name prefixes kept only so checkpoints round-trip (not used by the feature rule; frozen)
    unused_prefixes: tuple[str, ...] = ()

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._abstract = abstract
        if abstract:
            return
        where = f"encoder class {cls.__name__}"
        if not isinstance(cls.backend, str) or not cls.backend:
            raise TypeError(f"{where} must declare backend: ClassVar[str] (its registry key)")
        if cls.arches is not None and (
            not isinstance(cls.arches, tuple)
            or not cls.arches
            or not all(isinstance(a, str) for a in cls.arches)
        ):
            raise TypeError(f"{where} must declare arches: a tuple of family names, or None for any family")
        try:
            groups = re.compile(cls.block_pattern).groups if cls.block_pattern else 0
        except re.error as exc:
            raise TypeError(f"{where}: block_pattern is not a regex ({exc})") from None
        if groups < 1:
            raise TypeError(f"{where} must declare block_pattern: a regex whose group 1 is the block index")
        for hook in ("forward", "export_config"):
            if getattr(cls, hook) is getattr(VisionEncoder, hook):
                raise TypeError(f"{where} must implement {hook}()")

    def declare(self, info: EncoderInfo) -> None:
        """Record (and validate) this encoder's metadata; every subclass calls it once its tower is built."""
        where = f"{type(self).__name__}.declare"
        for name in ("tile_size", "patch_size", "width", "num_layers"):
            if not _positive_int(getattr(info, name)):
                raise ConfigError(f"{where}: {name} must be a positive int, got {getattr(info, name)!r}")
        if info.patch_size > info.tile_size:
            raise ConfigError(f"{where}: patch_size {info.patch_size} exceeds tile_size {info.tile_size}")
        for name in ("image_mean", "image_std"):
            value = getattr(info, name)
            if len(value) != 3:
                raise ConfigError(f"{where}: {name} must have 3 values, got {value!r}")
        if any(v <= 0 for v in info.image_std):
            raise ConfigError(f"{where}: image_std must be positive, got {info.image_std!r}")
        if not info.feature_rule:
            raise ConfigError(f"{where}: feature_rule must describe the feature (one line)")
        if info.backend != self.backend:
            raise ConfigError(
                f"{where}: info.backend {info.backend!r} differs from the class's {self.backend!r}"
            )
        self._declared = info

    @property
    def info(self) -> EncoderInfo:
        """The declared metadata (see :meth:`declare`)."""
        info = self.__dict__.get("_declared")
        if info is None:
            raise TypeError(f"{type(self).__name__}.__init__ must call self.declare(EncoderInfo(...))")
        return info

    @property
    def arch(self) -> VisionArch:
        """The family this encoder was built as."""
        return get_arch(self.info.arch)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def export_config(self) -> VisionConfig:  # pragma: no cover - abstract
        """A config that rebuilds exactly this (truncated) tower offline, with ``pretrained=None``."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def feature_parameters(self) -> list[nn.Parameter]:
        """Parameters the features depend on (everything except :attr:`unused_prefixes`)."""
        return [p for n, p in self.named_parameters() if not n.startswith(self.unused_prefixes)]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (subclasses use their library's switch)."""
        raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")

    def dummy_input(self, batch: int = 1) -> torch.Tensor:
        s = self.info.tile_size
        return torch.zeros(batch, 3, s, s, dtype=self.dtype, device=next(self.parameters()).device)


# ----------------------------------------------------------------------------------------------------------------
# Registry

#: ``(backend, arch)`` -> class; ``arch`` is ``"*"`` for a class that builds any registered family
_ENCODERS: dict[tuple[str, str], type[VisionEncoder]] = {}
_ANY = "*"


def register_encoder(cls: type[VisionEncoder], *, overwrite: bool = False) -> type[VisionEncoder]:
    """Register an encoder class under its declared ``backend`` and ``arches`` (a class decorator; returns it)."""
    if not (isinstance(cls, type) and issubclass(cls, VisionEncoder)) or vars(cls).get("_abstract", True):
        raise TypeError(
            f"{cls!r} is not a concrete VisionEncoder subclass (abstract bases are not registered)"
        )
    keys = [(cls.backend, arch) for arch in cls.arches] if cls.arches is not None else [(cls.backend, _ANY)]
    for _, arch in keys:
        if arch != _ANY:
            get_arch(arch)  # the families it claims must exist
    taken = [f"{b}/{a}" for b, a in keys if (b, a) in _ENCODERS and _ENCODERS[(b, a)] is not cls]
    if taken and not overwrite:
        raise ConfigError(f"encoder(s) {taken} are already registered; pass overwrite=True to replace them")
    for key in keys:
        _ENCODERS[key] = cls
    return cls


def encoder_class(backend: str, arch: str) -> type[VisionEncoder]:
    """The class that builds ``arch`` towers with ``backend``."""
    cls = _ENCODERS.get((backend, arch)) or (_ENCODERS.get((backend, _ANY)) if arch in _ARCHS else None)
    if cls is None:
        raise UnknownComponentError("vision encoder", f"{backend}/{arch}", list_encoders())
    return cls


def list_encoders() -> list[str]:
    """Registered encoders as ``backend/arch`` strings (a backend for any family is listed for each)."""
    pairs = {(b, a) for b, a in _ENCODERS if a != _ANY}
    pairs |= {(b, a) for b, any_arch in _ENCODERS if any_arch == _ANY for a in _ARCHS}
    return sorted(f"{b}/{a}" for b, a in pairs)


def build_encoder(config: VisionConfig) -> VisionEncoder:
    """Build the encoder that ``config.backend`` / ``config.arch`` select, and check its declared metadata."""
    encoder = encoder_class(config.backend, config.arch)(config)
    info = encoder.info  # raises if __init__ never declared it
    if info.arch != config.arch:
        raise ConfigError(
            f"{type(encoder).__name__} declared arch {info.arch!r} for a {config.arch!r} config"
        )
    if info.has_cls != get_arch(config.arch).has_cls:
        raise ConfigError(
            f"vision: arch {config.arch!r} declares has_cls={get_arch(config.arch).has_cls} but "
            f"{type(encoder).__name__} built a tower with has_cls={info.has_cls}"
        )
    return encoder


def kept_blocks(feature_layer: int, num_layers: int, where: str) -> int:
    """How many blocks produce ``hidden_states[feature_layer]`` (``hidden_states[0]`` is the embeddings)."""
    kept = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= kept <= num_layers:
        raise ConfigError(f"{where}: feature_layer={feature_layer} is outside a tower of {num_layers} blocks")
    return kept


def normalisation(
    config: VisionConfig, arch: VisionArch, declared: tuple | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)``: the config's override, else what the weights declare, else the family's."""
    mean = config.image_mean or (tuple(declared[0]) if declared else arch.image_mean)
    std = config.image_std or (tuple(declared[1]) if declared else arch.image_std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def feature_layer(config: VisionConfig, arch: VisionArch) -> int:
    """The configured feature layer, else the family's default."""
    return arch.feature_layer if config.feature_layer is None else config.feature_layer
