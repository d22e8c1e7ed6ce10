"""The FastAPI app: OpenAI-compatible chat completions over one or more onevision pipelines.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions`` (JSON or server-sent
events), ``GET /health``, ``GET /metrics`` (Prometheus). Every error is ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx/5xx status; a bad request never stops the server.

A request goes: JSON body (size-limited) -> :func:`~onevision.serve.schema.parse_chat_request` -> media resolved
to checked local files (:mod:`onevision.serve.media`) -> a :class:`~onevision.serve.batching.Job` on the model's
:class:`~onevision.serve.batching.Batcher` -> the answer, or a stream of deltas. The request's deadline
(``request_timeout``) covers queueing and generation; a client that disconnects cancels its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from onevision.serve.batching import Arrivals, Batcher, GenOptions, Job, Result
from onevision.serve.media import MediaLimits, MediaSession
from onevision.serve.metrics import CONTENT_TYPE, Metrics
from onevision.serve.schema import (
    ApiError,
    ChatRequest,
    bad_request,
    chunk,
    completion,
    new_id,
    parse_chat_request,
    usage,
)

log = logging.getLogger("onevision.serve")


@dataclass(frozen=True)
class ServeConfig:
    """Server limits and batching parameters (the ``onevision serve`` options)."""

    max_batch_size: int = 16
    batch_window: float = 0.005  # seconds
    max_batch_wait: float = 0.1  # seconds, while more requests are arriving
    max_queue: int = 256
    request_timeout: float = 600.0  # seconds, queueing + generation
    default_max_tokens: int = 256
    max_model_len: int | None = None
    media: MediaLimits = field(default_factory=MediaLimits)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: every allowed media item at the byte limit, base64-encoded, plus 1 MiB."""
        items = max(1, sum(self.media.per_prompt.values()))
        return items * (self.media.max_bytes * 4 // 3 + 4) + 2**20


def create_app(models: Mapping[str, Any], config: ServeConfig | None = None) -> Any:
    """An ASGI app serving ``models`` (name -> :class:`~onevision.pipeline.Pipeline`)."""
    if not models:
        raise ValueError("create_app needs at least one model")
    config = config or ServeConfig()
    metrics = Metrics()
    state: dict[str, Any] = {"batchers": {}, "tmp": None, "client": None, "loop": None, "draining": False}
    active: set[tuple[Batcher, Job]] = set()  # jobs whose clients are waiting
    arrivals = Arrivals()
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        import httpx

        state["loop"] = asyncio.get_running_loop()
        state["tmp"] = tempfile.mkdtemp(prefix="onevision-serve-")
        state["client"] = httpx.AsyncClient(
            follow_redirects=True,
            max_redirects=3,
            timeout=httpx.Timeout(config.media.fetch_timeout),
            trust_env=False,
        )
        for name, pipe in models.items():
            metrics.register_model(name)
            batcher = Batcher(
                name,
                pipe,
                max_batch_size=config.max_batch_size,
                batch_window=config.batch_window,
                max_batch_wait=config.max_batch_wait,
                max_queue=config.max_queue,
                default_max_tokens=config.default_max_tokens,
                max_model_len=config.max_model_len,
                metrics=metrics,
                arrivals=arrivals,
            )
            batcher.start()
            state["batchers"][name] = batcher
        try:
            yield
        finally:
            for batcher in state["batchers"].values():
                await asyncio.to_thread(batcher.close)
            await state["client"].aclose()
            shutil.rmtree(state["tmp"], ignore_errors=True)

    app = FastAPI(title="onevision", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.serve = state

    def begin_shutdown(grace: float) -> None:
        """Called (from any thread) when the server starts to shut down: new requests get 503, and the requests
        still waiting ``grace`` seconds minus a margin later get a clean 503 answer (their rows stop), before
        the server would cut their connections."""
        loop = state["loop"]
        if loop is None:
            return

        def abort() -> None:
            for batcher, job in list(active):
                job.post("error", _shutting_down())
                batcher.cancel(job)

        def schedule() -> None:
            state["draining"] = True
            loop.call_later(max(0.0, grace - min(1.0, grace / 2)), abort)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(schedule)

    app.state.begin_shutdown = begin_shutdown

    def error_response(exc: ApiError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Any, exc: StarletteHTTPException) -> Any:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, str(exc.detail), kind, headers=exc.headers))

    def card(name: str) -> dict[str, Any]:
        batcher = state["batchers"].get(name)
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "onevision",
            "max_model_len": batcher.context if batcher is not None else None,
        }

    @app.get("/health")
    async def health() -> Any:
        batchers = state["batchers"]
        report = {
            n: {"queue": b.queue_depth, "running": b.running, "alive": b.alive} for n, b in batchers.items()
        }
        ok = bool(batchers) and all(b.alive for b in batchers.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "models": report}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def prometheus() -> Any:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [card(name) for name in models]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        if model_id not in models:
            return error_response(_unknown_model(model_id, models))
        return card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        start = time.monotonic()
        label = "-"  # metrics label: a served model's name only (clients cannot add series)
        try:
            with arrivals():  # batches being formed may wait for this request
                body = await _read_json(request, config.max_body_bytes)
                req = parse_chat_request(body, media_limits=config.media.per_prompt)
                batcher = state["batchers"].get(req.model)
                if batcher is None:
                    raise _unknown_model(req.model, models)
                label = req.model
                if state["draining"]:
                    raise _shutting_down()
                if (
                    batcher.context is not None
                    and req.max_tokens is not None
                    and req.max_tokens >= batcher.context
                ):
                    raise bad_request(
                        f"max_tokens {req.max_tokens} does not fit the model's context of {batcher.context} "
                        "tokens (prompt included)",
                        "max_tokens",
                        "context_length_exceeded",
                    )
                session = MediaSession(config.media, root=state["tmp"], client=state["client"])
                try:
                    messages = await _messages(req, session)
                    job = Job(messages, _options(req), stream=req.stream)
                    batcher.submit(job)
                except BaseException:
                    session.close()
                    raise
            active.add((batcher, job))
            deadline = start + config.request_timeout
            if req.stream:
                events = _stream(batcher, job, req, session, deadline, start)
                # a stream the server never starts (the client left first) still frees its job and files
                weakref.finalize(events, _release, batcher, job, session, active)
                return StreamingResponse(
                    events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
                )
            try:
                result = await _wait(batcher, job, request, deadline, config.request_timeout)
            finally:
                active.discard((batcher, job))
                session.close()
            if job.first_token is not None:
                metrics.first_token(label, job.first_token - job.created)
            response = completion(new_id(), req.model, result.text, result.finish_reason, _usage(result))
            metrics.request(label, 200, time.monotonic() - start, result.prompt_tokens)
            return JSONResponse(response)
        except _ClientGone:
            metrics.request(label, 499, time.monotonic() - start)
            return Response(status_code=499)
        except ApiError as exc:
            metrics.request(label, exc.status, time.monotonic() - start)
            return error_response(exc)
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("chat completion failed")
            metrics.request(label, 500, time.monotonic() - start)
            return error_response(
                ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
            )

    async def _stream(
        batcher: Batcher, job: Job, req: ChatRequest, session: MediaSession, deadline: float, start: float
    ) -> AsyncIterator[str]:
        request_id, created_at = new_id(), int(time.time())
        extra = {"include_usage": req.include_usage}
        code, result = 499, None
        try:
            yield _sse(
                chunk(request_id, req.model, created_at, delta={"role": "assistant", "content": ""}, **extra)
            )
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    kind, payload = await asyncio.wait_for(job.events.get(), remaining)
                except asyncio.TimeoutError:
                    raise _timeout(config.request_timeout) from None
                if kind == "delta":
                    yield _sse(chunk(request_id, req.model, created_at, delta={"content": payload}, **extra))
                elif kind == "done":
                    result = payload
                    break
                else:
                    raise payload
            yield _sse(
                chunk(
                    request_id, req.model, created_at, delta={}, finish_reason=result.finish_reason, **extra
                )
            )
            if req.include_usage:
                yield _sse(
                    chunk(request_id, req.model, created_at, usage_=_usage(result), include_usage=True)
                )
            yield "data: [DONE]\n\n"
            code = 200
        except ApiError as exc:
            code = exc.status
            batcher.cancel(job)
            yield _sse(exc.body())
            yield "data: [DONE]\n\n"
        finally:
            if result is None:
                batcher.cancel(job)  # a disconnect (the generator is cancelled or closed) or an error
            active.discard((batcher, job))
            session.close()
            if job.first_token is not None:
                metrics.first_token(req.model, job.first_token - job.created)
            metrics.request(req.model, code, time.monotonic() - start, result.prompt_tokens if result else 0)

    return app


