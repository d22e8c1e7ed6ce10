"""Data planning and loading throughput: raw records vs a shard index, loose files vs tar shards (one run).

* planning, raw sequential: ``load_samples`` + ``plan_samples`` as before this work (every image header read in
  the planning loop).
* planning, raw parallel: the same measured by forked worker processes (``measure_samples``: headers and
  tokenization), as the trainer now does.
* planning, indexed: ``prepare_data`` on the packed shard set (read the index, check the shards' sizes, apply
  the length policy); no media opened. Target: >= 20,000 samples/s.
* loading: ``TrainDataset.fetch`` (read + decode the media) and ``__getitem__`` (fetch + encode) over the same
  samples, loose files vs shards.

Every figure is samples per second measured in this run on this machine; ratios are against raw sequential
planning and loose-file loading.

    python benchmarks/bench_data.py [--samples 10000] [--load 400]
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
    """Single-image conversations (JPEGs of varied sizes) and some text-only ones, as JSONL."""
    import numpy as np
    from PIL import Image

    from onevision.train.synthetic import WORDS

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    sizes = [(48, 64), (64, 64), (80, 40), (96, 128), (128, 96), (64, 192), (150, 100), (40, 120)]
    tiles = {s: Image.fromarray(rng.integers(0, 256, (*s, 3), dtype=np.uint8)) for s in sizes}
    with open(root / "data.jsonl", "w") as f:
        for i in range(n):
            turns = [
                {"from": "human", "value": " ".join(rng.choice(WORDS, 6)) + "?"},
                {"from": "gpt", "value": " ".join(rng.choice(WORDS, int(rng.integers(4, 120))))},
            ]
            record = {"id": str(i), "conversations": turns}
            if i % 10:  # 90 % images
                size = sizes[i % len(sizes)]
                tiles[size].save(root / "images" / f"{i}.jpg", quality=90)
                record["image"] = f"{i}.jpg"
            f.write(json.dumps(record) + "\n")
    return root / "data.jsonl"


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--load", type=int, default=400, help="samples loaded per loading figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="raw planning processes")
    args = parser.parse_args()

    from onevision.data.pack import pack
    from onevision.train.build import build_sample_encoder
    from onevision.train.data import TrainDataset, load_samples, plan_samples
    from onevision.train.lengths import measure_samples
    from onevision.train.prepare import prepare_data
    from onevision.train.recipe import load_recipe

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data = _dataset(root, args.samples, args.seed)
        print(f"generated {args.samples} records in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        common = [
            "init_from=null",
            "data.synthetic=null",
            "logging.progress=false",
            "data.modalities=[image,text]",
        ]
        raw = load_recipe(
            "tiny/stage2_si", [f"data.path={data}", f"data.image_root={root / 'images'}", *common]
        )
        encoder = build_sample_encoder(raw)
        rows = []

        t = time.perf_counter()
        samples, stats = load_samples(raw)
        seq, _ = plan_samples(samples, raw, encoder, stats, log=False)
        seq_s = time.perf_counter() - t
        rows.append(("planning: raw JSONL, sequential headers", _rate(args.samples, seq_s), 1.0))

        t = time.perf_counter()
        samples, stats = load_samples(raw)
        par, _ = plan_samples(
            samples,
            raw,
            encoder,
            stats,
            log=False,
            measured=measure_samples(samples, raw, encoder, processes=args.processes),
        )
        par_s = time.perf_counter() - t
        assert [p.length for p in par] == [p.length for p in seq]
        rows.append(
            (
                f"planning: raw JSONL, {args.processes} measuring processes",
                _rate(args.samples, par_s),
                seq_s / par_s,
            )
        )

        t = time.perf_counter()
        pack(raw, encoder, root / "shards", shard_size=1000, progress=False)
        pack_s = time.perf_counter() - t
        rows.append(
            ("packing (once): raw JSONL -> shards + index", _rate(args.samples, pack_s), seq_s / pack_s)
        )

        sharded = load_recipe("tiny/stage2_si", [f"data.path={root / 'shards'}", *common])
        prepare_data(sharded, encoder)  # warm the page cache like the raw runs had it
        t = time.perf_counter()
        shards_ds, _ = prepare_data(sharded, encoder)
        idx_s = time.perf_counter() - t
        assert shards_ds.lengths == [p.length for p in seq]
        rows.append(("planning: shard index", _rate(args.samples, idx_s), seq_s / idx_s))

        loose_ds = TrainDataset(seq, raw, encoder)
        n = min(args.load, len(seq))
        picks = sorted(random.Random(args.seed).sample(range(len(seq)), n))  # the same mix of images and text
        base = {}
        for what, fn in (("fetch (read + decode)", "fetch"), ("item (fetch + encode)", "item")):
            for name, ds in (("loose files", loose_ds), ("shards", shards_ds)):
                best = float("inf")
                for _ in range(3):  # best of 3: the machine is shared
                    t = time.perf_counter()
                    for i in picks:
                        if fn == "fetch":
                            for image in ds.fetch(ds.planned[i].sample)[1].images:
                                image.load()  # PIL opens lazily: decode for real
                        else:
                            ds[i]
                    best = min(best, time.perf_counter() - t)
                rate = _rate(len(picks), best)
                base.setdefault(what, rate)
                rows.append((f"loading {what}: {name}", rate, rate / base[what]))

    print(f"| step ({args.samples} samples, 90 % images) | samples/s | ratio |")
    print("|---|---:|---:|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
