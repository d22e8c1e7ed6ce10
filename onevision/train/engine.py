"""The training loop, on accelerate: single process, DDP, DeepSpeed ZeRO-2 / ZeRO-3 (also on CPU, with gloo).

One optimizer step = ``grad_accum`` micro-batches on each of ``world_size`` processes, planned by
:class:`~onevision.train.sampler.GroupedBatchSampler`. The logged loss of a step is the mean of its micro-batch
losses over accumulation and ranks, so 1 process x ``grad_accum=2`` and 2 processes x ``grad_accum=1`` log the same
numbers. The LR schedule is stepped here, once per optimizer step (never through ``accelerator.prepare``).

A step whose loss (on any rank) or global gradient norm is not finite is skipped: its data is consumed and the LR
schedule advances, but no parameter or optimizer state changes (DeepSpeed skips it itself on a non-finite norm).
After ``train.max_bad_steps`` consecutive skipped steps the run stops with :class:`TrainingError` naming the step;
no checkpoint is written for a skipped step, and no final model or ``stage.json`` for a stopped run. Every skip
(records at planning, samples at load time, steps) is totalled at the end and written to ``stage.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from onevision.errors import CheckpointError, TrainingError
from onevision.lora import lora_parameters
from onevision.loss import LossConfig
from onevision.train import lora_stage
from onevision.train.build import (
    STAGE_FILE,
    build_encoder,
    build_model,
    enable_gradient_checkpointing,
    save_model,
)
from onevision.train.checkpoint import (
    CheckpointManager,
    fault_steps,
    load_json,
    load_rng,
    no_pickle,
    save_json,
    save_rng,
)
from onevision.train.data import Collator, DataStats, TrainDataset
from onevision.train.deepspeed_config import load_deepspeed_config, resolve_deepspeed_config
from onevision.train.launch import check_distributed, disable_deepspeed_shm_op
from onevision.train.metrics import TENSORBOARD_MISSING, MetricsLog, Progress, tensorboard_available
from onevision.train.optim import (
    apply_trainable,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    format_table,
)
from onevision.train.packing import enable_packing
from onevision.train.recipe import Recipe, RecipeError
from onevision.train.sampler import GroupedBatchSampler

logger = logging.getLogger("onevision.train")
SCHEDULER_FILE = "scheduler.json"
LOAD_SKIP_REASON = "media failed to load"
BAD_STEP_REASON = "non-finite loss or gradient norm"


@dataclass
class TrainResult:
    """What a finished (or stopped) run did."""

    output_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: Path | None = None
    stats: DataStats | None = None
    skipped: dict[str, dict[str, int]] = field(
        default_factory=dict
    )  # what stage.json records under "skipped"


def make_accelerator(recipe: Recipe, *, hidden_size: int | None = None) -> Any:
    """An ``Accelerator`` that really runs the recipe's backend (see :mod:`onevision.train.launch`)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, InitProcessGroupKwargs

    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = recipe.engine.backend
    handlers = (
        [
            InitProcessGroupKwargs(
                backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=recipe.engine.timeout_s)
            )
        ]
        if world > 1
        else []
    )
    common: dict[str, Any] = {
        "gradient_accumulation_steps": recipe.train.grad_accum,
        "mixed_precision": "bf16" if recipe.train.precision == "bf16" else "no",
        "kwargs_handlers": handlers,
    }
    if backend in ("zero2", "zero3"):
        if not cuda and not recipe.engine.deepspeed_shm_op:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            disable_deepspeed_shm_op()
        path = recipe.deepspeed_config_path()
        raw = load_deepspeed_config(path, stage=int(backend[-1]))  # type: ignore[arg-type]
        cfg = resolve_deepspeed_config(
            raw,
            micro_batch_size=recipe.train.micro_batch_size,
            grad_accum=recipe.train.grad_accum,
            world_size=world,
            precision=recipe.train.precision,
            max_grad_norm=recipe.optim.max_grad_norm,
            hidden_size=hidden_size,
            cuda=cuda,
        )
        # zero3_init_flag=False: models are built (or loaded from init_from) whole on every rank, then partitioned
        # by prepare(); under zero.Init the model's own weight loader would write into empty partitions.
        plugin = DeepSpeedPlugin(
            hf_ds_config=cfg, gradient_accumulation_steps=recipe.train.grad_accum, zero3_init_flag=False
        )
        acc = Accelerator(deepspeed_plugin=plugin, **common)
    else:
        if recipe.engine.find_unused_parameters:
            handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
        acc = Accelerator(cpu=not cuda, **common)
    check_distributed(acc, backend)
    return acc


