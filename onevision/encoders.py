"""Vision encoders behind a registry keyed by ``(backend, arch)``, each declaring its own metadata.

Every encoder maps ``pixel_values`` ``[N, 3, S, S]`` to patch features ``[N, grid_side**2, width]`` (CLS already
removed) following its arch's feature rule:

* ``siglip``: the output of block ``feature_layer`` (reference: the last of so400m's 27 blocks is dropped), with no
  post-layernorm and no pooling head. SigLIP has no CLS token.
* ``clip``: the penultimate block's output (``feature_layer=-2``) without the CLS token.

Blocks after the feature layer are removed at build time, so nothing unused is computed or trained; the encoder's
:meth:`~VisionEncoder.export_config` then describes the truncated tower, which rebuilds offline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from onevision.config import VisionConfig
from onevision.errors import ConfigError, UnknownComponentError

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ArchSpec:
    """What an encoder family contributes regardless of backend: CLS token, default feature layer, normalisation."""

    name: str
    has_cls: bool
    feature_layer: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    feature_rule: str


ARCHS: dict[str, ArchSpec] = {
    "siglip": ArchSpec(
        "siglip",
        False,
        -2,
        SIGLIP_MEAN,
        SIGLIP_STD,
        "block output at feature_layer (reference: last block dropped), no post-layernorm, no head, no CLS",
    ),
    "clip": ArchSpec(
        "clip",
        True,
        -2,
        CLIP_MEAN,
        CLIP_STD,
        "block output at feature_layer (reference: penultimate), CLS token dropped",
    ),
}


@dataclass(frozen=True)
class EncoderInfo:
    """Declared metadata of a built encoder; every token count derives from it."""

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


class VisionEncoder(nn.Module):
    """Base class: subclasses build the tower in ``__init__`` and implement :meth:`forward` and :meth:`export_config`."""

    backend: ClassVar[str] = ""
    arches: ClassVar[tuple[str, ...]] = ()
    info: EncoderInfo

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def export_config(self) -> VisionConfig:  # pragma: no cover - abstract
        """A config that rebuilds exactly this (truncated) tower offline, with ``pretrained=None``."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    #: parameter-name prefixes kept only so checkpoints round-trip (not used by the feature rule; frozen)
    unused_prefixes: tuple[str, ...] = ()

    def feature_parameters(self) -> list[nn.Parameter]:
        """Parameters the features depend on (everything except :attr:`unused_prefixes`)."""
        return [p for n, p in self.named_parameters() if not n.startswith(self.unused_prefixes)]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (subclasses use their library's switch)."""
        raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")

    def dummy_input(self, batch: int = 1) -> torch.Tensor:
        s = self.info.tile_size
        return torch.zeros(batch, 3, s, s, dtype=self.dtype, device=next(self.parameters()).device)


_ENCODERS: dict[tuple[str, str], Callable[[VisionConfig], VisionEncoder]] = {}


def register_encoder(backend: str, arch: str, factory: Callable[[VisionConfig], VisionEncoder]) -> None:
    """Register ``factory(config) -> VisionEncoder`` under ``(backend, arch)``."""
    _ENCODERS[(backend, arch)] = factory


def list_encoders() -> list[str]:
    """Registered encoders as ``backend/arch`` strings."""
    return sorted(f"{b}/{a}" for b, a in _ENCODERS)


def build_encoder(config: VisionConfig) -> VisionEncoder:
    """Build the encoder that ``config.backend`` / ``config.arch`` select."""
    factory = _ENCODERS.get((config.backend, config.arch))
    if factory is None:
        raise UnknownComponentError("vision encoder", f"{config.backend}/{config.arch}", list_encoders())
    return factory(config)


def kept_blocks(feature_layer: int, num_layers: int, where: str) -> int:
    """How many blocks produce ``hidden_states[feature_layer]`` (``hidden_states[0]`` is the embeddings)."""
    kept = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= kept <= num_layers:
        raise ConfigError(f"{where}: feature_layer={feature_layer} is outside a tower of {num_layers} blocks")
    return kept


def _norm(config: VisionConfig, spec: ArchSpec, declared: tuple | None = None):
    mean = config.image_mean or (tuple(declared[0]) if declared else spec.image_mean)
    std = config.image_std or (tuple(declared[1]) if declared else spec.image_std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ----------------------------------------------------------------------------------------------------------------
# transformers


class TransformersEncoder(VisionEncoder):
    """``SiglipVisionModel`` or ``CLIPVisionModel``: embeddings (+ CLIP pre-layernorm) then the kept blocks."""

    backend = "transformers"

    def __init__(self, config: VisionConfig):
        super().__init__()
        import transformers

        spec = ARCHS[config.arch]
        model_cls, config_cls = {
            "siglip": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig),
            "clip": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig),
        }[config.arch]
        overrides = {"vision_use_head": False} if config.arch == "siglip" else {}
        if config.pretrained:
            model = model_cls.from_pretrained(config.pretrained, **overrides)
        else:
            hf_config = config_cls(**{k: v for k, v in config.config.items() if k not in ("model_type",)})
            for key, value in overrides.items():
                setattr(hf_config, key, value)
            model = model_cls(hf_config)
        total = model.config.num_hidden_layers
        feature_layer = spec.feature_layer if config.feature_layer is None else config.feature_layer
        kept = kept_blocks(feature_layer, total, f"vision ({config.arch})")
        if kept < total:
            model.encoder.layers = model.encoder.layers[:kept]
            model.config.num_hidden_layers = kept
        self.model = model
        self.arch = config.arch
        self._spec = spec
        # post-layernorm is stored (HF checkpoints carry it) but never applied: freeze it so DDP/ZeRO see no
        # trainable parameter outside the graph
        self.unused_prefixes = ("model.post_layernorm.",)
        for param in model.post_layernorm.parameters():
            param.requires_grad_(False)
        self.config_in = config
        mean, std = _norm(config, spec)
        c = model.config
        self.info = EncoderInfo(
            backend="transformers",
            arch=config.arch,
            tile_size=int(c.image_size),
            patch_size=int(c.patch_size),
            width=int(c.hidden_size),
            has_cls=spec.has_cls,
            num_layers=kept,
            image_mean=mean,
            image_std=std,
            feature_rule=spec.feature_rule,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.model
        hidden = model.embeddings(pixel_values.to(self.dtype))
        if self.arch == "clip":
            hidden = model.pre_layrnorm(hidden)
        hidden = model.encoder(inputs_embeds=hidden).last_hidden_state
        return hidden[:, 1:] if self._spec.has_cls else hidden

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        from onevision.llm import set_activation_checkpointing

        set_activation_checkpointing(self.model, enable, {"use_reentrant": False})

    def export_config(self) -> VisionConfig:
        hf = self.model.config.to_dict()
        for key in ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"):
            hf.pop(key, None)
        return dataclasses.replace(
            self.config_in,
            pretrained=None,
            model_name=None,
            config=hf,
            feature_layer=-1,
            image_mean=self.info.image_mean,
            image_std=self.info.image_std,
        )

    @property
    def hf_config(self) -> Any:
        """The transformers vision config of the (truncated) tower."""
        return self.model.config


# ----------------------------------------------------------------------------------------------------------------
# timm


class TimmEncoder(VisionEncoder):
    """A timm ``VisionTransformer`` (e.g. ``vit_so400m_patch14_siglip_384``, ``vit_large_patch14_clip_336``)."""

    backend = "timm"

    def __init__(self, config: VisionConfig, trunk: nn.Module | None = None):
        super().__init__()
        spec = ARCHS[config.arch]
        if trunk is None:
            import timm

            if not config.model_name:
                raise ConfigError(
                    "vision.model_name is required for the timm backend (a timm architecture name)"
                )
            kwargs = {"num_classes": 0, **config.config}
            if config.pretrained:
                kwargs["pretrained"] = True
                overlay = _timm_weights(config.pretrained)
                if overlay:
                    kwargs["pretrained_cfg_overlay"] = overlay
            trunk = timm.create_model(config.model_name, **kwargs)
        total = len(trunk.blocks)
        feature_layer = spec.feature_layer if config.feature_layer is None else config.feature_layer
        kept = kept_blocks(feature_layer, total, f"vision ({config.arch})")
        trunk.prune_intermediate_layers([kept - 1], prune_norm=True, prune_head=True)
        self.trunk = trunk
        self._index = kept - 1
        self.config_in = config
        self._spec = spec
        pcfg = getattr(trunk, "pretrained_cfg", None) or {}
        declared = (pcfg["mean"], pcfg["std"]) if "mean" in pcfg and "std" in pcfg else None
        mean, std = _norm(config, spec, declared)
        img = trunk.patch_embed.img_size
        patch = trunk.patch_embed.patch_size
        if img[0] != img[1] or patch[0] != patch[1]:
            raise ConfigError(
                f"vision: only square tiles and patches are supported, got image {img}, patch {patch}"
            )
        if bool(trunk.num_prefix_tokens) != spec.has_cls:
            raise ConfigError(
                f"vision: arch {config.arch!r} declares has_cls={spec.has_cls} but the timm model has "
                f"{trunk.num_prefix_tokens} prefix token(s)"
            )
        self.info = EncoderInfo(
            backend="timm",
            arch=config.arch,
            tile_size=int(img[0]),
            patch_size=int(patch[0]),
            width=int(trunk.embed_dim),
            has_cls=spec.has_cls,
            num_layers=kept,
            image_mean=mean,
            image_std=std,
            feature_rule=spec.feature_rule,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.trunk.forward_intermediates(
            pixel_values.to(self.dtype),
            indices=[self._index],
            norm=False,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return feats[0]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)

    def export_config(self) -> VisionConfig:
        return dataclasses.replace(
            self.config_in,
            pretrained=None,
            config={**self.config_in.config, "depth": self.info.num_layers},
            feature_layer=-1,
            image_mean=self.info.image_mean,
            image_std=self.info.image_std,
        )


def _timm_weights(pretrained: str) -> dict[str, str] | None:
    """timm ``pretrained_cfg_overlay`` for ``pretrained``: ``"default"`` (timm's own tag), a file, a directory
    holding ``model.safetensors`` / ``pytorch_model.bin``, or a hub id (``hf-hub:`` prefix optional)."""
    import os

    if pretrained == "default":
        return None
    if os.path.isfile(pretrained):
        return {"file": pretrained}
    if os.path.isdir(pretrained):
        for name in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
            candidate = os.path.join(pretrained, name)
            if os.path.isfile(candidate):
                return {"file": candidate}
        raise ConfigError(f"vision.pretrained: no timm weights (model.safetensors) in directory {pretrained}")
    return {"hf_hub_id": pretrained.removeprefix("hf-hub:")}


# ----------------------------------------------------------------------------------------------------------------
# open_clip


class OpenClipEncoder(VisionEncoder):
    """An open_clip visual tower: its own ``VisionTransformer`` or a timm trunk (open_clip's SigLIP models)."""

    backend = "open_clip"

    def __init__(self, config: VisionConfig):
        super().__init__()
        import open_clip
        from open_clip.transformer import VisionTransformer

        spec = ARCHS[config.arch]
        if config.model_name:
            model = open_clip.create_model(config.model_name, pretrained=config.pretrained or None)
            visual = model.visual
            declared = (getattr(visual, "image_mean", None), getattr(visual, "image_std", None))
            declared = declared if all(v is not None for v in declared) else None
        elif config.pretrained:
            raise ConfigError(
                "vision.model_name (an open_clip architecture) is required with vision.pretrained"
            )
        else:
            visual = VisionTransformer(**config.config)
            declared = None
        self.timm: TimmEncoder | None = None
        if hasattr(visual, "trunk"):  # open_clip TimmModel: delegate to the timm trunk
            self.timm = TimmEncoder(dataclasses.replace(config, backend="timm"), trunk=visual.trunk)
            info = self.timm.info
            mean, std = _norm(config, spec, declared)
            self.info = dataclasses.replace(info, backend="open_clip", image_mean=mean, image_std=std)
        else:
            if not isinstance(visual, VisionTransformer):
                raise ConfigError(f"vision: unsupported open_clip visual tower {type(visual).__name__}")
            total = len(visual.transformer.resblocks)
            feature_layer = spec.feature_layer if config.feature_layer is None else config.feature_layer
            kept = kept_blocks(feature_layer, total, f"vision ({config.arch})")
            visual.prune_intermediate_layers([kept - 1], prune_norm=True, prune_head=True)
            self.visual = visual
            self._index = kept - 1
            has_cls = visual.class_embedding is not None
            if has_cls != spec.has_cls:
                raise ConfigError(
                    f"vision: arch {config.arch!r} declares has_cls={spec.has_cls}, tower disagrees"
                )
            size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
            patch = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
            mean, std = _norm(config, spec, declared)
            self.info = EncoderInfo(
                backend="open_clip",
                arch=config.arch,
                tile_size=int(size[0]),
                patch_size=int(patch[0]),
                width=int(visual.conv1.out_channels),
                has_cls=spec.has_cls,
                num_layers=kept,
                image_mean=mean,
                image_std=std,
                feature_rule=spec.feature_rule,
            )
        self.config_in = config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.timm is not None:
            return self.timm(pixel_values)
        out = self.visual.forward_intermediates(
            pixel_values.to(self.dtype),
            indices=[self._index],
            normalize_intermediates=False,
            intermediates_only=True,
            output_fmt="NLC",
        )
        return out["image_intermediates"][0]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.timm is not None:
            self.timm.set_grad_checkpointing(enable)
        else:
            self.visual.set_grad_checkpointing(enable)

    def export_config(self) -> VisionConfig:
        if self.config_in.model_name:
            # open_clip architectures are bundled JSON configs: rebuildable offline without the pretrained tag
            return dataclasses.replace(
                self.config_in,
                pretrained=None,
                image_mean=self.info.image_mean,
                image_std=self.info.image_std,
            )
        cfg = {**self.config_in.config, "layers": self.info.num_layers}
        return dataclasses.replace(
            self.config_in,
            pretrained=None,
            config=cfg,
            feature_layer=-1,
            image_mean=self.info.image_mean,
            image_std=self.info.image_std,
        )


for _arch in ARCHS:
    register_encoder("transformers", _arch, TransformersEncoder)
    register_encoder("timm", _arch, TimmEncoder)
    register_encoder("open_clip", _arch, OpenClipEncoder)
