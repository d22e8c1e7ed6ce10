"""Dynamic batching: concurrent requests for one model are gathered into left-padded ``Pipeline.batch`` calls.

One :class:`Batcher` per model owns one worker thread, and only that thread touches the model and its tokenizer
(token counting, generation, decoding): the tokenizer is not safe to call from several threads at once.

* Requests wait in a bounded queue; a full queue refuses new ones at once (429 with ``Retry-After``).
* The worker takes the oldest request and every queued request whose options can share its batch, up to
  ``max_batch_size``. It waits ``batch_window`` seconds from the oldest request's arrival for more, and longer
  (up to ``max_batch_wait``) while requests are still being received (body parsed, media fetched and checked) or while fewer requests wait than the largest of the last four batches held (counted from when the worker
  became free): under steady concurrency a burst becomes one batch, not a lone first request and then the rest.
  (When the load drops, the next few batches wait up to ``max_batch_wait`` before the expectation follows.) Greedy
  requests share a batch whatever their ``max_tokens`` and ``stop``; sampled requests share one when temperature,
  ``top_p`` and ``num_frames`` agree; a sampled request with a ``seed`` runs alone, so it reproduces
  ``pipe.chat(..., seed=...)``.
* A stopping criterion watches every generated token of every row: it ends a row at the template's end tokens,
  at its own ``max_tokens``, at a ``stop`` string, or when its client has gone (cancelled, timed out), and
  streams text deltas. A batch ends when all its rows have ended, so a disconnected client frees its slot.
* A row's answer is posted as soon as the row ends (a short answer does not wait for the batch's longest): its
  ids decoded as ``Pipeline.batch`` decodes them, which the batch's own answer then confirms. Greedy rows are
  exactly what ``pipe.chat`` returns alone (left padding and mask-derived positions give each row the same
  logits; ``tests/serve`` checks it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from onevision.serve.schema import ApiError, bad_request

log = logging.getLogger("onevision.serve")


@dataclass(frozen=True)
class GenOptions:
    """A request's generation options (``max_tokens`` None: the server default, capped by the context)."""

    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    num_frames: int | None = None
    stop: tuple[str, ...] = ()

    def pipeline_options(self) -> dict[str, Any]:
        """The options shared by every row of a batch, as ``Pipeline.batch`` takes them."""
        opts: dict[str, Any] = {"temperature": self.temperature}
        if self.temperature > 0:
            if self.top_p is not None:
                opts["top_p"] = self.top_p
            if self.seed is not None:
                opts["seed"] = self.seed
        if self.num_frames is not None:
            opts["num_frames"] = self.num_frames
        return opts


@dataclass(frozen=True)
class Result:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    image_tokens: int
    video_tokens: int