def _to_device(obj: Any, device: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _prepare_data(recipe: Recipe, encoder: Any, is_main: bool) -> tuple[TrainDataset, DataStats]:
    from onevision.train.prepare import prepare_data  # shard sets or loose files, headers read in parallel

    dataset, stats = prepare_data(recipe, encoder, is_main=is_main)
    if not len(dataset):
        raise RecipeError(recipe.source, "data.path", f"no usable sample: {stats.summary()}")
    return dataset, stats


def train(recipe: Recipe, *, stop_after: int | None = None) -> TrainResult:
    """Run one stage. ``stop_after`` ends the process's loop after that many optimizer steps (tests)."""
    import torch
    from accelerate.utils import set_seed

    _setup_logging()
    if recipe.logging.tensorboard and not tensorboard_available():
        raise RecipeError(recipe.source, "logging.tensorboard", TENSORBOARD_MISSING)
    out = Path(recipe.output_dir)
    acc = make_accelerator(recipe)
    is_main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if recipe.data.synthetic is not None:
        from onevision.train.synthetic import ensure_synthetic_dataset

        if is_main:
            ensure_synthetic_dataset(recipe.data.path, recipe.data.synthetic)
        acc.wait_for_everyone()
    set_seed(recipe.seed)

    model = _build_whole_model(recipe)
    model.loss = LossConfig(recipe.train.loss, recipe.train.loss_chunk_tokens)
    encoder = build_encoder(recipe, model)
    collate = Collator(enable_packing(recipe, model, encoder))
    dataset, stats = _prepare_data(recipe, encoder, is_main)
    sampler = GroupedBatchSampler.from_recipe(
        recipe, dataset.lengths, dataset.modalities, world_size=world, rank=rank
    )
    if sampler.steps_per_epoch(0) == 0:
        raise RecipeError(
            recipe.source,
            "train",
            f"{len(dataset)} samples make no full {sampler.describe()} "
            "(micro_batch_size or micro_batch_tokens x grad_accum x processes)",
        )
    total = recipe.train.max_steps or sampler.total_steps(recipe.train.epochs)

    if recipe.train.gradient_checkpointing:
        enable_gradient_checkpointing(recipe, model)
    rows = apply_trainable(
        model.component_parameters(),
        recipe,
        all_parameters=list(model.parameters()),
        lora=lora_parameters(model),
    )
    groups = build_param_groups(model.component_parameters(), recipe)
    optimizer = build_optimizer(groups, recipe)
    scheduler = build_scheduler(optimizer, recipe, total)
    group_names = [g["name"] for g in optimizer.param_groups]
    if is_main:
        print(
            f"[onevision] {recipe.name} (stage {recipe.stage or '-'}): backend {recipe.engine.backend}, "
            f"{world} process(es), {acc.distributed_type}",
            flush=True,
        )
        print(format_table(rows), flush=True)
        print(f"[onevision] data: {stats.summary()}", flush=True)
        print(
            f"[onevision] {total} optimizer steps ({sampler.steps_per_epoch(0)} per epoch), "
            f"{sampler.describe()}, planned padding {100 * sampler.padding_fraction(0):.1f}%",
            flush=True,
        )
    model, optimizer = acc.prepare(model, optimizer)
    is_deepspeed = recipe.engine.backend in ("zero2", "zero3")

    ckpt = CheckpointManager(
        out / "checkpoints",
        keep_last=recipe.checkpoint.keep_last,
        is_main=is_main,
        barrier=acc.wait_for_everyone,
    )
    ckpt.clean_incomplete()
    metrics = MetricsLog(out / "metrics.jsonl" if (is_main and recipe.logging.jsonl) else None)
    step, resumed = 0, None
    load_skipped, bad_steps = 0, 0
    resume_dir = _find_resume(recipe, ckpt, is_main)
    if resume_dir is not None:
        manifest = CheckpointManager.read_manifest(resume_dir)
        if manifest.get("recipe_hash") != recipe.hash() and not recipe.checkpoint.allow_recipe_change:
            raise CheckpointError(
                f"{resume_dir} was written by a different recipe (hash {manifest.get('recipe_hash')}"
                f" != {recipe.hash()}); set checkpoint.allow_recipe_change=true to resume anyway, "
                "or checkpoint.resume=never to start over"
            )
        options = lora_stage.resume_load_options(acc.unwrap_model(model), resume_dir / "state")
        load_checkpoint(resume_dir, acc, scheduler, sampler, rank, **options)
        step, resumed = int(manifest["step"]), resume_dir
        load_skipped = int(manifest.get("skipped", {}).get("load", 0))
        bad_steps = int(manifest.get("skipped", {}).get("steps", 0))
        metrics.truncate_after(step)
        if is_main:
            print(f"[onevision] resumed from {resume_dir} at step {step}", flush=True)
    elif is_main and recipe.logging.jsonl:
        metrics.truncate_after(0)

    tracker = None
    if recipe.logging.tensorboard and is_main:
        from torch.utils.tensorboard import SummaryWriter

        tracker = SummaryWriter(str(out / "tensorboard"))

    progress = Progress(total, step, enabled=is_main and recipe.logging.progress, desc=recipe.name)
    losses: list[float] = []
    fallback: dict[str, Any] | None = None
    model.train()
    stop_at = total if stop_after is None else min(total, step + stop_after)
    nan_steps = fault_steps("nan_loss")  # fault injection (tests): a NaN loss at these steps
    bad_run = 0
    t_last = time.perf_counter()
    while step < stop_at:
        epoch, in_epoch = sampler.locate(step)
        per_epoch = sampler.steps_per_epoch(epoch)
        sampler.set_position(epoch, in_epoch)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=recipe.data.num_workers,
            persistent_workers=False,
            prefetch_factor=2 if recipe.data.num_workers else None,
        )
        it = iter(loader)
        while step < stop_at and in_epoch < per_epoch:
            loss_sum = torch.zeros((), dtype=torch.float64)
            counts = torch.zeros(4, dtype=torch.float64)  # real tokens, padded tokens, skipped, micro-batches
            for _ in range(recipe.train.grad_accum):
                batch = next(it)
                skipped = batch.pop("skipped", 0)
                weight = 1.0
                if batch.pop("empty", False):
                    if fallback is None:
                        fallback = _first_good_batch(dataset, sampler, collate)
                    batch, weight = (
                        dict(fallback),
                        0.0,
                    )  # zero-weight step keeps every rank's collectives in step
                else:
                    batch.pop("sample_ids", None)
                    fallback = fallback or dict(batch)
                batch = _to_device(batch, acc.device)
                with acc.accumulate(model):
                    loss = model(**batch).loss * weight
                    if step + 1 in nan_steps:
                        loss = loss * float("nan")
                    acc.backward(loss)
                loss_sum += float(loss.detach())
                mask = batch["attention_mask"]
                counts += torch.tensor(
                    [float(mask.sum()) * weight, float(mask.numel()) * weight, skipped, 1.0],
                    dtype=torch.float64,
                )
            # summed over ranks before the update: a non-finite loss on any rank makes every rank skip the step
            totals = acc.reduce(torch.cat([loss_sum.view(1), counts]).to(acc.device), reduction="sum").cpu()
            step_loss = float(totals[0] / totals[4])
            grad_norm = None
            if is_deepspeed:  # the engine stepped inside backward(); it skips a step whose norm is not finite
                grad_norm = model.get_global_grad_norm()
            else:
                # max_norm=inf measures the global norm without clipping (grads are already reduced across ranks)
                grad_norm = acc.clip_grad_norm_(
                    model.parameters(), recipe.optim.max_grad_norm or float("inf")
                )
            grad_norm = None if grad_norm is None else float(grad_norm)
            bad = not math.isfinite(step_loss) or (grad_norm is not None and not math.isfinite(grad_norm))
            if not is_deepspeed:
                if not bad:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            lrs = {name: g["lr"] for name, g in zip(group_names, optimizer.param_groups)}
            scheduler.step()
            step += 1
            in_epoch += 1
            load_skipped += int(totals[3])
            if bad:
                bad_steps += 1
                bad_run += 1
                if is_main:
                    logger.warning(
                        "step %d skipped: loss %s, gradient norm %s (%d in a row; train.max_bad_steps=%d)",
                        step,
                        step_loss,
                        grad_norm,
                        bad_run,
                        recipe.train.max_bad_steps,
                    )
            else:
                bad_run = 0
            losses.append(step_loss)
            now = time.perf_counter()
            tps = float(totals[1]) / max(now - t_last, 1e-9)
            t_last = now
            if is_main and (step % recipe.logging.every_steps == 0 or step == total):
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": step_loss if math.isfinite(step_loss) else None,
                    "lr": lrs,
                    "grad_norm": grad_norm if grad_norm is None or math.isfinite(grad_norm) else None,
                    "skipped_step": bad,
                    "tokens": int(totals[1]),
                    "padding": 1.0 - float(totals[1]) / max(float(totals[2]), 1.0),
                    "tokens_per_s": tps,
                    "skipped": int(totals[3]),
                    "time": time.time(),
                }
                metrics.log(record)
                if tracker is not None:
                    tracker.add_scalar("train/loss", step_loss, step)
                    tracker.add_scalar("train/tokens_per_s", tps, step)
                    for k, v in lrs.items():
                        tracker.add_scalar(f"lr/{k}", v, step)
            progress.update(step_loss, lrs, tps)
            if bad_run >= recipe.train.max_bad_steps:
                progress.close()
                if tracker is not None:
                    tracker.close()
                raise TrainingError(
                    f"{recipe.name}: {bad_run} consecutive steps with a non-finite loss or gradient norm, the "
                    f"last at step {step} (train.max_bad_steps={recipe.train.max_bad_steps}); stopped without "
                    f"a final model. Last good checkpoint: {ckpt.latest() or 'none'}. Lower optim.lr, check "
                    "the data, or resume from that checkpoint"
                )
            skipped = {"load": load_skipped, "steps": bad_steps}
            if step % recipe.checkpoint.every_steps == 0 and step < total and not bad:
                _save_checkpoint(ckpt, acc, scheduler, sampler, recipe, step, rank, skipped)
        del it, loader
    progress.close()
    totals_skipped = _skip_totals(stats, load_skipped, bad_steps)
    if step >= total:
        if is_main:
            print(f"[onevision] skipped: {_format_skips(totals_skipped)}", flush=True)
        _save_final(acc, model, encoder, recipe, out, step, resumed, totals_skipped)
    if tracker is not None:
        tracker.close()
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(out, step, losses, resumed, stats, totals_skipped)


