"""A length- and modality-grouped, distributed, deterministic, resumable batch sampler.

The grouping rule (one epoch, seeded by ``(seed, epoch)``; every rank computes the same plan):

1. ``G = micro_batch_size * world_size * grad_accum`` samples make one optimizer step (the global batch).
2. Samples are split into groups: by modality (``modality_length``: image, multi-image, video and text-only never
   share a micro-batch), or one group (``length``, ``none``).
3. Each group is shuffled, then cut into windows of ``lookahead * G`` samples. ``length`` and ``modality_length``
   sort each window by multimodal length (longest first); ``none`` keeps the shuffled order. Each window is cut
   into whole global batches, and each global batch into ``world_size * grad_accum`` micro-batches of consecutive
   samples, so a micro-batch holds samples of similar length (little padding).
4. Leftovers of all groups (fewer than ``G`` per group) are pooled, sorted and cut the same way; these mixed
   global batches come last. A final incomplete global batch is dropped (``drop_last``) or completed by wrapping
   around to the start of the epoch.
5. The full global batches are shuffled. Micro-batch ``j`` of a global batch goes to rank ``j % world_size`` at
   accumulation step ``j // world_size``.

Because the plan depends on ``G`` only, one process with ``grad_accum=2`` and two processes with
``grad_accum=1`` see exactly the same micro-batches in the same optimizer steps. The reference instead passes
``world_size * grad_accum`` as the world size (§12 item 25); here both are explicit.

**Token budgets** (``max_tokens``, the recipe's ``train.micro_batch_tokens``): micro-batches are cut by tokens
instead of by sample count, so every micro-batch costs about the same whatever its samples' lengths. Windows then
hold ``lookahead * K * max_tokens`` tokens (``K = world_size * grad_accum``); each sorted window is cut greedily
into micro-batches whose cost stays within the budget (``packed``: the sum of their lengths; unpadded rows
otherwise: count x longest), a sample longer than the budget alone; ``K`` consecutive micro-batches make one
optimizer step. Leftover samples of all windows are pooled and cut the same way; a final incomplete step is
dropped (``drop_last``) or completed with the epoch's first micro-batches. The number of steps then depends on
the epoch; :meth:`GroupedBatchSampler.steps_per_epoch`, :meth:`~GroupedBatchSampler.locate` and
:meth:`~GroupedBatchSampler.total_steps` account for it, and the plan stays a pure function of ``(seed, epoch)``,
so a resumed run sees the same micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np

GroupBy = Literal["modality_length", "length", "none"]


@dataclass(frozen=True)
class SamplerPosition:
    """Where a run is: ``step`` optimizer steps done in ``epoch``."""

    epoch: int = 0
    step: int = 0


class GroupedBatchSampler:
    """Yields this rank's micro-batches (lists of dataset indices); use as a DataLoader ``batch_sampler``.

    Args:
        lengths: multimodal length of every sample (tokens, visual tokens included).
        groups: a group key per sample (e.g. its modality); ignored unless ``group_by="modality_length"``.
        micro_batch_size, world_size, rank, grad_accum: batch geometry, explicit.
        seed: the recipe seed; the plan for epoch ``e`` is a pure function of ``(seed, e)`` and the inputs.
    """

    @classmethod
    def from_recipe(
        cls,
        recipe: Any,
        lengths: Sequence[int],
        groups: Sequence[str] | None,
        *,
        world_size: int | None = None,
        rank: int = 0,
    ) -> GroupedBatchSampler:
        """The sampler a :class:`~onevision.train.recipe.Recipe` trains with (``world_size`` defaults to its
        ``engine.num_processes``): the one rule for the trainer, ``--dry-run`` and ``onevision data stats``."""
        return cls(
            lengths,
            groups,
            micro_batch_size=recipe.train.micro_batch_size,
            world_size=recipe.engine.num_processes if world_size is None else world_size,
            rank=rank,
            grad_accum=recipe.train.grad_accum,
            seed=recipe.seed,
            group_by=recipe.data.group_by,
            lookahead=recipe.data.lookahead,
            drop_last=recipe.data.drop_last,
            max_tokens=recipe.train.micro_batch_tokens,
            packed=recipe.train.packing,
        )

    def __init__(
        self,
        lengths: Sequence[int],
        groups: Sequence[str] | None = None,
        *,
        micro_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        grad_accum: int = 1,
        seed: int = 0,
        group_by: GroupBy = "modality_length",
        lookahead: int = 16,
        drop_last: bool = True,
        max_tokens: int | None = None,
        packed: bool = True,
    ):
        if micro_batch_size < 1 or world_size < 1 or grad_accum < 1 or lookahead < 1:
            raise ValueError("micro_batch_size, world_size, grad_accum and lookahead must be >= 1")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if groups is not None and len(groups) != len(lengths):
            raise ValueError(f"{len(groups)} group keys for {len(lengths)} lengths")
        if group_by not in ("modality_length", "length", "none"):
            raise ValueError(f"unknown group_by {group_by!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.groups = list(groups) if groups is not None else ["all"] * len(lengths)
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.seed = seed
        self.group_by = group_by
        self.lookahead = lookahead
        self.drop_last = drop_last
        self.max_tokens = max_tokens
        self.packed = packed
        self.position = SamplerPosition()
        self._plans: dict[int, list[list[list[int]]]] = {}
        self._steps: dict[int, int] = {}

    # -- sizes ----------------------------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step (with a token budget: the most a step could hold, ``micro_batch_size``
        ignored, so this is only the count-mode geometry)."""
        return self.micro_batch_size * self.world_size * self.grad_accum

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches each rank runs per optimizer step (= ``grad_accum``)."""
        return self.grad_accum

    def describe(self) -> str:
        """The batch geometry in words (for logs and reports)."""
        k = self.world_size * self.grad_accum
        if self.max_tokens is None:
            return f"global batch {self.global_batch_size} samples"
        return f"global batch {k} micro-batch(es) of <= {self.max_tokens:,} tokens"

    def steps_per_epoch(self, epoch: int | None = None) -> int:
        """Optimizer steps in ``epoch`` (default: the current one); the same for every epoch without a token
        budget."""
        n, g = len(self.lengths), self.global_batch_size
        if n == 0:
            return 0
        if self.max_tokens is None:
            return n // g if self.drop_last else -(-n // g)
        epoch = self.position.epoch if epoch is None else epoch
        if epoch not in self._steps:
            self._steps[epoch] = len(self.plan(epoch))
        return self._steps[epoch]

    def total_steps(self, epochs: int) -> int:
        """Optimizer steps in ``epochs`` whole epochs."""
        return sum(self.steps_per_epoch(e) for e in range(epochs))

    def locate(self, step: int) -> tuple[int, int]:
        """``(epoch, step within it)`` of the run's optimizer step ``step`` (0-based count of steps done)."""
        epoch = 0
        while True:
            n = self.steps_per_epoch(epoch)
            if n == 0:
                raise ValueError("an epoch of this plan has no optimizer step")
            if step < n:
                return epoch, step
            step, epoch = step - n, epoch + 1

    def __len__(self) -> int:
        """Micro-batches this rank yields from the current position to the end of the epoch."""
        return (self.steps_per_epoch() - self.position.step) * self.grad_accum

    # -- position -------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.position = SamplerPosition(epoch, 0)

    def set_position(self, epoch: int, step: int) -> None:
        if not 0 <= step <= self.steps_per_epoch(epoch):
            raise ValueError(f"step {step} outside epoch of {self.steps_per_epoch(epoch)} steps")
        self.position = SamplerPosition(epoch, step)

    def state_dict(self) -> dict[str, int | None]:
        return {
            "epoch": self.position.epoch,
            "step": self.position.step,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "max_tokens": self.max_tokens,
            "num_samples": len(self.lengths),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("global_batch_size", self.global_batch_size),
            ("max_tokens", self.max_tokens),
            ("num_samples", len(self.lengths)),
        ):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"cannot resume the sampler: {key} was {state[key]}, now {mine} "
                    "(the data or batch geometry changed)"
                )
        self.set_position(int(state["epoch"]), int(state["step"]))

    # -- plan -----------------------------------------------------------------------------------------------
    def plan(self, epoch: int) -> list[list[list[int]]]:
        """Global batches of the epoch: ``plan[step][j]`` is micro-batch ``j`` (of ``world_size * grad_accum``)."""
        if epoch not in self._plans:
            self._plans = {epoch: self._build_plan(epoch)}
        return self._plans[epoch]

    def _members(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if self.group_by == "modality_length":
            keys = sorted(set(self.groups))
            return [np.array([i for i in range(n) if self.groups[i] == k], dtype=np.int64) for k in keys]
        return [np.arange(n, dtype=np.int64)]

    def _build_plan(self, epoch: int) -> list[list[list[int]]]:
        rng = np.random.default_rng([self.seed, epoch])
        if self.max_tokens is not None:
            return self._build_token_plan(rng)
        g, mbs = self.global_batch_size, self.micro_batch_size
        members = self._members()
        full: list[np.ndarray] = []
        leftovers: list[np.ndarray] = []
        for idx in members:
            idx = idx[rng.permutation(len(idx))]
            window = g * self.lookahead
            for start in range(0, len(idx), window):
                chunk = self._order(idx[start : start + window])
                whole = (len(chunk) // g) * g
                full.extend(chunk[s : s + g] for s in range(0, whole, g))
                if whole < len(chunk):
                    leftovers.append(chunk[whole:])
        steps = [full[i] for i in rng.permutation(len(full))]
        if leftovers:
            rest = self._order(np.concatenate(leftovers))
            whole = (len(rest) // g) * g
            steps.extend(rest[s : s + g] for s in range(0, whole, g))
            tail = rest[whole:]
            if len(tail) and not self.drop_last:
                order = np.concatenate([np.concatenate(steps) if steps else np.zeros(0, np.int64), tail])
                fill = np.resize(order, g - len(tail)) if len(order) else np.zeros(0, np.int64)
                steps.append(self._order(np.concatenate([tail, fill])))
        return [[s[j : j + mbs].tolist() for j in range(0, g, mbs)] for s in steps]

    def _build_token_plan(self, rng: np.random.Generator) -> list[list[list[int]]]:
        k = self.world_size * self.grad_accum
        window = self.lookahead * k * self.max_tokens
        full: list[list[list[int]]] = []
        leftovers: list[int] = []
        for idx in self._members():
            idx = idx[rng.permutation(len(idx))]
            ends = np.cumsum(self.lengths[idx])
            marks = np.arange(window, int(ends[-1]) if len(ends) else 0, window)
            cuts = [0, *np.searchsorted(ends, marks, side="right").tolist(), len(idx)]
            for a, b in pairwise(cuts):
                mbs = self._cut_tokens(self._order(idx[a:b]))
                whole = (len(mbs) // k) * k
                full.extend(mbs[s : s + k] for s in range(0, whole, k))
                leftovers.extend(i for mb in mbs[whole:] for i in mb)
        steps = [full[i] for i in rng.permutation(len(full))]
        if leftovers:
            mbs = self._cut_tokens(self._order(np.asarray(leftovers, dtype=np.int64)))
            whole = (len(mbs) // k) * k
            steps.extend(mbs[s : s + k] for s in range(0, whole, k))
            tail = mbs[whole:]
            if tail and not self.drop_last:
                first = [mb for step in steps for mb in step] + tail
                steps.append(tail + [first[j % len(first)] for j in range(k - len(tail))])
        return steps

    def _cut_tokens(self, idx: np.ndarray) -> list[list[int]]:
        """Consecutive micro-batches of ``idx`` whose cost stays within ``max_tokens`` (one sample at least)."""
        out: list[list[int]] = []
        cur: list[int] = []
        total = longest = 0
        for i, n in zip(idx.tolist(), self.lengths[idx].tolist()):
            cost = total + n if self.packed else max(longest, n) * (len(cur) + 1)
            if cur and cost > self.max_tokens:
                out.append(cur)
                cur, total, longest = [], 0, 0
            cur.append(i)
            total, longest = total + n, max(longest, n)
        if cur:
            out.append(cur)
        return out

    def _order(self, idx: np.ndarray) -> np.ndarray:
        if self.group_by == "none" or len(idx) == 0:
            return idx
        return idx[np.argsort(-self.lengths[idx], kind="stable")]

    # -- iteration ------------------------------------------------------------------------------------------
    def rank_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[int]]:
        """This rank's micro-batches of ``epoch`` from optimizer step ``start_step``."""
        for step in self.plan(epoch)[start_step:]:
            for a in range(self.grad_accum):
                yield step[a * self.world_size + self.rank]

    def __iter__(self) -> Iterator[list[int]]:
        return self.rank_batches(self.position.epoch, self.position.step)

    def padding_fraction(self, epoch: int = 0) -> float:
        """Fraction of padding tokens if every micro-batch is padded to its longest sample."""
        real = padded = 0
        for step in self.plan(epoch):
            for mb in step:
                lens = self.lengths[mb]
                real += int(lens.sum())
                padded += int(lens.max()) * len(mb)
        return 1.0 - real / padded if padded else 0.0
