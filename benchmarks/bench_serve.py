"""Serving throughput: ``onevision serve`` at concurrency 1, 4 and 16 vs the same requests run one after another
through ``Pipeline.generate``, measured in one run.

    python benchmarks/bench_serve.py [--requests 96] [--new-tokens 64] [--rounds 3] [--threads 1]

The tiny model (``onevision.testing.tiny_pipeline(seed=0)``, saved to a temporary directory) answers ``--requests``
greedy requests, alternately text-only and about one small image (sent as a base64 ``data:`` URL), each for
``--new-tokens`` tokens at most. The reference is ``pipe.generate`` called once per request, sequentially, in this
process. The server runs as a subprocess (``onevision serve --max-batch-size 16``) with the same number of torch
threads; clients are asyncio tasks (httpx), ``c`` requests in flight at a time. The modes alternate over ``--rounds``
rounds (medians are printed), so load drift on a shared machine hits all of them alike. Every served answer is
checked equal to the reference answer. Printed: requests/s, p50 / p95 latency, throughput relative to the
reference and the mean batch size the server formed. Target: >= 3x at concurrency 16.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import onevision  # noqa: E402
import onevision.testing  # noqa: E402

CONCURRENCY = (1, 4, 16)
TARGET = 3.0


def make_requests(folder: Path, n: int) -> list[tuple[str, Path | None]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = None
        if i % 2:
            image = folder / f"img{i}.png"
            size = (48 + 8 * (i % 5), 64 + 8 * (i % 3))
            Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(image)
        out.append((f"Request {i}: describe " + "it " * (i % 6), image))
    return out


def body(prompt: str, image: Path | None, new_tokens: int) -> dict:
    content: list[dict] = []
    if image is not None:
        url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": prompt})
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": new_tokens,
        "temperature": 0,
    }


def reference(pipe, requests, new_tokens: int) -> tuple[list[str], list[float], float]:
    answers, latencies = [], []
    start = time.perf_counter()
    for prompt, image in requests:
        t = time.perf_counter()
        answers.append(
            pipe.generate(prompt, images=[str(image)] if image else None, max_new_tokens=new_tokens)
        )
        latencies.append(time.perf_counter() - t)
    return answers, latencies, time.perf_counter() - start


async def served(url: str, bodies: list[dict], concurrency: int) -> tuple[list[str], list[float], float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies[:4]))  # warm-up
        gate = asyncio.Semaphore(concurrency)
        latencies = [0.0] * len(bodies)

        async def one(i: int) -> str:
            async with gate:
                t = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=bodies[i])
                latencies[i] = time.perf_counter() - t
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]

        start = time.perf_counter()
        answers = await asyncio.gather(*(one(i) for i in range(len(bodies))))
        return list(answers), latencies, time.perf_counter() - start


def start_server(model_dir: Path, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "onevision.cli", "serve", "--model", f"tiny={model_dir}", "--port", "0"),
            *("--max-batch-size", "16", "--batch-window-ms", "5", "--log-level", "warning"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1].removesuffix("/v1")


def batch_stats(url: str) -> tuple[float, float]:
    """(rows, batches) so far, from the server's ``onevision_batch_size`` histogram."""
    import httpx

    values = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        for key in ("onevision_batch_size_sum", "onevision_batch_size_count"):
            if line.startswith(key + "{"):
                values[key] = float(line.rsplit(" ", 1)[1])
    return values.get("onevision_batch_size_sum", 0.0), values.get("onevision_batch_size_count", 0.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, both sides (1: steadiest on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="onevision-bench-serve-") as tmp:
        folder = Path(tmp)
        onevision.testing.tiny_pipeline(seed=0).save(str(folder / "tiny"))
        pipe = onevision.load(str(folder / "tiny"))
        requests = make_requests(folder, args.requests)
        bodies = [body(p, img, args.new_tokens) for p, img in requests]

        for prompt, image in requests[:4]:  # warm-up (text and image paths)
            pipe.generate(prompt, images=[str(image)] if image else None, max_new_tokens=args.new_tokens)
        proc, url = start_server(folder / "tiny", args.threads)
        runs: dict[str, list[tuple[list[float], float, int, float]]] = {}
        try:
            for r in range(
                args.rounds
            ):  # alternate the modes, so load drift on a shared machine hits all alike
                print(f"round {r + 1}/{args.rounds}: Pipeline.generate one after another ...", flush=True)
                expected, lat, wall = reference(pipe, requests, args.new_tokens)
                runs.setdefault("Pipeline.generate seq", []).append((lat, wall, -1, 1.0))
                for c in CONCURRENCY:
                    print(f"round {r + 1}/{args.rounds}: server at concurrency {c} ...", flush=True)
                    before = batch_stats(url)
                    answers, lat, wall = asyncio.run(served(url, bodies, c))
                    after = batch_stats(url)
                    mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                    same = sum(a == e for a, e in zip(answers, expected))
                    if same != len(expected):
                        print(f"  MISMATCH: {len(expected) - same} answers differ from Pipeline.generate's")
                    runs.setdefault(f"serve c={c}", []).append((lat, wall, same, mean_batch))
        finally:
            proc.terminate()
            proc.wait(30)

    n = len(requests)
    ref_rps = n / statistics.median(w for _, w, _, _ in runs["Pipeline.generate seq"])
    header = f"{'':<22}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'vs ref':>8}{'batch':>7}{'identical':>11}"
    print()
    print(
        f"{n} requests, <= {args.new_tokens} new tokens each, {args.threads} torch thread(s), "
        f"median of {args.rounds} rounds (latencies: all rounds)"
    )
    print(header)
    print("-" * len(header))
    ratios = {}
    for name, results in runs.items():
        rps = n / statistics.median(w for _, w, _, _ in results)
        lat = [x for latencies, *_ in results for x in latencies]
        ratios[name] = rps / ref_rps
        batch = "-" if name.startswith("Pipeline") else f"{statistics.mean(b for *_, b in results):.1f}"
        same = (
            "-" if name.startswith("Pipeline") else f"{sum(s for _, _, s, _ in results)}/{n * len(results)}"
        )
        print(
            f"{name:<22}{rps:>8.2f}{1e3 * statistics.median(lat):>9.0f}{1e3 * percentile(lat, 0.95):>9.0f}"
            f"{rps / ref_rps:>7.2f}x{batch:>7}{same:>11}"
        )
    print("(batch: mean requests per generated batch)")
    ratio = ratios[f"serve c={CONCURRENCY[-1]}"]
    identical = all(
        s == n for name, results in runs.items() if name != "Pipeline.generate seq" for _, _, s, _ in results
    )
    print("\ntargets:")
    print(
        f"  [{'met' if ratio >= TARGET else 'MISSED'}] throughput at concurrency 16 vs sequential: {ratio:.2f}x"
    )
    print(f"  [{'met' if identical else 'MISSED'}] served answers identical to Pipeline.generate's")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