def _skip_totals(stats: DataStats, load_skipped: int, bad_steps: int) -> dict[str, dict[str, int]]:
    """Everything the run left out, by stage and reason (what ``stage.json`` records under ``skipped``)."""
    return {
        "planning": dict(sorted(stats.dropped.items())),
        "load": {LOAD_SKIP_REASON: load_skipped} if load_skipped else {},
        "steps": {BAD_STEP_REASON: bad_steps} if bad_steps else {},
    }


def _format_skips(skipped: dict[str, dict[str, int]]) -> str:
    parts = [f"{where} {reason}: {n}" for where, reasons in skipped.items() for reason, n in reasons.items()]
    return "; ".join(parts) or "nothing"


def _build_whole_model(recipe: Recipe) -> Any:
    """Build (or load) the full model on every rank; ZeRO-3 partitions it in ``prepare()``.

    accelerate's ``HfDeepSpeedConfig`` switches transformers to ``deepspeed.zero.Init`` globally (whatever
    ``zero3_init_flag`` says), under which each rank would draw different random weights and the model's own
    weight loader would write into empty partitions; the switch is cleared while the model is built.
    """
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:  # pragma: no cover
        return build_model(recipe)
    ref = getattr(hf_ds, "_hf_deepspeed_config_weak_ref", None)
    hf_ds.unset_hf_deepspeed_config()
    try:
        return build_model(recipe)
    finally:
        if ref is not None and ref() is not None:
            hf_ds.set_hf_deepspeed_config(ref())


