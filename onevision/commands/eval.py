"""``onevision eval``: lmms-eval benchmarks (in-process), the demo's tasks, and judged LLaVA-Bench-style scores.

    onevision eval --model PATH --tasks T1,T2 [--include-path DIR] [--limit N] --output DIR
    onevision eval prepare-demo --data onevision-demo/data --output DIR
    onevision eval judge --questions Q.jsonl (--answers A.jsonl | --model PATH) --judge-url URL --judge-model M \\
        --output DIR

Needs the ``eval`` extra (``pip install "onevision[eval]"``). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return int(value) if value >= 1 and value == int(value) else value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model with lmms-eval (benchmarks, the demo's tasks) or a judge (LLaVA-Bench score)",
        description=(
            "Run lmms-eval in-process on the `onevision` model: writes results.json, samples_<task>.jsonl and "
            "table.txt under --output, prints the table, and exits non-zero when the evaluation failed. Tasks are "
            "lmms-eval's own (they need the hub) or local ones under --include-path; `onevision_demo` and "
            "`onevision_demo_mc` (the demo's held-out questions) are prepared from the demo's data offline."
        ),
    )
    p.add_argument("--model", help="checkpoint directory or hub id")
    p.add_argument("--tasks", help="comma-separated lmms-eval task or group names")
    p.add_argument(
        "--include-path", action="append", default=[], metavar="DIR", help="a folder of local task YAMLs"
    )
    p.add_argument("--limit", type=_limit, default=None, help="documents per task (a fraction if < 1)")
    p.add_argument("--output", type=Path, help="results folder")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="default: %(default)s")
    p.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16 or float16")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--max-frames", type=_positive_int, default=None, help="frames per video (default: model's)"
    )
    p.add_argument(
        "--gen-kwargs", default=None, help="generation overrides for every task, e.g. max_new_tokens=64"
    )
    p.add_argument(
        "--demo-data",
        type=Path,
        default=None,
        help="the demo's data folder for onevision_demo tasks (default: found above --model)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=run)

    actions = p.add_subparsers(dest="eval_action", metavar="ACTION")
    prep = actions.add_parser(
        "prepare-demo",
        help="write the onevision_demo tasks with the demo's held-out questions (for lmms-eval --include_path)",
    )
    prep.add_argument("--data", type=Path, required=True, help="the demo's data folder (onevision-demo/data)")
    prep.add_argument("--output", type=Path, required=True, help="task folder to write")
    prep.set_defaults(func=run_prepare)

    judge = actions.add_parser(
        "judge",
        help="LLaVA-Bench relative score: a judge rates candidate vs reference answers (both orders)",
        description=(
            "Rate each candidate answer against the reference answer with an OpenAI-compatible judge (the "
            "LLaVA-Bench rubric), in both orders; report candidate/reference x100 per category. Judgements "
            "(with raw replies) go to <output>/judgements.jsonl as they arrive; a rerun resumes."
        ),
    )
    judge.add_argument(
        "--questions",
        type=Path,
        required=True,
        help="JSONL: question_id, category, question, reference, context (, image)",
    )
    judge.add_argument("--answers", type=Path, default=None, help="JSONL: question_id, answer")
    judge.add_argument(
        "--model",
        dest="judge_candidate",
        default=None,
        help="generate the candidate answers with this checkpoint instead of --answers",
    )
    judge.add_argument("--image-root", type=Path, default=None, help="folder of relative image paths")
    judge.add_argument("--judge-url", required=True, help="OpenAI-compatible base URL, e.g. http://host/v1")
    judge.add_argument("--judge-model", required=True, help="the judge's model name")
    judge.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="variable holding the key (default: %(default)s)"
    )
    judge.add_argument(
        "--concurrency", type=_positive_int, default=4, help="calls in flight (default: %(default)s)"
    )
    judge.add_argument("--retries", type=int, default=5, help="retries per judgement (default: %(default)s)")
    judge.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s, doubled each time")
    judge.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default: %(default)s)")
    judge.add_argument("--output", dest="judge_output", type=Path, required=True, help="results folder")
    judge.set_defaults(func=run_judge)


def run(args: argparse.Namespace) -> int:
    missing = [
        flag
        for flag, value in (("--model", args.model), ("--tasks", args.tasks), ("--output", args.output))
        if not value
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or an action: prepare-demo, judge)")
    from onevision.eval.runner import format_table, run_eval

    _logs_to_stderr()
    results = run_eval(
        args.model,
        args.tasks.split(","),
        args.output,
        include_path=args.include_path,
        limit=args.limit,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        max_frames=args.max_frames,
        gen_kwargs=args.gen_kwargs,
        demo_data=args.demo_data,
        seed=args.seed,
    )
    print(format_table(results))
    print(f"results: {args.output / 'results.json'}", file=sys.stderr)
    return 0


def _logs_to_stderr() -> None:
    """lmms-eval logs its warnings to stdout (loguru, set up when it is imported); keep stdout for the table."""
    import lmms_eval.evaluator  # noqa: F401  (its import configures the logger: reconfigure after it)
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run_prepare(args: argparse.Namespace) -> int:
    from onevision.eval.demo_tasks import prepare_demo_tasks

    out = prepare_demo_tasks(args.data, args.output)
    print(
        f"tasks written to {out} (lmms-eval: --include_path {out} --tasks onevision_demo,onevision_demo_mc)"
    )
    return 0


def run_judge(args: argparse.Namespace) -> int:
    from onevision.eval.judge import (
        JudgeConfig,
        format_scores,
        generate_answers,
        load_answers,
        load_questions,
    )
    from onevision.eval.judge import run_judge as judge

    if (args.answers is None) == (args.judge_candidate is None):
        raise ValueError("pass exactly one of --answers and --model")
    if args.retries < 0 or args.backoff < 0:
        raise ValueError("--retries and --backoff must be >= 0")
    questions = load_questions(args.questions)
    args.judge_output.mkdir(parents=True, exist_ok=True)
    if args.answers is not None:
        answers = load_answers(args.answers)
    else:
        answers = generate_answers(
            args.judge_candidate,
            questions,
            args.judge_output / "answers.jsonl",
            image_root=args.image_root or args.questions.parent,
        )
    config = JudgeConfig(
        url=args.judge_url,
        model=args.judge_model,
        api_key=os.environ.get(args.api_key_env) or None,
        concurrency=args.concurrency,
        retries=args.retries,
        backoff=args.backoff,
        timeout=args.timeout,
    )
    scores = judge(questions, answers, config, args.judge_output)
    print(format_scores(scores))
    return 0
