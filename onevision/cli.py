"""The ``onevision`` command line: one sub-command per job, each defined in the module that owns the job.

Sub-commands register themselves through :data:`COMMANDS` (name -> "module:function" that adds a parser); modules
are imported lazily so ``onevision tokens`` never pays for importing transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: sub-command name -> "module:register" where ``register(subparsers)`` adds the parser and sets ``func``.
COMMANDS: dict[str, str] = {
    "tokens": "onevision.commands.tokens:register",
    "train": "onevision.commands.train:register",
    "recipes": "onevision.commands.recipes:register",
    "chat": "onevision.commands.chat:register",
    "convert": "onevision.commands.convert:register",
    "demo": "onevision.commands.demo:register",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onevision",
        description="High-resolution eyes for vision-language models (LLaVA AnyRes / OneVision).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, target in COMMANDS.items():
        module_name, func_name = target.split(":")
        try:
            register = getattr(importlib.import_module(module_name), func_name)
        except ImportError as exc:  # an optional dependency is missing: keep the other commands usable
            stub = sub.add_parser(name, help=f"(unavailable: {exc})")
            stub.set_defaults(func=_unavailable(name, exc))
            continue
        register(sub)
    return parser


def _unavailable(name: str, exc: Exception):
    def run(_args: argparse.Namespace) -> int:
        print(f"onevision {name}: unavailable because an import failed: {exc}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:  # typed user errors: one clear line, no traceback
        print(f"onevision {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