def _first_good_batch(
    dataset: TrainDataset, sampler: GroupedBatchSampler, collate: Collator
) -> dict[str, Any]:
    for mb in sampler.plan(0)[0]:
        for i in mb:
            item = dataset[i]
            if item is not None:
                batch = collate([item])
                batch.pop("skipped", None)
                batch.pop("sample_ids", None)
                return batch
    raise RuntimeError("every sample of the first global batch failed to load; check the media files")


def _find_resume(recipe: Recipe, ckpt: CheckpointManager, is_main: bool) -> Path | None:
    """``auto``: the newest checkpoint that verifies (damaged newer ones are reported and skipped, never deleted);
    an explicit directory must verify."""
    mode = recipe.checkpoint.resume
    if mode == "never":
        return None
    if mode == "auto":

        def report(message: str) -> None:
            if is_main:
                print(f"[onevision] {message}", flush=True)

        return ckpt.latest_good(report=report)
    p = Path(mode)
    problem = ckpt.verify(p)
    if problem is not None:
        raise CheckpointError(f"checkpoint.resume={p}: the checkpoint is damaged ({problem})")
    return p


def load_checkpoint(
    path: Path, acc: Any, scheduler: Any, sampler: GroupedBatchSampler, rank: int, **load_options: Any
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler, sampler position and this rank's RNG from a checkpoint directory,
    unpickling nothing (:func:`~onevision.train.checkpoint.no_pickle`); returns its manifest. ``load_options`` go
    to the model's load (:func:`~onevision.train.lora_stage.resume_load_options`)."""
    manifest = CheckpointManager.read_manifest(path)
    with no_pickle():
        try:
            acc.load_state(str(path / "state"), **load_options)
        except Exception as exc:  # a checkpoint that verifies yet fails to load was forged or is foreign
            raise CheckpointError(
                f"{path}: cannot load the training state ({type(exc).__name__}: {exc})"
            ) from exc
    state = load_json(path / SCHEDULER_FILE)
    try:
        scheduler.load_state_dict(state)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path / SCHEDULER_FILE}: not a scheduler state ({exc})") from None
    sampler.load_state_dict(manifest["sampler"])
    load_rng(path, rank)
    return manifest


