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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    ):
        if micro_batch_size < 1 or world_size < 1 or grad_accum < 1 or lookahead < 1:
            raise ValueError("micro_batch_size, world_size, grad_accum and lookahead must be >= 1")
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
        self.position = SamplerPosition()
        self._plans: dict[int, list[list[list[int]]]] = {}

    # -- sizes ----------------------------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.world_size * self.grad_accum

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches each rank runs per optimizer step (= ``grad_accum``)."""
        return self.grad_accum

    def steps_per_epoch(self) -> int:
        n, g = len(self.lengths), self.global_batch_size
        if n == 0:
            return 0
        return n // g if self.drop_last else -(-n // g)

    def __len__(self) -> int:
        """Micro-batches this rank yields from the current position to the end of the epoch."""
        return (self.steps_per_epoch() - self.position.step) * self.grad_accum

    # -- position -------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.position = SamplerPosition(epoch, 0)

    def set_position(self, epoch: int, step: int) -> None:
        if not 0 <= step <= self.steps_per_epoch():
            raise ValueError(f"step {step} outside epoch of {self.steps_per_epoch()} steps")
        self.position = SamplerPosition(epoch, step)

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.position.epoch,
            "step": self.position.step,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "num_samples": len(self.lengths),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("global_batch_size", self.global_batch_size),
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

    def _build_plan(self, epoch: int) -> list[list[list[int]]]:
        rng = np.random.default_rng([self.seed, epoch])
        g, mbs = self.global_batch_size, self.micro_batch_size
        n = len(self.lengths)
        if self.group_by == "modality_length":
            keys = sorted(set(self.groups))
            members = [np.array([i for i in range(n) if self.groups[i] == k], dtype=np.int64) for k in keys]
        else:
            members = [np.arange(n, dtype=np.int64)]
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
