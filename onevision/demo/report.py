"""The demo's report folder: loss curves, a layout picture, example predictions and `onevision chat` answers."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(runs: Path, variants: Sequence[str], stages: Sequence[str], out: Path) -> Path:
    """Training loss per optimizer step, stages concatenated, one line per variant (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for variant in variants:
        xs, ys, offset, bounds = [], [], 0, []
        for stage in stages:
            records = [r for r in _metrics(runs / variant / stage / "metrics.jsonl") if "loss" in r]
            for r in records:
                xs.append(offset + int(r.get("step", 0)))
                ys.append(float(r["loss"]))
            offset = xs[-1] if xs else offset
            bounds.append((offset, stage))
        ax.plot(xs, ys, label=variant, linewidth=1.2)
    for x, stage in bounds:
        ax.axvline(x, color="grey", linewidth=0.6, linestyle=":")
        ax.text(x, ax.get_ylim()[1], f" end {stage}", fontsize=7, va="top", rotation=90, color="grey")
    ax.set_xlabel("optimizer step (stages 1 -> 1.5 -> 2-SI -> 2-OV)")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("onevision demo: the same tiny VLM trained with AnyRes-Max vs base resolution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_layout(data_root: Path, out: Path) -> Path:
    """How one demo image is seen by AnyRes-Max (tiles) and at base resolution (one squashed tile)."""
    from PIL import Image

    import anyres

    record = json.loads((data_root / "eval_single.jsonl").read_text().splitlines()[0])
    image = data_root / "images" / record["image"]
    tiled = anyres.draw_layout(
        image, anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8), max_side=384
    )
    base = anyres.draw_layout(image, anyres.get_strategy("pad", tile_size=64, patch_size=8), max_side=384)
    canvas = Image.new("RGB", (tiled.width + base.width + 24, max(tiled.height, base.height)), "white")
    canvas.paste(tiled, (0, 0))
    canvas.paste(base, (tiled.width + 24, 0))
    canvas.save(out)
    return out


def write_examples(results: dict[str, Any], data_root: Path, report: Path, per_type: int = 2) -> Path:
    """A few held-out questions with every variant's answer, as Markdown."""
    predictions = {
        variant: {
            r["id"]: r
            for r in map(json.loads, (report / f"predictions_{variant}.jsonl").read_text().splitlines())
        }
        for variant in results
    }
    first = next(iter(predictions.values()))
    seen: dict[str, int] = {}
    lines = [
        "| question | expected | " + " | ".join(predictions) + " |",
        "|---|---|" + "---|" * len(predictions),
    ]
    for rid, row in first.items():
        if seen.get(row["question_type"], 0) >= per_type:
            continue
        seen[row["question_type"]] = seen.get(row["question_type"], 0) + 1
        answers = " | ".join(repr(predictions[v][rid]["raw"]) for v in predictions)
        lines.append(f"| {rid} ({row['question_type']}) | {row['expected']} | {answers} |")
    out = report / "examples.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def chat_examples(model_dir: Path, data_root: Path, out: Path) -> Path:
    """Answer one image, two images and one video through the real ``onevision chat`` command."""
    from onevision.cli import main

    single = json.loads((data_root / "eval_single.jsonl").read_text().splitlines()[0])
    multi = json.loads((data_root / "eval_multi.jsonl").read_text().splitlines()[0])
    clip = json.loads((data_root / "eval_video.jsonl").read_text().splitlines()[0])
    calls = [
        ["--image", str(data_root / "images" / single["image"]), "What color is the big shape?"],
        [
            *[arg for p in multi["image"][:2] for arg in ("--image", str(data_root / "images" / p))],
            "What color is the shape in the second image?",
        ],
        ["--video", str(data_root / "videos" / clip["video"]), "Which color appears first?"],
    ]
    transcript = []
    for args in calls:
        command = ["chat", "--model", str(model_dir), "--max-new-tokens", "4", *args]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(command)
        answer = buffer.getvalue().strip()
        transcript.append(f"$ onevision {' '.join(command)}\n{answer}\n(exit {code})\n")
        print(f"$ onevision {' '.join(command)}\n  -> {answer}", flush=True)
    out.write_text("\n".join(transcript))
    return out
