"""``onevision plan``: parameter counts of real models, the stated FLOP formulas, tokens from the planner, memory
relations, and the LLaVA-1.5-13B estimate against the paper's wall-clock times."""

from __future__ import annotations

from pathlib import Path

import pytest

from onevision.cli import main
from onevision.train.build import build_encoder, build_model
from onevision.train.data import load_samples, plan_samples
from onevision.train.plan import Stack, epoch_flops, memory_per_gpu, plan_recipe
from onevision.train.plan_data import EpochTokens, ModalityTokens, sampled_tokens
from onevision.train.recipe import load_recipe

from .conftest import data_overrides

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "recipes" / "data" / "profiles"


def test_stack_parameters_equal_a_real_llama_and_clip_tower():
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    cfg = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8)
    llama = LlamaForCausalLM(
        LlamaConfig(**cfg, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False)
    )
    stack = Stack(64, 160, 3, 8, 2, gated_mlp=True, vocab=300, tied=False)
    weights = sum(p.numel() for n, p in llama.named_parameters() if "norm" not in n)
    assert stack.params() == weights
    clip = CLIPVisionModel(CLIPVisionConfig(**cfg, image_size=32, patch_size=8))
    layers = sum(p.numel() for n, p in clip.named_parameters() if ".layers." in n and p.dim() == 2)
    assert Stack(64, 160, 3, 8, 8, gated_mlp=False).layer_params() * 3 == layers


def _tokens(length: int, n: int, visual: int) -> EpochTokens:
    m = ModalityTokens(n, n * (length - visual), n * visual, n * visual, n * length * length, length)
    return EpochTokens({"image": m}, "test")


def test_flops_follow_the_stated_formulas():
    lm = Stack(64, 160, 3, 8, 2, gated_mlp=True, vocab=300)
    tower = Stack(32, 64, 2, 4, 4, gated_mlp=False, patches=17)
    tokens = _tokens(length=50, n=4, visual=17)
    n, s, big_l, d = lm.linear_params(), 50, 3, 64
    full = epoch_flops(tokens, lm, tower, 1000, {"llm": True, "vision": True})
    assert full.llm == pytest.approx(4 * (6 * n * s + 6 * big_l * d * s * s))
    frozen = epoch_flops(tokens, lm, tower, 1000, {"llm": False, "vision": False})
    assert frozen.llm == pytest.approx(4 * (4 * n * s + 6 * big_l * d * s * s))  # no weight gradients
    v_fwd = 4 * (2 * tower.layer_params() * 2 * 17 + 4 * 2 * 32 * 17 * 17)
    assert full.vision == pytest.approx(3 * v_fwd) and frozen.vision == pytest.approx(v_fwd)
    assert full.projector == pytest.approx(6 * 1000 * 4 * 17)


def test_memory_partitioning_and_the_chunked_logits():
    lm = Stack(512, 1024, 4, 8, 8, gated_mlp=True, vocab=32000)
    tower = Stack(64, 128, 2, 4, 4, gated_mlp=False, patches=17)
    trains = {"llm": True, "vision": False}
    rows = memory_per_gpu(lm, tower, 1000, trains, gpus=8, row_tokens=4096, chunk_tokens=None, lora_rank=8)
    zero2, zero3, lora, qlora = rows
    assert zero3.weights == pytest.approx(zero2.weights / 8)
    assert zero2.optimizer == pytest.approx(6 * zero2.gradients) and zero2.gradients == zero3.gradients
    assert lora.optimizer < zero2.optimizer / 10 and qlora.weights < lora.weights / 3
    chunked = memory_per_gpu(lm, tower, 1000, trains, gpus=8, row_tokens=4096, chunk_tokens=512, lora_rank=8)
    assert (
        chunked[0].activations < zero2.activations - 4096 * 32000 * 8
    )  # fp32 logits + grads of every token gone


def test_tokens_from_the_planner_equal_what_training_plans(tiny_data, tmp_path):
    recipe = load_recipe(
        "tiny/stage2_ov", [f"output_dir={tmp_path}", "init_from=null", *data_overrides(tiny_data)]
    )
    samples, _ = load_samples(recipe)
    planned, stats = plan_samples(samples, recipe, build_encoder(recipe, build_model(recipe)), log=False)
    tokens = sampled_tokens(recipe, sample=10_000)
    assert tokens.total("samples") == len(planned) and tokens.max_length == max(p.length for p in planned)
    assert tokens.total("text_tokens") + tokens.total("visual_tokens") == sum(p.length for p in planned)
    assert {m: t.samples for m, t in tokens.by_modality.items()} == dict(stats.by_modality)
    assert tokens.total("visual_tokens") == sum(sum(p.visual_tokens) for p in planned)
    part = sampled_tokens(recipe, sample=10)  # a sample, scaled to every record
    assert "10 of" in part.source and abs(part.total("samples") - len(samples)) <= len(part.by_modality)


@pytest.mark.parametrize(
    "stage, profile, published_h",
    [("pretrain", "llava15_lcs558k.yaml", 6.0), ("finetune", "llava15_mix665k.yaml", 20.0)],
)
def test_llava15_13b_estimate_is_within_2x_of_the_paper(stage, profile, published_h):
    recipe = load_recipe(f"llava15/vicuna13b_{stage}")
    plan = plan_recipe(recipe, gpus=8, gpu="a100-80g", mfu=0.4, profile=str(PROFILES / profile))
    assert 12.9e9 < plan.params["llm"] < 13.1e9  # Vicuna-13B
    assert plan.trains == {"llm": stage == "finetune", "vision": False}
    assert 0.5 < plan.seconds / 3600 / published_h < 2.0
    assert all(m.total < 80 * 2**30 for m in plan.memory[1:])  # ZeRO-3 and LoRA fit an A100-80GB
    # a token budget bounds the activations by the budget (or the longest sample, which runs alone)
    budget = 3 * plan.row_tokens
    budgeted = plan_recipe(
        load_recipe(f"llava15/vicuna13b_{stage}", [f"train.micro_batch_tokens={budget}"]),
        gpus=8,
        gpu="a100-80g",
        mfu=0.4,
        profile=str(PROFILES / profile),
    )
    assert plan.row_tokens == recipe.train.micro_batch_size * plan.tokens.max_length
    assert budgeted.row_tokens == budget and budgeted.seconds == plan.seconds
    assert budgeted.memory[0].activations > plan.memory[0].activations


def test_the_plan_command_prints_the_estimate_next_to_the_published_time(capsys):
    code = main(
        [
            "plan",
            "llava15/vicuna13b_pretrain",
            "--profile",
            str(PROFILES / "llava15_lcs558k.yaml"),
            "--gpus",
            "8",
            "--gpu",
            "a100-80g",
            "--compare-hours",
            "6",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ZeRO-3" in out and "LoRA r=128" in out and "published: 6 h; estimate:" in out


def test_a_bad_profile_is_one_line_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nmodalities:\n  image: {samples: 10, text_tokes: 5}\n")
    assert main(["plan", "llava15/vicuna13b_pretrain", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and "modalities.image.text_tokes" in err[0]