def _save_checkpoint(
    ckpt: CheckpointManager,
    acc: Any,
    scheduler: Any,
    sampler: GroupedBatchSampler,
    recipe: Recipe,
    step: int,
    rank: int,
    skipped: dict[str, int],
) -> Path:
    def write(tmp: Path) -> None:
        acc.save_state(str(tmp / "state"), safe_serialization=True)
        if acc.is_main_process:
            save_json(tmp / SCHEDULER_FILE, scheduler.state_dict())
        save_rng(tmp, rank)

    epoch, in_epoch = sampler.locate(step)
    manifest = {
        "sampler": {**sampler.state_dict(), "epoch": epoch, "step": in_epoch},
        "recipe_hash": recipe.hash(),
        "recipe": recipe.name,
        "stage": recipe.stage,
        "world_size": acc.num_processes,
        "backend": recipe.engine.backend,
        "skipped": skipped,
    }
    return ckpt.save(step, write, manifest)


def _save_final(
    acc: Any,
    model: Any,
    encoder: Any,
    recipe: Recipe,
    out: Path,
    step: int,
    resumed: Path | None,
    skipped: dict[str, dict[str, int]],
) -> None:
    """A self-contained model directory in ``out`` (weights + config + recipe), ``stage.json`` written last."""
    state_dict = acc.get_state_dict(model)  # gathers ZeRO-3 shards (collective)
    if acc.is_main_process:
        tmp = out / ".model.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        save_model(recipe, acc.unwrap_model(model), encoder, tmp, state_dict)
        (tmp / "recipe.yaml").write_text(recipe.to_yaml())
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
        tmp.rmdir()
        info = {
            "name": recipe.name,
            "stage": recipe.stage,
            "recipe_hash": recipe.hash(),
            "steps": step,
            "init_from": recipe.init_from,
            "resumed_from": str(resumed) if resumed else None,
            "builder": recipe.model.builder,
            "skipped": skipped,
            "time": time.time(),
        }
        part = out / f"{STAGE_FILE}.part"
        part.write_text(json.dumps(info, indent=2))
        os.replace(part, out / STAGE_FILE)
    acc.wait_for_everyone()


def _setup_logging() -> None:
    log = logging.getLogger("onevision")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[onevision %(levelname)s] %(message)s"))
        log.addHandler(handler)
        rank = int(os.environ.get("RANK", "0"))
        log.setLevel(logging.INFO if rank == 0 else logging.ERROR)
