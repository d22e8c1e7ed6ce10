"""A model and its matching processor built from one config: what ``from_config`` and every checkpoint loader make.

:class:`Bundle` holds the pair; :class:`onevision.pipeline.Pipeline` is a bundle with the generation API on top.
Loaders return bundles, so the checkpoint formats never depend on the inference API above them.
Importing this module stays light: torch and transformers load when a bundle is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from onevision.config import OneVisionConfig
from onevision.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from onevision.model import OneVisionModel
    from onevision.processor import OneVisionProcessor

_EMBEDDINGS = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")


class Bundle:
    """A model and the processor that matches it (same policy, tokenizer and template)."""

    def __init__(self, model: OneVisionModel, processor: OneVisionProcessor):
        self.model = model
        self.processor = processor

    @property
    def config(self) -> OneVisionConfig:
        return self.model.config


def build_bundle(config: OneVisionConfig, tokenizer: Any = None, *, dtype: Any = None) -> Bundle:
    """Build a model (random or pretrained component weights, as the config says) and its processor.

    ``tokenizer`` defaults to ``config.llm.tokenizer`` or ``config.llm.pretrained`` (``from_pretrained``). The
    processor's tile size and normalisation come from the encoder; the model's config records the resolved
    policy and the placeholder ids.
    """
    from onevision.llm import fit_embeddings, load_tokenizer, max_positions
    from onevision.model import OneVisionModel
    from onevision.policy import resolve_processor_config
    from onevision.processor import OneVisionProcessor

    if tokenizer is None:
        source = config.llm.tokenizer or config.llm.pretrained
        if source is None:
            raise InputError("no tokenizer: pass tokenizer=..., or set llm.tokenizer / llm.pretrained")
        tokenizer = load_tokenizer(source)
    model = OneVisionModel(config)
    processor_config = resolve_processor_config(config.processor, model.vision_tower.info)
    processor = OneVisionProcessor(
        tokenizer, processor_config, max_length=max_positions(model.language_model)
    )
    fit_embeddings(model.language_model, tokenizer)
    model.config = dataclasses.replace(
        config,
        processor=processor.config,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
    )
    # one dtype for every component (a pretrained LLM may load in bf16 while the others are built in fp32)
    if not any(p.is_meta for p in model.parameters()):  # a meta build gets its dtype when materialised
        model.to(dtype=dtype if dtype is not None else model.language_model.dtype)
    model.eval()
    return Bundle(model, processor)


def restore_bundle(
    config: OneVisionConfig,
    tokenizer: Any,
    state: dict[str, Any],
    source: str,
    *,
    drop: Iterable[str] = (),
    dtype: Any = None,
    device: Any = None,
    device_map: Any = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | None = None,
    attn_implementation: str | None = None,
    quantize: Any = None,
) -> Bundle:
    """Build a bundle from ``config`` offline, then load native-named ``state`` into it strictly (eval mode).

    The model is built on the meta device and each weight is materialised once, read from ``state`` (tensors, or
    :class:`~onevision.checkpoints.io.LazyTensor` read from the memory-mapped safetensors) straight into ``dtype``
    (default: the state's) on ``device`` (default CPU) or where ``device_map`` places it (see
    :meth:`~onevision.model.OneVisionModel.load_checkpoint_state`). ``attn_implementation`` applies to the LLM
    and the vision tower. When the tokenizer has more tokens than the state's embeddings (e.g. ``<image>`` added
    to an original checkpoint's tokenizer), the new rows take the mean of the old ones; they are never read,
    because placeholder positions are replaced by visual features. ``quantize`` (a
    :class:`~onevision.quantization.QuantizePlan`) quantizes linear layers as their weights are read.
    """
    import torch

    from onevision.model import empty_init

    if dtype is None:
        dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    if attn_implementation is not None:
        config = dataclasses.replace(
            config,
            llm=dataclasses.replace(config.llm, attn_implementation=attn_implementation),
            vision=dataclasses.replace(config.vision, attn_implementation=attn_implementation),
        )
    with empty_init():
        bundle = build_bundle(config, tokenizer=tokenizer)
    bundle.model.load_checkpoint_state(
        _grow_vocab(state, bundle.model.state_dict()),
        source,
        drop=drop,
        dtype=dtype,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        quantize=quantize,
    )
    bundle.model.eval()
    return bundle


def _grow_vocab(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    import torch

    for key in _EMBEDDINGS:
        if (
            key in state
            and key in expected
            and state[key].shape[0] < expected[key].shape[0]
            and state[key].shape[1:] == expected[key].shape[1:]
        ):
            from onevision.checkpoints.io import as_tensor

            old = as_tensor(state[key])
            extra = (
                old.float()
                .mean(0, keepdim=True)
                .to(old.dtype)
                .expand(expected[key].shape[0] - old.shape[0], -1)
            )
            state = {**state, key: torch.cat([old, extra])}
    return state
