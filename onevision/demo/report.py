"""The demo's report folder: loss curves, a layout picture, example predictions and `onevision chat` answers."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any


def _metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(stage_dirs: dict[str, list[tuple[str, Path]]], out: Path) -> Path:
    """Training loss per optimizer step, stages concatenated, one line per variant (a PNG).

    ``stage_dirs`` maps each variant to its ``(stage name, run directory)`` pairs in curriculum order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for variant, stages in stage_dirs.items():
        xs, ys, offset, bounds = [], [], 0, []
        for stage, directory in stages:
            records = [r for r in _metrics(directory / "metrics.jsonl") if "loss" in r]
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


def write_layout(data_root: Path, strategies: list[Any], out: Path) -> Path:
    """How one demo image is seen by each variant's single-image strategy, side by side."""
    from PIL import Image

    import anyres

    record = json.loads((data_root / "eval_single.jsonl").read_text().splitlines()[0])
    image = data_root / "images" / record["image"]
    panels = [anyres.draw_layout(image, strategy, max_side=384) for strategy in strategies]
    gap = 24
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
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

    transcript = []
    for name in ("eval_single.jsonl", "eval_multi.jsonl", "eval_video.jsonl"):
        record = json.loads((data_root / name).read_text().splitlines()[0])  # its own held-out question
        question = record["conversations"][0]["value"].split("\n", 1)[1]  # without the media tags
        expected = record["conversations"][1]["value"]
        if "video" in record:
            media = ["--video", str(data_root / "videos" / record["video"])]
        else:
            images = record["image"] if isinstance(record["image"], list) else [record["image"]]
            media = [arg for p in images for arg in ("--image", str(data_root / "images" / p))]
        command = ["chat", "--model", str(model_dir), "--max-new-tokens", "4", *media, question]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(command)
        answer = buffer.getvalue().strip()
        transcript.append(f"$ onevision {' '.join(command)}\n{answer}\n(exit {code}; expected: {expected})\n")
        print(f"$ onevision {' '.join(command)}\n  -> {answer}   (expected: {expected})", flush=True)
    out.write_text("\n".join(transcript))
    return out
