"""HF export fidelity: the exported chat template, generation config and token counts, checked in plain transformers.

The load-and-run checks run in a subprocess that never imports onevision (``_HF_SCRIPT``): it sees only the files
``export_hf`` wrote, as a transformers or serving-engine user would."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from onevision.templates import TEMPLATES
from tests.model.conftest import random_image

SHIPPED = ("qwen_1_5", "vicuna_v1", "llama_3", "plain")
ATOL = 1e-5
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
    [
        {"role": "system", "content": " Be brief. "},
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "two <image> x"}],
        },
        {"role": "assistant", "content": " A cat. "},
        {"role": "user", "content": "And?"},
    ],
    [{"role": "human", "content": "<video>\n<image>q"}, {"role": "gpt", "content": "ans"}],
    [{"role": "user", "content": "caption only"}, {"role": "assistant", "content": "a dog"}],
]


def test_every_template_has_a_jinja_twin_that_renders_the_same_string():
    from onevision.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    assert {t.name for t in TEMPLATES.values()} == set(SHIPPED)
    for name in SHIPPED:
        template = TEMPLATES[name]
        jinja = template.to_jinja()
        for messages in CONVERSATIONS:
            for gen in (True, False):
                ours = template.prompt(messages, add_generation_prompt=gen)
                theirs = tok.apply_chat_template(
                    messages, chat_template=jinja, tokenize=False, add_generation_prompt=gen
                )
                assert theirs == ours, (name, messages, gen)
    with pytest.raises(Exception, match="only allowed first"):
        tok.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            chat_template=TEMPLATES["qwen_1_5"].to_jinja(),
            tokenize=False,
        )


_HF_SCRIPT = r"""
import json, sys
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, LlavaOnevisionForConditionalGeneration
assert not any(m.startswith("onevision") for m in sys.modules)
jobs = json.loads(sys.argv[1])
results = []
for job in jobs:
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(job["dir"]).eval()
    pil = AutoImageProcessor.from_pretrained(job["dir"], backend="pil")  # pixel-exact with onevision
    proc = AutoProcessor.from_pretrained(job["dir"], image_processor=pil)
    prompt = proc.apply_chat_template(job["messages"], add_generation_prompt=True)
    images = [Image.open(job["image"])]
    inputs = proc(text=prompt, images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs)  # generation_config.json only: eos, pad, greedy, max_new_tokens
    torch.save(logits, job["logits"])
    results.append({
        "prompt": prompt,
        "ids": inputs["input_ids"][0].tolist(),
        "new": out[0, inputs["input_ids"].shape[1]:].tolist(),
        "image_processor": type(proc.image_processor).__name__,
        "dtype": str(model.dtype),
    })
