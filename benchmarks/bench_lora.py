"""LoRA / QLoRA: trainable parameters, optimizer-state memory, step time and peak RSS (full vs LoRA vs QLoRA), and
load memory int8 / nf4 vs bf16, for the tiny model and a LLaVA-OneVision-0.5B-geometry model, in one run.

    python benchmarks/bench_lora.py                 # tiny only (seconds)
    python benchmarks/bench_lora.py --size 0.5b     # adds the 0.89 B model (random bf16 weights; a few minutes)
    python benchmarks/bench_lora.py --size 0.5b --workdir /tmp/bench-0.5b   # keep and reuse its checkpoint

Every case runs in a fresh process (``VmHWM`` reset after the imports, so they are not counted). Training: the
LLM (LoRA r 16 on every linear layer, or all of it for "full") plus the projector and newline train, the vision
tower is frozen, AdamW, gradient checkpointing, one text-only micro-batch of random tokens (vision is not run);
the first step is a warm-up, the median of the next ones is reported. QLoRA loads the frozen LLM in NF4
(bitsandbytes, layer by layer as the weights are read) and trains LoRA in the model dtype. Every child runs with
``MALLOC_MMAP_THRESHOLD_=131072`` so freed buffers go back to the system and resident memory is what is held. Loading: ``onevision.load`` in bf16 vs ``quantization=int8|nf4``
(vision tower unquantized), then one text forward pass (memory-mapped weights are counted once read): peak RSS
growth, resident RSS after it (and its private part: checkpoint pages read through the memory map are
file-backed and count in RSS too), and the bytes the weights take (load s: the load call alone).
Ratios are against full training / the unquantized load (bf16 for 0.5B, fp32 for tiny) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CHILD = r"""
import gc, json, logging, statistics, sys, time, warnings
import torch
import onevision
from onevision.lora import ComponentLora, apply_lora, lora_parameters
from onevision.quantization import model_bytes
from onevision.testing import peak_rss, peak_rss_reset, _status_bytes

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
case, path, dtype_name, seq, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dtype = getattr(torch, dtype_name)
torch.set_num_threads(1)
torch.manual_seed(0)
import bitsandbytes, peft  # imported before the reset: not counted
before = peak_rss_reset()
anon_before = _status_bytes("RssAnon")
out = {}
if case.startswith("load-"):
    method = case.removeprefix("load-")
    start = time.perf_counter()
    pipe = onevision.load(path, dtype=dtype, quantization=None if method == "base" else method)
    out["seconds"] = time.perf_counter() - start
    ids = pipe.processor.tokenizer("a short prompt to run every weight once", return_tensors="pt").input_ids
    with torch.no_grad():  # one forward: memory-mapped weights count once they are read
        pipe.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    gc.collect()
    out["peak"] = peak_rss() - before
    out["resident"] = _status_bytes("VmRSS") - before
    out["anon"] = _status_bytes("RssAnon") - anon_before  # private memory (mapped checkpoint pages that were read are RssFile)
    out["weights"] = model_bytes(pipe.model)
    print(json.dumps(out))
    sys.exit(0)
# QLoRA: the LLM quantized to NF4 layer by layer as it is read (as a QLoRA stage on a checkpoint does)
quantized = {"quantization": "nf4", "quantization_skip": ("vision", "projector")} if case == "qlora" else {}
pipe = onevision.load(path, dtype=dtype, **quantized)
model = pipe.model
if case in ("lora", "qlora"):
    apply_lora(model, {"llm": ComponentLora(r=16, alpha=32.0, dropout=0.0)})
for p in model.parameters():
    p.requires_grad_(False)
trainable = list(model.projector.parameters()) + [model.image_newline]
trainable += lora_parameters(model)["llm"] if case != "full" else list(model.language_model.parameters())
for p in trainable:
    p.requires_grad_(True)
model.train()
model.gradient_checkpointing_enable()
opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
vocab = model.language_model.get_input_embeddings().num_embeddings
special = {*pipe.processor.tokenizer.all_special_ids, model.image_token_id, model.video_token_id}
allowed = torch.tensor([i for i in range(vocab) if i not in special])  # text only: no media placeholder
ids = allowed[torch.randint(0, len(allowed), (1, seq))]
times = []
for _ in range(steps + 1):
    start = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
out.update(
    trainable=sum(p.numel() for p in trainable),
    optimizer=state,
    step=statistics.median(times[1:]),
    peak=peak_rss() - before,
    loss=float(loss),
)
print(json.dumps(out))
"""

#: size -> (dtype, sequence length, measured steps)
SETTINGS = {"tiny": ("float32", 256, 5), "0.5b": ("bfloat16", 128, 2)}


def tiny_checkpoint(workdir: Path) -> Path:
    from onevision.testing import tiny_pipeline

    d = workdir / "tiny"
    if not (d / "config.json").is_file():
        tiny_pipeline(seed=0).save(str(d))
    return d


def half_b_checkpoint(workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_load import make_checkpoints  # the 0.89 B LLaVA-OneVision-0.5B geometry, random bf16

    return make_checkpoints(workdir)[1]


def run(case: str, path: Path, size: str) -> dict:
    dtype, seq, steps = SETTINGS[size]
    # a fixed mmap threshold: glibc returns freed per-layer buffers to the system instead of keeping them
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, case, str(path), dtype, str(seq), str(steps)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode:
        raise RuntimeError(f"{case} {path}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def report(size: str, path: Path) -> None:
    dtype, seq, steps = SETTINGS[size]
    train = {case: run(case, path, size) for case in ("full", "lora", "qlora")}
    load = {case: run(f"load-{case}", path, size) for case in ("base", "int8", "nf4")}
    print(f"\n## {size} ({dtype} weights, {seq} tokens, median of {steps} steps after one warm-up)")
    print("| training | trainable params | optimizer state MiB | x | step s | x | peak RSS MiB | x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref = train["full"]
    for case, r in train.items():
        print(
            f"| {case} | {r['trainable']:,} | {_mb(r['optimizer'])} | {r['optimizer'] / ref['optimizer']:.3f} | "
            f"{r['step']:.3f} | {r['step'] / ref['step']:.2f} | {_mb(r['peak'])} | {r['peak'] / ref['peak']:.2f} |"
        )
    print(
        "\n| load | weights MiB | x | resident RSS MiB | x | of it private MiB | peak RSS MiB | x | load s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = load["base"]
    for case, r in load.items():
        print(
            f"| {dtype if case == 'base' else case} | {_mb(r['weights'])} | {r['weights'] / ref['weights']:.2f} | {_mb(r['resident'])} | "
            f"{r['resident'] / ref['resident']:.2f} | {_mb(r['anon'])} | {_mb(r['peak'])} | {r['peak'] / ref['peak']:.2f} | "
            f"{r['seconds']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "0.5b"], default="tiny", help="0.5b runs tiny too")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the checkpoints here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        report("tiny", tiny_checkpoint(workdir))
        if args.size == "0.5b":
            report("0.5b", half_b_checkpoint(workdir))


if __name__ == "__main__":
    main()
