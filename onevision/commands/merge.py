"""``onevision merge ADAPTER_DIR OUT``: fold a LoRA adapter into its base and write a full native checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a LoRA adapter directory into its base and write a full onevision checkpoint",
        description="Load ADAPTER_DIR's base (found by its recorded path and checked by SHA-256), load the fully "
        "trained modules and the LoRA weights, fold the LoRA weights into the layers they wrap and write OUT "
        "as a native checkpoint (with the adapter's stage.json, so a later stage can start from it). Weights the "
        "adapter did not train are written bit-identical. OUT must be new or empty.",
    )
    p.add_argument("adapter", help="an adapter directory (it holds adapter_config.json)")
    p.add_argument("out", help="destination directory (new or empty)")
    p.set_defaults(func=run)


def merge_adapter(adapter: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the merged model of ``adapter`` to ``out`` (refusing a non-empty ``out``)."""
    from onevision.checkpoints.adapter import is_adapter
    from onevision.checkpoints.native import save_native
    from onevision.errors import CheckpointError
    from onevision.pipeline import load

    src, dst = Path(adapter), Path(out)
    if not is_adapter(src):
        raise CheckpointError(f"{src}: not an adapter directory (no adapter_config.json)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst}: exists and is not an empty directory; choose a new or empty OUT")
    pipe = load(str(src), merge=True)
    save_native(pipe, dst)
    stage = src / "stage.json"
    if stage.is_file():
        info = json.loads(stage.read_text())
        info["merged_from"] = str(src.resolve())
        (dst / "stage.json").write_text(json.dumps(info, indent=2))
    return dst


def run(args: argparse.Namespace) -> int:
    out = merge_adapter(args.adapter, args.out)
    print(f"wrote merged onevision checkpoint to {out}")
    return 0
