"""Training throughput: onevision's training step vs a plain loop around transformers'
``LlavaOnevisionForConditionalGeneration`` on the same tiny model size, data and batch size (CPU).

* onevision: ``onevision.train.train`` on ``recipes/tiny/stage2_si`` (the real ``OneVisionModel``, length- and
  modality-grouped batches, packed tile buffers), single process.
* baseline: the HF model built from an equivalent tiny config, the same samples (same input ids, same tiles) in a
  seeded random order, padded to the longest sample of each batch, AdamW, the same number of steps.

Reported: real (non-padding) tokens per second over all steps but the first, the fraction of padding tokens, and
the ratio. Target: >= 1.3x and < 5 % padding.

    python benchmarks/bench_train.py [--samples 96] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _dataset(root: Path, n: int, seed: int) -> Path:
    """Single-image conversations with varied image sizes and answer lengths."""
    import numpy as np
    from PIL import Image

    from onevision.train.synthetic import WORDS

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    sizes = [(48, 64), (64, 64), (80, 40), (96, 128), (128, 96), (64, 192), (150, 100), (40, 120)]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        words = int(rng.integers(4, 160))
        records.append(
            {
                "id": str(i),
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\n" + " ".join(rng.choice(WORDS, 6)) + "?"},
                    {"from": "gpt", "value": " ".join(rng.choice(WORDS, words))},
                ],
            }
        )
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return path


def run_onevision(
    data: Path, out: Path, batch: int, seed: int, width: int, layers: int, workers: int
) -> dict:
    from onevision.train.engine import train
    from onevision.train.recipe import load_recipe

    recipe = load_recipe(
        "tiny/stage2_si",
        [
            f"data.path={data}",
            f"data.image_root={data.parent / 'images'}",
            "data.modalities=[image]",
            f"output_dir={out}",
            "init_from=null",
            f"train.micro_batch_size={batch}",
            "train.grad_accum=1",
            "train.precision=fp32",
            "train.gradient_checkpointing=false",
            "logging.progress=false",
            f"data.num_workers={workers}",
            # a partial model config over the tiny preset: the LLM's width and depth
            f"model.options={{llm: {{config: {{hidden_size: {width}, intermediate_size: {2 * width}, "
            f"num_hidden_layers: {layers}}}}}}}",
            "checkpoint.every_steps=100000",
            f"seed={seed}",
            "data.lookahead=64",
        ],
    )
    train(recipe)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = records[1:]
    elapsed = records[-1]["time"] - records[0]["time"]
    tokens = sum(r["tokens"] for r in timed)
    padded = sum(r["tokens"] / (1 - r["padding"]) if r["padding"] < 1 else r["tokens"] for r in records)
    return {
        "steps": len(records),
        "tokens_per_s": tokens / elapsed,
        "padding": 1 - sum(r["tokens"] for r in records) / padded,
        "recipe": recipe,
    }


def prepare_hf(recipe, width: int, layers: int) -> dict:
    """The same encoded samples (ids, labels, tiles) as the onevision run, and an HF config of the same size."""
    from onevision.testing import TINY
    from onevision.train.build import build_encoder, build_model
    from onevision.train.data import TrainDataset, load_samples, plan_samples

    encoder = build_encoder(recipe, build_model(recipe))
    samples, _ = load_samples(recipe)
    planned, _ = plan_samples(samples, recipe, encoder, log=False)
    items = [TrainDataset(planned, recipe, encoder)[i] for i in range(len(planned))]
    strategy = recipe.image_strategy()
    spec = TINY.replace(
        image_size=recipe.visual.tile_size,
        patch_size=recipe.visual.patch_size,
        llm_width=width,
        llm_layers=layers,
    )
    cfg = spec.hf_config(
        vocab_size=len(encoder.processor.tokenizer),
        image_token_id=encoder.processor.image_token_id,
        video_token_id=encoder.processor.video_token_id,
        image_grid_pinpoints=[[p.height, p.width] for p in strategy.pinpoints],
        vision_aspect_ratio=strategy.strategy_name,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    lengths = [len(x["input_ids"]) for x in items]
    return {
        "items": items,
        "config": cfg,
        "pad": encoder.processor.pad_token_id,
        "lengths": lengths,
        "tile": recipe.visual.tile_size,
    }


def run_hf(prep: dict, batches: list[list[int]], seed: int) -> dict:
    """A plain loop around ``LlavaOnevisionForConditionalGeneration``: pad each batch to its longest sample."""
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(prep["config"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    items, s = prep["items"], prep["tile"]
    real = total = real_first = 0
    t0 = None
    for idx in batches:
        group = [items[i] for i in idx]
        b, width = len(group), max(len(g["input_ids"]) for g in group)
        ids = torch.full((b, width), prep["pad"])
        labels = torch.full((b, width), -100)
        mask = torch.zeros((b, width), dtype=torch.long)
        pixels = torch.zeros((b, max(g["pixel_values"].shape[0] for g in group), 3, s, s))
        sizes = []
        for row, g in enumerate(group):
            n = len(g["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = g["input_ids"], g["labels"], 1
            pixels[row, : g["pixel_values"].shape[0]] = g["pixel_values"]
            size = g["image_layouts"][0].image_size
            sizes.append([size.height, size.width])
        loss = model(
            input_ids=ids,
            attention_mask=mask,
            labels=labels,
            pixel_values=pixels,
            image_sizes=torch.tensor(sizes),
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real += int(mask.sum())
        total += mask.numel()
        if t0 is None:  # time every step but the first, like the onevision side
            t0, real_first = time.perf_counter(), real
    elapsed = time.perf_counter() - t0
    return {"steps": len(batches), "tokens_per_s": (real - real_first) / elapsed, "padding": 1 - real / total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm-width", type=int, default=64, help="LLM hidden size of both models (tiny: 64)")
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="onevision DataLoader workers (decoding overlaps)")
    p.add_argument("--rounds", type=int, default=2, help="alternate the runs this many times; keep each best")
    args = p.parse_args(argv)
    import contextlib
    import io
    import logging

    from onevision.train.sampler import GroupedBatchSampler

    logging.getLogger("onevision").setLevel(logging.ERROR)
    best: dict[str, dict] = {}

    def keep(name: str, result: dict) -> None:
        if name not in best or result["tokens_per_s"] > best[name]["tokens_per_s"]:
            best[name] = result

    with tempfile.TemporaryDirectory() as tmp:
        data = _dataset(Path(tmp) / "data", args.samples, args.seed)
        prep = None
        for k in range(args.rounds):
            with contextlib.redirect_stdout(io.StringIO()):
                ours = run_onevision(
                    data,
                    Path(tmp) / f"run{k}",
                    args.batch,
                    args.seed,
                    args.llm_width,
                    args.llm_layers,
                    args.workers,
                )
            keep("onevision", ours)
            if prep is None:
                prep = prepare_hf(ours["recipe"], args.llm_width, args.llm_layers)
                order = list(range(len(prep["items"])))
                random.Random(args.seed).shuffle(order)
                plain = [order[i : i + args.batch] for i in range(0, ours["steps"] * args.batch, args.batch)]
                grouped = list(
                    GroupedBatchSampler(
                        prep["lengths"],
                        micro_batch_size=args.batch,
                        seed=args.seed,
                        group_by="length",
                        lookahead=64,
                    )
                )
            keep("hf", run_hf(prep, plain, args.seed))
            keep("hf-grouped", run_hf(prep, grouped, args.seed))
    ours, theirs, grouped_hf = best["onevision"], best["hf"], best["hf-grouped"]
    print(
        f"tiny model (LLM width {args.llm_width}, {args.llm_layers} layers), {args.samples} single-image samples, "
        f"batch {args.batch}, best of {args.rounds} alternating rounds, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(f"\n{'':34}{'tokens/s':>12}{'padding':>10}{'steps':>7}")
    for label, r in (
        ("onevision.train (grouped)", ours),
        ("HF LlavaOnevision, plain loop", theirs),
        ("HF LlavaOnevision, our batches", grouped_hf),
    ):
        print(f"{label:34}{r['tokens_per_s']:12,.0f}{100 * r['padding']:9.1f}%{r['steps']:7d}")
    print(
        f"\nspeed-up vs the plain loop {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x (target >= 1.3x); "
        f"onevision padding {100 * ours['padding']:.1f}% (target < 5%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
