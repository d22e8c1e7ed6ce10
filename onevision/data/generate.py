"""``onevision data generate``: GPT-assisted visual instruction data (the LLaVA recipe) from COCO captions and
boxes through any OpenAI-compatible endpoint, with retries, a concurrency limit and resumable output.

Every ``(image, kind)`` pair is one chat request (the kind's system prompt, its few-shot pairs, then the image's
context; :mod:`onevision.data.instruct`). A 429, a 5xx, a timeout or a dropped connection is retried with
exponential backoff (``backoff * 2**attempt``, with jitter, at most ``retries`` times); other errors (a 400,
a bad key) end the run. Each good reply is appended to ``OUT.jsonl`` as one complete line as soon as it arrives,
so a rerun skips the ids already there (a partial last line left by a crash is cut off first). A malformed
reply is counted, logged and written to ``OUT.rejected.jsonl`` for inspection, never as a record; a rerun tries
it again. The API key comes from ``OPENAI_API_KEY`` (``EMPTY`` when unset, which local servers accept).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onevision.data.instruct import (
    ImageContext,
    Kind,
    MalformedReply,
    load_instructions,
    load_prompts,
    make_record,
    record_id,
)
from onevision.errors import DataError

logger = logging.getLogger("onevision.data")


@dataclass
class GenerateResult:
    written: int = 0
    skipped_done: int = 0
    malformed: Counter = field(default_factory=Counter)  # kind -> count
    retries: int = 0
    requests: int = 0

    def summary(self) -> str:
        bad = sum(self.malformed.values())
        return (
            f"{self.written} records written, {self.skipped_done} already done, {bad} malformed replies "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.malformed.items())) or 'none'}), "
            f"{self.requests} requests, {self.retries} retries"
        )


def done_ids(out: Path) -> set[str]:
    """Ids already in ``out``; a partial last line (a crash mid-write) is cut off so appending stays valid."""
    if not out.exists():
        return set()
    raw = out.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        logger.warning(
            "%s: dropping a partial last line (%d bytes) left by an interrupted run", out, len(raw) - cut
        )
        with open(out, "r+b") as f:
            f.truncate(cut)
        raw = raw[:cut]
    ids = set()
    for lineno, line in enumerate(raw.splitlines(), 1):
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{out}:{lineno}: not a generated record; use a new --out file") from None
    return ids


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, (openai.RateLimitError, openai.APIConnectionError, openai.APITimeoutError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


async def _complete(
    client: Any,
    model: str,
    messages: list[dict[str, str]],
    result: GenerateResult,
    *,
    retries: int,
    backoff: float,
    temperature: float,
) -> tuple[str, str | None]:
    for attempt in range(retries + 1):
        try:
            result.requests += 1
            resp = await client.chat.completions.create(
                model=model, messages=messages, temperature=temperature
            )
            choice = resp.choices[0]
            return choice.message.content or "", choice.finish_reason
        except Exception as exc:
            if not _retryable(exc) or attempt == retries:
                raise
            result.retries += 1
            delay = backoff * 2**attempt * (1 + random.random() / 2)
            logger.info("retrying in %.2fs after %s", delay, type(exc).__name__)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _run(
    contexts: Sequence[ImageContext],
    kinds: Sequence[Kind],
    out: Path,
    *,
    api_base: str,
    model: str,
    concurrency: int,
    retries: int,
    backoff: float,
    temperature: float,
    seed: int,
    timeout: float,
) -> GenerateResult:
    import openai

    result = GenerateResult()
    done = done_ids(out)
    prompts = {k: load_prompts(k) for k in kinds}
    instructions = {k: load_instructions(k) for k in kinds if k != "conversation"}
    todo = []
    for ctx in contexts:
        for kind in kinds:
            if record_id(ctx, kind) in done:
                result.skipped_done += 1
            else:
                todo.append((ctx, kind))
    key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
    client = openai.AsyncOpenAI(base_url=api_base, api_key=key, max_retries=0, timeout=timeout)
    gate = asyncio.Semaphore(concurrency)
    rejected = out.with_name(out.stem + ".rejected.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as sink:

        async def one(ctx: ImageContext, kind: Kind) -> None:
            async with gate:
                reply, finish = await _complete(
                    client, model, prompts[kind].messages(ctx.context), result,
                    retries=retries, backoff=backoff, temperature=temperature,
                )  # fmt: skip
            try:
                if finish == "length":
                    raise MalformedReply("the reply was cut at the token limit")
                record = make_record(ctx, kind, reply, instructions.get(kind, ()), seed=seed)
            except MalformedReply as exc:
                result.malformed[kind] += 1
                logger.warning("malformed %s reply for image %s: %s", kind, ctx.image_id, exc)
                with open(rejected, "a", encoding="utf-8") as f:
                    f.write(
                        json.dumps({"id": record_id(ctx, kind), "reason": str(exc), "reply": reply}) + "\n"
                    )
                return
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")  # one whole line, then flushed
            sink.flush()
            result.written += 1

        try:
            await asyncio.gather(*(one(ctx, kind) for ctx, kind in todo))
        finally:
            await client.close()
    return result


def generate(
    contexts: Sequence[ImageContext],
    kinds: Sequence[Kind],
    out: str | Path,
    *,
    api_base: str,
    model: str,
    concurrency: int = 8,
    retries: int = 5,
    backoff: float = 1.0,
    temperature: float = 0.2,
    seed: int = 0,
    timeout: float = 120.0,
) -> GenerateResult:
    """Generate records for ``contexts`` x ``kinds`` into ``out`` (resumable; see the module docstring)."""
    if concurrency < 1 or retries < 0:
        raise DataError(f"--concurrency must be >= 1 and --retries >= 0 (got {concurrency}, {retries})")
    return asyncio.run(
        _run(
            contexts,
            kinds,
            Path(out),
            api_base=api_base,
            model=model,
            concurrency=concurrency,
            retries=retries,
            backoff=backoff,
            temperature=temperature,
            seed=seed,
            timeout=timeout,
        )
    )
