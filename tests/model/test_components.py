"""Encoders (every registered backend/arch), projectors, LLM registry and chat templates."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from onevision.config import LLMConfig, ProjectorConfig, VisionConfig
from onevision.encoders import build_encoder, list_encoders
from onevision.errors import UnknownComponentError
from onevision.testing import TINY

TOWER = TINY.replace(vision_layers=3)  # feature layer -2 keeps 2 blocks
TINY_HF_VISION = TOWER.vision_kwargs()
TIMM_KW = TOWER.timm_kwargs()
OPEN_CLIP_CFG = TOWER.open_clip_kwargs(output_dim=16)

ENCODER_CONFIGS = {
    "transformers/siglip": VisionConfig("transformers", "siglip", config=TINY_HF_VISION, feature_layer=-2),
    "transformers/clip": VisionConfig("transformers", "clip", config=TINY_HF_VISION, feature_layer=-2),
    "timm/siglip": VisionConfig("timm", "siglip", model_name="vit_so400m_patch14_siglip_384", config=TIMM_KW),
    "timm/clip": VisionConfig("timm", "clip", model_name="vit_large_patch14_clip_336", config=TIMM_KW),
    "open_clip/clip": VisionConfig("open_clip", "clip", config=OPEN_CLIP_CFG),
}


def test_every_registered_encoder_has_a_test_config():
    assert set(list_encoders()) >= set(ENCODER_CONFIGS)
    untested = set(list_encoders()) - set(ENCODER_CONFIGS)
    assert untested == {"open_clip/siglip"}  # open_clip's SigLIP is a timm trunk: covered by timm/siglip


@pytest.mark.parametrize("key", sorted(ENCODER_CONFIGS))
def test_encoder_metadata_matches_a_forward_pass(key):
    torch.manual_seed(0)
    enc = build_encoder(ENCODER_CONFIGS[key]).eval()
    info = enc.info
    assert (info.tile_size, info.patch_size, info.width, info.grid_side) == (64, 8, 32, 8)
    assert info.has_cls == key.endswith("clip")
    assert info.num_layers == 2  # feature layer -2 of 3 blocks: the last block is removed at build time
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
    assert out.shape == (3, info.tokens_per_tile, info.width)  # CLS dropped, declared tokens per tile
    # the offline export rebuilds the same (truncated) tower and the weights load strictly
    rebuilt = build_encoder(enc.export_config()).eval()
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)


def test_transformers_siglip_rule_is_the_penultimate_hidden_state_without_post_layernorm(tmp_path):
    """A local SigLIP directory loads as SigLIP (typed arch, not the path) and drops its last block."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    full = SiglipVisionModel(SiglipVisionConfig(**TINY_HF_VISION, vision_use_head=False)).eval()
    full.save_pretrained(tmp_path)
    enc = build_encoder(VisionConfig("transformers", "siglip", pretrained=str(tmp_path))).eval()
    assert enc.info.num_layers == 2 and len(enc.model.encoder.layers) == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = full(x, output_hidden_states=True)
        ours = enc(x)
    assert torch.allclose(ours, ref.hidden_states[-2], atol=1e-6)
    assert (ours - full.post_layernorm(ref.hidden_states[-2])).abs().max() > 1e-2  # post-LN is not applied


def test_transformers_clip_rule_drops_cls_at_the_penultimate_layer():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    full = CLIPVisionModel(CLIPVisionConfig(**TINY_HF_VISION)).eval()
    enc = build_encoder(ENCODER_CONFIGS["transformers/clip"]).eval()
    missing, unexpected = enc.model.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(k.startswith("encoder.layers.2.") for k in unexpected)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x), full(x, output_hidden_states=True).hidden_states[-2][:, 1:], atol=1e-6)


def test_timm_and_open_clip_features_equal_a_manual_block_pass():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    timm_enc = build_encoder(ENCODER_CONFIGS["timm/clip"]).eval()
    t = timm_enc.trunk
    with torch.no_grad():
        h = t.norm_pre(t._pos_embed(t.patch_embed(x)))
        for blk in t.blocks[:2]:
            h = blk(h)
        assert torch.allclose(timm_enc(x), h[:, t.num_prefix_tokens :], atol=1e-6)
    oc = build_encoder(ENCODER_CONFIGS["open_clip/clip"]).eval()
    v = oc.visual
    with torch.no_grad():
        h = v.conv1(x).flatten(2).transpose(1, 2)
        h = torch.cat([v.class_embedding.expand(2, 1, -1), h], dim=1) + v.positional_embedding
        h = v.ln_pre(h)
        for blk in v.transformer.resblocks[:2]:
            h = blk(h)
        assert torch.allclose(oc(x), h[:, 1:], atol=1e-5)


