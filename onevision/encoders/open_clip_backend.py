"""The ``open_clip`` encoder backend: an open_clip visual tower (its own ``VisionTransformer``, or a timm trunk
for open_clip's SigLIP models) of any registered family, pruned at the feature layer."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

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
from onevision.encoders.timm_backend import TimmEncoder
from onevision.errors import ConfigError


@register_encoder
class OpenClipEncoder(VisionEncoder):
    """An open_clip visual tower of any registered family: its own ``VisionTransformer`` or a timm trunk
    (open_clip's SigLIP models)."""

    backend: ClassVar[str] = "open_clip"
    arches: ClassVar[tuple[str, ...] | None] = None
    block_pattern: ClassVar[str] = r"(?:visual\.transformer\.resblocks|timm\.trunk\.blocks)\.(\d+)\."

    def __init__(self, config: VisionConfig):
        super().__init__()
        import open_clip
        from open_clip.transformer import VisionTransformer

        arch = get_arch(config.arch)
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
            mean, std = normalisation(config, arch, declared)
            self.declare(
                dataclasses.replace(self.timm.info, backend=self.backend, image_mean=mean, image_std=std)
            )
        else:
            if not isinstance(visual, VisionTransformer):
                raise ConfigError(f"vision: unsupported open_clip visual tower {type(visual).__name__}")
            total = len(visual.transformer.resblocks)
            kept = kept_blocks(feature_layer(config, arch), total, f"vision ({config.arch})")
            visual.prune_intermediate_layers([kept - 1], prune_norm=True, prune_head=True)
            self.visual = visual
            self._index = kept - 1
            has_cls = visual.class_embedding is not None
            if has_cls != arch.has_cls:
                raise ConfigError(
                    f"vision: arch {config.arch!r} declares has_cls={arch.has_cls}, tower disagrees"
                )
            size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
            patch = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
            mean, std = normalisation(config, arch, declared)
            self.declare(
                EncoderInfo(
                    backend=self.backend,
                    arch=config.arch,
                    tile_size=int(size[0]),
                    patch_size=int(patch[0]),
                    width=int(visual.conv1.out_channels),
                    has_cls=arch.has_cls,
                    num_layers=kept,
                    image_mean=mean,
                    image_std=std,
                    feature_rule=arch.feature_rule,
                )
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
