"""Vision-encoder families as declared data (:class:`VisionArch`: CLS, default feature layer, normalisation, feature
rule, transformers model types) and their registry; torch-free, so recipes and importers can read it cheaply."""

from __future__ import annotations

from dataclasses import dataclass

import anyres
from onevision.errors import ConfigError, UnknownComponentError


@dataclass(frozen=True)
class VisionArch:
    """What an encoder family declares whatever library builds it.

    * ``has_cls``: its towers prepend a CLS token (dropped from the features);
    * ``feature_layer``: the default feature block, indexed like transformers' ``hidden_states``;
    * ``image_mean`` / ``image_std``: its normalisation (a checkpoint's own values win);
    * ``feature_rule``: one line describing which output is the feature;
    * ``hf_model_types``: transformers ``model_type`` values of its towers (read by the checkpoint importers).
    """

    name: str
    has_cls: bool
    feature_layer: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    feature_rule: str
    hf_model_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"VisionArch.name must be a non-empty string, got {self.name!r}")
        for what, value in (("image_mean", self.image_mean), ("image_std", self.image_std)):
            if len(value) != 3:
                raise ConfigError(f"VisionArch {self.name!r}: {what} must have 3 values, got {value!r}")
        if any(v <= 0 for v in self.image_std):
            raise ConfigError(f"VisionArch {self.name!r}: image_std must be positive, got {self.image_std!r}")
        if not self.feature_rule:
            raise ConfigError(f"VisionArch {self.name!r}: declare its feature_rule (one line)")


_ARCHS: dict[str, VisionArch] = {}


def register_arch(arch: VisionArch, *, overwrite: bool = False) -> VisionArch:
    """Register an encoder family (``VisionConfig.arch`` and a recipe's ``model.vision_arch`` name it)."""
    if arch.name in _ARCHS and not overwrite:
        raise ConfigError(
            f"vision arch {arch.name!r} is already registered; pass overwrite=True to replace it"
        )
    _ARCHS[arch.name] = arch
    return arch


def get_arch(name: str) -> VisionArch:
    """The registered family ``name``."""
    arch = _ARCHS.get(name)
    if arch is None:
        raise UnknownComponentError("vision arch", name, _ARCHS)
    return arch


def list_archs() -> list[str]:
    """Registered encoder family names."""
    return sorted(_ARCHS)


def hf_vision_arches() -> dict[str, str]:
    """transformers vision ``model_type`` -> family name, from every family's declared ``hf_model_types``."""
    return {model_type: arch.name for arch in _ARCHS.values() for model_type in arch.hf_model_types}


SIGLIP = register_arch(
    VisionArch(
        "siglip",
        has_cls=False,
        feature_layer=-2,
        image_mean=anyres.SIGLIP_MEAN,
        image_std=anyres.SIGLIP_STD,
        feature_rule="block output at feature_layer (reference: last block dropped), no post-layernorm, no head, "
        "no CLS",
        hf_model_types=("siglip_vision_model", "siglip"),
    )
)
CLIP = register_arch(
    VisionArch(
        "clip",
        has_cls=True,
        feature_layer=-2,
        image_mean=anyres.CLIP_MEAN,
        image_std=anyres.CLIP_STD,
        feature_rule="block output at feature_layer (reference: penultimate), CLS token dropped",
        hf_model_types=("clip_vision_model", "clip"),
    )
)
