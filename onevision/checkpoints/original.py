"""Original LLaVA-NeXT / LLaVA-OneVision checkpoints (``LlavaQwenForCausalLM`` etc.): import and export.

Tensors: ``model.mm_projector.{0,2}``, ``model.vision_tower.vision_tower.vision_model.*``, ``model.image_newline``,
``lm_head``, the rest ``model.*``. Pinpoints are ``[w, h]`` pairs (swapped to ``(h, w)``); the vision tower's
architecture comes from ``mm_vision_tower`` (or ``vision_config=``), its number of blocks from the weights.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyres
import video
from onevision.archs import hf_vision_arches
from onevision.bundle import Bundle, restore_bundle
from onevision.checkpoints.io import open_state_dict, read_config
from onevision.checkpoints.mapping import ANYRES_MAX, default_template, remap
from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
from onevision.errors import CheckpointError, ConfigError, ExportError, UnknownComponentError
from onevision.llm import load_tokenizer
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy

log = logging.getLogger(__name__)

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
    device: Any = None,
    device_map: Any = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | None = None,
    attn_implementation: str | None = None,
    quantize: Any = None,
) -> Bundle:
    """Load an original LLaVA-NeXT / LLaVA-OneVision checkpoint (``LlavaQwenForCausalLM`` etc.).

    ``rounding="llava"`` (default) reproduces the reference unpad rule; pass ``"hf"`` to match transformers.
    The tokenizer gets ``<image>`` / ``<video>`` (the reference uses ``-200`` instead) and the embeddings grow if
    needed; their new rows are never read (placeholders are replaced by visual features).
    """
    d = Path(directory)
    raw = open_state_dict(d)
    cfg = read_config(d)
    tower = cfg.get("mm_vision_tower")
    if vision_config is None and isinstance(tower, str) and (d / tower / "config.json").is_file():
        vision_config = read_config(d / tower)  # a tower config shipped inside the checkpoint (our export)
    config = original_to_config(
        cfg,
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
    return restore_bundle(
        config,
        tokenizer,
        state,
        str(d),
        dtype=dtype,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        attn_implementation=attn_implementation,
        quantize=quantize,
    )


# -- export ----------------------------------------------------------------------------------------------------

#: ours -> the original tensor names (the inverse of :data:`ORIGINAL_TO_NATIVE`).
NATIVE_TO_ORIGINAL: tuple[tuple[str, str], ...] = (
    ("vision_tower.model.", "model.vision_tower.vision_tower.vision_model."),
    ("projector.", "model.mm_projector."),
    ("image_newline", "model.image_newline"),
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model."),
)

#: where an export puts the vision tower's config; ``mm_vision_tower`` names it relative to the checkpoint.
VISION_TOWER_DIR = "vision_tower"


def original_config_dict(pipe: Bundle, *, force: bool = False) -> dict[str, Any]:
    """The original LLaVA-NeXT/OneVision ``config.json`` of ``pipe``; :class:`ExportError` if the layout cannot
    represent it (or, without ``force``, if the reference code would count other visual tokens)."""
    from onevision.archs import get_arch
    from onevision.encoders import TransformersEncoder

    model, proc = pipe.model, pipe.processor
    enc, cfg = model.vision_tower, model.config
    single, multi, vid = proc.policy.single_image, proc.policy.multi_image, proc.policy.video
    architecture = next((a for a, t in ORIGINAL_ARCHITECTURES.items() if t == cfg.llm.model_type), None)
    problems = []
    if architecture is None:
        problems.append(
            f"LLM model_type {cfg.llm.model_type!r} (original: {sorted(ORIGINAL_ARCHITECTURES.values())})"
        )
    if not isinstance(enc, TransformersEncoder):
        problems.append(f"vision backend {enc.info.backend!r} (original: transformers SigLIP/CLIP)")
    if single.name not in ("anyres_max", "anyres"):
        problems.append(
            f"single-image strategy {single.strategy_name!r} (original: anyres or anyres_max_<N>)"
        )
    if multi.name != "pad":
        problems.append(f"multi-image strategy {multi.strategy_name!r} (original import: pad)")
    for what, ours in (("image_mean", cfg.vision.image_mean), ("image_std", cfg.vision.image_std)):
        if ours is not None and tuple(ours) != tuple(getattr(get_arch(cfg.vision.arch), what)):
            problems.append(f"vision.{what}={ours} (original: the tower's own normalisation)")
    if getattr(single, "rounding", "llava") != "llava" and not force:
        problems.append(
            "single_image.rounding='hf' (the reference code rounds with int(); pass force=True / --force to "
            "export anyway: token counts then differ for a few rare sizes)"
        )
    if problems:
        raise ExportError("cannot export to the original LLaVA-NeXT/OneVision layout: " + "; ".join(problems))
    text = {
        k: v
        for k, v in model.language_model.config.to_dict().items()
        if k not in ("transformers_version", "architectures", "_name_or_path", "model_type")
    }
    return {
        **text,
        "architectures": [architecture],
        "model_type": "llava",
        "dtype": str(model.dtype).removeprefix("torch."),
        "mm_vision_tower": VISION_TOWER_DIR,
        "mm_projector_type": cfg.projector.type,
        "mm_hidden_size": enc.info.width,
        # the tower keeps only the blocks up to the feature layer: SigLIP's reference rule (drop the config's last
        # block, take the output) is -2 on the shipped config; CLIP takes the last kept block
        "mm_vision_select_layer": -2 if cfg.vision.arch == "siglip" else -1,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": single.strategy_name,
        "image_grid_pinpoints": [[p.width, p.height] for p in single.pinpoints],
        "mm_spatial_pool_mode": vid.pool_mode,
        "mm_spatial_pool_stride": vid.pool_stride,
        "mm_newline_position": vid.newline_position,
        "add_time_instruction": bool(getattr(vid, "time_instruction", False)),
        "tokenizer_model_max_length": proc.max_length,
        "tokenizer_padding_side": "right",
        "use_mm_proj": True,
    }


def export_original(
    pipe: Bundle, directory: str | Path, *, force: bool = False, max_shard_bytes: int = 5 * 2**30
) -> Path:
    """Write the original LLaVA-NeXT/OneVision layout (``model.mm_projector.*``,
    ``model.vision_tower.vision_tower.vision_model.*``, ``lm_head``, the rest ``model.*``) that
    :func:`import_original` reads back; the tower's config goes to ``vision_tower/config.json``."""
    from onevision.checkpoints.io import write_json, write_state_dict

    d = Path(directory)
    config = original_config_dict(pipe, force=force)
    d.mkdir(parents=True, exist_ok=True)
    state = remap(pipe.model.checkpoint_state_dict(), NATIVE_TO_ORIGINAL, "onevision model")
    write_state_dict(state, d, max_shard_bytes=max_shard_bytes)
    write_json(config, d / "config.json")
    vision = {
        k: v for k, v in pipe.model.vision_tower.hf_config.to_dict().items() if k != "transformers_version"
    }
    if pipe.model.config.vision.arch == "siglip":  # the reference deletes the config's last block on load
        vision["num_hidden_layers"] = pipe.model.vision_tower.info.num_layers + 1
    (d / VISION_TOWER_DIR).mkdir(exist_ok=True)
    write_json(vision, d / VISION_TOWER_DIR / "config.json")
    if pipe.processor.template.name != default_template(pipe.model.config.llm.model_type):
        log.warning(
            "the original layout does not record the chat template; load it with template=%r",
            pipe.processor.template.name,
        )
    pipe.processor.tokenizer.save_pretrained(str(d))
    return d
