"""The grouped distributed sampler: deterministic, a partition per epoch, rank-consistent, resumable."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onevision.train.sampler import GroupedBatchSampler


def _data(n=203, seed=0):
    rng = random.Random(seed)
    mods = [rng.choice(["image", "video", "text", "multi_image"]) for _ in range(n)]
    lengths = [rng.randint(50, 3000) if m != "text" else rng.randint(10, 400) for m in mods]
    return lengths, mods


def _ranks(lengths, mods, world, accum, mbs=2, **kw):
    return [
        GroupedBatchSampler(
            lengths, mods, micro_batch_size=mbs, world_size=world, rank=r, grad_accum=accum, seed=7, **kw
        )
        for r in range(world)
    ]


def test_every_rank_computes_the_same_plan_and_a_disjoint_share():
    lengths, mods = _data()
    samplers = _ranks(lengths, mods, world=3, accum=2)
    assert all(s.plan(0) == samplers[0].plan(0) for s in samplers)
    seen = [i for s in samplers for mb in s for i in mb]
    assert len(seen) == len(set(seen)) == samplers[0].steps_per_epoch() * samplers[0].global_batch_size
    assert (
        len(seen) > len(lengths) - samplers[0].global_batch_size
    )  # drop_last drops less than one global batch
    assert all(len(s) == len(list(s)) for s in samplers)


def test_one_process_with_accumulation_sees_the_micro_batches_of_two_processes():
    lengths, mods = _data()
    [single] = _ranks(lengths, mods, world=1, accum=2)
    pair = _ranks(lengths, mods, world=2, accum=1)
    one = list(single)
    two = [mb for step in zip(*(list(s) for s in pair)) for mb in step]
    assert one == two


def test_micro_batches_are_modality_pure_and_length_grouped():
    lengths, mods = _data(400)
    [s] = _ranks(lengths, mods, world=1, accum=1, mbs=4)
    mixed_tail = s.plan(0)[-2:]
    for step in s.plan(0)[:-2]:
        for mb in step:
            assert len({mods[i] for i in mb}) == 1
    assert len(mixed_tail) == 2
    grouped = s.padding_fraction()
    [random_order] = _ranks(lengths, mods, world=1, accum=1, mbs=4, group_by="none")
    assert grouped < 0.5 * random_order.padding_fraction()


def test_plan_is_seeded_by_seed_and_epoch():
    lengths, mods = _data()
    a, b = _ranks(lengths, mods, 1, 1)[0], _ranks(lengths, mods, 1, 1)[0]
    assert a.plan(0) == b.plan(0) and a.plan(1) != a.plan(0)
    c = GroupedBatchSampler(lengths, mods, micro_batch_size=2, seed=8)
    assert c.plan(0) != a.plan(0)


def test_resume_from_a_position_continues_exactly():
    lengths, mods = _data()
    s = _ranks(lengths, mods, world=2, accum=3)[0]
    full = list(s)
    s.set_position(0, 5)
    state = s.state_dict()
    fresh = GroupedBatchSampler(lengths, mods, micro_batch_size=2, world_size=2, rank=0, grad_accum=3, seed=7)
    fresh.load_state_dict(state)
    assert list(fresh) == full[5 * 3 :]
    other = GroupedBatchSampler(
        lengths[:-1], mods[:-1], micro_batch_size=2, world_size=2, grad_accum=3, seed=7
    )
    with pytest.raises(ValueError, match="num_samples"):
        other.load_state_dict(state)


def test_keep_last_partial_batch_wraps_around():
    lengths, mods = _data(21)
    s = _ranks(lengths, mods, world=2, accum=1, mbs=2, drop_last=False)[0]
    steps = s.plan(0)
    assert len(steps) == 6 and all(len(mb) == 2 for step in steps for mb in step)
    assert set(i for step in steps for mb in step for i in mb) == set(range(21))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 120),
    world=st.integers(1, 4),
    accum=st.integers(1, 3),
    mbs=st.integers(1, 4),
    group_by=st.sampled_from(["modality_length", "length", "none"]),
    seed=st.integers(0, 5),
)
def test_properties_partition_and_sizes(n, world, accum, mbs, group_by, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 1000, n).tolist()
    mods = rng.choice(["a", "b", "c"], n).tolist()
    samplers = [
        GroupedBatchSampler(
            lengths,
            mods,
            micro_batch_size=mbs,
            world_size=world,
            rank=r,
            grad_accum=accum,
            seed=seed,
            group_by=group_by,
            lookahead=2,
        )
        for r in range(world)
    ]
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == samplers[0].steps_per_epoch() * accum for p in per_rank)
    flat = [i for p in per_rank for mb in p for i in mb]
    assert len(flat) == len(set(flat)) and all(len(mb) == mbs for p in per_rank for mb in p)


def _cost(lengths, mb, packed):
    sizes = [lengths[i] for i in mb]
    return sum(sizes) if packed else max(sizes) * len(sizes)


@pytest.mark.parametrize("packed", [True, False])
def test_a_token_budget_cuts_micro_batches_by_tokens(packed):
    """Every micro-batch stays within the budget (a longer sample alone), short samples share a micro-batch, and
    each step holds ``world x accum`` micro-batches of one modality (the pooled leftovers last)."""
    lengths, mods = _data(400)
    budget = 4000
    samplers = _ranks(lengths, mods, world=2, accum=2, max_tokens=budget, packed=packed)
    plan = samplers[0].plan(0)
    assert all(s.plan(0) == plan for s in samplers)
    assert all(len(step) == 4 for step in plan)
    mbs = [mb for step in plan for mb in step]
    assert all(_cost(lengths, mb, packed) <= budget or len(mb) == 1 for mb in mbs)
    text = [len(mb) for mb in mbs if {mods[i] for i in mb} == {"text"}]
    video = [len(mb) for mb in mbs if {mods[i] for i in mb} == {"video"}]
    assert np.mean(text) > 3 * np.mean(video)  # short samples: many per micro-batch
    pure = [len({mods[i] for mb in step for i in mb}) == 1 for step in plan]
    assert pure == sorted(pure, reverse=True) and sum(pure) > 0.8 * len(
        plan
    )  # mixed leftovers only at the end
    # a partition: no sample twice, and drop_last drops less than one step's worth of micro-batches
    seen = [i for s in samplers for mb in s for i in mb]
    assert len(seen) == len(set(seen))
    dropped = sorted(set(range(len(lengths))) - set(seen))
    assert sum(lengths[i] for i in dropped) < 4 * budget + max(lengths)


def test_a_token_budget_plan_varies_by_epoch_and_resumes_exactly():
    lengths, mods = _data(300)
    kw = dict(max_tokens=3000, micro_batch_size=1, world_size=2, rank=1, grad_accum=1, seed=3)
    s = GroupedBatchSampler(lengths, mods, **kw)
    counts = [s.steps_per_epoch(e) for e in range(4)]
    assert s.total_steps(4) == sum(counts) and len({tuple(s.plan(e)[0][0]) for e in range(4)}) > 1
    # run step k of the whole run (3 epochs) is found by locate; a fresh sampler resumes from the state there
    k = counts[0] + 3
    assert s.locate(k) == (1, 3) and s.locate(counts[0] - 1) == (0, counts[0] - 1)
    s.set_position(*s.locate(0))
    whole_epoch1 = list(s.rank_batches(1))
    s.set_position(*s.locate(k))
    fresh = GroupedBatchSampler(lengths, mods, **kw)
    fresh.load_state_dict(s.state_dict())
    assert list(fresh) == whole_epoch1[3:]
    other = GroupedBatchSampler(lengths, mods, **{**kw, "max_tokens": 2000})
    with pytest.raises(ValueError, match="max_tokens"):
        other.load_state_dict(s.state_dict())


def test_a_token_budget_keeps_the_accumulation_equivalence_and_wraps_the_last_step():
    lengths, mods = _data()
    [single] = _ranks(lengths, mods, world=1, accum=2, max_tokens=5000)
    pair = _ranks(lengths, mods, world=2, accum=1, max_tokens=5000)
    assert list(single) == [mb for step in zip(*(list(s) for s in pair)) for mb in step]
    kept = _ranks(lengths, mods, world=3, accum=1, max_tokens=5000, drop_last=False)[0]
    assert {i for step in kept.plan(0) for mb in step for i in mb} == set(range(len(lengths)))
    assert all(len(step) == 3 for step in kept.plan(0))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 120),
    world=st.integers(1, 4),
    accum=st.integers(1, 3),
    budget=st.integers(1, 3000),
    packed=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 5),
)
def test_properties_of_token_budget_plans(n, world, accum, budget, packed, drop_last, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 1000, n).tolist()
    mods = rng.choice(["a", "b", "c"], n).tolist()
    samplers = _ranks(
        lengths, mods, world, accum, max_tokens=budget, packed=packed, drop_last=drop_last, lookahead=2
    )
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == samplers[0].steps_per_epoch() * accum for p in per_rank)
    mbs = [mb for p in per_rank for mb in p]
    assert all(mb and (_cost(lengths, mb, packed) <= budget or len(mb) == 1) for mb in mbs)
    flat = [i for mb in mbs for i in mb]
    if drop_last:
        assert len(flat) == len(set(flat))
    else:
        assert set(flat) == set(range(n))
