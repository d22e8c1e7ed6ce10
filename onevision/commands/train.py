"""``onevision train RECIPE [key=value ...]``: run (or ``--dry-run``) one training stage.

With ``engine.num_processes > 1`` the command relaunches itself under torchrun with an environment that really
runs in parallel (also on CPU; see ``docs/training.md``); inside a launched worker it trains directly.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run a training recipe (one curriculum stage)",
        description="Run one training stage from a YAML recipe; override any field with key.sub=value.",
    )
    p.add_argument("recipe", help="a recipe file, or a shipped recipe name (see `onevision recipes`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=2e-5")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved recipe, the trainable-parameter table and the token budget; no training",
    )
    p.add_argument(
        "--no-model", action="store_true", help="with --dry-run: do not build the model (no table)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.train.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:  # an invalid recipe exits non-zero (load_recipe above raised, or the model builder did)
        from onevision.train.dryrun import dry_run_report

        text, error = dry_run_report(recipe, build=not args.no_model)
        print(text, flush=True)
        if error is not None:
            raise error
        return 0
    n = recipe.engine.num_processes
    if n > 1 and "LOCAL_RANK" not in os.environ:
        from onevision.train.launch import launch_training

        print(f"[onevision] launching {n} processes ({recipe.engine.backend})", file=sys.stderr, flush=True)
        return launch_training(
            recipe.source, args.overrides, num_processes=n, backend=recipe.engine.backend
        ).returncode
    from onevision.train.engine import train
    from onevision.train.worker import _shutdown

    result = train(recipe)
    _shutdown()
    print(f"[onevision] {recipe.name}: {result.steps} steps, model written to {result.output_dir}")
    return 0
