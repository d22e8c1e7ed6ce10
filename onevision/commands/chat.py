"""``onevision chat``: answer a question about images / a video with a model, streaming; or a JSONL batch."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from onevision.errors import USER_ERRORS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="ask a model about images or a video (streams the answer), or run a JSONL batch",
        description="Answer one question (streamed to stdout) or, with --batch, every line of a JSONL file "
        '(one JSON answer per line). Batch lines: {"id", "prompt" | "messages", "images", '
        '"video"}; relative media paths are resolved against the JSONL file\'s directory. Every request gets '
        'one output line, {"id", "answer"} or {"id", "error"}; a summary goes to stderr and the exit status is 1 '
        "if any request failed.",
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
        "--frames",
        type=_positive_int,
        default=None,
        help="frames to sample from the video (default: model's)",
    )
    p.add_argument("--max-new-tokens", type=_positive_int, default=256, help="default: %(default)s")
    p.add_argument("--temperature", type=_temperature, default=0.0, help=">= 0; 0 = greedy (default)")
    p.add_argument("--top-p", type=_probability, default=None, help="nucleus sampling threshold, in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--system", default=None, help="system prompt (default: the template's)")
    p.add_argument(
        "--no-stream", action="store_true", help="print the answer at the end instead of streaming"
    )
    p.add_argument("--batch", metavar="IN.jsonl", help="answer every request of a JSONL file")
    p.add_argument("--output", metavar="OUT.jsonl", help="where batch answers go (default: stdout)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=8,
        help="requests generated together (default: %(default)s)",
    )
    p.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="model dtype")
    p.add_argument(
        "--quantization", choices=["int8", "nf4"], default=None, help="load quantized (bitsandbytes)"
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _temperature(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = greedy), got {value:g}")
    return value


def _probability(text: str) -> float:
    value = _finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


def check_device(device: str | None) -> None:
    """Refuse, before any model is loaded, a ``--device`` this machine cannot run (one line: what to use)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"--device {device!r} is not a torch device ({exc}); use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"--device {device}: MPS (Apple GPU) is not available on this machine; use --device cpu"
            )


def check_video(path: str, flag: str = "--video") -> None:
    """Refuse a file that is not a video (a text file, a still image) with one line naming it."""
    import video

    try:
        info = _probe(path)
    except video.VideoError as exc:
        raise ValueError(f"{flag} {path}: not a readable video: {exc.cause} ({exc.reason})") from None
    if info.num_frames == 1 and info.container != "directory" and _is_still_image(path):
        raise ValueError(f"{flag} {path}: a still image, not a video; pass it with --image")


def _probe(path: str) -> Any:
    """``video.probe`` by FFmpeg (PyAV) first: a file FFmpeg cannot even open as a container is no video, and
    rejecting it there spares the other decoders' noise on stderr; other failures get every backend."""
    import video

    try:
        return video.probe(path, backend="pyav")
    except video.BackendUnavailableError:
        pass
    except video.VideoError as exc:
        if exc.reason in ("corrupt", "no_video_stream", "empty", "not_a_file"):
            raise
    return video.probe(path)


def _is_still_image(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) == 1
    except (UnidentifiedImageError, OSError):
        return False


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
    if args.video:
        check_video(args.video)
    check_device(args.device)
    import onevision

    dtype = None
    if args.dtype:
        import torch

        dtype = getattr(torch, args.dtype)
    pipe = onevision.load(args.model, device=args.device, dtype=dtype, quantization=args.quantization)
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
        if isinstance(req["video"], str) and Path(req["video"]).is_file():
            check_video(req["video"], flag="video")
    if record.get("messages") is not None:
        req["messages"] = record["messages"]
    else:
        prompt = record.get("prompt", record.get("question"))
        if not isinstance(prompt, str):
            raise ValueError("needs a 'prompt' (or 'question') string or 'messages'")
        req["prompt"] = prompt
    return req


def _describe(exc: BaseException) -> str:
    """An ``error`` field: the message of a typed user error, ``Type: message`` for anything else."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _answer_chunk(pipe: Any, prepared: list[tuple[int, dict[str, Any]]], options: dict[str, Any]) -> dict:
    """Answers (or errors) by line number; any failure of the batched call is retried request by request, so one
    bad request (whatever it raises) costs only its own answer."""
    if not prepared:
        return {}
    try:
        answers = pipe.batch([r for _, r in prepared], batch_size=len(prepared), **options)
        if len(answers) == len(prepared):
            return {lineno: {"answer": a} for (lineno, _), a in zip(prepared, answers)}
    except Exception:  # retried one by one below, where each failure is reported
        pass
    results = {}
    for lineno, req in prepared:
        try:
            results[lineno] = {"answer": pipe.batch([req], **options)[0]}
        except Exception as exc:  # a failed request becomes its error line
            results[lineno] = {"error": _describe(exc)}
    return results


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
            for start in range(0, len(records), args.batch_size):
                chunk = records[start : start + args.batch_size]
                prepared, results = [], {}
                for lineno, record in chunk:
                    try:
                        prepared.append((lineno, _request(record, base)))
                    except Exception as exc:  # a bad request becomes its error line
                        results[lineno] = {"error": _describe(exc)}
                results.update(_answer_chunk(pipe, prepared, options))
                for lineno, record in chunk:
                    row = {"id": record.get("id", lineno), **results[lineno]}
                    errors += "error" in row
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    summary = f"onevision chat: {len(records) - errors} answered, {errors} failed"
    if errors:
        where = f" in {args.output}" if args.output else ""
        print(
            f"{summary} ({errors} of {len(records)} request(s) failed; see the 'error' fields{where})",
            file=sys.stderr,
        )
        return 1
    print(summary, file=sys.stderr)
    return 0
