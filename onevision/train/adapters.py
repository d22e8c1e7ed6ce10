"""Adapters from the real ``OneVisionModel`` / ``OneVisionProcessor`` to the trainer's interfaces.

The recipe's ``visual`` policy *is* the processor's ``ProcessorConfig.visual`` (one schema,
:class:`onevision.policy.VisualPolicy`), so the data layer's geometry, the processor's placeholder runs and the
model's packing read one policy; ``measure`` checks that the processor's per-media token counts equal the data
layer's and fails loudly otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onevision.train.data import IMAGE_PLACEHOLDER, DataError, Measure, Media, MediaError, Sample
from onevision.train.recipe import Recipe, RecipeError

#: model -> its processor (the model object is what accelerate wraps; the processor travels beside it)
_PROCESSORS: dict[int, Any] = {}


def build_onevision_model(recipe: Recipe, init_from: Path | None, *, weights: bool = True) -> Any:
    """``OneVisionModel`` from ``init_from`` (a native checkpoint), else the model config the recipe describes
    (:func:`onevision.train.model_config.recipe_model_config`: a named preset or component ids). ``weights=False``
    builds it on the meta device and leaves out the LoRA / quantization preparation (nothing to train)."""
    try:
        from onevision.pipeline import from_config, load
        from onevision.policy import resolve_processor_config
        from onevision.processor import OneVisionProcessor
    except ImportError as exc:  # pragma: no cover - the model package is part of onevision
        raise RecipeError(
            recipe.source, "model.builder", f"the onevision model is not available ({exc})"
        ) from None
    from onevision.train import lora_stage

    if init_from is not None:
        options = lora_stage.init_from_options(recipe, init_from, weights=weights)
        pipe = load(str(init_from), **({} if weights or options else {"device": "meta"}), **options)
    else:
        import torch

        from onevision.train.model_config import recipe_model_config

        config = recipe_model_config(recipe)
        tokenizer = None
        if not (config.llm.tokenizer or config.llm.pretrained):
            from onevision.testing import tiny_tokenizer  # the offline tokenizer of configs without one

            tokenizer = tiny_tokenizer()
        torch.manual_seed(recipe.seed)
        if weights:
            pipe = from_config(config, tokenizer=tokenizer)
        else:
            from accelerate import init_empty_weights

            with init_empty_weights():
                pipe = from_config(config, tokenizer=tokenizer)
    model = pipe.model
    info = model.vision_tower.info
    if (info.tile_size, info.patch_size) != (recipe.visual.tile_size, recipe.visual.patch_size):
        raise RecipeError(
            recipe.source,
            "visual.tile_size",
            f"the recipe says tile {recipe.visual.tile_size} / patch {recipe.visual.patch_size} but the "
            f"vision encoder has tile {info.tile_size} / patch {info.patch_size}",
        )
    policy = dataclasses.replace(
        pipe.processor.config,
        visual=recipe.visual,
        template=recipe.model.template,
        label_mask=recipe.data.label_mask,
    )
    cfg = resolve_processor_config(policy, info)
    processor = OneVisionProcessor(pipe.processor.tokenizer, cfg, max_length=recipe.data.model_max_length)
    model.config = dataclasses.replace(model.config, processor=processor.config)  # the model's policy follows
    if weights:
        lora_stage.prepare_model(recipe, model, processor, init_from)  # LoRA / QLoRA stages only
        model.train()
    _PROCESSORS[id(model)] = processor
    return model


def build_onevision_encoder(recipe: Recipe, model: Any) -> ProcessorEncoder:
    processor = _PROCESSORS.get(id(model))
    if processor is None:
        raise RecipeError(
            recipe.source, "model.builder", "no processor for this model (build it with build_model)"
        )
    return ProcessorEncoder(processor, recipe)


def save_onevision(
    model: Any, encoder: ProcessorEncoder, directory: Path, state_dict: dict[str, Any] | None
) -> None:
    """A native onevision checkpoint (``onevision.load``-able): the model's weights and config (the same writer as
    ``OneVisionModel.save_pretrained``), with the training processor's policy and its tokenizer."""
    from onevision.checkpoints import save_native
    from onevision.pipeline import Pipeline
    from onevision.train import lora_stage

    if getattr(model, "lora", None) is not None:  # a LoRA stage writes its adapter directory
        return lora_stage.save_stage(model, encoder, directory, state_dict)
    save_native(Pipeline(model, encoder.processor), directory, state_dict=state_dict)


class ProcessorEncoder:
    """``SampleEncoder`` over ``OneVisionProcessor``: counts from headers, encodes with ``build_sample``."""

    def __init__(self, processor: Any, recipe: Recipe):
        self.processor = processor
        self.recipe = recipe

    def _conversation(self, sample: Sample) -> list[dict[str, str]]:
        conv = []
        for t in sample.turns:
            text = t.text
            if sample.modality == "video":
                text = text.replace(IMAGE_PLACEHOLDER, self.processor.video_token)
            conv.append({"role": t.role, "content": text})
        return conv

    def measure(self, sample: Sample, visual_tokens: Sequence[int]) -> Measure:
        conv = self._conversation(sample)
        videos = [sample.video] if sample.video else None
        try:
            count = self.processor.count_tokens(
                conversation=conv, images=list(sample.images) or None, videos=videos
            )
        except (OSError, ValueError) as exc:
            raise MediaError(f"{sample.source}: {exc}") from None
        parts = tuple(p.tokens for p in count.parts)
        if parts != tuple(visual_tokens):
            raise DataError(
                f"{sample.source}: the processor counts {parts} visual tokens but the recipe's policy "
                f"gives {tuple(visual_tokens)}; the model's processor policy and the recipe disagree"
            )
        # the processor's own position (re-tokenising the text after the last tag would read special tokens
        # typed in the data as control tokens, which the encoding does not)
        return Measure(count.total, count.visual_end if parts else 0)

    def encode(self, sample: Sample, media: Media) -> dict[str, Any]:
        """Encode with the media the dataset decoded (a video arrives as the ``video.Clip`` of the recipe's spec,
        so the frames are exactly the ones planned; a bare path is still sampled by the processor, same spec)."""
        import anyres
        import video

        clip = media.video if media.video is not None else sample.video
        try:
            item = self.processor.build_sample(
                self._conversation(sample),
                images=list(media.images) or None,
                videos=[clip] if clip is not None else None,
                label_mask=self.recipe.data.label_mask,
                check_length=False,
            )
        except (anyres.ImageError, video.VideoError) as exc:
            if isinstance(exc, video.BackendUnavailableError):
                raise
            raise MediaError(str(exc)) from None
        return dict(item)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.processor.collate(items, padding_side="right"))
