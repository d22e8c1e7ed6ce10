"""``onevision plan RECIPE [key=value ...] [--gpus 8 --gpu a100-80g]``: tokens, FLOPs, time and memory per GPU of
a recipe before it is launched (formulas in :mod:`onevision.train.plan`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from onevision.train.plan import GPUS

    p = sub.add_parser(
        "plan",
        help="estimate a recipe's tokens, FLOPs, time and memory per GPU",
        description="Tokens per epoch by modality, training FLOPs, time at a stated MFU and memory per GPU "
        "(ZeRO-2, ZeRO-3, LoRA) of a recipe, from a sample of its data or a data profile.",
    )
    p.add_argument("recipe", help="a recipe file, or a shipped recipe name (see `onevision recipes`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.epochs=2")
    p.add_argument("--gpus", type=int, default=8, help="number of GPUs (default: %(default)s)")
    p.add_argument("--gpu", choices=sorted(GPUS), default="a100-80g", help="GPU model (default: %(default)s)")
    p.add_argument(
        "--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default: %(default)s)"
    )
    p.add_argument(
        "--profile", help="a data-profile YAML (counts and mean lengths) instead of reading the data"
    )
    p.add_argument(
        "--sample", type=int, default=2000, help="records measured through the planner (default: %(default)s)"
    )
    p.add_argument(
        "--lora-rank", type=int, default=128, help="LoRA rank of the LoRA rows (default: %(default)s)"
    )
    p.add_argument(
        "--compare-hours", type=float, help="a published wall-clock time to print the estimate against"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.train.plan import format_plan, plan_recipe
    from onevision.train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    plan = plan_recipe(
        recipe,
        gpus=args.gpus,
        gpu=args.gpu,
        mfu=args.mfu,
        profile=args.profile,
        sample=args.sample,
        lora_rank=args.lora_rank,
    )
    print(format_plan(plan))
    if args.compare_hours:
        hours = plan.seconds / 3600
        implied = plan.mfu * hours / args.compare_hours
        print(
            f"\npublished: {args.compare_hours:g} h; estimate: {hours:.1f} h ({hours / args.compare_hours:.2f}x); "
            f"the published time implies {implied:.0%} MFU"
        )
    return 0
