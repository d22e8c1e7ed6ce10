"""``onevision web``: start the Gradio chat page for an OpenAI-compatible server."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="a chat page (Gradio) for an OpenAI-compatible server such as `onevision serve`",
        description="Serve a chat page: upload images or a video, ask, watch the answer stream. The page talks to "
        "the server only through the OpenAI API (GET /v1/models, POST /v1/chat/completions), so any compatible "
        "server works. Needs the [web] extra.",
    )
    p.add_argument(
        "--api",
        required=True,
        metavar="URL",
        help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1",
    )
    p.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY, else none)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="default: %(default)s")
    p.add_argument("--max-tokens", type=int, default=256, help="answer length limit (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("onevision web needs Gradio: pip install 'onevision[web]'") from None
    from onevision.web import serve_page

    print(f"onevision web: http://{args.host}:{args.port} -> {args.api}", flush=True)
    serve_page(args.api, host=args.host, port=args.port, api_key=args.api_key, max_tokens=args.max_tokens)
    return 0