print(json.dumps(results))
"""


def _stop_after_a_few_tokens(pipe, inputs):
    """Make the end-of-turn token win where the model's 3rd greedy token would (its lm_head row = that row x 1.01),
    so a random model ends its turn after a few tokens."""
    eos = pipe.processor.stop_token_ids[0]
    free = pipe.model.generate(**inputs, max_new_tokens=4, eos_token_id=[], pad_token_id=0)[0]
    head = pipe.model.language_model.get_output_embeddings().weight
    with torch.no_grad():
        head[eos] = head[int(free[2])] * 1.01
    return eos


def test_export_runs_in_plain_transformers_like_the_pipeline(tmp_path):
    from onevision.checkpoints import export_hf
    from onevision.testing import tiny_pipeline

    image = random_image(150, 90, seed=4)
    image.save(tmp_path / "image.png")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in it?"}]}]
    jobs, expected = [], []
    for seed, name in enumerate(SHIPPED):
        pipe = tiny_pipeline(seed=seed, template=name)
        ours = pipe.processor.build_sample(messages, [image], add_generation_prompt=True)
        batch = pipe.processor.collate([ours])
        batch.pop("labels", None)
        eos = _stop_after_a_few_tokens(pipe, batch) if name != "plain" else None
        with torch.no_grad():
            logits = pipe.model(**batch).logits
        answer = pipe.model.generate(
            **batch, eos_token_id=pipe.processor.stop_token_ids, pad_token_id=pipe.processor.pad_token_id
        )[0].tolist()
        export_hf(pipe, tmp_path / name)
        gen = json.loads((tmp_path / name / "generation_config.json").read_text())
        config = json.loads((tmp_path / name / "config.json").read_text())
        stop = pipe.processor.stop_token_ids
        assert gen["eos_token_id"] == (stop[0] if len(stop) == 1 else stop)
        assert gen["pad_token_id"] == pipe.processor.pad_token_id
        assert gen["do_sample"] is False and gen["max_new_tokens"] == 128  # the pipeline's defaults
        assert config["eos_token_id"] == config["text_config"]["eos_token_id"] == gen["eos_token_id"]
        assert config["dtype"] == "float32"
        jobs.append(
            {
                "dir": str(tmp_path / name),
                "messages": messages,
                "image": str(tmp_path / "image.png"),
                "logits": str(tmp_path / f"{name}.pt"),
            }
        )
        expected.append((pipe, ours, logits, answer, eos))
    run = subprocess.run(
        [sys.executable, "-c", _HF_SCRIPT, json.dumps(jobs)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for name, job, result, (pipe, ours, logits, answer, eos) in zip(SHIPPED, jobs, results, expected):
        assert result["prompt"] == pipe.processor.apply_chat_template(messages), name
        assert (
            result["image_processor"] == "LlavaOnevisionImageProcessorPil"
            and result["dtype"] == "torch.float32"
        )
        assert result["ids"] == ours["input_ids"].tolist(), name
        diff = (torch.load(job["logits"]) - logits).abs().max().item()
        assert diff <= ATOL, (name, diff)
        assert result["new"] == answer, name
        if eos is not None:  # stopped at the end-of-turn token, well before max_new_tokens
            assert result["new"][-1] == eos and len(result["new"]) <= 4, (name, result["new"])


def _with_single_image(config, strategy):
    from onevision.policy import ImagePolicy

    visual = dataclasses.replace(
        config.processor.visual, image=ImagePolicy(strategy, {"grid_pinpoints": "(1x1),...,(6x6)"})
    )
    return dataclasses.replace(config, processor=dataclasses.replace(config.processor, visual=visual))


def test_engines_cannot_count_other_anyres_caps_so_export_refuses_without_force(tmp_path, caplog):
    from transformers import LlavaOnevisionConfig

    from onevision.checkpoints import export_hf
    from onevision.errors import ExportError
    from onevision.pipeline import from_config
    from onevision.testing import tiny_config, tiny_tokenizer

    pipe = from_config(_with_single_image(tiny_config(), "anyres_max_4"), tokenizer=tiny_tokenizer())
    with pytest.raises(ExportError, match="vLLM and SGLang") as err:
        export_hf(pipe, tmp_path / "refused")
    assert "anyres_max_4" in str(err.value) and "force" in str(err.value)
    assert not (tmp_path / "refused" / "config.json").exists()
    with caplog.at_level("WARNING"):
        export_hf(pipe, tmp_path / "forced", force=True)
    assert "vLLM and SGLang" in caplog.text
    config = LlavaOnevisionConfig.from_pretrained(tmp_path / "forced")
    assert config.vision_aspect_ratio == "anyres_max_4"


def test_convert_cli_force_writes_what_engines_cannot_count(tmp_path):
    from onevision.checkpoints import save_native
    from onevision.cli import main
    from onevision.pipeline import from_config
    from onevision.testing import tiny_config, tiny_tokenizer

    pipe = from_config(_with_single_image(tiny_config(), "anyres_max_4"), tokenizer=tiny_tokenizer())
    save_native(pipe, tmp_path / "native")
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "hf"), "--to", "hf"]) == 2
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "hf"), "--to", "hf", "--force"]) == 0
    assert (tmp_path / "hf" / "generation_config.json").is_file()


SIZES = [
    (w, h)
    for w in (1, 7, 33, 64, 65, 100, 129, 200, 383, 640, 1000, 1920)
    for h in (1, 31, 64, 90, 130, 257, 700)
]


@pytest.mark.parametrize("template", ["qwen_1_5", "llama_3"])
def test_transformers_counts_exactly_our_visual_tokens_for_what_export_writes(template, tmp_path):
    from transformers import AutoImageProcessor, LlavaOnevisionProcessor

    from onevision.checkpoints import export_hf
    from onevision.testing import tiny_pipeline

    pipe = tiny_pipeline(template=template)
    export_hf(pipe, tmp_path)  # no force: a config vLLM / SGLang count like transformers
    pil = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    hf = LlavaOnevisionProcessor.from_pretrained(tmp_path, image_processor=pil)
    image_id = pipe.processor.image_token_id
    for width, height in SIZES:
        image = random_image(width, height, seed=width * 7 + height)
        ours = pipe.processor(text="<image>", images=[image])
        theirs = hf(text="<image>", images=[image], return_tensors="pt")
        n_ours = int((ours.input_ids == image_id).sum())
        assert n_ours == ours.image_layouts[0].num_tokens
        assert int((theirs["input_ids"] == image_id).sum()) == n_ours, (width, height)
    pair = [random_image(w, h, seed=w + h) for w, h in ((33, 700), (1920, 64))]  # multi-image: pad + newline
    ours = pipe.processor(text="<image><image>", images=pair)
    theirs = hf(text="<image><image>", images=[pair], return_tensors="pt")
    assert int((theirs["input_ids"] == image_id).sum()) == int((ours.input_ids == image_id).sum()) == 130
    video_id = pipe.processor.video_token_id
    for frames in (1, 8, 13):
        clip = (torch.rand(frames, 48, 80, 3) * 255).to(torch.uint8).numpy()
        ours = pipe.processor(text="<video>", videos=[clip])
        theirs = hf(text="<video>", videos=[clip], return_tensors="pt")
        assert int((theirs["input_ids"] == video_id).sum()) == int((ours.input_ids == video_id).sum()), frames


# ----------------------------------------------------------------------------------------------------------------
# Original LLaVA-NeXT / OneVision export


def _tensors(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_original_round_trip_is_bit_identical(hf_dir, hf_model, tokenizer, tmp_path, image_a):
    import onevision
    from onevision.checkpoints import export_original
    from onevision.cli import main
    from tests.model.test_parity_hf import write_original_checkpoint

    src = write_original_checkpoint(hf_dir, hf_model, tokenizer, tmp_path / "orig")
    pipe = onevision.load(str(src))
    export_original(pipe, tmp_path / "back")
    assert onevision.detect_format(str(tmp_path / "back")) == "original"
    before, after = _tensors(src), _tensors(tmp_path / "back")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    original = json.loads((src / "config.json").read_text())
    for field in (
        "architectures",
        "mm_projector_type",
        "image_aspect_ratio",
        "image_grid_pinpoints",
        "mm_hidden_size",
    ):
        assert config[field] == original[field], field
    assert config["mm_vision_tower"] == "vision_tower"  # its config ships inside the checkpoint
    tower = json.loads((tmp_path / "back" / "vision_tower" / "config.json").read_text())
    assert tower["num_hidden_layers"] == 3  # 2 blocks in the weights + the one the reference deletes on load
    # through the command line and the native format: original -> onevision -> original
    assert main(["convert", str(src), str(tmp_path / "native")]) == 0
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "again"), "--to", "original"]) == 0
    again = _tensors(tmp_path / "again")
    assert before.keys() == again.keys() and all(torch.equal(before[k], again[k]) for k in before)
    reloaded = onevision.load(str(tmp_path / "again"))
    assert reloaded.processor.policy.single_image.rounding == "llava"
    text = "<|im_start|>user\n<image>\nWhat?<|im_end|>\n<|im_start|>assistant\n"
    ours, theirs = (
        pipe.processor(text=text, images=[image_a]),
        reloaded.processor(text=text, images=[image_a]),
    )
    assert torch.equal(ours.input_ids, theirs.input_ids)
    with torch.no_grad():
        assert torch.equal(pipe.model(**ours).logits, reloaded.model(**theirs).logits)


def test_original_export_refuses_what_the_reference_counts_differently(tmp_path):
    from onevision.checkpoints import export_original
    from onevision.errors import ExportError
    from onevision.testing import tiny_pipeline

    pipe = tiny_pipeline()  # rounding="hf"
    with pytest.raises(ExportError, match="rounding"):
        export_original(pipe, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    export_original(pipe, tmp_path / "forced", force=True)
    before = pipe.model.checkpoint_state_dict()
    after = _tensors(tmp_path / "forced")
    assert len(before) == len(after)
    assert torch.equal(after["model.mm_projector.0.weight"], before["projector.0.weight"])


@pytest.mark.parametrize("change", ["hd", "average_pooling", "stride_3"])
def test_representations_the_engines_cannot_count_are_refused_even_with_force(change, tmp_path):
    from onevision.checkpoints import export_hf
    from onevision.errors import ExportError
    from onevision.pipeline import from_config
    from onevision.testing import tiny_config, tiny_tokenizer

    config = tiny_config()
    visual = config.processor.visual
    if change == "hd":
        config = _with_single_image(config, "hd")
    else:
        pooling = {"pool_mode": "average"} if change == "average_pooling" else {"pool_stride": 3}
        visual = dataclasses.replace(visual, video=dataclasses.replace(visual.video, **pooling))
        config = dataclasses.replace(config, processor=dataclasses.replace(config.processor, visual=visual))
    pipe = from_config(config, tokenizer=tiny_tokenizer())
    for force in (False, True):
        with pytest.raises(ExportError, match="vLLM and SGLang") as err:
            export_hf(pipe, tmp_path / str(force), force=force)
        assert ("strategy 'hd'" if change == "hd" else "video pooling") in str(err.value)
