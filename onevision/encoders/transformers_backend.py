"""The ``transformers`` encoder backend: ``SiglipVisionModel`` and ``CLIPVisionModel`` towers, truncated at the
feature layer, each family one subclass declaring its transformers classes."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

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

_EXPORT_DROP = ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype")


class TransformersEncoder(VisionEncoder, abstract=True):
    """A transformers vision tower: embeddings, :meth:`embed_hook`, then the kept blocks (no post-layernorm).

    Subclasses declare ``arches`` (one family), ``hf_model_class`` / ``hf_config_class`` (transformers class
    names) and ``hf_overrides`` (config values forced on every build)."""

    backend: ClassVar[str] = "transformers"
    #: the encoder's own parameter names of one block (``model.encoder.layers.<i>.``)
    block_pattern: ClassVar[str] = r"model\.encoder\.layers\.(\d+)\."
    #: where the transformers tower's own state dict sits inside this module (checkpoint key layout)
    hf_weights_prefix: ClassVar[str] = "model."
    hf_model_class: ClassVar[str] = ""
    hf_config_class: ClassVar[str] = ""
    hf_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: VisionConfig):
        super().__init__()
        import transformers

        arch = get_arch(config.arch)
        model_cls = getattr(transformers, self.hf_model_class)
        config_cls = getattr(transformers, self.hf_config_class)
        attn = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
        if config.pretrained:
            model = model_cls.from_pretrained(config.pretrained, **self.hf_overrides, **attn)
        else:
            hf_config = config_cls(**{k: v for k, v in config.config.items() if k != "model_type"})
            for key, value in self.hf_overrides.items():
                setattr(hf_config, key, value)
            if config.attn_implementation:
                hf_config._attn_implementation = config.attn_implementation
            model = model_cls(hf_config)
        total = model.config.num_hidden_layers
        kept = kept_blocks(feature_layer(config, arch), total, f"vision ({config.arch})")
        if kept < total:
            model.encoder.layers = model.encoder.layers[:kept]
            model.config.num_hidden_layers = kept
        self.model = model
        # post-layernorm is stored (HF checkpoints carry it) but never applied: freeze it so DDP/ZeRO see no
        # trainable parameter outside the graph
        self.unused_prefixes = ("model.post_layernorm.",)
        for param in model.post_layernorm.parameters():
            param.requires_grad_(False)
        self.config_in = config
        mean, std = normalisation(config, arch)
        c = model.config
        self.declare(
            EncoderInfo(
                backend=self.backend,
                arch=config.arch,
                tile_size=int(c.image_size),
                patch_size=int(c.patch_size),
                width=int(c.hidden_size),
                has_cls=arch.has_cls,
                num_layers=kept,
                image_mean=mean,
                image_std=std,
                feature_rule=arch.feature_rule,
            )
        )

    def embed_hook(self, hidden: torch.Tensor) -> torch.Tensor:
        """Applied between the patch embeddings and the first block (identity; CLIP: its pre-layernorm)."""
        return hidden

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.model
        hidden = self.embed_hook(model.embeddings(pixel_values.to(self.dtype)))
        hidden = model.encoder(inputs_embeds=hidden).last_hidden_state
        return hidden[:, 1:] if self.info.has_cls else hidden

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        from onevision.llm import set_activation_checkpointing

        set_activation_checkpointing(self.model, enable, {"use_reentrant": False})

    def export_config(self) -> VisionConfig:
        hf = self.model.config.to_dict()
        for key in _EXPORT_DROP:
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


@register_encoder
class SiglipEncoder(TransformersEncoder):
    """``SiglipVisionModel`` without its pooling head."""

    arches: ClassVar[tuple[str, ...]] = ("siglip",)
    hf_model_class: ClassVar[str] = "SiglipVisionModel"
    hf_config_class: ClassVar[str] = "SiglipVisionConfig"
    hf_overrides: ClassVar[dict[str, Any]] = {"vision_use_head": False}


@register_encoder
class ClipEncoder(TransformersEncoder):
    """``CLIPVisionModel``: its pre-layernorm runs before the blocks; the CLS token is dropped."""

    arches: ClassVar[tuple[str, ...]] = ("clip",)
    hf_model_class: ClassVar[str] = "CLIPVisionModel"
    hf_config_class: ClassVar[str] = "CLIPVisionConfig"

    def embed_hook(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.pre_layrnorm(hidden)