def test_encoder_norms_come_from_the_encoder_unless_overridden():
    siglip = build_encoder(ENCODER_CONFIGS["transformers/siglip"])
    clip = build_encoder(ENCODER_CONFIGS["transformers/clip"])
    assert siglip.info.image_mean == (0.5, 0.5, 0.5)
    assert clip.info.image_mean[0] == pytest.approx(0.48145466)
    custom = build_encoder(
        dataclasses.replace(ENCODER_CONFIGS["transformers/clip"], image_mean=(0.1, 0.2, 0.3))
    )
    assert custom.info.image_mean == (0.1, 0.2, 0.3)


def test_unknown_components_list_the_supported_ones():
    from onevision.llm import build_llm
    from onevision.projectors import build_projector
    from onevision.templates import get_template

    with pytest.raises(UnknownComponentError, match=r"transformers/siglip") as err:
        build_encoder(VisionConfig("transformers", "dinov2"))
    assert "timm/clip" in str(err.value)
    with pytest.raises(UnknownComponentError, match=r"qwen2.*|llama"):
        build_llm(LLMConfig(model_type="gpt_neox"))
    with pytest.raises(UnknownComponentError, match="mlp<N>x_gelu"):
        build_projector(ProjectorConfig("resampler"), 4, 8)
    with pytest.raises(UnknownComponentError, match="qwen_1_5"):
        get_template("alpaca")
    with pytest.raises(ValueError, match="feature_layer=-5"):
        build_encoder(dataclasses.replace(ENCODER_CONFIGS["transformers/siglip"], feature_layer=-5))


def test_projectors():
    from onevision.projectors import build_projector

    mlp = build_projector(ProjectorConfig("mlp2x_gelu"), 32, 64)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    assert mlp[1].approximate == "none"  # exact erf GELU, like the reference
    assert set(mlp.state_dict()) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }  # the mm_projector.{0,2} names
    x = torch.randn(5, 32)
    expected = mlp[2](torch.nn.functional.gelu(mlp[0](x)))
    assert torch.equal(mlp(x), expected)
    deep = build_projector(ProjectorConfig("mlp3x_gelu"), 32, 64)
    assert sum(isinstance(m, torch.nn.Linear) for m in deep) == 3
    linear = build_projector(ProjectorConfig("linear", bias=False), 32, 64)
    assert linear[0].bias is None and linear(x).shape == (5, 64)


# ----------------------------------------------------------------------------------------------------------------
# Templates: the exact reference strings (algorithms reference §7.2)


def test_qwen_1_5_inference_prompt_is_exact():
    from onevision.templates import get_template

    prompt = get_template("qwen_1_5").prompt([{"role": "user", "content": "<image>\nWhat is it?"}])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
        "What is it?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_vicuna_v1_prompt_is_exact():
    from onevision.templates import VICUNA_SYSTEM, get_template

    conv = [
        {"from": "human", "value": "<image>\nQ1"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2"},
    ]
    prompt = get_template("vicuna_v1").prompt(conv)
    assert prompt == f"<s>{VICUNA_SYSTEM} USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_llama_3_prompt_is_exact():
    from onevision.templates import LLAMA3_SYSTEM, get_template

    prompt = get_template("llama_3").prompt([{"role": "user", "content": " <image>\nQ "}])
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        + LLAMA3_SYSTEM
        + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_template_segments_mark_only_answers_as_trained():
    from onevision.templates import get_template, normalize_messages

    msgs, _, _ = normalize_messages(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    )
    segs = get_template("qwen_1_5").render(msgs)
    assert "".join(s.text for s in segs if s.train) == "A<|im_end|>"
    assert "".join(s.text for s in segs) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    )


def test_content_parts_become_tags_and_media():
    from onevision.templates import normalize_messages

    msgs, images, videos = normalize_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "a.png"},
                    {"type": "video", "video": "v.mp4"},
                    {"type": "text", "text": "Hi"},
                ],
            }
        ]
    )
    assert msgs[0].content == "<image>\n<video>\nHi" and images == ["a.png"] and videos == ["v.mp4"]
