"""HF ``llava_onevision`` checkpoints: import (every key layout transformers 5 loads) and export (v5 layout).

Import layouts: the legacy hub layout (``language_model.model.*``, ``vision_tower.vision_model.*``), v5
``save_pretrained`` (``vision_tower.*``) and in-memory names (``model.language_model.*``, ``lm_head.*``,
``model.vision_tower.*``). Export writes the v5 layout with ``config.json`` (``eos_token_id``, ``pad_token_id``,
``dtype``), ``generation_config.json`` (the template's end-of-turn ids, the pipeline's greedy defaults), the
processor files (PIL image backend) and the chat template as Jinja generated from the onevision template, so
transformers renders the same prompt. It refuses (:class:`~onevision.errors.ExportError`) what HF cannot represent,
and, unless ``force=True``, what vLLM / SGLang would count differently (:func:`engine_problems`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from onevision.archs import get_arch, hf_vision_arches
from onevision.bundle import Bundle, restore_bundle
from onevision.checkpoints.io import open_state_dict, read_config, write_json, write_state_dict
from onevision.checkpoints.mapping import ANYRES_MAX, default_template, remap
from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
from onevision.encoders import TransformersEncoder
from onevision.errors import CheckpointError, ConfigError, ExportError, UnknownComponentError
from onevision.llm import load_tokenizer
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy
from onevision.projectors import mlp_depth

log = logging.getLogger(__name__)


#: (prefix in a file, prefix in onevision) for all three HF layouts; the first match wins.
HF_TO_NATIVE: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "language_model.model."),  # (3) in memory
    ("language_model.model.", "language_model.model."),  # (1), (2)
    ("language_model.lm_head.", "language_model.lm_head."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.vision_model.", "vision_tower.model."),
    ("model.vision_tower.", "vision_tower.model."),
    ("vision_tower.vision_model.", "vision_tower.model."),  # (1) legacy hub
    ("vision_tower.", "vision_tower.model."),  # (2) v5 save_pretrained
    ("model.multi_modal_projector.linear_1.", "projector.0."),
    ("model.multi_modal_projector.linear_2.", "projector.2."),
    ("multi_modal_projector.linear_1.", "projector.0."),
    ("multi_modal_projector.linear_2.", "projector.2."),
    ("model.image_newline", "image_newline"),
    ("image_newline", "image_newline"),
)

#: onevision -> HF v5 ``save_pretrained`` layout (2).
NATIVE_TO_HF: tuple[tuple[str, str], ...] = (
    ("language_model.model.", "language_model.model."),
    ("language_model.lm_head.", "language_model.lm_head."),
    ("vision_tower.model.", "vision_tower."),
    ("projector.0.", "multi_modal_projector.linear_1."),
    ("projector.2.", "multi_modal_projector.linear_2."),
    ("image_newline", "image_newline"),
)


def _hf_processor_dict(directory: Path) -> dict[str, Any]:
    """The image processor settings from ``processor_config.json`` (v5) or ``preprocessor_config.json``."""
    proc = directory / "processor_config.json"
    if proc.is_file():
        data = json.loads(proc.read_text())
        if isinstance(data.get("image_processor"), dict):
            return {**data["image_processor"], "_processor": data}
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        data = json.loads(pre.read_text())
        if proc.is_file():
            data["_processor"] = json.loads(proc.read_text())
        return data
    return {}


def hf_to_config(
    cfg: dict[str, Any],
    image_processor: dict[str, Any] | None = None,
    *,
    template: str | None = None,
    num_frames: int = 32,
) -> OneVisionConfig:
    """Translate an HF ``llava_onevision`` config (and its image processor settings) to a :class:`OneVisionConfig`."""
    from transformers import LlavaOnevisionConfig

    hf = LlavaOnevisionConfig.from_dict(cfg)
    vc, tc = hf.vision_config, hf.text_config
    arch = hf_vision_arches().get(vc.model_type)
    if arch is None:
        raise UnknownComponentError("HF vision model_type", vc.model_type, hf_vision_arches())
    strategy = hf.vision_feature_select_strategy
    # the family's declared feature rule: a tower with a CLS token drops it ('default'), one without keeps all
    expected = "default" if get_arch(arch).has_cls else "full"
    if strategy != expected:
        raise ConfigError(
            f"vision_feature_select_strategy={strategy!r} with a {arch} tower is not supported "
            f"({arch} declares {'a' if expected == 'default' else 'no'} CLS token: {expected!r})"
        )
    if not isinstance(hf.vision_feature_layer, int):
        raise ConfigError(
            f"vision_feature_layer={hf.vision_feature_layer!r}: only a single layer is supported"
        )
    if hf.projector_hidden_act != "gelu":
        raise ConfigError(
            f"projector_hidden_act={hf.projector_hidden_act!r}: only 'gelu' (mlp2x_gelu) is supported"
        )
    match = ANYRES_MAX.fullmatch(hf.vision_aspect_ratio)
    if not match:
        raise ConfigError(f"vision_aspect_ratio={hf.vision_aspect_ratio!r}: expected anyres_max_<N>")
    vision_dict = {
        k: v for k, v in vc.to_dict().items() if k not in ("transformers_version", "architectures")
    }
    text_dict = {k: v for k, v in tc.to_dict().items() if k not in ("transformers_version", "architectures")}
    if getattr(hf, "tie_word_embeddings", False):
        text_dict["tie_word_embeddings"] = True
    ip = image_processor or {}
    pinpoints = [list(p) for p in hf.image_grid_pinpoints]
    if (
        ip.get("image_grid_pinpoints") is not None
        and [list(p) for p in ip["image_grid_pinpoints"]] != pinpoints
    ):
        raise CheckpointError(
            "image_grid_pinpoints differ between config.json and the image processor; "
            "the two copies must be identical"
        )
    single: dict[str, Any] = {
        "name": f"anyres_max_{match.group(1)}",
        "grid_pinpoints": pinpoints,
        "rounding": "hf",
    }
    multi: dict[str, Any] = {"name": "pad"}
    for spec in (single, multi):
        if "image_mean" in ip and "image_std" in ip:
            spec["image_mean"], spec["image_std"] = list(ip["image_mean"]), list(ip["image_std"])
    if "image_mean" not in ip:
        log.warning("no image processor config found; using the %s encoder's default normalisation", arch)
    proc = ip.get("_processor", {})
    processor = ProcessorConfig(
        visual=VisualPolicy(
            image=ImagePolicy(single.pop("name"), single),
            multi_image=ImagePolicy(multi.pop("name"), multi),
            video=VideoPolicy(num_frames=num_frames, newline_position="one_token"),
        ),
        template=template or default_template(tc.model_type),
        image_token=proc.get("image_token", "<image>"),
        video_token=proc.get("video_token", "<video>"),
    )
    return OneVisionConfig(
        vision=VisionConfig(
            backend="transformers",
            arch=arch,
            config=vision_dict,
            feature_layer=hf.vision_feature_layer,
            image_mean=tuple(ip["image_mean"]) if "image_mean" in ip else None,
            image_std=tuple(ip["image_std"]) if "image_std" in ip else None,
        ),
        projector=ProjectorConfig("mlp2x_gelu", bias=bool(hf.multimodal_projector_bias)),
        llm=LLMConfig(model_type=tc.model_type, config=text_dict),
        processor=processor,
        image_token_id=int(hf.image_token_index),
        video_token_id=int(hf.video_token_index),
    )


def import_hf(
    directory: str | Path,
    *,
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
    """Load an HF ``llava_onevision`` checkpoint (any of the three key layouts)."""
    d = Path(directory)
    config = hf_to_config(read_config(d), _hf_processor_dict(d), template=template, num_frames=num_frames)
    tokenizer = load_tokenizer(str(d))
    state = remap(open_state_dict(d), HF_TO_NATIVE, str(d))
    bundle = restore_bundle(
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
    for kind, want, got in (
        ("image", config.image_token_id, bundle.processor.image_token_id),
        ("video", config.video_token_id, bundle.processor.video_token_id),
    ):
        if want != got:
            raise CheckpointError(
                f"{d}: config {kind}_token_index={want} but the tokenizer encodes the {kind} token as {got}"
            )
    return bundle


#: the AnyRes cap the serving engines hard-code: vLLM and SGLang count ``anyres_max_9`` tokens whatever the config says
ENGINE_ANYRES_MAX = 9


def engine_problems(pipe: Bundle) -> list[str]:
    """Why vLLM / SGLang would count different visual tokens than ``pipe`` for an HF export (empty: none)."""
    single = pipe.processor.policy.single_image
    problems = []
    match = ANYRES_MAX.fullmatch(single.strategy_name)
    if match and int(match.group(1)) != ENGINE_ANYRES_MAX:
        problems.append(
            f"single-image strategy {single.strategy_name!r}: vLLM and SGLang hard-code anyres_max_"
            f"{ENGINE_ANYRES_MAX} for llava_onevision and would count other visual tokens than this model uses"
        )
    return problems


def hf_config_dict(pipe: Bundle, *, force: bool = False) -> dict[str, Any]:
    """The HF ``LlavaOnevisionConfig`` of ``pipe``; :class:`ExportError` if HF cannot represent the model."""
    from transformers import LlavaOnevisionConfig

    model, proc = pipe.model, pipe.processor
    enc = model.vision_tower
    problems = []
    if not isinstance(enc, TransformersEncoder):
        problems.append(f"vision backend {enc.info.backend!r} (HF needs transformers SigLIP/CLIP)")
    if mlp_depth(model.config.projector.type) != 2:
        problems.append(f"projector {model.config.projector.type!r} (HF has mlp2x_gelu only)")
    single, multi, vid = proc.policy.single_image, proc.policy.multi_image, proc.policy.video
    if single.name != "anyres_max":
        problems.append(f"single-image strategy {single.strategy_name!r} (HF has anyres_max_<N> only)")
    else:
        for attr, want in (
            ("unpad", True),
            ("newline", True),
            ("base_image", "squash"),
            ("base_position", "first"),
            ("interp_slack", 1.1),
        ):
            if getattr(single, attr) != want:
                problems.append(f"single_image.{attr}={getattr(single, attr)!r} (HF: {want!r})")
        if single.rounding != "hf" and not force:
            problems.append(
                "single_image.rounding='llava' (HF, vLLM and SGLang round with int(round(x, 7)); pass "
                "force=True (--force) to export anyway: token counts then differ for a few rare sizes)"
            )
        engines = engine_problems(pipe)
        if engines and not force:
            problems += [p + " (pass force=True / --force to write it anyway)" for p in engines]
        elif engines:
            log.warning("exporting for transformers only: %s", "; ".join(engines))
    if multi.name != "pad" or not getattr(multi, "newline", False):
        problems.append(f"multi-image strategy {multi.strategy_name!r} (HF: pad + one newline)")
    if (vid.pool_mode, vid.pool_stride, vid.newline_position) != (
        "bilinear",
        2,
        "one_token",
    ):
        problems.append(f"video pooling {vid} (HF: bilinear, stride 2, one_token)")
    if (single.tile_size // single.patch_size) ** 2 != enc.info.tokens_per_tile:
        problems.append("num_image_tokens does not equal (image_size // patch_size)**2")
    if problems:
        raise ExportError(
            "cannot export to HF llava_onevision (the config transformers, vLLM and SGLang read): "
            + "; ".join(problems)
        )
    vision = {
        k: v for k, v in enc.hf_config.to_dict().items() if k not in ("transformers_version", "architectures")
    }
    text = {
        k: v
        for k, v in model.language_model.config.to_dict().items()
        if k not in ("transformers_version", "architectures", "_name_or_path")
    }
    hf = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=proc.image_token_id,
        video_token_index=proc.video_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if enc.info.has_cls else "full",
        vision_feature_layer=-1,
        multimodal_projector_bias=bool(model.config.projector.bias),
        image_grid_pinpoints=[[p.height, p.width] for p in single.pinpoints],
        vision_aspect_ratio=single.strategy_name,
        tie_word_embeddings=bool(getattr(model.language_model.config, "tie_word_embeddings", False)),
    )
    hf.architectures = ["LlavaOnevisionForConditionalGeneration"]
    out = hf.to_dict()
    dtype = str(model.dtype).removeprefix("torch.")
    eos = list(proc.stop_token_ids)
    out["dtype"] = out["text_config"]["dtype"] = out["vision_config"]["dtype"] = dtype
    out["eos_token_id"] = out["text_config"]["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    out["pad_token_id"] = out["text_config"]["pad_token_id"] = proc.pad_token_id
    return out


def hf_generation_config(pipe: Bundle) -> dict[str, Any]:
    """``generation_config.json``: the template's end-of-turn token(s) and the pipeline's greedy defaults."""
    import inspect

    from transformers import GenerationConfig

    defaults = inspect.signature(type(pipe.model).generate).parameters
    eos = list(pipe.processor.stop_token_ids)
    temperature = defaults["temperature"].default
    sample = temperature is not None and temperature > 0  # the pipeline's rule: temperature 0 is greedy
    config = GenerationConfig(
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        pad_token_id=pipe.processor.pad_token_id,
        bos_token_id=pipe.processor.tokenizer.bos_token_id,
        do_sample=sample,
        max_new_tokens=defaults["max_new_tokens"].default,
        **({"temperature": temperature} if sample else {}),
    )
    return {**config.to_diff_dict(), "do_sample": sample}


def export_hf(
    pipe: Bundle, directory: str | Path, *, force: bool = False, max_shard_bytes: int = 5 * 2**30
) -> Path:
    """Write an HF ``llava_onevision`` directory (v5 ``save_pretrained`` layout) that transformers loads as is."""
    from transformers import (
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(pipe, force=force)
    state = remap(pipe.model.checkpoint_state_dict(), NATIVE_TO_HF, "onevision model")
    write_state_dict(state, d, max_shard_bytes=max_shard_bytes)
    write_json(config, d / "config.json")
    write_json(hf_generation_config(pipe), d / "generation_config.json")
    proc = pipe.processor
    single = proc.policy.single_image
    s = single.tile_size
    common = {
        "image_mean": list(single.image_mean),
        "image_std": list(single.image_std),
        "size": {"height": s, "width": s},
    }
    # the PIL backend: pixel-exact with onevision's AnyRes (the torchvision one differs by a level or two)
    image_processor = LlavaOnevisionImageProcessorPil(
        **common, image_grid_pinpoints=[[p.height, p.width] for p in single.pinpoints]
    )
    video_processor = LlavaOnevisionVideoProcessor(**common)
    chat = proc.template.to_jinja(proc.image_token, proc.video_token)
    hf_proc = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=proc.tokenizer,
        video_processor=video_processor,
        num_image_tokens=single.tokens_per_tile,
        vision_feature_select_strategy=config["vision_feature_select_strategy"],
        chat_template=chat,
        image_token=proc.image_token,
        video_token=proc.video_token,
        vision_aspect_ratio=single.strategy_name,
    )
    hf_proc.save_pretrained(str(d))
    return d
