"""Checkpoint loading: ``onevision.load`` vs transformers' ``LlavaOnevisionForConditionalGeneration.from_pretrained``.

    python benchmarks/bench_load.py [--repeats 3] [--workdir DIR]

A model at the real LLaVA-OneVision-0.5B geometry (SigLIP so400m 384/14: hidden 1152, 26 stored blocks of 27
(the feature layer is the second to last), intermediate 4304, 16 heads; Qwen2-0.5B: hidden 896, 24 layers,
intermediate 4864, 14 heads / 2 KV heads, vocab 151936, tied embeddings; 0.89 B parameters) gets random bf16
weights, drawn tensor by tensor from a meta-device build, and is saved in HF format and (through
``onevision.checkpoints.convert``) in the native format. Each load runs in a fresh subprocess: peak RSS growth
(``VmHWM`` after a reset, so the imports are not counted) and wall time of the load call with ``dtype=bf16``, then
the greedy next token of one prompt (the same weights must give the same token). Runs alternate between the
loaders; the medians are printed with the ratios to transformers. Targets: RSS growth <= 1.1x, time <= 1.2x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "The quick brown fox jumps over the lazy dog and then"

_CHILD = """
import json, sys, time
import torch
import onevision
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration, Qwen2ForCausalLM, SiglipVisionModel
from onevision.testing import peak_rss, peak_rss_reset

which, path, prompt = sys.argv[1:4]
torch.set_num_threads(1)
before = peak_rss_reset()
start = time.perf_counter()
if which == "transformers":
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16).eval()
else:
    model = onevision.load(path, dtype=torch.bfloat16).model
seconds = time.perf_counter() - start
growth = peak_rss() - before
ids = AutoTokenizer.from_pretrained(path)(prompt, return_tensors="pt").input_ids
with torch.no_grad():
    token = int(model(input_ids=ids).logits[0, -1].float().argmax())
dtypes = sorted({str(p.dtype) for p in model.parameters()})
print(json.dumps({"seconds": seconds, "growth": growth, "token": token, "dtypes": dtypes}))
"""


def real_geometry(tokenizer):
    """The LLaVA-OneVision-0.5B ``LlavaOnevisionConfig`` (the tiny tokenizer's placeholder ids)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=1152,
        image_size=384,
        patch_size=14,
        intermediate_size=4304,
        num_hidden_layers=26,
        num_attention_heads=16,
        vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=[[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)],
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )


def make_checkpoints(workdir: Path) -> tuple[Path, Path]:
    import torch

    from onevision.checkpoints import convert
    from onevision.testing import random_hf_checkpoint, tiny_tokenizer

    hf, native = workdir / "hf", workdir / "native"
    if not (hf / "config.json").is_file():
        tokenizer = tiny_tokenizer()
        random_hf_checkpoint(hf, real_geometry(tokenizer), tokenizer, dtype=torch.bfloat16)
    if not (native / "config.json").is_file():
        convert(str(hf), str(native), to="onevision")
    return hf, native


def run(which: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, which, str(path), PROMPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode:
        raise RuntimeError(f"{which} {path}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the checkpoints here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        hf, native = make_checkpoints(workdir)
        size = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
        cases = [("transformers", "transformers", hf), ("onevision (HF)", "onevision", hf)]
        cases.append(("onevision (native)", "onevision", native))
        results: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
        for _ in range(args.repeats):
            for name, which, path in cases:
                results[name].append(run(which, path))
    print(f"checkpoint: {size / 1e9:.2f} GB bf16 safetensors; {args.repeats} fresh processes per loader")
    print(f"{'loader':<20} {'RSS growth GB':>14} {'x':>6} {'load s':>8} {'x':>6}  next token  dtypes")
    ref_rss = statistics.median(r["growth"] for r in results["transformers"])
    ref_s = statistics.median(r["seconds"] for r in results["transformers"])
    tokens = set()
    for name, runs in results.items():
        rss = statistics.median(r["growth"] for r in runs)
        secs = statistics.median(r["seconds"] for r in runs)
        token = {r["token"] for r in runs}
        tokens |= token
        print(
            f"{name:<20} {rss / 1e9:>14.3f} {rss / ref_rss:>6.2f} {secs:>8.2f} {secs / ref_s:>6.2f}  "
            f"{sorted(token)!s:<10}  {runs[0]['dtypes']}"
        )
    print(f"same greedy next token everywhere: {len(tokens) == 1}")


if __name__ == "__main__":
    main()
