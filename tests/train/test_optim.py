"""Parameter groups from component_parameters(), freezing, the empty-group error, the schedule, the table."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from onevision.train.optim import (
    ComponentError,
    apply_trainable,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    format_table,
    lr_multiplier,
)
from onevision.train.recipe import load_recipe


class StandIn(nn.Module):
    """Follows the agreed interface; the LLM is wrapped twice so that name-based grouping would be fooled."""

    def __init__(self, newline: bool = True):
        super().__init__()
        self.vision_tower = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.projector = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8))
        self.language_model = nn.ModuleDict({"module": nn.ModuleDict({"vision_tower_like": nn.Linear(8, 8)})})
        self.image_newline = nn.Parameter(torch.zeros(8)) if newline else None

    def component_parameters(self):
        out = {
            "vision": list(self.vision_tower.parameters()),
            "projector": list(self.projector.parameters()),
            "llm": list(self.language_model.parameters()),
        }
        out["newline"] = [self.image_newline] if self.image_newline is not None else []
        return out


def _recipe(*overrides):
    return load_recipe("tiny/stage2_si", ["init_from=null", *overrides])


def test_groups_per_component_with_counts_and_lrs():
    model, recipe = StandIn(), _recipe("optim.lr=1e-3")
    rows = apply_trainable(model.component_parameters(), recipe, all_parameters=list(model.parameters()))
    groups = build_param_groups(model.component_parameters(), recipe)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"vision", "projector", "llm", "newline"}
    assert [len(by_name[n]["params"]) for n in ("vision", "projector", "llm", "newline")] == [4, 4, 2, 1]
    assert by_name["vision"]["lr"] == pytest.approx(2e-4)  # 1/5 of the LLM's by default
    assert by_name["llm"]["lr"] == by_name["projector"]["lr"] == by_name["newline"]["lr"] == 1e-3
    assert [r.params for r in rows] == [
        sum(p.numel() for p in ps) for ps in model.component_parameters().values()
    ]


def test_frozen_components_get_no_grad_and_no_optimizer_state():
    model, recipe = (
        StandIn(),
        _recipe("components.vision.trainable=frozen", "components.llm.trainable=frozen"),
    )
    apply_trainable(model.component_parameters(), recipe, all_parameters=list(model.parameters()))
    opt = build_optimizer(build_param_groups(model.component_parameters(), recipe), recipe)
    x = torch.randn(3, 4)
    loss = model.language_model["module"]["vision_tower_like"](model.projector(model.vision_tower(x))).sum()
    (loss + model.image_newline.sum()).backward()
    opt.step()
    frozen = list(model.vision_tower.parameters()) + list(model.language_model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(p.grad is not None for p in model.projector.parameters())
    state_ids = {id(p) for p in opt.state}
    assert not state_ids & {id(p) for p in frozen}
    assert {id(p) for p in model.projector.parameters()} <= state_ids


def test_the_optimizer_is_fused_adamw_and_steps_as_the_reference_loop():
    model, recipe = StandIn(), _recipe("optim.weight_decay=0.1")
    apply_trainable(model.component_parameters(), recipe, all_parameters=list(model.parameters()))
    twin, initial = copy.deepcopy(model), copy.deepcopy(model)
    opt = build_optimizer(build_param_groups(model.component_parameters(), recipe), recipe)
    assert opt.defaults["fused"] is True
    groups = build_param_groups(twin.component_parameters(), recipe)
    ref = torch.optim.AdamW(groups, lr=recipe.optim.lr, betas=tuple(recipe.optim.betas), eps=recipe.optim.eps)
    x = torch.randn(3, 4)
    for _ in range(3):
        for m, o in ((model, opt), (twin, ref)):
            m.projector(m.vision_tower(x)).square().sum().backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters(), strict=True))


def test_weight_decay_splits_matrices_from_vectors():
    model, recipe = StandIn(), _recipe("optim.weight_decay=0.1", "components.llm.weight_decay=0.0")
    apply_trainable(model.component_parameters(), recipe)
    groups = {g["name"]: g for g in build_param_groups(model.component_parameters(), recipe)}
    assert groups["projector"]["weight_decay"] == 0.1 and all(
        p.ndim == 2 for p in groups["projector"]["params"]
    )
    assert groups["projector.no_decay"]["weight_decay"] == 0.0
    assert groups["llm"]["weight_decay"] == 0.0 and "llm.no_decay" not in groups
    assert "newline" not in groups and groups["newline.no_decay"]["params"] == [model.image_newline]


def test_trainable_component_without_parameters_is_an_error():
    model, recipe = StandIn(newline=False), _recipe()
    with pytest.raises(ComponentError, match=r"components\.newline\.trainable.*no newline parameters"):
        apply_trainable(model.component_parameters(), recipe)
    apply_trainable(
        model.component_parameters(), _recipe("components.newline.trainable=frozen")
    )  # fine when frozen


def test_overlapping_or_uncovered_parameters_are_errors():
    model, recipe = StandIn(), _recipe()
    comps = model.component_parameters()
    with pytest.raises(ComponentError, match="in both"):
        apply_trainable({**comps, "llm": comps["llm"] + comps["projector"][:1]}, recipe)
    rows = apply_trainable(
        {**comps, "vision": comps["vision"][:1]}, recipe, all_parameters=list(model.parameters())
    )
    assert rows[-1].component == "(unassigned)" and rows[-1].tensors == 3 and not rows[-1].trainable
    assert not any(p.requires_grad for p in comps["vision"][1:])  # outside every component: frozen
    with pytest.raises(ComponentError, match="unknown component"):
        apply_trainable({**comps, "resampler": []}, recipe)


@pytest.mark.parametrize("name", ["tiny/stage1", "tiny/stage1_5", "tiny/stage2_si", "tiny/stage2_ov"])
def test_tiny_recipes_on_the_real_model_select_exactly_their_components(name):
    from onevision.train.build import build_model

    recipe = load_recipe(name, ["init_from=null"])
    model = build_model(recipe)
    comps = model.component_parameters()
    rows = apply_trainable(comps, recipe, all_parameters=list(model.parameters()))
    covered = {id(p) for ps in comps.values() for p in ps}
    assert all(not p.requires_grad for p in model.parameters() if id(p) not in covered)
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    groups = build_param_groups(comps, recipe)
    for comp, params in comps.items():
        trainable = recipe.component(comp).trainable == "full"
        assert all(p.requires_grad == trainable for p in params), comp
        grouped = [p for g in groups if g["component"] == comp for p in g["params"]]
        assert len(grouped) == (len(params) if trainable else 0)
        if trainable:
            assert {g["lr"] for g in groups if g["component"] == comp} == {recipe.component_lr(comp)}
    if name == "tiny/stage1":
        assert [g["component"] for g in groups] == ["projector"]


def test_schedule_warmup_then_cosine_and_scheduler_steps():
    assert lr_multiplier(0, total_steps=100, warmup=10, schedule="cosine") == 0.0
    assert lr_multiplier(5, total_steps=100, warmup=10, schedule="cosine") == 0.5
    assert lr_multiplier(10, total_steps=100, warmup=10, schedule="cosine") == 1.0
    assert lr_multiplier(55, total_steps=100, warmup=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_multiplier(100, total_steps=100, warmup=10, schedule="cosine") == pytest.approx(0.0)
    assert lr_multiplier(
        100, total_steps=100, warmup=0, schedule="cosine", min_lr_ratio=0.1
    ) == pytest.approx(0.1)
    assert lr_multiplier(50, total_steps=100, warmup=0, schedule="linear") == pytest.approx(0.5)
    model, recipe = StandIn(), _recipe("optim.lr=1.0", "optim.warmup_ratio=0.25")
    apply_trainable(model.component_parameters(), recipe)
    opt = build_optimizer(build_param_groups(model.component_parameters(), recipe), recipe)
    sched = build_scheduler(opt, recipe, total_steps=8)  # warmup = ceil(0.25 * 8) = 2
    seen = []
    for _ in range(8):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [s["llm"] for s in seen[:3]] == [0.0, 0.5, 1.0]
    assert all(s["vision"] == pytest.approx(0.2 * s["llm"]) for s in seen)  # one multiplier for every group
    assert seen[5]["llm"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))


def test_table_lists_components_and_totals():
    model, recipe = StandIn(), _recipe("components.vision.trainable=frozen")
    table = format_table(
        apply_trainable(model.component_parameters(), recipe, all_parameters=list(model.parameters()))
    )
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["component", "trainable", "tensors"]
    vision = next(line for line in lines if line.startswith("vision"))
    assert "frozen" in vision and " 28 " in vision
    total = sum(p.numel() for p in model.parameters())
    assert f"{total:,}" in lines[-1]


def test_tensorboard_is_optional_with_a_clear_message(monkeypatch):
    import onevision.train.engine as engine
    from onevision.train.recipe import RecipeError

    monkeypatch.setattr(engine, "tensorboard_available", lambda: False)
    with pytest.raises(RecipeError, match=r"logging\.tensorboard.*pip install 'onevision\[train\]'"):
        engine.train(_recipe("logging.tensorboard=true"))


def test_tiny_stage1_step_with_gradient_checkpointing_trains_only_the_projector(tiny_data):
    """The engine's order on the real model and data: checkpointing on (with transformers' input-require-grads hook
    left in place), LLM + vision frozen, one forward/backward; the projector gets gradients, nothing else."""
    from onevision.train.build import build_encoder, build_model, enable_gradient_checkpointing
    from onevision.train.data import Collator, TrainDataset, load_samples, plan_samples

    from .conftest import data_overrides

    recipe = load_recipe("tiny/stage1", ["init_from=null", *data_overrides(tiny_data)])
    assert recipe.train.gradient_checkpointing
    model = build_model(recipe)
    encoder = build_encoder(recipe, model)
    enable_gradient_checkpointing(recipe, model)
    assert getattr(model.language_model, "_require_grads_hooks", None)
    apply_trainable(model.component_parameters(), recipe, all_parameters=list(model.parameters()))
    samples, stats = load_samples(recipe)
    planned, _ = plan_samples(samples, recipe, encoder, stats, log=False)
    ds = TrainDataset(planned, recipe, encoder)
    batch = Collator(encoder)([ds[0], ds[1]])
    batch.pop("skipped"), batch.pop("sample_ids")
    assert batch["pixel_values"] is not None
    model.train()
    model(**batch).loss.backward()
    grads = {n: q.grad for n, q in model.named_parameters() if q.grad is not None}
    assert grads and all(n.startswith("projector.") for n in grads)
    assert all(torch.count_nonzero(g) > 0 for g in grads.values())
