"""Language models and tokenizers: any transformers causal LM of a registered family, plus media tokens.

The family is the typed ``LLMConfig.model_type`` (transformers' own ``model_type``), never guessed from a name.
Tokenizers get ``<image>`` / ``<video>`` as atomic special tokens; the LLM's embeddings grow if needed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from onevision.config import LLMConfig
from onevision.errors import ConfigError, UnknownComponentError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: model_type -> description. Families tested with onevision; others can be added with :func:`register_llm`.
_LLMS: dict[str, str] = {
    "qwen2": "Qwen-2 / Qwen-2.5 (LLaVA-OneVision)",
    "qwen3": "Qwen-3",
    "llama": "LLaMA / Vicuna / LLaMA-3 (LLaVA-1.5 / 1.6)",
    "mistral": "Mistral",
    "gemma": "Gemma",
}

_DROP_KEYS = ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "auto_map")


def register_llm(model_type: str, description: str = "") -> None:
    """Allow another transformers causal-LM family (its ``model_type``)."""
    _LLMS[model_type] = description or model_type


def list_llms() -> list[str]:
    return sorted(_LLMS)


def check_llm_type(model_type: str) -> None:
    if model_type not in _LLMS:
        raise UnknownComponentError("LLM model_type", model_type, _LLMS)


def build_llm(config: LLMConfig, *, dtype: Any = None) -> PreTrainedModel:
    """A transformers causal LM: ``from_pretrained(config.pretrained)`` or random weights from ``config.config``,
    with ``config.attn_implementation`` (transformers' default when ``None``)."""
    if config.backend != "transformers":
        raise UnknownComponentError("LLM backend", config.backend, ["transformers"])
    check_llm_type(config.model_type)
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.pretrained:
        model = AutoModelForCausalLM.from_pretrained(config.pretrained, **kwargs)
        if model.config.model_type != config.model_type:
            raise ConfigError(
                f"llm.pretrained {config.pretrained!r} is a {model.config.model_type!r} model but "
                f"llm.model_type is {config.model_type!r}"
            )
        return model
    params = {k: v for k, v in config.config.items() if k not in ("model_type", *_DROP_KEYS)}
    hf_config = AutoConfig.for_model(config.model_type, **params)
    model = AutoModelForCausalLM.from_config(hf_config, **kwargs)
    return model


def export_llm_config(model: PreTrainedModel, base: LLMConfig) -> LLMConfig:
    """An :class:`LLMConfig` that rebuilds ``model``'s architecture offline (``pretrained=None``)."""
    hf = model.config.to_dict()
    for key in _DROP_KEYS:
        hf.pop(key, None)
    return dataclasses.replace(base, pretrained=None, tokenizer=None, config=hf)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` (hub id or local directory)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def add_media_tokens(
    tokenizer: PreTrainedTokenizerBase, image_token: str, video_token: str
) -> tuple[int, int]:
    """Make ``image_token`` and ``video_token`` atomic special tokens; returns their ids."""
    missing = [t for t in (image_token, video_token) if t not in tokenizer.get_vocab()]
    if missing:
        from tokenizers import AddedToken

        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True
        )
    ids = tokenizer.convert_tokens_to_ids([image_token, video_token])
    for token, tid in zip((image_token, video_token), ids):
        pieces = tokenizer(token, add_special_tokens=False)["input_ids"]
        if list(pieces) != [tid]:
            raise ConfigError(f"tokenizer does not encode {token!r} as one token (got {pieces})")
    return int(ids[0]), int(ids[1])


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id. Masks never compare ids, so a tokenizer without a pad token reuses EOS (logged)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                "the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token"
            )
        log.info(
            "tokenizer has no pad token; using EOS %r for padding (attention masks come from lengths)",
            tokenizer.eos_token,
        )
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)


def fit_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the input/output embeddings if the tokenizer has more tokens than the LLM's vocabulary."""
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)


def max_positions(model_or_config: Any) -> int | None:
    """The LLM's ``max_position_embeddings`` if it declares one."""
    cfg = getattr(model_or_config, "config", model_or_config)
    value = getattr(cfg, "max_position_embeddings", None)
    if value is None and isinstance(cfg, dict):
        value = cfg.get("max_position_embeddings")
    return int(value) if value else None


def set_activation_checkpointing(model: Any, enable: bool, kwargs: dict[str, Any] | None = None) -> None:
    """transformers 5 renamed gradient checkpointing to activation checkpointing; use whichever exists."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()
