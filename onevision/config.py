"""Typed, JSON-serialisable model configuration: which components to build and the per-modality token policy.

Components are chosen by typed fields that are registry keys (``VisionConfig.backend`` / ``arch``,
``ProjectorConfig.type``, ``LLMConfig.model_type``), never by parsing a path or a model name. Where the weights
come from (``pretrained``: a hub id or a local directory) is a separate field. Every ``from_dict`` is the one
strict reader, :func:`onevision.schema.from_dict`; the visual policy is :class:`onevision.policy.VisualPolicy`.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onevision import schema
from onevision.errors import ConfigError
from onevision.policy import VideoPolicy, VisualPolicy, policy_from_v1

#: Format marker written into a native checkpoint's ``config.json``.
FORMAT_NAME = "onevision"
#: 2: the processor's policy is one ``visual`` mapping (:class:`VisualPolicy`); format 1 is still read.
FORMAT_VERSION = 2

LabelMask = Literal["assistant_only", "llava_next"]
#: transformers' attention kernels (``None``: transformers' default)
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"]


@dataclass
class VisionConfig:
    """The vision encoder: a registry key ``(backend, arch)`` plus where its weights and architecture come from.

    * ``backend``: ``"transformers"`` (``SiglipVisionModel`` / ``CLIPVisionModel``), ``"open_clip"`` or ``"timm"``.
    * ``arch``: ``"siglip"`` or ``"clip"``; selects the feature rule (SigLIP: no CLS; CLIP: CLS dropped).
    * ``pretrained``: hub id or local directory (transformers, timm ``hf-hub:`` ids), or an open_clip pretrained tag;
      ``None`` builds random weights from ``config`` (and a checkpoint's own weights are loaded afterwards).
    * ``model_name``: the timm / open_clip architecture name, passed through to that library unparsed.
    * ``config``: backend architecture parameters (a transformers vision config dict, timm ``create_model``
      keyword arguments, or an open_clip ``VisionTransformer`` config).
    * ``feature_layer``: which block output is the feature, indexed like transformers' ``hidden_states``
      (``-1`` = last block, ``-2`` = penultimate). ``None`` uses the arch's reference rule (``-2`` for both
      SigLIP-so400m and CLIP-L). Blocks after it are removed when the encoder is built, so post-layernorm and
      heads are never computed.
    * ``image_mean`` / ``image_std``: override the normalisation the encoder declares.
    * ``attn_implementation``: the transformers attention kernel (``None``: transformers' default).
    """

    backend: str = "transformers"
    arch: str = "siglip"
    pretrained: str | None = None
    model_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    feature_layer: int | None = None
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    attn_implementation: AttnImplementation | None = None

    def __post_init__(self) -> None:
        if self.feature_layer is not None and not isinstance(self.feature_layer, int):
            raise ConfigError(f"vision.feature_layer must be an int, got {self.feature_layer!r}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise ConfigError(f"vision.{name} must have 3 values, got {value!r}")
                setattr(self, name, tuple(float(v) for v in value))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
        return schema.from_dict(cls, data, prefix="vision.")


@dataclass
class ProjectorConfig:
    """The vision-to-LLM projector: ``"linear"`` or ``"mlp<N>x_gelu"`` (the reference ``mlp2x_gelu``)."""

    type: str = "mlp2x_gelu"
    bias: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectorConfig:
        return schema.from_dict(cls, data, prefix="projector.")


@dataclass
class LLMConfig:
    """The language model: a transformers causal LM family (``model_type``: ``qwen2``, ``llama``, ...).

    ``pretrained`` is a hub id or local directory loaded with ``from_pretrained``; otherwise the model is built
    with random weights from ``config`` (a transformers config dict of that ``model_type``).
    ``tokenizer`` is where the tokenizer comes from when it is not stored next to the weights.
    ``attn_implementation`` is the transformers attention kernel (``None``: transformers' default).
    """

    model_type: str = "qwen2"
    backend: str = "transformers"
    pretrained: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    attn_implementation: AttnImplementation | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLMConfig:
        return schema.from_dict(cls, data, prefix="llm.")


def _inference_policy() -> VisualPolicy:
    """The processor's default: OneVision's strategies, 32 uniform frames per video, one newline per video."""
    return VisualPolicy(video=VideoPolicy(num_frames=32, newline_position="one_token"))


@dataclass
class ProcessorConfig:
    """What the processor needs besides its tokenizer: the visual policy, the chat template and the budget.

    * ``visual``: the per-modality :class:`~onevision.policy.VisualPolicy` (the same schema as a recipe's
      ``visual:``), resolved against the encoder when a model is built (tile size, patch size, normalisation), so
      a saved processor needs no model to run. Default: ``anyres_max_9`` for one image, ``pad`` for several,
      32 uniform frames per video with one newline.
    * ``template``: chat template name (see :mod:`onevision.templates`).
    * ``label_mask``: ``assistant_only`` (default) or ``llava_next`` (the reference masking, for parity studies).
    * ``max_length``: context budget in tokens; ``None`` uses the LLM's ``max_position_embeddings``.
    """

    visual: VisualPolicy = field(default_factory=_inference_policy)
    template: str = "qwen_1_5"
    label_mask: LabelMask = "assistant_only"
    max_length: int | None = None
    image_token: str = "<image>"
    video_token: str = "<video>"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessorConfig:
        """Strictly from a mapping; a format-1 mapping (``single_image``/``multi_image``/``video``/``sampling``)
        is read too."""
        data = dict(data)
        legacy = {k: data.pop(k) for k in ("single_image", "multi_image", "video", "sampling") if k in data}
        if legacy:
            if "visual" in data:
                raise ConfigError(f"processor: {sorted(legacy)} (format 1) and visual cannot both be given")
            data["visual"] = policy_from_v1(legacy)
        return schema.from_dict(cls, data, prefix="processor.")


@dataclass
class OneVisionConfig:
    """A whole model: vision encoder, projector, LLM and the processor policy.

    ``image_token_id`` / ``video_token_id`` are the placeholder ids in the tokenizer saved with the model (filled in
    when a model is built with its tokenizer).
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    image_token_id: int | None = None
    video_token_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict including the format marker."""
        out = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        out.update(_jsonable(dataclasses.asdict(self)))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OneVisionConfig:
        data = dict(data)
        fmt = data.pop("format", FORMAT_NAME)
        version = data.pop("format_version", FORMAT_VERSION)
        if fmt != FORMAT_NAME:
            raise ConfigError(f"not a onevision config (format={fmt!r})")
        if version > FORMAT_VERSION:
            raise ConfigError(
                f"config format_version {version} is newer than this onevision ({FORMAT_VERSION})"
            )
        if "processor" in data:
            data["processor"] = ProcessorConfig.from_dict(data["processor"])  # reads format 1 too
        return schema.from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> OneVisionConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
