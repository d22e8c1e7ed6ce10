"""The ``onevision`` command line: one sub-command per job, each defined in the module that owns the job.

Sub-commands register themselves through :data:`COMMANDS` (name -> "module:function" that adds a parser); modules
are imported lazily so ``onevision tokens`` never pays for importing transformers.

Exit status: 0 success; 1 a command failed (an unexpected error, or some ``chat --batch`` requests failed);
2 bad input (argparse errors and :data:`onevision.errors.USER_ERRORS`: every :class:`~onevision.errors.OneVisionError`,
``ValueError`` and ``FileNotFoundError``); 130 interrupted. Every error is one line on stderr; ``--debug`` (before or after the command) adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from onevision.errors import USER_ERRORS

#: sub-command name -> "module:register" where ``register(subparsers)`` adds the parser and sets ``func``.
COMMANDS: dict[str, str] = {
    "tokens": "onevision.commands.tokens:register",
    "train": "onevision.commands.train:register",
    "plan": "onevision.commands.plan:register",
    "recipes": "onevision.commands.recipes:register",
    "web": "onevision.commands.web:register",
    "chat": "onevision.commands.chat:register",
    "convert": "onevision.commands.convert:register",
    "merge": "onevision.commands.merge:register",
    "demo": "onevision.commands.demo:register",
    "serve": "onevision.commands.serve:register",
    "eval": "onevision.commands.eval:register",
    "data": "onevision.commands.data:register",
}


DEBUG_HELP = "on an error, print the full traceback too"


def version() -> str:
    """The installed distribution's version (package metadata), else ``onevision.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("onevision")
    except PackageNotFoundError:
        from onevision import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onevision",
        description="High-resolution eyes for vision-language models (LLaVA AnyRes / OneVision).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
    for (
        command
    ) in sub.choices.values():  # `onevision chat ... --debug` works as well as `onevision --debug chat`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
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
    except USER_ERRORS as exc:  # typed user errors: one clear line, no traceback
        _traceback(args)
        print(f"onevision {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else is a bug or an environment problem: still one line, exit 1
        _traceback(args)
        message = " ".join(str(exc).split())
        print(
            f"onevision {args.command}: error: {type(exc).__name__}" + (f": {message}" if message else ""),
            file=sys.stderr,
        )
        if not args.debug:
            print(f"onevision {args.command}: run with --debug for the traceback", file=sys.stderr)
        return 1


def _traceback(args: argparse.Namespace) -> None:
    """With ``--debug``: the traceback of the exception being handled, before its one-line summary."""
    if args.debug:
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