class Job:
    """One request in flight. The worker thread posts events to :attr:`events` (an ``asyncio.Queue`` of the
    app's loop): ``("delta", str)`` while streaming, then ``("done", Result)`` or ``("error", ApiError)``."""

    _ids = itertools.count()

    def __init__(
        self,
        messages: list[dict[str, Any]],
        options: GenOptions,
        *,
        stream: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.id = next(Job._ids)
        self.messages = messages
        self.options = options
        self.stream = stream
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False  # set by the app (disconnect, timeout); read by the worker between tokens
        self.created = time.monotonic()
        self.first_token: float | None = None
        # filled by the worker when the job is planned
        self.max_tokens = 0
        self.prompt_tokens = 0
        self.image_tokens = 0
        self.video_tokens = 0

    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys may share a batch."""
        o = self.options
        if o.temperature == 0:
            return ("greedy", o.num_frames)
        if o.seed is not None:
            return ("seeded", self.id)
        return ("sample", o.temperature, o.top_p, o.num_frames)

    def cancel(self) -> None:
        self.cancelled = True

    def post(self, kind: str, payload: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))


class Arrivals:
    """Requests being received (body read and parsed, media fetched and checked) that will soon be submitted:
    a batcher holds a batch open while there are any. One per app, shared by its models (a request's model is
    known only once its body is parsed)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._conds: list[threading.Condition] = []

    def watch(self, cond: threading.Condition) -> None:
        self._conds.append(cond)

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1
            for cond in self._conds:
                with cond:
                    cond.notify_all()


class Batcher:
    """The queue and worker thread of one model (see the module docstring)."""

    def __init__(
        self,
        name: str,
        pipe: Any,
        *,
        max_batch_size: int = 16,
        batch_window: float = 0.005,
        max_batch_wait: float = 0.1,
        max_queue: int = 256,
        default_max_tokens: int = 256,
        max_model_len: int | None = None,
        metrics: Any = None,
        arrivals: Arrivals | None = None,
    ):
        if max_batch_size < 1 or max_queue < 1 or default_max_tokens < 1 or batch_window < 0:
            raise ValueError(
                "max_batch_size, max_queue and default_max_tokens must be >= 1, batch_window >= 0"
            )
        self.name = name
        self.pipe = pipe
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        self.max_batch_wait = max(batch_window, max_batch_wait)
        self.max_queue = max_queue
        self.default_max_tokens = default_max_tokens
        limits = [n for n in (pipe.processor.max_length, max_model_len) if n]
        self.context: int | None = min(limits) if limits else None
        self.metrics = metrics
        self.running = 0
        self._batch_seconds = 0.0  # moving average, for Retry-After
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._closed = False
        self.arrivals = arrivals if arrivals is not None else Arrivals()
        self.arrivals.watch(self._cond)
        self._recent: collections.deque[int] = collections.deque([1], maxlen=4)  # the latest batch sizes
        self._thread = threading.Thread(target=self._loop, name=f"onevision-serve[{name}]", daemon=True)

    # -- used by the app (event loop thread) -----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> None:
        """Queue ``job``, or raise 429 (queue full) / 503 (shutting down) with ``Retry-After``."""
        with self._cond:
            if self._closed:
                raise ApiError(503, "the server is shutting down", "server_error", None, "shutting_down")
            if len(self._queue) >= self.max_queue:
                retry = self._retry_after()
                raise ApiError(
                    429,
                    f"model {self.name!r} has {len(self._queue)} requests waiting, the most its queue holds "
                    f"(--max-queue {self.max_queue}); retry in {retry} s",
                    "rate_limit_error",
                    None,
                    "queue_full",
                    {"Retry-After": str(retry)},
                )
            self._queue.append(job)
            self._gauge_queue()
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Stop ``job``: dropped from the queue at once, or its row ended after the current token."""
        job.cancel()
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return
            self._gauge_queue()
        self._count_finish("cancelled", 0)

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new jobs, fail the queued ones (503), let the running batch end, join the worker."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._gauge_queue()
            self._cond.notify_all()
        for job in pending:
            job.post(
                "error", ApiError(503, "the server is shutting down", "server_error", None, "shutting_down")
            )
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _retry_after(self) -> int:
        waves = math.ceil((len(self._queue) + 1) / self.max_batch_size)
        return max(1, math.ceil(waves * self._batch_seconds))

    # -- worker thread ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run(batch)
            except BaseException as exc:  # never lose the worker: fail this batch, keep serving
                log.exception("model %s: batch failed", self.name)
                error = _internal(exc)
                for job in batch:
                    job.post("error", error)
            finally:
                self.running = 0
                self._gauge("running", 0)

    def _take(self) -> list[Job] | None:
        free = time.monotonic()  # the worker is free from now: a held batch waits from here at most
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                first = self._queue[0]
                key = first.key()
                same = [j for j in self._queue if j.key() == key][: self.max_batch_size]
                expected = min(max(self._recent), self.max_batch_size)  # as many are likely to come again
                hold = self.arrivals.count > 0 or len(same) < expected
                if hold:  # from when the worker became free: a request queued long ago does not end the wait
                    remaining = max(first.created, free) + self.max_batch_wait - time.monotonic()
                else:
                    remaining = first.created + self.batch_window - time.monotonic()
                if len(same) >= self.max_batch_size or remaining <= 0 or self._closed:
                    for job in same:
                        self._queue.remove(job)
                    self._gauge_queue()
                    self._recent.append(len(same))
                    return same
                self._cond.wait(remaining)

    def _run(self, batch: list[Job]) -> None:
        ready = []
        for job in batch:
            if job.cancelled:
                self._count_finish("cancelled", 0)
                continue
            try:
                self._plan(job)
            except Exception as exc:
                job.post("error", _as_api_error(exc))
                self._count_finish("error", 0)
                continue
            ready.append(job)
        if not ready:
            return
        self.running = len(ready)
        self._gauge("running", len(ready))
        start = time.monotonic()
        tokens = self._generate(ready)
        seconds = time.monotonic() - start
        self._batch_seconds = (
            seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
        )
        if self.metrics is not None:
            self.metrics.batch(self.name, len(ready), tokens, seconds)

    def _plan(self, job: Job) -> None:
        """Exact prompt tokens (text + visual, the pipeline's own count), the context check, ``max_tokens``."""
        count = self.pipe.processor.count_tokens(
            conversation=job.messages,
            add_generation_prompt=True,
            tags_in_text=False,
            num_frames=job.options.num_frames,
        )
        image = sum(p.tokens for p in count.parts if p.kind == "image")
        video = sum(p.tokens for p in count.parts if p.kind == "video")
        job.prompt_tokens, job.image_tokens, job.video_tokens = count.total, image, video
        budget = self.context
        detail = f"{count.visual} visual ({image} image + {video} video) + {count.text} text"
        if budget is not None and count.total >= budget:
            raise bad_request(
                f"the prompt has {count.total} tokens ({detail}), which leaves no room in the model's context "
                f"of {budget} tokens; visual tokens are never truncated: send fewer or smaller images, fewer "
                "video frames (num_frames) or a shorter prompt",
                "messages",
                "context_length_exceeded",
            )
        room = None if budget is None else budget - count.total
        wanted = job.options.max_tokens
        if wanted is None:
            job.max_tokens = self.default_max_tokens if room is None else min(self.default_max_tokens, room)
        elif room is not None and wanted > room:
            raise bad_request(
                f"max_tokens {wanted} plus the prompt's {count.total} tokens ({detail}) exceed the model's "
                f"context of {budget} tokens; at most {room} new tokens fit",
                "max_tokens",
                "context_length_exceeded",
            )
        else:
            job.max_tokens = wanted

    def _generate(self, jobs: list[Job]) -> int:
        """Run one batch; post each job's result as soon as its row ends. Returns the generated token count."""
        from transformers import StoppingCriteriaList

        rows = _Rows(jobs, self.pipe.processor, self._row_ended)
        try:
            answers = self.pipe.batch(
                [{"messages": job.messages} for job in jobs],
                batch_size=len(jobs),
                max_new_tokens=max(job.max_tokens for job in jobs),
                stopping_criteria=StoppingCriteriaList([rows]),
                **jobs[0].options.pipeline_options(),
            )
        except Exception as exc:
            if rows.steps == 0 and len(jobs) > 1:  # failed while preparing inputs: find whose they were
                return sum(self._generate([job]) for job in jobs)
            log.warning(
                "model %s: generation failed: %s", self.name, exc, exc_info=not isinstance(exc, ValueError)
            )
            for i, job in enumerate(jobs):
                if not rows.posted[i]:
                    job.post("error", _as_api_error(exc))
                    self._count_finish("error", len(rows.ids[i]))
            return sum(len(ids) for ids in rows.ids)
        for i, (job, answer) in enumerate(zip(jobs, answers)):
            if not rows.posted[i]:  # a row the criterion did not end (generation stopped for another reason)
                rows.end(i, "length")
            text = _cut(answer, job.options.stop)
            if rows.texts[i] is not None and rows.texts[i] != text:  # decoding the row alone must agree
                log.warning(
                    "model %s: answer %r differs from Pipeline.batch's %r", self.name, rows.texts[i], text
                )
        return sum(len(ids) for ids in rows.ids)

    def _row_ended(self, rows: _Rows, i: int, reason: str) -> None:
        """A row has ended: post its result now (the other rows of the batch may go on for a while).

        The text is the row's generated ids decoded as ``Pipeline.batch`` decodes them (special tokens skipped,
        stripped), cut at the first ``stop`` string; :meth:`_generate` checks it against the batch's answer."""
        job = rows.jobs[i]
        tokens = len(rows.ids[i])
        if reason == "cancelled":
            self._count_finish("cancelled", tokens)
            job.post("error", ApiError(499, "the request was cancelled", "cancelled", None, "cancelled"))
            return
        text = self.pipe.processor.decode(rows.ids[i], skip_special_tokens=True).strip()
        cut = _find_stop(text, job.options.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        rows.texts[i] = text
        if job.stream:
            sent = rows.sent[i]
            if text.startswith(sent):
                if len(text) > len(sent):
                    job.post("delta", text[len(sent) :])
            else:  # cannot happen unless decoding a prefix of the ids is not a prefix of the text
                log.warning("model %s: streamed %r is not a prefix of the answer %r", self.name, sent, text)
        self._count_finish(reason, tokens)
        job.post("done", Result(text, reason, job.prompt_tokens, tokens, job.image_tokens, job.video_tokens))

    # -- metrics ----------------------------------------------------------------------------------------------
    def _gauge_queue(self) -> None:
        self._gauge("queue", len(self._queue))

    def _gauge(self, which: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.gauge(which, self.name, value)

    def _count_finish(self, reason: str, tokens: int) -> None:
        if self.metrics is not None:
            self.metrics.finished(self.name, reason, tokens)


class _Rows:
    """A transformers stopping criterion over a batch: records each row's new tokens, ends rows (end token,
    ``max_tokens``, ``stop`` string, cancellation), calling ``on_end(rows, i, reason)`` once per row, and posts
    streamed text deltas.

    Streamed text never runs ahead of what the final answer holds: trailing whitespace (the answer is
    stripped), an unfinished UTF-8 character (``\\ufffd``) and the last ``len(longest stop) - 1`` characters (a
    stop string may be starting) are held back until the next token or the end."""

    def __init__(self, jobs: list[Job], processor: Any, on_end: Any):
        self.jobs = jobs
        self.decode = processor.decode
        self.stop_ids = set(processor.stop_token_ids)
        self.on_end = on_end
        n = len(jobs)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.done = [False] * n
        self.posted = [False] * n
        self.texts: list[str | None] = [None] * n
        self.sent = [""] * n
        self.hold = [max((len(s) for s in j.options.stop), default=1) - 1 for j in jobs]
        self.steps = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.steps += 1
        last = input_ids[:, -1].tolist()
        now = time.monotonic()
        for i, job in enumerate(self.jobs):
            if self.done[i]:
                continue
            token = last[i]
            self.ids[i].append(token)
            if job.first_token is None:
                job.first_token = now
            if token in self.stop_ids:
                self.end(i, "stop")
                continue
            if job.stream or job.options.stop:
                text = self.decode(self.ids[i]).lstrip()
                if _find_stop(text, job.options.stop) is not None:
                    self.end(i, "stop")
                    continue
                if job.stream:
                    self._emit(i, text)
            if len(self.ids[i]) >= job.max_tokens:
                self.end(i, "length")
            elif job.cancelled:
                self.end(i, "cancelled")
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def end(self, i: int, reason: str) -> None:
        self.done[i] = True
        if not self.posted[i]:
            self.posted[i] = True
            self.on_end(self, i, reason)

    def _emit(self, i: int, text: str) -> None:
        safe = text
        while safe and (safe[-1].isspace() or safe[-1] == "\ufffd"):
            safe = safe[:-1]
        if self.hold[i]:
            safe = safe[: max(0, len(safe) - self.hold[i])]
        sent = self.sent[i]
        if len(safe) > len(sent) and safe.startswith(sent):
            self.jobs[i].post("delta", safe[len(sent) :])
            self.sent[i] = safe


def _cut(text: str, stops: tuple[str, ...]) -> str:
    cut = _find_stop(text, stops)
    return text if cut is None else text[:cut]


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [k for k in (text.find(s) for s in stops) if k >= 0]
    return min(found) if found else None


def _as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ValueError, FileNotFoundError)):  # typed user errors (InputError, ImageError, ...)
        return bad_request(str(exc))
    return _internal(exc)


def _internal(exc: BaseException) -> ApiError:
    message = " ".join(str(exc).split())
    return ApiError(
        500, f"internal error: {type(exc).__name__}" + (f": {message}" if message else ""), "server_error"
    )
