"""``onevision convert SRC DST --to {onevision,hf,original}``: convert between checkpoint formats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (onevision, HF llava_onevision or original LLaVA-NeXT) to onevision, HF or original",
        description="Load SRC (format detected from its config.json unless --from is given) and write DST. "
        "DST must be new or empty unless --overwrite is given; even then only the files the export writes are "
        "replaced (config, weights and their shards, tokenizer and processor files): nothing else is deleted.",
    )
    p.add_argument("src", help="source checkpoint directory or hub id")
    p.add_argument("dst", help="destination directory")
    p.add_argument(
        "--to",
        choices=["onevision", "hf", "original"],
        default="onevision",
        help="target format (default: %(default)s)",
    )
    p.add_argument(
        "--from",
        dest="src_format",
        choices=["auto", "onevision", "hf", "original"],
        default="auto",
        help="source format (default: detect)",
    )
    p.add_argument(
        "--rounding",
        choices=["llava", "hf"],
        default=None,
        help="unpad rounding for original checkpoints (default: llava, the reference rule)",
    )
    p.add_argument(
        "--vision-config",
        metavar="JSON",
        default=None,
        help="vision tower config (a config.json) for original checkpoints when mm_vision_tower is unreachable",
    )
    p.add_argument("--template", default=None, help="chat template to record (default: by LLM family)")
    p.add_argument(
        "--force",
        action="store_true",
        help="export to HF even where token counts may differ: llava rounding (transformers, vLLM, SGLang), or "
        "an anyres_max_N cap with N != 9 (vLLM and SGLang hard-code 9)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty DST, replacing only the files the export writes",
    )
    p.set_defaults(func=run)


def check_destination(src: str, dst: str, *, overwrite: bool) -> None:
    """Refuse a DST that is a file, or a non-empty directory without ``--overwrite`` (before loading SRC)."""
    from onevision.errors import CheckpointError

    d = Path(dst)
    if d.resolve() == Path(src).resolve():
        raise CheckpointError("source and destination are the same directory")
    if d.exists() and not d.is_dir():
        raise CheckpointError(f"{dst}: exists and is not a directory; choose a directory for DST")
    if not overwrite and d.is_dir() and any(d.iterdir()):
        raise CheckpointError(
            f"{dst}: directory is not empty; choose a new or empty DST, or pass --overwrite to replace the "
            "files the export writes (other files are kept)"
        )


def run(args: argparse.Namespace) -> int:
    check_destination(args.src, args.dst, overwrite=args.overwrite)
    from onevision.checkpoints import convert

    kwargs = {}
    if args.template:
        kwargs["template"] = args.template
    if args.src_format == "original" or args.rounding or args.vision_config:
        if args.rounding:
            kwargs["rounding"] = args.rounding
        if args.vision_config:
            with open(args.vision_config) as f:
                data = json.load(f)
            kwargs["vision_config"] = data.get("vision_config", data)
    out = convert(args.src, args.dst, to=args.to, src_format=args.src_format, force=args.force, **kwargs)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0
