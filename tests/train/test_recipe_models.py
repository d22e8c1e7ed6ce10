"""torchtune style: every shipped recipe's model config is built (not only its schema) with tiny dimensions, keeping
the architecture, projector, strategies and template the recipe chooses, and the model runs one image."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from onevision.encoders import encoder_class
from onevision.pipeline import from_config
from onevision.testing import tiny_tokenizer
from onevision.train.model_config import recipe_model_config
from onevision.train.recipe import RecipeError, list_recipes, load_recipe

RECIPES = [name for name, _ in list_recipes()]


def tiny_dims(config, recipe):
    """``config`` with its pretrained towers replaced by random tiny ones of the recipe's tile geometry."""
    vision = dataclasses.replace(
        config.vision,
        pretrained=None,
        config={
            "image_size": recipe.visual.tile_size,
            "patch_size": recipe.visual.patch_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
    )
    llm = dataclasses.replace(
        config.llm,
        pretrained=None,
        config={
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 16384,
        },
    )
    return dataclasses.replace(config, vision=vision, llm=llm)


def test_every_shipped_recipe_is_covered():
    assert len(RECIPES) >= 19 and {"llava_next/vicuna7b_clip336_anyres", "tiny/stage1"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_builds_the_model_it_describes(name):
    recipe = load_recipe(name, ["output_dir=unused"])
    config = recipe_model_config(recipe)
    assert config.vision.arch == recipe.model.vision_arch and config.llm.model_type == recipe.model.llm_type
    torch.manual_seed(0)
    pipe = from_config(tiny_dims(config, recipe), tokenizer=tiny_tokenizer())
    model, processor = pipe.model, pipe.processor
    assert type(model.vision_tower) is encoder_class(config.vision.backend, recipe.model.vision_arch)
    assert model.vision_tower.info.arch == recipe.model.vision_arch
    assert model.vision_tower.info.has_cls == (recipe.model.vision_arch == "clip")
    assert model.language_model.config.model_type == recipe.model.llm_type
    assert model.config.projector.type == recipe.model.projector
    assert processor.template.name == recipe.model.template
    for modality, strategy in (
        ("image", processor.policy.single_image),
        ("multi_image", processor.policy.multi_image),
    ):
        assert strategy.strategy_name == recipe.image_strategy(modality).strategy_name
    attn = recipe.model.attn_implementation
    assert model.language_model.config._attn_implementation == attn
    assert model.vision_tower.hf_config._attn_implementation == attn
    image = Image.new("RGB", (60, 40), (200, 30, 90))
    inputs = processor("<image> what?", images=[image])
    assert int((inputs.input_ids == processor.image_token_id).sum()) == recipe.image_strategy().num_tokens(
        (40, 60)
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs.input_ids.shape and torch.isfinite(logits).all()


def test_attn_implementation_reaches_both_hf_configs():
    recipe = load_recipe("tiny/stage1", ["output_dir=unused", "model.attn_implementation=eager"])
    pipe = from_config(recipe_model_config(recipe), tokenizer=tiny_tokenizer())
    assert pipe.model.language_model.config._attn_implementation == "eager"
    assert pipe.model.vision_tower.hf_config._attn_implementation == "eager"


def test_model_section_registry_keys_are_checked():
    with pytest.raises(RecipeError, match=r"model\.vision_arch: unknown encoder family 'dinov2'"):
        load_recipe("tiny/stage1", ["output_dir=x", "model.vision_arch=dinov2"])
    with pytest.raises(RecipeError, match=r"model\.preset: unknown preset 'huge'; known: llava-next"):
        recipe_model_config(load_recipe("tiny/stage1", ["output_dir=x", "model.preset=huge"]))
    with pytest.raises(RecipeError, match=r"model\.options: unknown key\(s\) \['llm_width'\]"):
        load_recipe("tiny/stage1", ["output_dir=x", "model.options={llm_width: 8}"])
    clip = load_recipe("tiny/stage1", ["output_dir=x", "model.vision_arch=clip"])
    with pytest.raises(RecipeError, match=r"model\.vision_arch: 'clip', but preset 'tiny' builds 'siglip'"):
        recipe_model_config(clip)


def test_the_old_options_arch_still_works_with_a_deprecation():
    recipe = load_recipe(
        "llava_next/vicuna7b_clip336_anyres",
        ["output_dir=x", "model.vision_arch=siglip", "model.options={vision: {arch: clip}}"],
    )
    with pytest.warns(DeprecationWarning, match="model.vision_arch"):
        assert recipe_model_config(recipe).vision.arch == "clip"


def test_a_named_model_config_is_a_preset():
    recipe = load_recipe(
        "tiny/stage1",
        [
            "output_dir=x",
            "model.preset=llava-next-vicuna-7b",
            "model.vision_arch=clip",
            "model.llm_type=llama",
        ],
    )
    config = recipe_model_config(recipe)
    assert (config.vision.pretrained, config.llm.pretrained) == (
        "openai/clip-vit-large-patch14-336",
        "lmsys/vicuna-7b-v1.5",
    )
