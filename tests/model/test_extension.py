"""Open registries: a new encoder backend, a new encoder family and a new projector are each one class (or record)
plus one registration, with their contracts enforced; the model built from them runs."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from torch import nn

import anyres
import onevision
from onevision.config import LLMConfig, OneVisionConfig, ProjectorConfig, VisionConfig
from onevision.encoders import EncoderInfo, VisionEncoder, base
from onevision.errors import ConfigError
from onevision.projectors import _PROJECTORS

from .conftest import random_image

TINY_LLM = LLMConfig(
    model_type="qwen2",
    config={
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
)


class PatchEncoder(VisionEncoder):
    """A toy backend: one patch-embedding convolution, for any registered family without CLS."""

    backend: ClassVar[str] = "toy_patches"
    arches: ClassVar[tuple[str, ...]] = ("siglip",)
    block_pattern: ClassVar[str] = r"blocks\.(\d+)\."

    def __init__(self, config: VisionConfig):
        super().__init__()
        c, arch = config.config, onevision.encoders.get_arch(config.arch)
        self.config_in = config
        self.blocks = nn.ModuleList([nn.Conv2d(3, c["width"], c["patch"], c["patch"])])
        info = EncoderInfo(self.backend, config.arch, c["tile"], c["patch"], c["width"], False, 1,
                           arch.image_mean, arch.image_std, "patch embeddings")  # fmt: skip
        self.declare(info)

    def forward(self, pixel_values):
        return self.blocks[0](pixel_values.to(self.dtype)).flatten(2).transpose(1, 2)

    def export_config(self):
        return dataclasses.replace(self.config_in, pretrained=None)


class NormedLinear(onevision.Projector, nn.Sequential):
    """LayerNorm then Linear."""

    name: ClassVar[str] = "test_ln_linear"

    @classmethod
    def from_config(cls, config, vision_width, llm_width, **params):
        return cls(nn.LayerNorm(vision_width), nn.Linear(vision_width, llm_width, bias=config.bias))


@pytest.fixture
def registered():
    onevision.register_encoder(PatchEncoder)
    onevision.register_projector(NormedLinear)
    yield
    base._ENCODERS.pop(("toy_patches", "siglip"))
    _PROJECTORS.pop(NormedLinear.name)


def test_a_new_backend_and_projector_build_a_working_model(registered, tokenizer):
    assert (
        "toy_patches/siglip" in onevision.list_encoders() and "test_ln_linear" in onevision.list_projectors()
    )
    config = OneVisionConfig(
        vision=VisionConfig(
            backend="toy_patches", arch="siglip", config={"tile": 32, "patch": 8, "width": 16}
        ),
        projector=ProjectorConfig("test_ln_linear"),
        llm=TINY_LLM,
    )
    pipe = onevision.from_config(config, tokenizer=tokenizer)
    assert isinstance(pipe.model.vision_tower, PatchEncoder) and isinstance(
        pipe.model.projector, NormedLinear
    )
    inputs = pipe.processor("<image> what?", images=[random_image(50, 30, seed=0)])
    assert pipe.processor.policy.single_image.tile_size == 32  # the policy follows the declared metadata
    with torch.no_grad():
        assert torch.isfinite(pipe.model(**inputs).logits).all()
    with pytest.raises(onevision.UnknownComponentError, match="toy_patches/siglip"):
        onevision.build_encoder(dataclasses.replace(config.vision, arch="clip"))  # it claims siglip only


def test_a_new_family_is_one_record():
    arch = onevision.VisionArch(
        "test_family", has_cls=False, feature_layer=-1, image_mean=anyres.SIGLIP_MEAN,
        image_std=anyres.SIGLIP_STD, feature_rule="last block", hf_model_types=("test_vision_model",),
    )  # fmt: skip
    onevision.register_arch(arch)
    try:
        assert "timm/test_family" in onevision.list_encoders()  # the generic backends build any family
        assert onevision.encoders.hf_vision_arches()["test_vision_model"] == "test_family"
        with pytest.raises(ConfigError, match="already registered"):
            onevision.register_arch(arch)
    finally:
        onevision.archs._ARCHS.pop("test_family")
    with pytest.raises(ConfigError, match="image_std must be positive"):
        dataclasses.replace(arch, image_std=(0.5, 0.0, 0.5))


def test_encoder_contract_is_enforced():
    with pytest.raises(TypeError, match="must declare block_pattern"):

        class NoPattern(VisionEncoder):
            backend: ClassVar[str] = "x"
            arches: ClassVar[tuple[str, ...]] = ("siglip",)

            def forward(self, pixel_values): ...
            def export_config(self): ...

    with pytest.raises(TypeError, match="must declare backend"):

        class NoBackend(VisionEncoder):
            block_pattern: ClassVar[str] = r"b\.(\d+)\."

    class Silent(PatchEncoder):
        backend: ClassVar[str] = "toy_silent"

        def __init__(self, config):
            nn.Module.__init__(self)  # never declares its metadata

    with pytest.raises(TypeError, match=r"must call self\.declare"):
        _ = Silent(VisionConfig()).info
    bad = {"tile": 8, "patch": 16, "width": 4}
    with pytest.raises(ConfigError, match="patch_size 16 exceeds tile_size 8"):
        PatchEncoder(VisionConfig(backend="toy_patches", config=bad))


def test_projector_contract_is_enforced(registered):
    with pytest.raises(TypeError, match="must declare its registry name"):

        class Nameless(onevision.Projector, nn.Sequential):
            @classmethod
            def from_config(cls, config, vision_width, llm_width, **params):
                return cls()

    with pytest.raises(TypeError, match=r"must also subclass torch\.nn\.Module"):

        class NotAModule(onevision.Projector):
            name: ClassVar[str] = "not_a_module"

    class Narrow(onevision.Projector, nn.Sequential):
        name: ClassVar[str] = "test_narrow"

        @classmethod
        def from_config(cls, config, vision_width, llm_width, **params):
            return cls(nn.Linear(vision_width, llm_width - 1))

    onevision.register_projector(Narrow)
    try:
        with pytest.raises(ConfigError, match=r"maps \[1, 8\] to \[1, 15\]; it must give \[1, 16\]"):
            onevision.build_projector(ProjectorConfig("test_narrow"), 8, 16)
    finally:
        _PROJECTORS.pop("test_narrow")
    assert isinstance(onevision.build_projector(ProjectorConfig("test_ln_linear"), 8, 16)[0], nn.LayerNorm)
