"""OneVisionModel behaviour: training path, components, gradient checkpointing, streaming, bad inputs."""

from __future__ import annotations

import pytest
import torch

from onevision.errors import InputError
from onevision.testing import tiny_pipeline


@pytest.fixture(scope="module")
def tiny():
    return tiny_pipeline(seed=0)


def test_tiny_factory_has_the_reference_geometry(tiny):
    model = tiny.model
    info = model.vision_tower.info
    assert (info.tile_size, info.patch_size, info.width, info.num_layers) == (64, 8, 32, 2)
    lm = model.language_model.config
    assert (lm.hidden_size, lm.num_hidden_layers, lm.num_attention_heads, lm.num_key_value_heads) == (
        64,
        2,
        4,
        2,
    )
    assert lm.vocab_size == len(tiny.processor.tokenizer)
    assert model.config.image_token_id == tiny.processor.tokenizer.convert_tokens_to_ids("<image>")
    total = sum(p.numel() for p in model.parameters())
    assert 100_000 < total < 200_000  # about 0.16 M parameters
    assert len(tiny.processor.policy.single_image.pinpoints) == 36


def test_one_tiny_spec_gives_both_the_onevision_and_the_hf_config(tiny):
    from onevision.testing import TINY, tiny_config, tiny_hf_config

    tok = tiny.processor.tokenizer
    ours, hf = TINY.onevision_config(vocab_size=len(tok)), tiny_hf_config(tok)
    assert ours == tiny_config()
    hf_vision, hf_text = hf.vision_config.to_dict(), hf.text_config.to_dict()
    assert {k: hf_vision[k] for k in ours.vision.config} == ours.vision.config
    assert {k: hf_text[k] for k in ours.llm.config} == ours.llm.config
    pinpoints = [[p.height, p.width] for p in tiny.processor.policy.single_image.pinpoints]
    assert hf.image_grid_pinpoints == pinpoints == TINY.pinpoints
    assert (hf.image_token_index, hf.video_token_index) == (
        tiny.model.image_token_id,
        tiny.model.video_token_id,
    )


def test_component_parameters_partition_the_model(tiny):
    groups = tiny.model.component_parameters()
    assert set(groups) == {"vision", "projector", "llm", "newline"}
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    unused = {
        n: p for n, p in tiny.model.named_parameters() if n.startswith("vision_tower.model.post_layernorm.")
    }
    assert len(unused) == 2 and not any(p.requires_grad for p in unused.values())  # stored, never applied
    assert set(ids) == {id(p) for n, p in tiny.model.named_parameters() if n not in unused}
    assert groups["newline"] == [tiny.model.image_newline]
    assert all(len(v) for v in groups.values())


def _training_batch(p, image):
    conv_img = [{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "A picture."}]
    conv_txt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]
    return p.collate([p.build_sample(conv_img, images=[image]), p.build_sample(conv_txt)])


def test_loss_is_the_mean_over_assistant_tokens(tiny, image_a):
    batch = _training_batch(tiny.processor, image_a)
    tiny.model.eval()
    with torch.no_grad():
        out = tiny.model(**batch)
    logits, labels = out.logits[:, :-1], batch.labels[:, 1:]
    keep = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert keep.sum() == sum(
        len(tiny.processor.tokenizer(t + "<|im_end|>")["input_ids"]) for t in ("A picture.", "Hello there.")
    )
    assert out.loss.item() == pytest.approx(manual.item(), abs=1e-6)


def test_text_only_training_step_still_runs_the_vision_tower(tiny):
    model = tiny.model
    p = tiny.processor
    batch = p.collate(
        [p.build_sample([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])]
    )
    model.train()
    try:
        model.zero_grad()
        model(**batch).loss.backward()
    finally:
        model.eval()
    groups = model.component_parameters()
    for name in ("vision", "projector", "newline"):
        grads = [q.grad for q in groups[name]]
        assert all(g is not None for g in grads), name  # in the graph (ZeRO-3 / DDP) ...
        assert all(torch.count_nonzero(g) == 0 for g in grads), name  # ... but contributing nothing
    assert any(torch.count_nonzero(q.grad) for q in groups["llm"])
    model.zero_grad()


