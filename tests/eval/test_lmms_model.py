"""The lmms-eval model ``onevision`` called as the harness calls it: ``Instance`` requests in, answers out."""

from __future__ import annotations

import pytest
import torch

from onevision.eval.lmms_model import OneVisionLMM, cut_at_stops, split_media

TASK, SPLIT = "t", "test"


def _instance(kind: str, args: tuple, doc_id: int = 0, idx: int = 0):
    from lmms_eval.api.instance import Instance

    return Instance(
        request_type=kind, arguments=args, idx=idx, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1}
    )


def _visual(doc):
    return doc["media"]


@pytest.fixture(scope="module")
def lm(tiny_dir, media):
    model = OneVisionLMM(pretrained=str(tiny_dir), batch_size=3, device="cpu", max_new_tokens=6)
    model.task_dict = {
        TASK: {
            SPLIT: [
                {"media": [media["a"]]},
                {"media": [media["a"], media["b"]]},
                {"media": [media["clip"]]},
                {"media": []},
            ]
        }
    }
    return model


def test_entry_point_registers_the_model():
    from lmms_eval.models import get_model

    assert get_model("onevision") is OneVisionLMM


def test_generate_until_equals_pipe_generate_for_every_modality(lm, tiny_pipe, media):
    gen = {"max_new_tokens": 6, "temperature": 0, "do_sample": False}
    prompts = ["Describe it.", "Compare the two.", "What happens?", "Say hello."]
    requests = [
        _instance("generate_until", (p, dict(gen), _visual, i, TASK, SPLIT), i) for i, p in enumerate(prompts)
    ]
    answers = lm.generate_until(requests)
    expected = [
        tiny_pipe.generate(prompts[0], images=[media["a"]], max_new_tokens=6),
        tiny_pipe.generate(prompts[1], images=[media["a"], media["b"]], max_new_tokens=6),
        tiny_pipe.generate(prompts[2], video=media["clip"], max_new_tokens=6),
        tiny_pipe.generate(prompts[3], max_new_tokens=6),  # text only
    ]
    assert answers == expected
    assert all(answers)  # the tiny random model answers something (it rarely emits an end token first)


def test_sampled_generation_is_seeded_and_matches_pipe_generate(tiny_dir, tiny_pipe, media):
    lm = OneVisionLMM(pretrained=str(tiny_dir), device="cpu", seed=7)
    lm.task_dict = {TASK: {SPLIT: [{"media": [media["a"]]}]}}
    gen = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "top_p": 0.95}
    answers = [
        lm.generate_until([_instance("generate_until", ("Q?", dict(gen), _visual, 0, TASK, SPLIT))])[0]
    ]
    answers.append(
        lm.generate_until([_instance("generate_until", ("Q?", dict(gen), _visual, 0, TASK, SPLIT))])[0]
    )
    expected = tiny_pipe.generate(
        "Q?", images=[media["a"]], max_new_tokens=8, temperature=1.5, top_p=0.95, seed=7
    )
    greedy = tiny_pipe.generate("Q?", images=[media["a"]], max_new_tokens=8)
    assert answers == [expected, expected]
    assert expected != greedy  # sampling was really on


def test_until_stops_cut_the_answer(lm, tiny_pipe, media):
    full = tiny_pipe.generate("Describe it.", images=[media["a"]], max_new_tokens=6)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop and full.find(stop) > 0
    gen = {"max_new_tokens": 6, "until": [stop, "never-there"]}
    (answer,) = lm.generate_until(
        [_instance("generate_until", ("Describe it.", gen, _visual, 0, TASK, SPLIT))]
    )
    assert answer == full[: full.find(stop)]
    assert cut_at_stops("abcXdefYg", ["Y", "X"]) == "abc"


def test_generate_until_multi_round_follows_doc_to_text(lm, tiny_pipe, media):
    calls = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        calls.append((round_idx, list(previous_output), previous_round_info))
        if round_idx == 2:
            return None, None, True, previous_output, None
        return [media["b"]], f"And now? ({previous_output[-1]})", False, previous_output, {"round": round_idx}

    gen = {"max_new_tokens": 5, "until": ["\n\n"]}
    (result,) = lm.generate_until_multi_round(
        [_instance("generate_until_multi_round", ("First?", gen, _visual, doc_to_text, 0, TASK, SPLIT))]
    )
    first = tiny_pipe.generate("First?", images=[media["a"]], max_new_tokens=5)
    second = tiny_pipe.generate(f"And now? ({first})", images=[media["b"]], max_new_tokens=5)
    assert result == [first, second]
    assert calls == [(1, [first], None), (2, [first, second], {"round": 1})]


def _direct_logprob(pipe, prompt, images, answer):
    """Sum of log p(answer tokens) from the model's forward pass on the full conversation (labels mark them)."""
    sample = pipe.processor.build_sample(
        [
            {
                "role": "user",
                "content": [
                    *({"type": "image", "image": i} for i in images),
                    {"type": "text", "text": prompt},
                ],
            },
            {"role": "assistant", "content": answer},
        ],
        tags_in_text=False,
    )
    answer_ids = pipe.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    labelled = (sample["labels"] != -100).nonzero().flatten()
    positions = labelled[: len(answer_ids)]  # the answer's tokens, then the template's end token(s)
    assert sample["input_ids"][positions].tolist() == answer_ids
    inputs = pipe.processor.collate([sample])
    sample_labels = inputs.pop("labels")
    del sample_labels
    with torch.no_grad():
        logits = pipe.model(**inputs).logits[0].float()
    logprobs = torch.log_softmax(logits[positions - 1], dim=-1)
    return float(logprobs.gather(1, torch.tensor(answer_ids)[:, None]).sum())


def test_loglikelihood_is_the_models_summed_log_probability(lm, tiny_pipe, media):
    options = ["red", "green", "blue", "two"]
    requests = [
        _instance("loglikelihood", ("What color?", opt, _visual, 0, TASK, SPLIT), 0, i)
        for i, opt in enumerate(options)
    ]
    requests.append(_instance("loglikelihood", ("", "red"), 0, 4))  # acc_mutual_info's unconditional form
    results = [r.text if hasattr(r, "text") else r for r in lm.loglikelihood(requests)]
    for (score, greedy), option in zip(results, options):
        assert isinstance(greedy, bool)
        assert score == pytest.approx(
            _direct_logprob(tiny_pipe, "What color?", [media["a"]], option), abs=1e-4
        )
    assert results[4][0] == pytest.approx(_direct_logprob(tiny_pipe, "", [], "red"), abs=1e-4)


def test_media_are_split_by_kind(media):
    import numpy as np
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    images, videos = split_media([media["a"], img, media["clip"], frames])
    assert images == [media["a"], img] and videos[0] == media["clip"] and videos[1] is frames
    with pytest.raises(ValueError, match="unsupported visual"):
        split_media([{"array": [0.0], "sampling_rate": 16000}])


def test_bad_model_args_fail_loudly(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="pretrained=PATH"):
        OneVisionLMM()
    with pytest.raises(RuntimeError, match="cannot load pretrained="):
        OneVisionLMM(pretrained=str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="unknown model_args"):
        OneVisionLMM(pretrained=str(tiny_dir), max_frame=4)
    with pytest.raises(ValueError, match="dtype"):
        OneVisionLMM(pretrained=str(tiny_dir), dtype="int3")
    lm = OneVisionLMM(pretrained=str(tiny_dir))
    with pytest.raises(ValueError, match="num_beams"):
        lm.generation_options({"num_beams": 4})
