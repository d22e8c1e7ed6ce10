"""Observability: a JSONL metrics log, a tqdm progress bar, optional TensorBoard (main process only)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any


def tensorboard_available() -> bool:
    return (
        importlib.util.find_spec("tensorboard") is not None
        or importlib.util.find_spec("tensorboardX") is not None
    )


TENSORBOARD_MISSING = (
    "logging.tensorboard is true but the tensorboard package is not installed; install it with "
    "`pip install 'onevision[train]'` (or `pip install tensorboard`), or set logging.tensorboard=false"
)


class MetricsLog:
    """Appends one JSON object per optimizer step to ``path``. :meth:`truncate_after` drops records past a resumed
    step, so an interrupted-and-resumed run leaves the same log as an uninterrupted one."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and _step(line) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        os.replace(tmp, self.path)

    def log(self, record: dict[str, Any]) -> None:
        if not self.path:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        p = Path(path)
        return (
            [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
        )


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62


class Progress:
    """A tqdm bar over optimizer steps showing loss, the LR of each parameter group, tokens/s and the ETA."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, desc: str = "train"):
        self.bar = None
        self.start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, loss: float, lrs: dict[str, float], tokens_per_s: float) -> None:
        if self.bar is None:
            return
        lr_text = " ".join(f"{k}={v:.2e}" for k, v in lrs.items())
        self.bar.set_postfix_str(f"loss={loss:.4f} tok/s={tokens_per_s:,.0f} lr[{lr_text}]", refresh=False)
        self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
