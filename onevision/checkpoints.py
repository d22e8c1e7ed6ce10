"""Checkpoints: native save/load, HF ``llava_onevision`` import/export, original LLaVA-NeXT/OneVision import.

Formats (detected from fields of ``config.json``, never from names):

* **native** (``"format": "onevision"``): ``config.json`` (:class:`~onevision.config.OneVisionConfig`, rebuildable
  offline), ``model.safetensors`` (sharded with ``model.safetensors.index.json`` when large) and the tokenizer.
* **hf** (``"model_type": "llava_onevision"``): every on-disk key layout transformers 5 loads: the legacy hub
  layout (``language_model.model.*``, ``vision_tower.vision_model.*``), v5 ``save_pretrained``
  (``vision_tower.*``) and in-memory names (``model.language_model.*``, ``lm_head.*``, ``model.vision_tower.*``).
* **original** (``mm_vision_tower`` / ``mm_projector_type`` fields): ``model.mm_projector.{0,2}``,
  ``model.vision_tower.vision_tower.vision_model.*``, ``model.image_newline``; pinpoints are ``[w, h]`` pairs.

Weights are read with safetensors; ``.bin`` files only with ``torch.load(weights_only=True)``. Missing or
unexpected weights raise :class:`~onevision.errors.KeyMismatchError` listing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from onevision.archs import hf_vision_arches
from onevision.config import (
    FORMAT_NAME,
    LLMConfig,
    OneVisionConfig,
    ProcessorConfig,
    ProjectorConfig,
    VisionConfig,
)
from onevision.errors import (
    CheckpointError,
    ConfigError,
    ExportError,
    KeyMismatchError,
    UnknownComponentError,
)
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMATS = ("onevision", "hf", "original")

_ANYRES_MAX = re.compile(r"anyres_max_(\d+)")
#: Original LLaVA-NeXT ``architectures`` -> LLM model_type.
_ORIGINAL_ARCHITECTURES = {
    "LlavaQwenForCausalLM": "qwen2",
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaQwenMoeForCausalLM": "qwen2_moe",
    "LlavaGemmaForCausalLM": "gemma",
}
#: LLM family -> default chat template on import (overridable with ``template=``).
_DEFAULT_TEMPLATE = {
    "qwen2": "qwen_1_5",
    "qwen2_moe": "qwen_1_5",
    "qwen3": "qwen_1_5",
    "llama": "vicuna_v1",
    "mistral": "vicuna_v1",
    "gemma": "vicuna_v1",
}


# ----------------------------------------------------------------------------------------------------------------
# Reading and writing tensors


def read_state_dict(directory: str | Path) -> dict[str, Any]:
    """All tensors of a checkpoint directory: ``*.safetensors`` (with or without an index) or, failing that,
    ``*.bin`` via ``torch.load(weights_only=True)``."""
    from safetensors.torch import load_file

    d = Path(directory)
    index = d / INDEX_NAME
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        paths = [d / f for f in files]
    else:
        paths = sorted(p for p in d.glob("*.safetensors"))
    state: dict[str, Any] = {}
    if paths:
        for p in paths:
            state.update(load_file(str(p)))
        return state
    bins = sorted(d.glob("*.bin"))
    if not bins:
        raise CheckpointError(f"{d}: no weights (*.safetensors or *.bin)")
    import torch

    for p in bins:
        state.update(torch.load(str(p), map_location="cpu", weights_only=True))
    return state


#: The weight files :func:`write_state_dict` writes (and so the only ones it may replace): ``model.safetensors``,
#: its shards ``model-00001-of-00003.safetensors`` and the shard index.
_WEIGHT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json")


def _is_weights_file(name: str) -> bool:
    return _WEIGHT_FILE.fullmatch(name) is not None


def write_state_dict(
    state: dict[str, Any],
    directory: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write safetensors (sharded with an HF-style index above ``max_shard_bytes``); returns the file names."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    meta = {"format": "pt", **(metadata or {})}
    for stale in [*d.glob("model*.safetensors"), d / INDEX_NAME]:
        if _is_weights_file(stale.name) and stale.is_file():  # only names this function writes
            stale.unlink()
    if len(shards) == 1:
        save_file(shards[0], str(d / WEIGHTS_NAME), metadata=meta)
        return [WEIGHTS_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(d / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (d / INDEX_NAME).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return names


# ----------------------------------------------------------------------------------------------------------------
# Format detection and loading


def resolve_path(path_or_hub_id: str) -> Path:
    """A local directory as is; anything else is a hub id fetched with ``huggingface_hub.snapshot_download``."""
    p = Path(path_or_hub_id).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p}: expected a checkpoint directory, got a file")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(path_or_hub_id),
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.jinja",
                    "*.txt",
                    "*.model",
                    "*.tiktoken",
                    "tokenizer*",
                ],
            )
        )
    except Exception as exc:  # offline, unknown repo, ...
        raise CheckpointError(
            f"{path_or_hub_id}: not a local directory and not loadable from the hub ({exc})"
        ) from None


def detect_format(directory: str | Path) -> str:
    """``onevision``, ``hf`` or ``original``, from typed fields of ``config.json``."""
    cfg = _read_config(directory)
    if cfg.get("format") == FORMAT_NAME:
        return "onevision"
    if cfg.get("model_type") == "llava_onevision":
        return "hf"
    if "mm_vision_tower" in cfg or "mm_projector_type" in cfg:
        return "original"
    raise CheckpointError(
        f"{directory}: config.json is neither a onevision config (format), an HF llava_onevision config "
        f"(model_type={cfg.get('model_type')!r}) nor an original LLaVA-NeXT config (mm_vision_tower)"
    )


def load_checkpoint(path_or_hub_id: str, *, format: str = "auto", **kwargs: Any):
    """Load a checkpoint of any supported format as a :class:`~onevision.pipeline.Pipeline`."""
    directory = resolve_path(path_or_hub_id)
    fmt = detect_format(directory) if format == "auto" else format
    loaders: dict[str, Callable[..., Any]] = {
        "onevision": load_native,
        "hf": import_hf,
        "original": import_original,
    }
    if fmt not in loaders:
        raise UnknownComponentError("checkpoint format", fmt, loaders)
    import inspect

    accepted = set(inspect.signature(loaders[fmt]).parameters) - {"directory"}
    extra = sorted(set(kwargs) - accepted)
    if extra:
        raise ConfigError(
            f"option(s) {extra} do not apply to {fmt} checkpoints (accepted: {sorted(accepted)})"
        )
    return loaders[fmt](directory, **kwargs)


def _read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None


@contextlib.contextmanager
def _fast_init():
    """Skip random initialisation of weights that a checkpoint overwrites anyway."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    with no_init_weights():
        yield


