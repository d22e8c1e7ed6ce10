"""Packing: a packed micro-batch gives every sample the loss and gradients it gets alone; training with packing
logs the losses of training without it, and resumes exactly."""

from __future__ import annotations

import json
import sys
import types
from itertools import pairwise

import pytest
import torch
from torch.nn import functional as F

from onevision.attention import PACKED_SDPA, register_packed_attention, spans_of, varlen_kwargs
from onevision.errors import InputError, RecipeError
from onevision.loss import LossConfig
from onevision.train.build import build_encoder, build_model
from onevision.train.data import TrainDataset, load_samples, plan_samples
from onevision.train.engine import train
from onevision.train.packing import enable_packing, first_fit_rows, pack
from onevision.train.recipe import load_recipe
from onevision.train.sampler import GroupedBatchSampler

from .conftest import data_overrides


def _recipe(tiny_data, tmp_path, *extra):
    return load_recipe(
        "tiny/stage2_ov",
        [
            f"output_dir={tmp_path / 'run'}",
            "init_from=null",
            *data_overrides(tiny_data),
            "logging.progress=false",
            "data.num_workers=0",
            "train.precision=fp32",
            "train.gradient_checkpointing=false",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def setup(tiny_data, tmp_path_factory):
    torch.manual_seed(0)
    recipe = _recipe(tiny_data, tmp_path_factory.mktemp("pack"))
    model = build_model(recipe)
    model.train()
    encoder = build_encoder(recipe, model)
    samples, _ = load_samples(recipe)
    planned, _ = plan_samples(samples, recipe, encoder, log=False)
    dataset = TrainDataset(planned, recipe, encoder)
    by_modality: dict[str, list[int]] = {}
    for i, m in enumerate(dataset.modalities):
        by_modality.setdefault(m, []).append(i)
    # two samples of every modality: image, multi-image, video and text-only in one packed batch
    picked = [i for m in sorted(by_modality) for i in by_modality[m][:2]]
    items = [dataset[i] for i in picked]
    for item in items:
        item.pop("sample_id")
    return model, encoder, items


def test_first_fit_rows_longest_first_within_the_budget():
    assert first_fit_rows([3, 9, 4, 2, 7], 10) == [[1], [4, 0], [2, 3]]
    assert first_fit_rows([3, 9, 4], None) == [[1, 2, 0]]
    assert first_fit_rows([12, 2], 10) == [[0], [1]]  # too long for the budget: a row of its own, never split


@pytest.fixture
def fake_flash_attn(monkeypatch):
    """A ``flash_attn`` package with flash-attn's semantics on CPU tensors (causal attention over each sequence of
    ``cu_seqlens``; the dense kernel over each whole row), so transformers' own flash-attention path runs here.
    Records which kernel ran."""
    import transformers.modeling_flash_attention_utils as fa_utils

    calls: list[str] = []

    def dense(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):  # [B, L, H, D]
        calls.append("dense")
        out = F.scaled_dot_product_attention(
            *(x.transpose(1, 2) for x in (q, k, v)),
            is_causal=causal,
            scale=softmax_scale,
            enable_gqa=q.shape[2] != k.shape[2],
        )
        return out.transpose(1, 2)

    def varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None, causal=False
    ):
        calls.append("varlen")
        cuts = cu_seqlens_q.tolist()
        assert cuts == cu_seqlens_k.tolist() and max_seqlen_q == max(b - a for a, b in pairwise(cuts))
        return torch.cat(
            [
                dense(q[None, a:b], k[None, a:b], v[None, a:b], 0.0, softmax_scale, causal)[0]
                for a, b in pairwise(cuts)
            ]
        )

    flash = types.ModuleType("flash_attn")
    flash.flash_attn_func, flash.flash_attn_varlen_func, flash.flash_attn_with_kvcache = dense, varlen, None
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.pad_input, padding.unpad_input = fa_utils._pad_input, fa_utils._unpad_input
    monkeypatch.setitem(sys.modules, "flash_attn", flash)
    monkeypatch.setitem(sys.modules, "flash_attn.bert_padding", padding)
    monkeypatch.setattr(fa_utils, "is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(fa_utils, "_loaded_implementation", None)
    yield calls
    assert calls and set(calls) == {"varlen", "dense"}  # varlen over the packed rows (dense: inside varlen)


def test_packing_refuses_an_attention_that_cannot_isolate_samples(setup):
    model, encoder, items = setup
    batch = pack(items, encoder.collate, None, encoder.processor.pad_token_id)
    model.language_model.config._attn_implementation = "flex_attention"
    try:
        with pytest.raises(InputError, match="'flex_attention' would attend across the samples"):
            model(**batch)
        recipe = load_recipe("tiny/stage2_si", ["train.packing=true"])
        with pytest.raises(RecipeError, match=r"train\.packing"):
            enable_packing(recipe, model, encoder)
    finally:
        model.language_model.set_attn_implementation("sdpa")


def test_varlen_kwargs_cut_the_flattened_rows_at_every_span():
    spans = spans_of([[3, 2], [4]], 5)
    got = varlen_kwargs(spans, 5, "cpu")
    assert got["cu_seq_lens_q"].tolist() == [0, 3, 5, 9, 10] and got["cu_seq_lens_q"].dtype == torch.int32
    assert got["cu_seq_lens_k"] is got["cu_seq_lens_q"] and got["max_length_q"] == got["max_length_k"] == 4


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "attention, loss_kind",
    [
        ("sdpa", "hf"),
        ("sdpa", "chunked"),
        (PACKED_SDPA, "hf"),
        (PACKED_SDPA, "chunked"),
        ("positions", "hf"),
        ("flash", "hf"),
        ("flash", "chunked"),
        ("flash-positions", "hf"),
    ],
)
def test_packed_batch_matches_every_sample_alone(setup, attention, loss_kind, request):
    """sdpa: transformers' block-diagonal mask from the restarting positions; PACKED_SDPA: span-by-span SDPA from
    the batch's spans; positions: PACKED_SDPA without spans, which finds them from the restarting positions; flash:
    transformers' flash-attention path (with flash-attn's semantics on CPU) given the model's varlen kwargs, from
    the spans or (flash-positions) from the restarting positions."""
    model, encoder, items = setup
    spans = attention not in ("positions", "flash-positions")
    if attention.startswith("flash"):
        request.getfixturevalue("fake_flash_attn")
    elif attention != "sdpa":
        attention = PACKED_SDPA
        register_packed_attention()
    lengths = [len(x["input_ids"]) for x in items]
    budget = max(lengths) + min(lengths)  # several rows, some holding two samples, some padding
    rows = first_fit_rows(lengths, budget)
    assert len(rows) > 1 and any(len(r) > 1 for r in rows)
    # each sample alone: the sum of its token losses, and its gradients
    alone_loss, alone_n, alone_grad = [], [], {}
    model.loss = LossConfig("hf")
    for item in items:
        model.zero_grad(set_to_none=True)
        batch = encoder.collate([item])
        n = int((batch["labels"][:, 1:] != -100).sum())
        loss = model(**batch).loss
        (loss * n).backward()
        alone_loss.append(float(loss.detach()))
        alone_n.append(n)
        for k, g in _grads(model).items():
            alone_grad[k] = alone_grad.get(k, 0) + g
    # packed: per-sample losses from the logits, then the loss the trainer uses and its gradients
    batch = pack(items, encoder.collate, budget, encoder.processor.pad_token_id)
    if not spans:
        del batch["packed_spans"]
    if attention.startswith("flash"):  # set_attn_implementation would check for CUDA and the real package
        model.language_model.config._attn_implementation = "flash_attention_2"
    else:
        model.language_model.set_attn_implementation(attention)
    assert batch["packed"] and batch["input_ids"].shape[0] == len(rows)
    assert int(batch["attention_mask"].sum()) == sum(lengths)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            n = lengths[i]
            tok = F.cross_entropy(
                logits[r, col : col + n - 1], batch["labels"][r, col + 1 : col + n], reduction="none"
            )
            keep = batch["labels"][r, col + 1 : col + n] != -100
            assert int(keep.sum()) == alone_n[i]
            assert float(tok[keep].mean()) == pytest.approx(alone_loss[i], abs=1e-5)
            col += n
    model.loss = LossConfig(loss_kind, chunk_tokens=16)
    loss = model(**batch).loss
    total = sum(alone_n)
    assert float(loss.detach()) == pytest.approx(
        sum(x * n for x, n in zip(alone_loss, alone_n)) / total, abs=1e-5
    )
    (loss * total).backward()
    packed_grad = _grads(model)
    assert packed_grad.keys() == alone_grad.keys()
    for k, g in packed_grad.items():
        torch.testing.assert_close(g, alone_grad[k], atol=1e-5, rtol=1e-5, msg=k)
    model.loss = LossConfig()
    model.language_model.set_attn_implementation("sdpa")
    model.zero_grad(set_to_none=True)


def test_packed_attention_builds_no_mask_for_packed_rows():
    """transformers builds a [rows, 1, width, width] mask from restarting positions for SDPA; the span-by-span
    attention needs none. With a 2D padding mask (an unpacked batch) it builds SDPA's mask."""
    from transformers import Qwen2Config
    from transformers.masking_utils import create_causal_mask

    register_packed_attention()
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    embeds = torch.zeros(1, 8, 4)

    def mask(implementation, attention_mask=None):
        config = Qwen2Config(hidden_size=4, num_attention_heads=1, num_key_value_heads=1, num_hidden_layers=1)
        config._attn_implementation = implementation
        return create_causal_mask(
            config=config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=positions,
        )

    assert mask("sdpa").shape == (1, 1, 8, 8)
    assert mask(PACKED_SDPA) is None
    padded = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    assert mask("sdpa", padded).shape == (1, 1, 8, 8)
    torch.testing.assert_close(mask(PACKED_SDPA, padded), mask("sdpa", padded))


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_packed_training_logs_the_unpacked_losses_and_resumes_exactly(tiny_data, tmp_path):
    common = (
        "train.max_steps=4",
        "checkpoint.every_steps=2",
        "train.micro_batch_size=3",
        "train.grad_accum=1",
    )
    plain = train(_recipe(tiny_data, tmp_path / "plain", *common, f"output_dir={tmp_path / 'plain'}"))
    packed_args = (*common, "train.packing=true", "train.loss=chunked", f"output_dir={tmp_path / 'packed'}")
    full = train(_recipe(tiny_data, tmp_path, *packed_args))
    assert full.losses == pytest.approx(plain.losses, abs=1e-5)
    records = [json.loads(line) for line in (tmp_path / "packed" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["padding"] == 0.0 for r in records)  # micro-batch in one row: no padding at all
    # interrupted after step 2 (its checkpoint), resumed in a new run: the same losses as without the stop
    out = f"output_dir={tmp_path / 'stopped'}"
    train(_recipe(tiny_data, tmp_path, *packed_args, out), stop_after=2)
    resumed = train(_recipe(tiny_data, tmp_path, *packed_args, out))
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-00000002"
    assert _losses(tmp_path / "stopped") == pytest.approx(full.losses, abs=1e-6)


def test_token_budget_micro_batches_train_as_planned_and_resume_exactly(tiny_data, tmp_path):
    """``train.micro_batch_tokens``: the trainer runs the sampler's token-budget plan (each step's logged tokens
    are its planned micro-batches' tokens), and a stopped run resumes to the same losses."""
    import statistics

    probe = _recipe(tiny_data, tmp_path / "probe")
    encoder = build_encoder(probe, build_model(probe))
    samples, _ = load_samples(probe)
    planned, _ = plan_samples(samples, probe, encoder, log=False)
    lengths = [p.length for p in planned]
    budget = int(2 * statistics.median(lengths))
    args = (
        "train.max_steps=4",
        "checkpoint.every_steps=2",
        f"train.micro_batch_tokens={budget}",
        "train.grad_accum=2",
        "train.packing=true",
        "train.loss=chunked",
    )
    recipe = _recipe(tiny_data, tmp_path, *args, f"output_dir={tmp_path / 'full'}")
    dataset = TrainDataset(planned, recipe, encoder)
    sampler = GroupedBatchSampler.from_recipe(recipe, dataset.lengths, dataset.modalities)
    plan = sampler.plan(0)
    micro = [mb for step in plan for mb in step]
    assert any(len(mb) > 2 for mb in micro) and any(len(mb) == 1 for mb in micro)
    assert all(sum(lengths[i] for i in mb) <= budget or len(mb) == 1 for mb in micro)
    full = train(recipe)
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in records] == [sum(lengths[i] for mb in step for i in mb) for step in plan[:4]]
    out = f"output_dir={tmp_path / 'stopped'}"
    train(_recipe(tiny_data, tmp_path, *args, out), stop_after=2)
    resumed = train(_recipe(tiny_data, tmp_path, *args, out))
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-00000002"
    assert _losses(tmp_path / "stopped") == pytest.approx(full.losses, abs=1e-6)
