"""Worker entry point for launched processes: ``python -m onevision.train.worker RECIPE [key=value ...]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from onevision.train.engine import train
    from onevision.train.recipe import load_recipe

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m onevision.train.worker RECIPE [key=value ...]", file=sys.stderr)
        return 2
    recipe = load_recipe(argv[0], argv[1:])
    stop_after = None
    import os

    if os.environ.get(
        "ONEVISION_STOP_AFTER"
    ):  # tests: end the loop after N steps without finishing the stage
        stop_after = int(os.environ["ONEVISION_STOP_AFTER"])
    train(recipe, stop_after=stop_after)
    _shutdown()
    return 0


def _shutdown() -> None:
    """Barrier + destroy the process group (avoids a rare abort at interpreter exit)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass


if __name__ == "__main__":
    sys.exit(main())
