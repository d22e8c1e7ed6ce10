"""The ``timm`` encoder backend: a timm ``VisionTransformer`` of any registered family, pruned at the feature
layer with timm's own ``prune_intermediate_layers``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from onevision.archs import get_arch
from onevision.config import VisionConfig
from onevision.encoders.base import (
    EncoderInfo,
    VisionEncoder,
    feature_layer,
    kept_blocks,
    normalisation,
    register_encoder,
)
from onevision.errors import ConfigError


@register_encoder
class TimmEncoder(VisionEncoder):
    """A timm ``VisionTransformer`` (e.g. ``vit_so400m_patch14_siglip_384``, ``vit_large_patch14_clip_336``) of any
    registered family (the family supplies CLS handling, normalisation and the default feature layer)."""

    backend: ClassVar[str] = "timm"
    arches: ClassVar[tuple[str, ...] | None] = None
    block_pattern: ClassVar[str] = r"trunk\.blocks\.(\d+)\."

    def __init__(self, config: VisionConfig, trunk: nn.Module | None = None):
        super().__init__()
        arch = get_arch(config.arch)
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
        kept = kept_blocks(feature_layer(config, arch), total, f"vision ({config.arch})")
        trunk.prune_intermediate_layers([kept - 1], prune_norm=True, prune_head=True)
        self.trunk = trunk
        self._index = kept - 1
        self.config_in = config
        pcfg = getattr(trunk, "pretrained_cfg", None) or {}
        declared = (pcfg["mean"], pcfg["std"]) if "mean" in pcfg and "std" in pcfg else None
        mean, std = normalisation(config, arch, declared)
        img = trunk.patch_embed.img_size
        patch = trunk.patch_embed.patch_size
        if img[0] != img[1] or patch[0] != patch[1]:
            raise ConfigError(
                f"vision: only square tiles and patches are supported, got image {img}, patch {patch}"
            )
        if bool(trunk.num_prefix_tokens) != arch.has_cls:
            raise ConfigError(
                f"vision: arch {config.arch!r} declares has_cls={arch.has_cls} but the timm model has "
                f"{trunk.num_prefix_tokens} prefix token(s)"
            )
        self.declare(
            EncoderInfo(
                backend=self.backend,
                arch=config.arch,
                tile_size=int(img[0]),
                patch_size=int(patch[0]),
                width=int(trunk.embed_dim),
                has_cls=arch.has_cls,
                num_layers=kept,
                image_mean=mean,
                image_std=std,
                feature_rule=arch.feature_rule,
            )
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