# -- request plumbing ------------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def _read_json(request: Any, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large_body(int(declared), limit)
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > limit:
            raise _too_large_body(len(data), limit)
    if not data:
        raise bad_request("the request body is empty; send a JSON object", None, "invalid_json")
    try:
        return json.loads(bytes(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc})", None, "invalid_json") from None


def _too_large_body(size: int, limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is {size:,} bytes, over the limit of {limit:,}", "invalid_request_error"
    )


def _unknown_model(name: str, models: Mapping[str, Any]) -> ApiError:
    return ApiError(
        404,
        f"model {name!r} does not exist; this server has: {', '.join(models)}",
        "not_found_error",
        "model",
        "model_not_found",
    )


def _shutting_down() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry elsewhere",
        "server_error",
        None,
        "shutting_down",
        {"Retry-After": "1"},
    )


def _timeout(seconds: float) -> ApiError:
    return ApiError(
        504, f"the request took longer than {seconds:g} s (--request-timeout)", "timeout", None, "timeout"
    )


async def _messages(req: ChatRequest, session: MediaSession) -> list[dict[str, Any]]:
    """The pipeline's messages: text parts as they are, each media part as a checked local path."""
    resolved = await asyncio.gather(*(session.resolve(ref) for ref in req.media), return_exceptions=True)
    for item in resolved:
        if isinstance(item, BaseException):
            raise item
    paths = iter(resolved)
    out = []
    for turn in req.turns:
        parts = []
        for kind, value in turn.parts:
            parts.append(
                {"type": "text", "text": value} if kind == "text" else {"type": kind, kind: next(paths)}
            )
        out.append({"role": turn.role, "content": parts})
    return out


