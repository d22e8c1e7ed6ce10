"""``onevision serve``: an OpenAI-compatible server (chat completions with images and videos) for one or more
models, with dynamic batching, limits and Prometheus metrics. Needs the ``serve`` extra."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from onevision.commands.chat import _finite_float, _positive_int, check_device

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API (chat completions with images and videos)",
        description="Serve one or more models over HTTP: GET /v1/models, POST /v1/chat/completions (OpenAI "
        "schema: text, image_url and video_url parts, streaming), GET /health, GET /metrics. Concurrent "
        "requests are batched. See docs/serving.md.",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a checkpoint directory or hub id, optionally named (the name clients send as 'model'; default: "
        "the directory name); repeat to serve several models",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="port (0: any free port; default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="model dtype")
    p.add_argument(
        "--quantization", choices=["int8", "nf4"], default=None, help="load quantized (bitsandbytes)"
    )
    g = p.add_argument_group("batching")
    g.add_argument(
        "--max-batch-size", type=_positive_int, default=16, help="requests per batch (default: 16)"
    )
    g.add_argument(
        "--batch-window-ms",
        type=_non_negative,
        default=5.0,
        help="how long the oldest request waits for others to join its batch (default: 5)",
    )
    g.add_argument(
        "--max-batch-wait-ms",
        type=_non_negative,
        default=100.0,
        help="how long it may wait while more requests are still arriving (media being checked; default: 100)",
    )
    g.add_argument(
        "--max-queue",
        type=_positive_int,
        default=256,
        help="requests waiting per model before new ones get 429 (default: 256)",
    )
    g.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=600.0,
        help="seconds a request may take, queueing included, before it gets 504 (default: 600)",
    )
    g.add_argument(
        "--default-max-tokens",
        type=_positive_int,
        default=256,
        help="new tokens when a request gives no max_tokens (capped by the context; default: 256)",
    )
    g.add_argument(
        "--max-model-len",
        type=_positive_int,
        default=None,
        help="context budget in tokens (prompt + answer); default: the model's",
    )
    m = p.add_argument_group("media limits")
    m.add_argument(
        "--limit-media-per-prompt",
        type=_per_prompt,
        default=None,
        metavar="image=N,video=M",
        help="most images / videos one request may hold (default: image=8,video=1)",
    )
    m.add_argument(
        "--allowed-local-media-path",
        action="append",
        default=[],
        metavar="DIR",
        help="serve file:// URLs under DIR (repeatable); without it file:// URLs are refused",
    )
    m.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=7680 * 4320,
        help="largest image area in pixels (default: 7680x4320)",
    )
    m.add_argument(
        "--max-media-bytes",
        type=_positive_int,
        default=64 * 2**20,
        help="largest media item in bytes, decoded or fetched (default: 64 MiB)",
    )
    m.add_argument(
        "--media-fetch-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to fetch one http(s) media URL (default: 10)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_non_negative,
        default=30.0,
        help="on SIGTERM/SIGINT, seconds in-flight requests get to finish before they are cancelled (default: 30)",
    )
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="default: info"
    )
    p.set_defaults(func=run)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _non_negative(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def _per_prompt(text: str) -> dict[str, int]:
    from onevision.serve.media import parse_per_prompt

    try:
        return parse_per_prompt(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_models(specs: list[str]) -> dict[str, str]:
    """``[NAME=]PATH`` specs -> {name: path}; the default name is the directory name (or the hub id)."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not _NAME.match(name):
            name, path = "", spec
        if not path:
            raise ValueError(f"--model {spec!r}: no path after the name")
        if not name:
            name = Path(path).name if os.path.isdir(path) else path
        if name in out:
            raise ValueError(f"--model: the name {name!r} is given twice; name them with NAME=PATH")
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"onevision serve needs the serve extra: pip install 'onevision[serve]' ({exc})"
        ) from None
    from onevision.serve.app import ServeConfig, bind, create_app
    from onevision.serve.app import run as serve_forever
    from onevision.serve.media import DEFAULT_PER_PROMPT, MediaLimits

    specs = parse_models(args.model)
    for folder in args.allowed_local_media_path:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--allowed-local-media-path {folder}: no such directory")
    check_device(args.device)
    import onevision

    dtype = None
    if args.dtype:
        import torch

        dtype = getattr(torch, args.dtype)
    pipes = {}
    for name, path in specs.items():
        print(f"onevision serve: loading {name} from {path}", file=sys.stderr, flush=True)
        pipes[name] = onevision.load(path, device=args.device, dtype=dtype, quantization=args.quantization)
    config = ServeConfig(
        max_batch_size=args.max_batch_size,
        batch_window=args.batch_window_ms / 1000.0,
        max_batch_wait=args.max_batch_wait_ms / 1000.0,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        default_max_tokens=args.default_max_tokens,
        max_model_len=args.max_model_len,
        media=MediaLimits(
            per_prompt=args.limit_media_per_prompt or dict(DEFAULT_PER_PROMPT),
            max_bytes=args.max_media_bytes,
            max_image_pixels=args.max_image_pixels,
            fetch_timeout=args.media_fetch_timeout,
            allowed_local_paths=tuple(Path(p) for p in args.allowed_local_media_path),
        ),
    )
    app = create_app(pipes, config)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        print(
            f"onevision serve: serving {', '.join(pipes)} on http://{shown}:{port}/v1",
            file=sys.stdout,
            flush=True,
        )

    try:
        serve_forever(
            app, sock, log_level=args.log_level, shutdown_timeout=args.shutdown_timeout, on_ready=ready
        )
    finally:
        sock.close()
    print("onevision serve: stopped", file=sys.stderr, flush=True)
    return 0
