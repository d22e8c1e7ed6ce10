"""``onevision convert SRC DST --to {onevision,hf}``: convert between checkpoint formats."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (onevision, HF llava_onevision or original LLaVA-NeXT) to onevision or HF",
        description="Load SRC (format detected from its config.json unless --from is given) and write DST.",
    )
    p.add_argument("src", help="source checkpoint directory or hub id")
    p.add_argument("dst", help="destination directory")
    p.add_argument(
        "--to", choices=["onevision", "hf"], default="onevision", help="target format (default: %(default)s)"
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
        "--force", action="store_true", help="export to HF even if token counts may differ (llava rounding)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
