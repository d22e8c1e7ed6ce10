"""``onevision demo``: train a tiny high-resolution VLM through the whole curriculum on CPU and report."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tiny VLM (AnyRes-Max vs base resolution) through stages 1 -> 1.5 -> 2-SI -> 2-OV on CPU",
        description=(
            "Generate a synthetic dataset, train the same tiny model twice through the LLaVA-OneVision curriculum "
            "(AnyRes-Max single images, and base resolution only), evaluate on held-out questions, print the "
            "accuracy table and write a report folder (metrics, loss curves, layout picture, examples)."
        ),
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("onevision-demo"),
        help="work and report folder (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="data and training seed (default: %(default)s)")
    p.add_argument(
        "--quick", action="store_true", help="a smaller, shorter run (about 3 minutes; used by the tests)"
    )
    p.add_argument("--no-chat", action="store_true", help="skip the `onevision chat` examples at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.demo.run import DemoOptions
    from onevision.demo.run import run as run_demo

    run_demo(
        DemoOptions(output=args.output, seed=args.seed, quick=args.quick, chat_examples=not args.no_chat)
    )
    return 0
