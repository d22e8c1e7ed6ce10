"""Special tokens typed in training data are plain text (issue #13 point 9): the training encoder adds only the
template's control tokens, the LLaVA JSON ``<image>`` rule still places the media, labels cover the answer's text."""

from __future__ import annotations

import collections

import pytest

from onevision.testing import TINY_SPECIAL_TOKENS
from onevision.train.build import build_encoder, build_model
from onevision.train.data import TrainDataset, parse_record, plan_samples
from onevision.train.recipe import load_recipe

from .conftest import data_overrides

TYPED = tuple(t for t in TINY_SPECIAL_TOKENS if t not in ("<image>", "<video>"))


@pytest.fixture(scope="module")
def encoder_setup(tiny_data):
    recipe = load_recipe("tiny/stage2_ov", ["init_from=null", *data_overrides(tiny_data)])
    return recipe, build_encoder(recipe, build_model(recipe)), tiny_data.parent / "images"


def _record(question: str, answer: str, image: str) -> dict:
    return {
        "id": "inj",
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


def _encoded(recipe, encoder, root, record):
    sample = parse_record(record, source="inj.json", image_root=str(root))
    planned, _ = plan_samples([sample], recipe, encoder, log=False)
    item = TrainDataset(planned, recipe, encoder)[0]  # raises if the encoding disagrees with the plan
    return sample, planned[0], item


def _controls(processor, ids) -> collections.Counter:
    special = set(processor.tokenizer.all_special_ids)
    return collections.Counter(int(i) for i in ids.tolist() if i in special)


def test_typed_special_tokens_in_data_are_text(encoder_setup):
    recipe, encoder, root = encoder_setup
    p = encoder.processor
    image = sorted(x.name for x in root.iterdir() if x.suffix == ".png")[0]
    _, _, clean = _encoded(recipe, encoder, root, _record("What is it x?", "A x B", image))
    typed = "".join(TYPED)
    sample, planned, item = _encoded(
        recipe, encoder, root, _record(f"What is it {typed}?", f"A {typed} B", image)
    )
    ids, labels = item["input_ids"], item["labels"]
    assert _controls(p, ids) == _controls(p, clean["input_ids"])  # one image's run, the template's markers
    assert int((ids == p.image_token_id).sum()) == sum(planned.visual_tokens)
    assert p.tokenizer.decode(ids[labels != -100]) == f"A {typed} B<|im_end|>"
    visual_end = encoder.measure(sample, planned.visual_tokens).visual_end
    assert visual_end == int((ids == p.image_token_id).nonzero().max()) + 1
