"""One visual-policy schema for recipes, the processor, the model and the token counter; the model packs images
through the strategy that made their layout."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import anyres
import video
from onevision.config import OneVisionConfig, ProcessorConfig
from onevision.errors import ConfigError, InputError
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy
from onevision.schema import FieldError
from onevision.train.data import video_tokens
from onevision.train.recipe import load_recipe

from .conftest import random_image


def test_recipes_and_processor_configs_share_the_schema():
    recipe = load_recipe("onevision/qwen2_0.5b/stage2_ov", ["output_dir=x"])
    assert type(recipe.visual) is VisualPolicy and type(ProcessorConfig().visual) is VisualPolicy
    config = ProcessorConfig(visual=recipe.visual)
    assert ProcessorConfig.from_dict(OneVisionConfig(processor=config).to_dict()["processor"]) == config


def test_format_1_processor_configs_are_read():
    old = {
        "format": "onevision",
        "format_version": 1,
        "processor": {
            "single_image": {"name": "anyres_max_9", "tile_size": 64, "patch_size": 8, "rounding": "llava"},
            "multi_image": {"name": "pad", "tile_size": 64, "patch_size": 8},
            "video": {"mode": "average", "stride": 2, "newline": "grid"},
            "sampling": {"num_frames": 8, "time_instruction": True},
            "template": "vicuna_v1",
        },
    }
    visual = OneVisionConfig.from_dict(old).processor.visual
    assert (visual.tile_size, visual.patch_size) == (64, 8)
    assert visual.image == ImagePolicy("anyres_max_9", {"rounding": "llava"})
    assert visual.multi_image == ImagePolicy("pad", {})
    assert visual.video == VideoPolicy(
        pool_mode="average", pool_stride=2, newline_position="grid", num_frames=8, time_instruction=True
    )
    bad = {**old, "processor": {**old["processor"], "sampling": {"num_frames": 8, "uniform": "arange"}}}
    with pytest.raises(ConfigError, match=r"\['uniform'\] have no place in visual.video"):
        OneVisionConfig.from_dict(bad)


def test_strict_reader_names_the_field():
    with pytest.raises(FieldError, match=r"processor\.visual\.video\.pool_mode: must be one of"):
        ProcessorConfig.from_dict({"visual": {"video": {"pool_mode": "bicubic"}}})
    with pytest.raises(
        FieldError, match=r"processor\.visual\.imag: unknown key; did you mean processor\.visual\.image"
    ):
        ProcessorConfig.from_dict({"visual": {"imag": {}}})
    with pytest.raises(FieldError, match=r"vision\.image_mean: expected a list of 3 values"):
        OneVisionConfig.from_dict({"vision": {"image_mean": [0.5, 0.5]}})
    with pytest.raises(FieldError, match=r"processor\.visual\.video: force_sample applies to fps sampling"):
        ProcessorConfig.from_dict({"visual": {"video": {"num_frames": 4, "force_sample": True}}})
    with pytest.raises(ConfigError, match=r"visual\.image\.params sets \['tile_size'\]"):
        VisualPolicy(image=ImagePolicy("pad", {"tile_size": 64})).strategy("image")


def test_one_video_token_formula():
    for pos in ("one_token", "grid", "frame", "no_token"):
        for mode in ("bilinear", "average", "max"):
            policy = VideoPolicy(pool_mode=mode, newline_position=pos)
            want = video.FramePooling(mode=mode, newline=pos).layout(12).num_tokens
            assert video_tokens(12, policy, 384, 14) == want
            assert VisualPolicy(video=policy).video_tokens(12) == want
    assert VideoPolicy(num_frames=8).sampling() == video.Sampling(num_frames=8)
    assert VideoPolicy(frames_upbound=0).sampling() == video.Sampling(fps=1.0)
    assert VideoPolicy().sampling(num_frames=4) == video.Sampling(num_frames=4)


def test_new_policy_fields_keep_recipe_hashes_until_used():
    base = load_recipe("tiny/stage2_ov", ["output_dir=x"])
    same = load_recipe("tiny/stage2_ov", ["output_dir=x", "visual.video.num_frames=null"])
    other = load_recipe("tiny/stage2_ov", ["output_dir=x", "visual.video.num_frames=8"])
    assert base.hash() == same.hash() != other.hash()


@dataclass(frozen=True, kw_only=True)
class NewlineFirst(anyres.PadStrategy):
    """``pad`` with its newline before the tile's tokens: the same layout, another token structure."""

    name: ClassVar[str] = "test_newline_first"
    token_rule: ClassVar[str] = "one newline, then one tile's tokens"

    def pack(self, features, layout, newline=None, *, out=None):
        packed = torch.cat([newline[None].to(features.dtype), features[0]])
        return packed if out is None else out.copy_(packed)


@pytest.fixture
def newline_first():
    anyres.register_strategy(NewlineFirst)
    yield
    anyres.strategies._REGISTRY.pop(NewlineFirst.name)


def test_the_model_packs_images_through_their_strategy(pipe, newline_first):
    from onevision.pipeline import from_config

    config = pipe.model.config
    visual = dataclasses.replace(config.processor.visual, multi_image=ImagePolicy("test_newline_first"))
    custom = from_config(
        dataclasses.replace(config, processor=dataclasses.replace(config.processor, visual=visual)),
        tokenizer=pipe.processor.tokenizer,
    )
    custom.model.load_state_dict(pipe.model.state_dict())
    custom.model.eval()
    images = [random_image(40, 30, seed=1), random_image(30, 50, seed=2)]
    inputs = custom.processor("<image><image> two", images=images)
    assert [lay.strategy for lay in inputs.image_layouts] == ["test_newline_first"] * 2
    with torch.no_grad():
        embeds = custom.model.embed_inputs(inputs.input_ids, inputs.pixel_values, inputs.image_layouts)
        tiles = custom.model.encode_tiles(inputs.pixel_values)
    positions = (inputs.input_ids[0] == custom.processor.image_token_id).nonzero()[:, 0]
    first, second = positions[: len(positions) // 2], positions[len(positions) // 2 :]
    newline = custom.model.image_newline
    assert torch.allclose(embeds[0, first[0]], newline) and torch.allclose(embeds[0, second[0]], newline)
    assert torch.allclose(embeds[0, first[1:]], tiles[0]) and torch.allclose(embeds[0, second[1:]], tiles[1])


def test_a_layout_from_outside_the_policy_is_refused(pipe):
    foreign = anyres.get_strategy("anyres_max_4", tile_size=64, patch_size=8)
    layout = foreign.layout(anyres.ImageSize(300, 500))
    with pytest.raises(InputError, match="was not made by this model's policy"):
        pipe.model.policy().strategy_for(layout)
