"""Parity with transformers' ``LlavaOnevisionForConditionalGeneration`` (the oracle) on a tiny random model saved
with ``save_pretrained``: token ids, pixels, logits (<= 1e-5) and greedy tokens, for every modality."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.model.conftest import TILE, chatml, hf_processor, random_frames, random_image

ATOL = 1e-5
NEW_TOKENS = 8


def _hf_generate(hf_model, inputs, n=NEW_TOKENS):
    out = hf_model.generate(**inputs, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[:, inputs["input_ids"].shape[1] :]


def _our_generate(pipe, inputs, n=NEW_TOKENS):
    return pipe.model.generate(
        **inputs, max_new_tokens=n, eos_token_id=[], pad_token_id=pipe.processor.pad_token_id
    )


def _compare(pipe, hf_model, ours, theirs, *, position_ids=None):
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    with torch.no_grad():
        ours_logits = pipe.model(**ours).logits
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        hf_logits = hf_model(**theirs, **extra).logits
    mask = ours["attention_mask"].bool()
    diff = (ours_logits - hf_logits)[mask].abs().max().item()
    assert diff <= ATOL, diff
    return diff


def test_one_image(pipe, hf_model, hf_proc, image_a):
    text = chatml("<image>\nWhat is in the picture?")
    ours = pipe.processor(text=text, images=[image_a])
    theirs = hf_proc(text=text, images=[image_a], return_tensors="pt")
    n_visual = int((ours.input_ids == pipe.processor.image_token_id).sum())
    assert n_visual == ours.image_layouts[0].num_tokens == 724  # §5.6: 200x130 -> 13 tiles, 724 tokens
    assert ours.pixel_values.shape == (13, 3, TILE, TILE)
    assert torch.allclose(ours.pixel_values, theirs.pixel_values[0], atol=1e-6)
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))


def test_one_large_image_with_the_tau_cap(pipe, hf_model, hf_proc):
    """1920x1080 at the tiny geometry: 25 tiles, unpadded 28x48 capped to 18x31 by bilinear interpolation."""
    image = random_image(1920, 1080, seed=5)
    text = chatml("<image>\nDescribe.")
    ours = pipe.processor(text=text, images=[image])
    theirs = hf_proc(text=text, images=[image], return_tensors="pt")
    layout = ours.image_layouts[0]
    assert layout.is_capped and layout.num_tiles == 25 and layout.num_tokens == 640
    assert torch.allclose(ours.pixel_values, theirs.pixel_values[0], atol=1e-6)
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))


def test_two_images_use_the_multi_image_policy(pipe, hf_model, hf_proc, image_a, image_b):
    text = chatml("<image>\n<image>\nWhat differs between these two?")
    ours = pipe.processor(text=text, images=[image_a, image_b])
    theirs = hf_proc(text=text, images=[[image_a, image_b]], return_tensors="pt")  # nested = HF multi-image
    assert [lay.num_tokens for lay in ours.image_layouts] == [65, 65]  # one tile + one newline each
    assert int((ours.input_ids == pipe.processor.image_token_id).sum()) == 130
    assert torch.allclose(ours.pixel_values, theirs.pixel_values.flatten(0, 1), atol=1e-6)
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))


def test_eight_frame_video(pipe, hf_model, hf_proc, frames8):
    text = chatml("<video>\nWhat happens in this video?")
    ours = pipe.processor(text=text, videos=[frames8])
    theirs = hf_proc(text=text, videos=[frames8], return_tensors="pt")
    assert ours.video_layouts[0].num_tokens == 129  # 8 * 4 * 4 + 1
    assert torch.allclose(ours.pixel_values_videos, theirs.pixel_values_videos[0], atol=1e-6)
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))


def test_text_only(pipe, hf_model, hf_proc):
    text = chatml("Tell me a story about a red car.")
    ours = pipe.processor(text=text)
    theirs = hf_proc(text=text, return_tensors="pt")
    assert "pixel_values" not in ours
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))


def test_left_padded_batch_of_two(pipe, hf_model, hf_proc, image_a):
    texts = [chatml("<image>\nDescribe the image."), chatml("Hello, what is the time?")]
    ours = pipe.processor(text=texts, images=[[image_a], []])
    theirs = hf_proc(
        text=texts, images=[[image_a], []], return_tensors="pt", padding=True, padding_side="left"
    )
    assert ours.attention_mask[1, 0] == 0 and ours.attention_mask[:, -1].all()  # left padding
    positions = ours.attention_mask.long().cumsum(-1) - 1
    _compare(pipe, hf_model, ours, theirs, position_ids=positions.clamp(min=0))
    batched = _our_generate(pipe, ours)
    assert torch.equal(batched, _hf_generate(hf_model, theirs))
    singles = [
        _our_generate(pipe, pipe.processor(text=texts[0], images=[image_a])),
        _our_generate(pipe, pipe.processor(text=texts[1])),
    ]
    assert torch.equal(batched, torch.cat(singles))


def test_loss_matches_transformers(pipe, hf_model, hf_proc, image_a):
    text = chatml("<image>\nWhat is it?") + "A gradient.<|im_end|>\n"
    ours = pipe.processor(text=text, images=[image_a])
    theirs = hf_proc(text=text, images=[image_a], return_tensors="pt")
    labels = ours.input_ids.clone()
    labels[labels == pipe.processor.image_token_id] = -100
    labels[:, :5] = -100
    with torch.no_grad():
        ours_loss = pipe.model(**ours, labels=labels).loss
        hf_loss = hf_model(**theirs, labels=labels).loss
    assert torch.isfinite(ours_loss)
    assert abs(ours_loss.item() - hf_loss.item()) <= 1e-5


def test_torchvision_backend_pixels_within_one_level(pipe, tokenizer, image_a):
    theirs = hf_processor(tokenizer, "torchvision")(text="<image>", images=[image_a], return_tensors="pt")
    ours = pipe.processor(text="<image>", images=[image_a])
    diff = (ours.pixel_values - theirs.pixel_values[0]).abs()
    assert diff.max().item() <= 2 / 255 + 1e-6  # one uint8 level after (x/255 - 0.5) / 0.5
    assert torch.equal(ours.input_ids, theirs.input_ids)


def test_export_to_hf_loads_in_transformers(pipe, hf_model, hf_proc, tmp_path, image_a, frames8):
    from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

    from onevision.checkpoints import export_hf

    export_hf(pipe, tmp_path)
    reloaded = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = LlavaOnevisionProcessor.from_pretrained(tmp_path)
    assert processor.num_image_tokens == 64 and list(processor.image_processor.image_mean) == [0.5] * 3
    assert reloaded.config.image_grid_pinpoints == hf_model.config.image_grid_pinpoints
    text = chatml("<image>\n<video>\nDescribe both.")
    inputs = hf_proc(text=text, images=[image_a], videos=[frames8], return_tensors="pt")
    with torch.no_grad():
        diff = (reloaded(**inputs).logits - hf_model(**inputs).logits).abs().max().item()
    assert diff <= ATOL
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True,
    )
    assert (
        prompt
        == (  # the exported template adds the pipeline's default system prompt, as the pipeline does
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
    )


# ----------------------------------------------------------------------------------------------------------------
# The original LLaVA-NeXT / OneVision layout, written here from the HF weights with the §10.3 key table


def _hf_to_original_key(key: str) -> str:
    table = [
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
        ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("image_newline", "model.image_newline"),
    ]
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old) :]
    raise AssertionError(f"unmapped key {key}")


def write_original_checkpoint(hf_dir, hf_model, tokenizer, out, *, hub_tower_layers: int = 3):
    """An original-style directory: LlavaQwenForCausalLM config, [w, h] pinpoints, a local mm_vision_tower whose
    config has one more block than the checkpoint (the reference deletes SigLIP's last block)."""
    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(hf_dir / "model.safetensors"))
    save_file(
        {_hf_to_original_key(k): v for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    tower = out / "siglip-tower"
    vision = hf_model.config.vision_config.to_dict()
    vision["num_hidden_layers"] = hub_tower_layers
    tower.mkdir()
    (tower / "config.json").write_text(json.dumps(vision))
    text = hf_model.config.text_config.to_dict()
    config = {
        **{k: v for k, v in text.items() if k not in ("architectures", "model_type", "transformers_version")},
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "mm_vision_tower": str(tower),
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 32,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres_max_9",
        "mm_newline_position": "one_token",
        "mm_spatial_pool_mode": "bilinear",
        "image_grid_pinpoints": [[w, h] for h, w in hf_model.config.image_grid_pinpoints],
        "tokenizer_model_max_length": 8192,
        "tokenizer_padding_side": "right",
        "use_mm_proj": True,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
    }
    (out / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def original_pipe(hf_dir, hf_model, tokenizer, tmp_path_factory):
    import onevision

    src = write_original_checkpoint(hf_dir, hf_model, tokenizer, tmp_path_factory.mktemp("original"))
    assert onevision.detect_format(str(src)) == "original"
    return onevision.load(str(src))


def test_original_layout_matches_transformers(original_pipe, hf_model, hf_proc, image_a, frames8):
    pipe = original_pipe
    assert pipe.model.vision_tower.info.num_layers == 2
    assert pipe.processor.policy.single_image.rounding == "llava"  # the reference unpad rule
    text = chatml("<image>\nWhat is this?")
    ours = pipe.processor(text=text, images=[image_a])
    theirs = hf_proc(text=text, images=[image_a], return_tensors="pt")
    _compare(pipe, hf_model, ours, theirs)
    assert torch.equal(_our_generate(pipe, ours), _hf_generate(hf_model, theirs))
    text = chatml("<video>\nAnd this?")
    ours = pipe.processor(text=text, videos=[frames8])
    theirs = hf_proc(text=text, videos=[frames8], return_tensors="pt")
    _compare(pipe, hf_model, ours, theirs)


def test_original_to_hf_export_matches(original_pipe, hf_model, hf_proc, tmp_path, image_b):
    from transformers import LlavaOnevisionForConditionalGeneration

    from onevision.checkpoints import export_hf
    from onevision.errors import ExportError

    with pytest.raises(ExportError, match="rounding"):
        export_hf(original_pipe, tmp_path / "refused")
    export_hf(original_pipe, tmp_path / "hf", force=True)
    reloaded = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    inputs = hf_proc(text=chatml("<image>\nWhat?"), images=[image_b], return_tensors="pt")
    with torch.no_grad():
        assert (reloaded(**inputs).logits - hf_model(**inputs).logits).abs().max().item() <= ATOL


def test_mixed_batch_equals_one_by_one(pipe, image_a, image_b):
    """Single image, multi-image, video and text-only samples in one left-padded batch == batch of one each."""
    frames = random_frames(3, 40, 40, seed=9)
    texts = [
        chatml("<image>\nOne."),
        chatml("<image><image>\nTwo."),
        chatml("<video>\nClip."),
        chatml("Text."),
    ]
    images = [[image_a], [image_b, image_a], [], []]
    batch = pipe.processor(text=texts, images=images, videos=[frames])
    assert [lay.num_tokens for lay in batch.image_layouts] == [724, 65, 65]
    with torch.no_grad():
        logits = pipe.model(**batch).logits
    generated = _our_generate(pipe, batch)
    for i, text in enumerate(texts):
        single = pipe.processor(text=text, images=images[i], videos=[frames] if i == 2 else None)
        with torch.no_grad():
            alone = pipe.model(**single).logits[0]
        assert (logits[i, -alone.shape[0] :] - alone).abs().max().item() <= ATOL
        assert torch.equal(generated[i], _our_generate(pipe, single)[0])
