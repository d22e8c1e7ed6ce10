"""``onevision tokens``: print the token layout of images under a strategy, optionally drawing it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens",
        help="show how images are tiled and how many visual tokens they cost",
        description="Print size, canvas, grid and exact token count for each image under a strategy.",
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--strategy", default="anyres_max_9", help="pad, hd, anyres or anyres_max_<N> (default: %(default)s)"
    )
    p.add_argument("--rounding", choices=["hf", "llava"], default=None, help="unpad rounding rule")
    p.add_argument("--tile-size", type=int, default=None, help="encoder tile size in pixels")
    p.add_argument("--patch-size", type=int, default=None, help="encoder patch size in pixels")
    p.add_argument(
        "--draw", metavar="OUT.png", help="write a picture of the layout (one file per image: OUT-N.png)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anyres

    params = {
        k: v
        for k, v in (
            ("rounding", args.rounding),
            ("tile_size", args.tile_size),
            ("patch_size", args.patch_size),
        )
        if v is not None
    }
    strategy = anyres.get_strategy(args.strategy, **params)
    rows = []
    for i, path in enumerate(args.images):
        loaded = anyres.open_image(path, max_pixels=strategy.max_pixels)
        layout = strategy.layout(anyres.ImageSize.from_pil(loaded.image.size))
        rows.append((path, layout))
        if args.draw:
            out = Path(args.draw)
            if len(args.images) > 1:
                out = out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")
            anyres.draw_layout(loaded.image, strategy).save(out)
            print(f"wrote {out}")
    if args.json:
        for path, layout in rows:
            print(json.dumps({"image": str(path), **layout.summary()}))
        return 0
    header = ("image", "size HxW", "canvas HxW", "grid RxC", "tiles", "unpadded", "final grid", "tokens")
    table = [header]
    for path, lay in rows:
        grid = f"{lay.grid.rows}x{lay.grid.cols}" if lay.grid.count else "-"
        unpadded = f"{lay.unpadded.rows}x{lay.unpadded.cols}" if lay.grid.count else "-"
        final = (
            f"{lay.capped.rows}x{lay.capped.cols}" + (" (capped)" if lay.is_capped else "")
            if lay.grid.count
            else "-"
        )
        table.append(
            (
                Path(path).name,
                f"{lay.image_size.height}x{lay.image_size.width}",
                f"{lay.canvas.height}x{lay.canvas.width}",
                grid,
                str(lay.num_tiles),
                unpadded,
                final,
                str(lay.num_tokens),
            )
        )
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    print(
        f"strategy: {strategy.strategy_name} (tile {strategy.tile_size}, patch {strategy.patch_size}, "
        f"{strategy.tokens_per_tile} tokens per tile)"
    )
    for j, r in enumerate(table):
        print("  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    return 0
