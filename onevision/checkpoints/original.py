"""Original LLaVA-NeXT / LLaVA-OneVision checkpoints (``LlavaQwenForCausalLM`` etc.): import only.

Tensors: ``model.mm_projector.{0,2}``, ``model.vision_tower.vision_tower.vision_model.*``, ``model.image_newline``,
``lm_head``, the rest ``model.*``. Pinpoints are ``[w, h]`` pairs (swapped to ``(h, w)``); the vision tower's
architecture comes from ``mm_vision_tower`` (or ``vision_config=``), its number of blocks from the weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyres
import video
from onevision.archs import hf_vision_arches
from onevision.bundle import Bundle, restore_bundle
from onevision.checkpoints.io import read_config, read_state_dict
from onevision.checkpoints.mapping import ANYRES_MAX, default_template, remap
from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
from onevision.errors import CheckpointError, ConfigError, UnknownComponentError
from onevision.llm import load_tokenizer
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy

#: Original LLaVA-NeXT ``architectures`` -> LLM model_type.
ORIGINAL_ARCHITECTURES = {
    "LlavaQwenForCausalLM": "qwen2",
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaQwenMoeForCausalLM": "qwen2_moe",
    "LlavaGemmaForCausalLM": "gemma",
}

#: original tensor prefix -> ours; the first match wins.
ORIGINAL_TO_NATIVE: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower.model."),
    ("model.vision_tower.vision_tower.", "vision_tower.model."),
    ("model.mm_projector.", "projector."),
    ("model.image_newline", "image_newline"),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)

#: Fields of an original config.json that belong to the multimodal wrapper, not the LLM.
_ORIGINAL_MM_FIELDS = {
    "architectures",
    "model_type",
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "image_crop_resolution",
    "image_split_resolution",
    "tokenizer_padding_side",
    "tokenizer_model_max_length",
    "add_faster_video",
    "faster_token_stride",
    "add_time_instruction",
    "force_sample",
    "use_mm_proj",
    "vision_tower_pretrained",
    "use_pos_skipping",
    "pos_skipping_range",
    "vision_tower",
    "freeze_mm_mlp_adapter",
    "tune_mm_mlp_adapter",
    "unfreeze_mm_vision_tower",
    "pretrain_mm_mlp_adapter",
    "delay_load",
}


def original_to_config(
    cfg: dict[str, Any],
    state_keys: Iterable[str],
    *,
    vision_config: dict[str, Any] | None = None,
    rounding: str = "llava",
    template: str | None = None,
    num_frames: int = 32,
) -> OneVisionConfig:
    """Translate an original LLaVA-NeXT/OneVision ``config.json`` (+ its weight names) to a OneVisionConfig.

    The vision architecture comes from ``vision_config`` if given, else from ``mm_vision_tower`` (a hub id or a
    local directory, read with ``AutoConfig.from_pretrained``); the number of blocks from the weights (the
    reference deletes SigLIP's last block). Pinpoints are ``[w, h]`` pairs and are swapped to ``(h, w)``.
    """
    archs = cfg.get("architectures") or []
    llm_type = next((ORIGINAL_ARCHITECTURES[a] for a in archs if a in ORIGINAL_ARCHITECTURES), None)
    if llm_type is None:
        raise UnknownComponentError("original architecture", archs, ORIGINAL_ARCHITECTURES)
    if cfg.get("add_faster_video"):
        raise ConfigError("add_faster_video: true is not supported (the reference path raises NameError)")
    if vision_config is None:
        tower = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
        if not tower:
            raise ConfigError("original config has no mm_vision_tower; pass vision_config=...")
        from transformers import AutoConfig

        loaded = AutoConfig.from_pretrained(tower)
        loaded = getattr(loaded, "vision_config", loaded)
        vision_config = loaded.to_dict()
    vision_config = {
        k: v for k, v in vision_config.items() if k not in ("transformers_version", "architectures")
    }
    arch = hf_vision_arches().get(vision_config.get("model_type", ""))
    if arch is None:
        raise UnknownComponentError("vision model_type", vision_config.get("model_type"), hf_vision_arches())
    keys = list(state_keys)
    layers = {
        int(m.group(1))
        for k in keys
        if (
            m := re.match(
                r"model\.vision_tower\.vision_tower\.(?:vision_model\.)?encoder\.layers\.(\d+)\.", k
            )
        )
    }
    if not layers:
        raise CheckpointError("no vision tower weights in the checkpoint (model.vision_tower.vision_tower.*)")
    vision_config["num_hidden_layers"] = max(layers) + 1
    if arch == "siglip":
        feature_layer = -1  # the reference deletes the last block and takes the tower's output
        vision_config["vision_use_head"] = False
    else:
        feature_layer = int(cfg.get("mm_vision_select_layer", -2))
        if cfg.get("mm_vision_select_feature", "patch") != "patch":
            raise ConfigError(
                f"mm_vision_select_feature={cfg.get('mm_vision_select_feature')!r}: only 'patch'"
            )
    merge = cfg.get("mm_patch_merge_type", "flat")
    if merge not in ("spatial_unpad", "spatial_unpad_anyres_max_9"):
        raise ConfigError(
            f"mm_patch_merge_type={merge!r} is not supported (OneVision/NeXT use spatial_unpad)"
        )
    aspect = cfg.get("image_aspect_ratio")
    tile = int(vision_config.get("image_size", 384))
    pins = cfg.get("image_grid_pinpoints")
    if pins is None:
        raise ConfigError("original config has no image_grid_pinpoints")
    canvases = anyres.parse_pinpoints(pins, tile, order="wh")
    pinpoints = [[c.height, c.width] for c in canvases]
    match = ANYRES_MAX.fullmatch(str(aspect))
    if match:
        single: dict[str, Any] = {"name": f"anyres_max_{match.group(1)}"}
    elif aspect == "anyres":
        single = {"name": "anyres"}
    else:
        raise ConfigError(f"image_aspect_ratio={aspect!r} is not supported (anyres or anyres_max_<N>)")
    single.update(grid_pinpoints=pinpoints, rounding=rounding)
    patch = int(vision_config.get("patch_size", 14))
    pooling = video.FramePooling.from_llava_config(
        cfg, tile_size=tile, patch_size=patch
    )  # stride/newline rules
    projector = cfg.get("mm_projector_type", "linear")
    llm_dict = {k: v for k, v in cfg.items() if k not in _ORIGINAL_MM_FIELDS and not k.startswith("mm_")}
    llm_dict.pop("rope_scaling", None)  # LlavaQwenForCausalLM forces rope_scaling=None
    video_policy = VideoPolicy(
        num_frames=num_frames,
        pool_mode=pooling.mode,
        pool_stride=pooling.stride,
        newline_position=pooling.newline,
        time_instruction=bool(cfg.get("add_time_instruction")),
    )
    processor = ProcessorConfig(
        visual=VisualPolicy(image=ImagePolicy(single.pop("name"), single), video=video_policy),
        template=template or default_template(llm_type),
        max_length=cfg.get("tokenizer_model_max_length"),
    )
    return OneVisionConfig(
        vision=VisionConfig(
            backend="transformers", arch=arch, config=vision_config, feature_layer=feature_layer
        ),
        projector=ProjectorConfig(projector),
        llm=LLMConfig(model_type=llm_type, config=llm_dict),
        processor=processor,
    )


def import_original(
    directory: str | Path,
    *,
    vision_config: dict[str, Any] | None = None,
    rounding: str = "llava",
    template: str | None = None,
    dtype: Any = None,
    num_frames: int = 32,
) -> Bundle:
    """Load an original LLaVA-NeXT / LLaVA-OneVision checkpoint (``LlavaQwenForCausalLM`` etc.).

    ``rounding="llava"`` (default) reproduces the reference unpad rule; pass ``"hf"`` to match transformers.
    The tokenizer gets ``<image>`` / ``<video>`` (the reference uses ``-200`` instead) and the embeddings grow if
    needed; their new rows are never read (placeholders are replaced by visual features).
    """
    d = Path(directory)
    raw = read_state_dict(d)
    config = original_to_config(
        read_config(d),
        raw,
        vision_config=vision_config,
        rounding=rounding,
        template=template,
        num_frames=num_frames,
    )
    state = remap(raw, ORIGINAL_TO_NATIVE, str(d))
    if "language_model.model.faster_token" in state:
        raise CheckpointError(f"{d}: model.faster_token (add_faster_video) is not supported")
    tokenizer = load_tokenizer(str(d))
    return restore_bundle(config, tokenizer, state, str(d), dtype=dtype)