def _build(
    config: OneVisionConfig,
    tokenizer: Any,
    state: dict[str, Any],
    source: str,
    *,
    drop: Iterable[str] = (),
    dtype: Any = None,
):
    """Build a pipeline from ``config`` (offline), then load ``state`` strictly."""
    import torch

    from onevision.pipeline import from_config

    if dtype is None:
        dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    with _fast_init():
        pipe = from_config(config, tokenizer=tokenizer)
    pipe.model.to(dtype=dtype)
    state = _grow_vocab(state, pipe.model)
    load_weights(pipe.model, state, source, drop=drop)
    pipe.model.eval()
    return pipe


def _grow_vocab(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """Extend embedding / LM-head rows when the tokenizer gained tokens (e.g. ``<image>`` added to an original
    checkpoint's tokenizer). New rows take the mean of the old ones; placeholder rows are never read anyway."""
    import torch

    expected = model.state_dict()
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        if (
            key in state
            and key in expected
            and state[key].shape[0] < expected[key].shape[0]
            and state[key].shape[1:] == expected[key].shape[1:]
        ):
            old = state[key]
            extra = (
                old.float()
                .mean(0, keepdim=True)
                .to(old.dtype)
                .expand(expected[key].shape[0] - old.shape[0], -1)
            )
            state = {**state, key: torch.cat([old, extra])}
    return state


def load_weights(model: Any, state: dict[str, Any], source: str, *, drop: Iterable[str] = ()) -> None:
    """Load native-named ``state`` into ``model``; raise :class:`KeyMismatchError` on missing/unexpected keys.

    Vision blocks beyond the feature layer (cut at build time) are dropped; a tied LM head may be absent.
    """
    expected = model.state_dict()
    kept = model.vision_tower.info.num_layers
    state = dict(state)
    block = re.compile(r"vision_tower\." + model.vision_tower.block_pattern)  # the encoder's declared layout
    for key in list(state):
        m = block.match(key)
        if (m and int(m.group(1)) >= kept) or key in set(drop):
            del state[key]
    tied = bool(getattr(model.language_model.config, "tie_word_embeddings", False))
    optional = {"language_model.lm_head.weight"} if tied else set()
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyMismatchError(source, missing, unexpected)
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {len(bad)} weight(s): " + "; ".join(bad[:8]))
    model.load_state_dict(state, strict=False)
    if tied:
        model.language_model.tie_weights()


# ----------------------------------------------------------------------------------------------------------------
# Native


def native_model_config(model: Any) -> OneVisionConfig:
    """The config a native model directory stores: offline-rebuildable components, the model's policy and ids."""
    from onevision.llm import export_llm_config

    return dataclasses.replace(
        model.config,
        vision=model.vision_tower.export_config(),
        llm=export_llm_config(model.language_model, model.config.llm),
    )


def native_config(pipe: Any) -> OneVisionConfig:
    """The config a native checkpoint stores: :func:`native_model_config` with the processor's resolved policy
    (incl. its length budget) and token ids."""
    processor = dataclasses.replace(pipe.processor.config, max_length=pipe.processor.max_length)
    return dataclasses.replace(
        native_model_config(pipe.model),
        processor=processor,
        image_token_id=pipe.processor.image_token_id,
        video_token_id=pipe.processor.video_token_id,
    )


def native_state_dict(model: Any, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's tensors (or ``state_dict``, e.g. gathered from ZeRO-3 shards) without duplicates: a tied LM
    head is stored once, as the input embeddings."""
    state = dict(model.state_dict() if state_dict is None else state_dict)
    lm = model.language_model
    if getattr(lm.config, "tie_word_embeddings", False):
        state.pop("language_model.lm_head.weight", None)
    return state


def save_native_model(
    model: Any,
    directory: str | Path,
    *,
    config: OneVisionConfig | None = None,
    state_dict: dict[str, Any] | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write ``config.json`` (default :func:`native_model_config`) and ``model.safetensors`` (no tokenizer)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = native_model_config(model) if config is None else config
    write_state_dict(
        native_state_dict(model, state_dict),
        d,
        max_shard_bytes=max_shard_bytes,
        metadata={"onevision_format_version": "1"},
    )
    config.save(d / "config.json")
    return d


def save_native(
    pipe: Any,
    directory: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer (``config.json`` last)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = native_config(pipe)
    pipe.processor.tokenizer.save_pretrained(str(d))
    save_native_model(pipe.model, d, config=config, state_dict=state_dict, max_shard_bytes=max_shard_bytes)
    return d


def load_native(directory: str | Path, *, dtype: Any = None):
    """Load a native checkpoint (offline: components are rebuilt from the stored config)."""
    from onevision.llm import load_tokenizer

    d = Path(directory)
    config = OneVisionConfig.from_dict(_read_config(d))
    tokenizer = load_tokenizer(str(d))
    pipe = _build(config, tokenizer, read_state_dict(d), str(d), dtype=dtype)
    if config.image_token_id is not None and pipe.processor.image_token_id != config.image_token_id:
        raise CheckpointError(
            f"{d}: tokenizer's image token id {pipe.processor.image_token_id} differs from the "
            f"config's {config.image_token_id}"
        )
    return pipe


def load_native_model(directory: str | Path, *, dtype: Any = None, model_cls: Any = None) -> Any:
    """The :class:`~onevision.model.OneVisionModel` of a native directory (a :func:`save_native_model` or a whole
    :func:`save_native` checkpoint), rebuilt offline from its config; weights are loaded strictly. No tokenizer
    is read: the stored LLM config already has the final vocabulary size."""
    import torch

    from onevision.model import OneVisionModel

    model_cls = OneVisionModel if model_cls is None else model_cls
    d = Path(directory)
    fmt = detect_format(d)
    if fmt != "onevision":
        raise CheckpointError(
            f"{d}: a {fmt} checkpoint; OneVisionModel.from_pretrained reads native onevision directories "
            "(use onevision.load for the other formats)"
        )
    config = OneVisionConfig.from_dict(_read_config(d))
    state = read_state_dict(d)
    if dtype is None:
        dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    with _fast_init():
        model = model_cls(config)
    model.to(dtype=dtype)
    load_weights(model, state, str(d))
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------------------------
# HF llava_onevision


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


def remap(state: dict[str, Any], table: Iterable[tuple[str, str]], source: str) -> dict[str, Any]:
    """Rename keys by the first matching prefix; keys no rule covers raise :class:`KeyMismatchError`."""
    rules = list(table)
    out, unknown = {}, []
    for key, value in state.items():
        for old, new in rules:
            if key.startswith(old):
                out[new + key[len(old) :]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyMismatchError(source, [], unknown)
    return out


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
    if (arch, strategy) not in (("siglip", "full"), ("clip", "default")):
        raise ConfigError(
            f"vision_feature_select_strategy={strategy!r} with a {arch} tower is not supported "
            "(SigLIP uses 'full', CLIP 'default')"
        )
    if not isinstance(hf.vision_feature_layer, int):
        raise ConfigError(
            f"vision_feature_layer={hf.vision_feature_layer!r}: only a single layer is supported"
        )
    if hf.projector_hidden_act != "gelu":
        raise ConfigError(
            f"projector_hidden_act={hf.projector_hidden_act!r}: only 'gelu' (mlp2x_gelu) is supported"
        )
    match = _ANYRES_MAX.fullmatch(hf.vision_aspect_ratio)
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
        template=template or _DEFAULT_TEMPLATE.get(tc.model_type, "qwen_1_5"),
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


def import_hf(directory: str | Path, *, template: str | None = None, dtype: Any = None, num_frames: int = 32):
    """Load an HF ``llava_onevision`` checkpoint (any of the three key layouts)."""
    from onevision.llm import load_tokenizer

    d = Path(directory)
    config = hf_to_config(_read_config(d), _hf_processor_dict(d), template=template, num_frames=num_frames)
    tokenizer = load_tokenizer(str(d))
    state = remap(read_state_dict(d), HF_TO_NATIVE, str(d))
    pipe = _build(config, tokenizer, state, str(d), dtype=dtype)
    for kind, want, got in (
        ("image", config.image_token_id, pipe.processor.image_token_id),
        ("video", config.video_token_id, pipe.processor.video_token_id),
    ):
        if want != got:
            raise CheckpointError(
                f"{d}: config {kind}_token_index={want} but the tokenizer encodes the {kind} token as {got}"
            )
    return pipe


_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'video' %}<video>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def hf_config_dict(pipe: Any, *, force: bool = False) -> dict[str, Any]:
    """The HF ``LlavaOnevisionConfig`` of ``pipe``; :class:`ExportError` if HF cannot represent the model."""
    from transformers import LlavaOnevisionConfig

    from onevision.encoders import TransformersEncoder
    from onevision.projectors import mlp_depth

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
                "single_image.rounding='llava' (HF rounds with int(round(x, 7)); pass force=True to "
                "export anyway: token counts then differ for a few rare sizes)"
            )
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
        raise ExportError("cannot export to HF llava_onevision: " + "; ".join(problems))
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
    return hf.to_dict()


def export_hf(
    pipe: Any, directory: str | Path, *, force: bool = False, max_shard_bytes: int = 5 * 2**30
) -> Path:
    """Write an HF ``llava_onevision`` directory (v5 ``save_pretrained`` layout) that transformers loads as is."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(pipe, force=force)
    state = remap(native_state_dict(pipe.model), NATIVE_TO_HF, "onevision model")
    write_state_dict(state, d, max_shard_bytes=max_shard_bytes)
    (d / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    proc = pipe.processor
    single = proc.policy.single_image
    s = single.tile_size
    common = {
        "image_mean": list(single.image_mean),
        "image_std": list(single.image_std),
        "size": {"height": s, "width": s},
    }
    image_processor = LlavaOnevisionImageProcessor(
        **common, image_grid_pinpoints=[[p.height, p.width] for p in single.pinpoints]
    )
    video_processor = LlavaOnevisionVideoProcessor(**common)
    chat = _HF_CHAT_TEMPLATE if proc.template.name == "qwen_1_5" else None
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


# ----------------------------------------------------------------------------------------------------------------
# Original LLaVA-NeXT / OneVision


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
    import anyres

    archs = cfg.get("architectures") or []
    llm_type = next((_ORIGINAL_ARCHITECTURES[a] for a in archs if a in _ORIGINAL_ARCHITECTURES), None)
    if llm_type is None:
        raise UnknownComponentError("original architecture", archs, _ORIGINAL_ARCHITECTURES)
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
    match = _ANYRES_MAX.fullmatch(str(aspect))
    if match:
        single: dict[str, Any] = {"name": f"anyres_max_{match.group(1)}"}
    elif aspect == "anyres":
        single = {"name": "anyres"}
    else:
        raise ConfigError(f"image_aspect_ratio={aspect!r} is not supported (anyres or anyres_max_<N>)")
    single.update(grid_pinpoints=pinpoints, rounding=rounding)
    import video

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
        template=template or _DEFAULT_TEMPLATE.get(llm_type, "qwen_1_5"),
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
):
    """Load an original LLaVA-NeXT / LLaVA-OneVision checkpoint (``LlavaQwenForCausalLM`` etc.).

    ``rounding="llava"`` (default) reproduces the reference unpad rule; pass ``"hf"`` to match transformers.
    The tokenizer gets ``<image>`` / ``<video>`` (the reference uses ``-200`` instead) and the embeddings grow if
    needed; their new rows are never read (placeholders are replaced by visual features).
    """
    from onevision.llm import load_tokenizer

    d = Path(directory)
    raw = read_state_dict(d)
    config = original_to_config(
        _read_config(d),
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
    return _build(config, tokenizer, state, str(d), dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------
# Conversion


def convert(
    src: str,
    dst: str,
    *,
    to: str = "onevision",
    src_format: str = "auto",
    force: bool = False,
    **load_kwargs: Any,
) -> Path:
    """Load ``src`` (any format) and write ``dst`` as ``onevision`` or ``hf``."""
    if to not in ("onevision", "hf"):
        raise UnknownComponentError("target format", to, ["onevision", "hf"])
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CheckpointError("source and destination are the same directory")
    pipe = load_checkpoint(src, format=src_format, **load_kwargs)
    if to == "hf":
        return export_hf(pipe, dst, force=force)
    return save_native(pipe, dst)