def _options(req: ChatRequest) -> GenOptions:
    return GenOptions(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        num_frames=req.num_frames,
        stop=req.stop,
    )


def _usage(result: Result) -> dict[str, Any]:
    return usage(result.prompt_tokens, result.completion_tokens, result.image_tokens, result.video_tokens)


async def _wait(batcher: Batcher, job: Job, request: Any, deadline: float, timeout: float) -> Result:
    """The job's result; cancels it when the client disconnects, the deadline passes or the task is cancelled."""
    getter = asyncio.ensure_future(job.events.get())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {getter, gone}, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            kind, payload = getter.result()
            if kind == "done":
                return payload
            raise payload
        batcher.cancel(job)
        if gone in done:
            raise _ClientGone
        raise _timeout(timeout)
    except asyncio.CancelledError:
        batcher.cancel(job)
        raise
    finally:
        getter.cancel()
        gone.cancel()


async def _disconnected(request: Any) -> None:
    """Returns when the client has disconnected (the body is already read, so only that message is left)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def _release(batcher: Batcher, job: Job, session: MediaSession, active: set) -> None:
    batcher.cancel(job)  # a no-op for a finished job
    active.discard((batcher, job))
    session.close()


def _sse(obj: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# -- running -------------------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free port; read it back with ``getsockname``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def run(
    app: Any,
    sock: socket.socket,
    *,
    log_level: str = "info",
    shutdown_timeout: float = 30.0,
    on_ready: Any = None,
) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM / SIGINT, then shut down gracefully and return.

    In-flight requests get ``shutdown_timeout`` seconds to finish; the ones still waiting then get a 503 answer
    (JSON, or an error event that ends their stream) and their rows stop at the next token. Unlike uvicorn's own handling, the signal is not re-raised afterwards,
    so the process exits normally (status 0). A second signal forces the exit at once."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # our own handlers: stop gracefully, and do not re-raise the signal later
            import signal

            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handle(_sig: int, _frame: Any) -> None:
                if self.should_exit:
                    self.force_exit = True
                else:
                    begin = getattr(app.state, "begin_shutdown", None)
                    if begin is not None:
                        begin(shutdown_timeout)
                self.should_exit = True

            saved = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if on_ready is not None and not self.should_exit:
                on_ready()

    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=shutdown_timeout,
        lifespan="on",
        access_log=log_level == "debug",
    )
    Server(config).run(sockets=[sock])
