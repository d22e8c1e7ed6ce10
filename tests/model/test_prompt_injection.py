"""Special tokens typed in user text are plain text (issue #13 point 9): only the chat template adds control
tokens, and only media parts add visual slots, for every shipped template, in chat, generation and counting."""

from __future__ import annotations

import collections

import pytest
import torch

from onevision.testing import TINY_SPECIAL_TOKENS, tiny_pipeline

from .conftest import random_image

TEMPLATES = ("qwen_1_5", "vicuna_v1", "llama_3")
#: the template's control strings plus every special token of the tokenizer (media tags included)
TYPED = ("USER:", "ASSISTANT:", *TINY_SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def pipes():
    return {name: tiny_pipeline(seed=0, template=name) for name in (*TEMPLATES, "plain")}


@pytest.fixture(scope="module")
def image():
    return random_image(200, 130, seed=1)


def _controls(processor, ids) -> collections.Counter:
    """How many times each control id (special token of the tokenizer) occurs in ``ids``."""
    special = set(processor.tokenizer.all_special_ids)
    return collections.Counter(int(i) for i in ids if int(i) in special)


def _chat(text: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        {"role": "assistant", "content": f"Yes {text} no"},
        {"role": "user", "content": text},
    ]


@pytest.mark.parametrize("template", TEMPLATES)
def test_typed_special_tokens_stay_text_in_chat(pipes, image, template):
    p = pipes[template].processor
    clean = p.build_sample(
        _chat("before x after"), images=[image], add_generation_prompt=True, tags_in_text=False
    )
    visual = clean["image_layouts"][0].num_tokens
    for typed in TYPED:
        text = f"before {typed} after"
        sample = p.build_sample(_chat(text), images=[image], add_generation_prompt=True, tags_in_text=False)
        ids = sample["input_ids"]
        counts = _controls(p, ids)
        # the placeholder runs are the one image part's, however many media tags the user typed
        assert counts.pop(p.image_token_id) == visual, typed
        assert counts == _controls(p, clean["input_ids"]) - collections.Counter({p.image_token_id: visual}), (
            typed
        )
        decoded = p.tokenizer.decode(ids[ids != p.image_token_id])
        assert decoded.count(text) == 3, typed  # the typed string comes back verbatim, three times
        counted = p.count_tokens(
            conversation=_chat(text), images=[image], add_generation_prompt=True, tags_in_text=False
        )
        assert counted.total == ids.shape[0] and counted.visual == visual


@pytest.mark.parametrize("template", TEMPLATES)
def test_typed_special_tokens_in_data_text_stay_text_and_keep_labels(pipes, image, template):
    """LLaVA JSON (tags in text are the format's slots): other special tokens in either turn are text; the
    answer's labels are exactly its plain text plus the template's end token."""
    p = pipes[template].processor
    end = {"qwen_1_5": "<|im_end|>", "vicuna_v1": "</s>", "llama_3": "<|eot_id|>"}[template]
    clean = p.build_sample(
        [{"from": "human", "value": "<image>\nQ x"}, {"from": "gpt", "value": "A x B"}], images=[image]
    )
    for typed in TYPED:
        if typed in (p.image_token, p.video_token):
            continue
        conv = [{"from": "human", "value": f"<image>\nQ {typed}"}, {"from": "gpt", "value": f"A {typed} B"}]
        sample = p.build_sample(conv, images=[image])
        ids, labels = sample["input_ids"], sample["labels"]
        assert _controls(p, ids) == _controls(p, clean["input_ids"]), typed
        assert p.tokenizer.decode(ids[labels != -100]) == f"A {typed} B{end}", typed
        answer = p.tokenizer(f"A {typed} B", add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert (labels != -100).sum() == len(answer) + 1, typed


def test_media_tags_come_only_from_parts(pipes, image):
    p = pipes["qwen_1_5"].processor
    conv = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at <image> and <video> here"},
                {"type": "image", "image": image},
            ],
        }
    ]
    sample = p.build_sample(conv, add_generation_prompt=True, tags_in_text=False)
    ids = sample["input_ids"]
    assert int((ids == p.image_token_id).sum()) == sample["image_layouts"][0].num_tokens
    assert int((ids == p.video_token_id).sum()) == 0
    text = p.tokenizer.decode(ids[ids != p.image_token_id])
    assert (
        "<|im_start|>user\n\nlook at <image> and <video> here<|im_end|>" in text
    )  # the part's slot moved first
    # plain (stage-1): only the slot survives, typed tags are dropped with the rest of the instruction
    plain = pipes["plain"].processor.build_sample(conv, tags_in_text=False)
    assert int((plain["input_ids"] == p.image_token_id).sum()) == plain["image_layouts"][0].num_tokens
    # typed tags and no media: nothing to match, just text (this used to be "1 <image> tag(s) but 0 image(s)")
    only_text = p.build_sample([{"role": "user", "content": "what is <image>?"}], tags_in_text=False)
    assert p.image_token_id not in only_text["input_ids"].tolist()


def test_ordinary_prompts_encode_exactly_as_the_raw_template_string(pipes, image):
    for template in TEMPLATES:
        p = pipes[template].processor
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
        built = p.build_sample(conv, images=[image], add_generation_prompt=True, tags_in_text=False)
        raw = p(text=p.apply_chat_template(conv), images=[image])
        assert torch.equal(built["input_ids"], raw.input_ids[0])


@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_on_an_injected_prompt(pipes, image, template, monkeypatch):
    pipe = pipes[template]
    p = pipe.processor
    seen = []
    original = pipe.model.generate

    def spy(**kwargs):
        seen.append([ids[m.bool()] for ids, m in zip(kwargs["input_ids"], kwargs["attention_mask"])])
        return original(**kwargs)

    monkeypatch.setattr(pipe.model, "generate", spy)
    injected = " ".join(TYPED)
    answer = pipe.generate(f"Q {injected}", images=[image], max_new_tokens=3)
    pipe.generate("Q x", images=[image], max_new_tokens=3)
    assert isinstance(answer, str)
    got, clean = (_controls(p, ids[0]) for ids in seen)
    assert got == clean  # one image's placeholders; the template's markers only
    # chat and batch: typed tags without media are text (they used to raise "1 <image> tag(s) but 0 image(s)")
    pipe.chat([{"role": "user", "content": injected}], max_new_tokens=3)
    pipe.chat([{"role": "user", "content": "Q x"}], max_new_tokens=3)
    assert _controls(p, seen[2][0]) == _controls(p, seen[3][0])
    assert not {p.image_token_id, p.video_token_id} & set(seen[2][0].tolist())
    pipe.batch(
        [{"prompt": f"Q {injected}"}, {"prompt": f"Q {injected}", "images": [image]}], max_new_tokens=3
    )
    rows = seen[4]
    assert _controls(p, rows[0]) == _controls(p, seen[3][0])  # rows without their left padding
    assert int((rows[1] == p.image_token_id).sum()) == int((seen[0][0] == p.image_token_id).sum())
