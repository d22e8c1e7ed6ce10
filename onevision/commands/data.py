"""``onevision data``: ``pack`` records into shards with a length index, ``check`` a source, ``stats`` a recipe's
token budget, ``generate`` LLaVA-style instruction data through an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="pack, check, measure and generate training data", description=__doc__)
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION")
    cmds.required = True

    def source_options(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "src", help="a LLaVA .json/.jsonl file, a mixture .yaml (or, for check, a shard directory)"
        )
        q.add_argument("--image-root", help="directory the records' image paths are relative to")
        q.add_argument("--video-root", help="directory the records' video paths are relative to")
        recipe_options(q)

    def recipe_options(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--recipe",
            required=True,
            help="the training recipe whose visual policy and tokenizer define lengths",
        )
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override")

    q = cmds.add_parser("pack", help="records + media -> WebDataset tar shards and index.jsonl")
    source_options(q)
    q.add_argument("--out", required=True, help="a new or empty directory for the shards and the index")
    q.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: %(default)s)")
    q.set_defaults(func=run_pack)

    q = cmds.add_parser(
        "check", help="what training would keep and drop, and why; shard sets are scanned too"
    )
    source_options(q)
    q.set_defaults(func=run_check)

    q = cmds.add_parser(
        "stats", help="the token budget of a recipe's data (a mixture) per source and modality"
    )
    recipe_options(q)
    q.set_defaults(func=run_stats)

    q = cmds.add_parser("generate", help="GPT-assisted instruction data from COCO captions (+ boxes)")
    q.add_argument("--captions", required=True, help="COCO captions JSON (images + caption annotations)")
    q.add_argument("--instances", help="COCO instances JSON (boxes and categories)")
    q.add_argument("--kinds", default="conversation,detail,complex", help="comma list (default: %(default)s)")
    q.add_argument(
        "--api-base", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    q.add_argument("--model", required=True, help="model name at the endpoint")
    q.add_argument("--out", required=True, help="output .jsonl (appended; done ids are skipped)")
    q.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)")
    q.add_argument("--limit", type=int, help="only the first N captioned images")
    q.add_argument("--retries", type=int, default=5, help="retries on 429/5xx (default: %(default)s)")
    q.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (doubles)")
    q.add_argument("--seed", type=int, default=0, help="seed of the instruction draw")
    q.set_defaults(func=run_generate)


def _recipe(args: argparse.Namespace, path: str | None = None):
    from onevision.train.recipe import load_recipe

    overrides = list(args.set)
    if path is not None:
        overrides.append(f"data.path={path}")
        overrides += [
            f"data.{k}_root={getattr(args, k + '_root')}"
            for k in ("image", "video")
            if getattr(args, k + "_root")
        ]
    return load_recipe(args.recipe, overrides)


def _encoder(recipe):
    from onevision.train.build import build_sample_encoder

    return build_sample_encoder(recipe)  # the model's structure and processor: no weights are read


def run_pack(args: argparse.Namespace) -> int:
    from onevision.data.pack import pack

    recipe = _recipe(args, args.src)
    result = pack(
        recipe, _encoder(recipe), args.out, shard_size=args.shard_size, progress=sys.stderr.isatty()
    )
    size = sum(s.bytes for s in result.shards)
    print(
        f"{result.stats.summary()}\n{len(result.shards)} shards ({size:,} bytes) and index.jsonl in {result.out}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from onevision.data.check import check_report

    recipe = _recipe(args, args.src)
    text, clean = check_report(recipe, _encoder(recipe))
    print(text)
    return 0 if clean else 1


def run_stats(args: argparse.Namespace) -> int:
    from onevision.data.check import stats_report

    recipe = _recipe(args)
    print(stats_report(recipe, _encoder(recipe)))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from onevision.data.generate import generate
    from onevision.data.instruct import KINDS, read_contexts
    from onevision.errors import DataError

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise DataError(
            f"--kinds: unknown kind {unknown[0] if unknown else ''!r}; choose from {', '.join(KINDS)}"
        )
    contexts = read_contexts(args.captions, args.instances)
    if args.limit is not None:
        contexts = contexts[: args.limit]
    result = generate(
        contexts, kinds, args.out, api_base=args.api_base, model=args.model, concurrency=args.concurrency,
        retries=args.retries, backoff=args.backoff, seed=args.seed,
    )  # fmt: skip
    print(f"{result.summary()} -> {args.out}")
    return 0
