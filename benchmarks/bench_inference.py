"""Inference speed: onevision vs transformers' ``LlavaOnevisionForConditionalGeneration``, measured in one run.

    python benchmarks/bench_inference.py [--repeats 5] [--new-tokens 32]

1. **Feature packing** at real OneVision geometry: a 1920x1080 image under ``anyres_max_9`` (SigLIP-384/14,
   36 pinpoints) has 16 tiles of 729 tokens; random projected features ``[16, 729, D]`` for D = 896 (0.5B) and
   3584 (7B) are packed by ``strategy.pack`` (into a fresh tensor, and into a view of ``inputs_embeds`` as the
   model does) and by transformers' ``model.model.pack_image_features`` on the same features. Outputs are checked
   equal first. Target: >= 3x.
2. **End-to-end generation** (tiny model, the same weights in both): greedy prefill + decode of ``--new-tokens``
   tokens for a 1920x1080 image prompt, from already-processed inputs. Printed: prefill time, decode tokens/s,
   total tokens/s (prompt + new tokens over the whole call). Target: onevision no slower (ratio >= ~1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyres


def paired(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time (seconds) of each function, measured alternately so load drift hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def hf_packer():
    """A transformers ``LlavaOnevisionModel`` with the real vision geometry (384/14, 36 pinpoints) and tiny
    widths: ``pack_image_features`` only reads the geometry from the config."""
    from transformers import LlavaOnevisionModel

    from onevision.testing import TinySpec

    spec = TinySpec(
        image_size=384,
        patch_size=14,
        vision_width=16,
        vision_layers=1,
        vision_heads=1,
        llm_width=16,
        llm_layers=1,
        llm_heads=1,
        llm_kv_heads=1,
    )
    return LlavaOnevisionModel(spec.hf_config(vocab_size=64, image_token_id=62, video_token_id=63)).eval()


def bench_packing(repeats: int) -> list[tuple[str, float, float]]:
    strategy = anyres.get_strategy("anyres_max_9")  # SigLIP-384/14, (1x1)..(6x6), hf rounding
    size = anyres.ImageSize(1080, 1920)
    layout = strategy.layout(size)
    assert layout.num_tiles == 16, layout.num_tiles
    model = hf_packer()
    rows = []
    with torch.no_grad():
        for dim in (896, 3584):
            gen = torch.Generator().manual_seed(dim)
            feats = torch.randn(layout.num_tiles, layout.tokens_per_tile, dim, generator=gen)
            newline = torch.randn(dim, generator=gen)
            sizes = torch.tensor([[size.height, size.width]])

            embeds = torch.empty(layout.num_tokens + 64, dim)

            def ours(feats=feats, newline=newline) -> torch.Tensor:
                return strategy.pack(feats, layout, newline)

            def ours_into_embeds(feats=feats, newline=newline, embeds=embeds) -> torch.Tensor:
                return strategy.pack(feats, layout, newline, out=embeds[32 : 32 + layout.num_tokens])

            def theirs(feats=feats, newline=newline, sizes=sizes) -> torch.Tensor:
                packed, _ = model.pack_image_features(
                    [feats], sizes, image_newline=newline, vision_aspect_ratio="anyres_max_9"
                )
                return packed[0]

            ref = theirs()
            assert ref.shape[0] == layout.num_tokens == 7269, ref.shape
            # the capped (bilinear) part is interpolated channels-last: equal to HF up to float rounding
            err = max((ours() - ref).abs().max().item(), (ours_into_embeds() - ref).abs().max().item())
            assert err <= 1e-5, f"packing differs from HF by {err}"
            print(f"  D={dim}: {layout.num_tokens} tokens, max |onevision - transformers| = {err:.1e}")
            t_ours, t_view, t_hf = paired([ours, ours_into_embeds, theirs], repeats)
            rows.append((f"pack 1920x1080, D={dim}", t_ours, t_hf))
            rows.append((f"pack into inputs_embeds, D={dim}", t_view, t_hf))
    return rows


def photo(width: int, height: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def bench_generation(repeats: int, new_tokens: int) -> list[tuple[str, float, float]]:
    from transformers import (
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    import onevision
    from onevision.testing import tiny_hf_config, tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = tiny_hf_config(tok)
    pins = cfg.image_grid_pinpoints
    torch.manual_seed(0)
    hf = LlavaOnevisionForConditionalGeneration(cfg).eval()
    common = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": 64, "width": 64}}
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(**common, image_grid_pinpoints=pins),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(**common),
        num_image_tokens=64,
        vision_feature_select_strategy="full",
    )
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        proc.save_pretrained(d)
        pipe = onevision.load(d)
    image = photo(1920, 1080)
    text = "<|im_start|>user\n<image>\nDescribe the picture.<|im_end|>\n<|im_start|>assistant\n"
    ours_in = pipe.processor(text=text, images=[image])
    hf_in = proc(text=text, images=[image], return_tensors="pt")
    assert torch.equal(ours_in.input_ids, hf_in.input_ids)
    prompt = ours_in.input_ids.shape[1]

    def ours(n: int) -> torch.Tensor:
        return pipe.model.generate(**ours_in, max_new_tokens=n, eos_token_id=[], pad_token_id=0)

    def theirs(n: int) -> torch.Tensor:
        return hf.generate(**hf_in, max_new_tokens=n, min_new_tokens=n, do_sample=False)[:, prompt:]

    with torch.no_grad():
        assert torch.equal(ours(new_tokens), theirs(new_tokens)), "greedy tokens differ from HF"
        pre_o, pre_h, tot_o, tot_h = paired(
            [lambda: ours(1), lambda: theirs(1), lambda: ours(new_tokens), lambda: theirs(new_tokens)],
            repeats,
        )
    rows = [
        (f"prefill ({prompt} prompt tokens, 1 new)", pre_o, pre_h),
        (f"prefill + decode {new_tokens} tokens", tot_o, tot_h),
    ]
    dec_o = (new_tokens - 1) / max(tot_o - pre_o, 1e-9)
    dec_h = (new_tokens - 1) / max(tot_h - pre_h, 1e-9)
    print(
        f"  prompt {prompt} tokens; throughput (prompt + new) / total time: "
        f"onevision {(prompt + new_tokens) / tot_o:,.0f} tok/s, transformers {(prompt + new_tokens) / tot_h:,.0f} "
        f"tok/s; decode: onevision {dec_o:,.1f} tok/s, transformers {dec_h:,.1f} tok/s"
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n[1] feature packing (real geometry: 16 tiles x 729 tokens, 7269 output tokens)")
    rows = bench_packing(args.repeats)
    print("\n[2] end-to-end generation (tiny model, same weights, greedy tokens checked equal)")
    rows += bench_generation(args.repeats, args.new_tokens)
    print(f"\n{'case':44s} {'onevision':>12s} {'transformers':>13s} {'speed-up':>9s}")
    for name, ours, theirs in rows:
        print(f"{name:44s} {ours * 1e3:10.2f}ms {theirs * 1e3:11.2f}ms {theirs / ours:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
