"""``onevision chat``: answer a question about images / a video with a model, streaming; or a JSONL batch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="ask a model about images or a video (streams the answer), or run a JSONL batch",
        description="Answer one question (streamed to stdout) or, with --batch, every line of a JSONL file "
        '(one JSON answer per line). Batch lines: {"id", "prompt" | "messages", "images", '
        '"video"}; relative media paths are resolved against the JSONL file\'s directory.',
    )
    p.add_argument("question", nargs="?", help="the question (omit with --batch)")
    p.add_argument(
        "--model", required=True, help="checkpoint directory or hub id (onevision, HF or original)"
    )
    p.add_argument(
        "--image", action="append", default=[], metavar="PATH", help="an image (repeat for several)"
    )
    p.add_argument("--video", metavar="PATH", help="a video file")
    p.add_argument(
        "--frames", type=int, default=None, help="frames to sample from the video (default: model's)"
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="default: %(default)s")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--system", default=None, help="system prompt (default: the template's)")
    p.add_argument(
        "--no-stream", action="store_true", help="print the answer at the end instead of streaming"
    )
    p.add_argument("--batch", metavar="IN.jsonl", help="answer every request of a JSONL file")
    p.add_argument("--output", metavar="OUT.jsonl", help="where batch answers go (default: stdout)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="requests generated together (default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="model dtype")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.top_p is not None:
        opts["top_p"] = args.top_p
    if args.seed is not None:
        opts["seed"] = args.seed
    if args.frames is not None:
        opts["num_frames"] = args.frames
    return opts


def run(args: argparse.Namespace) -> int:
    if args.batch is None and not args.question:
        raise ValueError("give a question, or --batch IN.jsonl")
    if args.batch is not None and (args.question or args.image or args.video):
        raise ValueError(
            "--batch takes its questions and media from the JSONL file; drop the question/--image/--video"
        )
    for path in [*args.image, *([args.video] if args.video else [])]:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
    import onevision

    dtype = None
    if args.dtype:
        import torch

        dtype = getattr(torch, args.dtype)
    pipe = onevision.load(args.model, device=args.device, dtype=dtype)
    if args.batch is not None:
        return _run_batch(pipe, args)
    answer = pipe.generate(
        args.question,
        images=args.image or None,
        video=args.video,
        system=args.system,
        stream=not args.no_stream,
        **_options(args),
    )
    if args.no_stream:
        print(answer)
    else:
        for piece in answer:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def _resolve(base: Path, value: Any) -> Any:
    if (
        isinstance(value, str)
        and not Path(value).is_absolute()
        and not Path(value).exists()
        and (base / value).exists()
    ):
        return str(base / value)
    return value


def _read_requests(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
            out.append((lineno, record))
    return out


def _request(record: dict[str, Any], base: Path) -> dict[str, Any]:
    images = record.get("images", [])
    if isinstance(images, str):
        images = [images]
    if record.get("image") is not None:
        images = [record["image"], *images]
    req: dict[str, Any] = {"images": [_resolve(base, i) for i in images]}
    if record.get("video") is not None:
        req["video"] = _resolve(base, record["video"])
    if record.get("messages") is not None:
        req["messages"] = record["messages"]
    else:
        prompt = record.get("prompt", record.get("question"))
        if not isinstance(prompt, str):
            raise ValueError("needs a 'prompt' (or 'question') string or 'messages'")
        req["prompt"] = prompt
    return req


def _run_batch(pipe: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    path = Path(args.batch)
    base = path.parent
    records = _read_requests(path)
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    errors = 0
    options = _options(args)
    try:
        with tqdm(total=len(records), desc="onevision chat", unit="req", file=sys.stderr) as bar:
            for start in range(0, len(records), max(1, args.batch_size)):
                chunk = records[start : start + args.batch_size]
                prepared, results = [], {}
                for lineno, record in chunk:
                    try:
                        prepared.append((lineno, record, _request(record, base)))
                    except ValueError as exc:
                        results[lineno] = {"error": str(exc)}
                try:
                    answers = (
                        pipe.batch([r for _, _, r in prepared], batch_size=len(prepared) or 1, **options)
                        if prepared
                        else []
                    )
                    for (lineno, _, _), answer in zip(prepared, answers):
                        results[lineno] = {"answer": answer}
                except ValueError:  # one bad request: retry one by one so the others still get answers
                    for lineno, _, req in prepared:
                        try:
                            results[lineno] = {"answer": pipe.batch([req], **options)[0]}
                        except ValueError as exc:
                            results[lineno] = {"error": str(exc)}
                for lineno, record in chunk:
                    row = {"id": record.get("id", lineno), **results[lineno]}
                    errors += "error" in row
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    if errors:
        print(
            f"onevision chat: {errors} of {len(records)} request(s) failed (see 'error' fields)",
            file=sys.stderr,
        )
        return 1
    return 0
