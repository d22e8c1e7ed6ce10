"""``onevision recipes``: list the shipped training recipes (also from a wheel install)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recipes",
        help="list the shipped training recipes",
        description="List the training recipes shipped with onevision (name and description).",
    )
    p.add_argument("--paths", action="store_true", help="print the recipe file paths too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.train.recipe import list_recipes, recipes_root

    root = recipes_root()
    rows = list_recipes()
    width = max((len(n) for n, _ in rows), default=0)
    print(f"recipes in {root} (run with: onevision train NAME [key=value ...])")
    for name, desc in rows:
        print(f"  {name.ljust(width)}  {desc}")
        if args.paths:
            print(f"  {' ' * width}  {root / (name + '.yaml')}")
    return 0