def test_gradient_checkpointing_gives_the_same_gradients(image_a):
    pipe = tiny_pipeline(seed=1)
    model = pipe.model
    batch = _training_batch(pipe.processor, image_a)

    def grads():
        model.train()
        model.zero_grad()
        model(**batch).loss.backward()
        model.eval()
        return {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name
    assert any("vision_tower" in n and plain[n].abs().sum() > 0 for n in plain)


def test_placeholder_and_layout_mismatch_is_an_error(tiny, image_a):
    inputs = tiny.processor(text="<image> hi", images=[image_a])
    broken = dict(inputs)
    broken["input_ids"] = inputs.input_ids[:, 1:]  # one placeholder fewer
    broken["attention_mask"] = inputs.attention_mask[:, 1:]
    with pytest.raises(InputError, match="723 <image> tokens"):
        tiny.model(**broken)
    with pytest.raises(InputError, match="together"):
        tiny.model(input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
    with pytest.raises(InputError, match="left padding"):
        tiny.model.generate(**tiny.processor(text=["a b c d", "a"], padding_side="right"))


def test_streaming_yields_the_same_text_as_a_plain_call(tiny, image_a):
    plain = tiny.generate("What is it?", images=[image_a], max_new_tokens=6)
    pieces = list(tiny.generate("What is it?", images=[image_a], max_new_tokens=6, stream=True))
    assert "".join(pieces).strip() == plain


def test_sampling_options_are_seeded(tiny):
    kwargs = {"max_new_tokens": 8, "temperature": 1.5, "top_p": 0.95, "seed": 3}
    inputs = tiny.processor(text="<|im_start|>user\nHi<|im_end|>\n")
    a = tiny.model.generate(**inputs, **kwargs, eos_token_id=[], pad_token_id=0)
    b = tiny.model.generate(**inputs, **kwargs, eos_token_id=[], pad_token_id=0)
    greedy = tiny.model.generate(**inputs, max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    assert torch.equal(a, b) and a.shape == (1, 8)
    assert not torch.equal(a, greedy)


def test_chat_accepts_content_parts_and_keeps_history(tiny, image_a):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image_a}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": "An answer."},
        {"role": "user", "content": "And then?"},
    ]
    answer = tiny.chat(messages, max_new_tokens=4)
    assert isinstance(answer, str)
    with pytest.raises(InputError, match="ends with an assistant turn"):
        tiny.chat(messages[:2])


def test_stage1_frozen_llm_with_gradient_checkpointing_trains_the_projector(image_a, frames8):
    """Stage 1: LLM + vision frozen, projector trainable, checkpointing on. transformers' input-require-grads hook
    (installed by checkpointing) makes the token embeddings a leaf that requires grad; the visual splice must
    still work, and only the projector gets gradients."""
    pipe = tiny_pipeline(seed=2)
    model, p = pipe.model, pipe.processor
    for q in model.parameters():
        q.requires_grad_(False)
    for q in model.projector.parameters():
        q.requires_grad_(True)
    model.gradient_checkpointing_enable()
    assert getattr(model.language_model, "_require_grads_hooks", None), "the transformers hook is in place"
    conv_vid = [{"role": "user", "content": "<video>\nWhat?"}, {"role": "assistant", "content": "Motion."}]
    batch = _training_batch(p, image_a)
    video_batch = p.collate([p.build_sample(conv_vid, videos=[frames8])])
    model.train()
    for b in (batch, video_batch):
        model.zero_grad()
        model(**b).loss.backward()
        grads = [q.grad for q in model.projector.parameters()]
        assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads)
        assert all(q.grad is None for n, q in model.named_parameters() if not n.startswith("projector."))
    model.eval()
    with torch.no_grad():  # inference with the hook still in place packs in place and matches a hook-free run
        hooked = model(**batch).logits
        model.language_model.disable_input_require_grads()
        assert torch.equal(hooked, model(**batch).logits)
