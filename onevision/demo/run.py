"""``onevision demo``: data -> curriculum (1 -> 1.5 -> 2-SI -> 2-OV) -> evaluation -> report, on CPU.

Two models of the same size are trained through the same four stages on the same data: one sees single images
through AnyRes-Max (``anyres_max_9`` on 64 px tiles), the other at base resolution only (``pad``: one 64 px tile).
Both then answer held-out questions; the table shows accuracy per modality and question type next to chance.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onevision.demo.data import ANSWERS, DemoDataSpec, corpus, eval_question, generate, iter_eval

STAGES = ("stage1", "stage1_5", "stage2_si", "stage2_ov")
#: which mixture of the generated data each stage trains on
STAGE_DATA = {
    "stage1": "stage1.yaml",
    "stage1_5": "stage1.yaml",  # detailed captions (they name the pattern) at anyres resolution
    "stage2_si": "single_image.yaml",
    "stage2_ov": "onevision.yaml",
}
VARIANTS = {"anyres_max_9": [], "pad": ["visual.image.strategy=pad", "visual.image.params={}"]}
#: stages that do not depend on the variant (trained once, shared by both models)
SHARED_STAGES = ("stage1",)
MODALITY_OF = {"single": "single image", "multi": "multi-image", "video": "video"}


@dataclass(frozen=True)
class DemoOptions:
    """What one ``onevision demo`` run does."""

    output: Path = Path("onevision-demo")
    seed: int = 0
    quick: bool = False
    epochs: dict[str, int] = field(default_factory=dict)  # per stage; defaults below
    variants: tuple[str, ...] = ("anyres_max_9", "pad")
    chat_examples: bool = True

    def stage_epochs(self, stage: str) -> int:
        default = {"stage1": 1, "stage1_5": 3, "stage2_si": 4, "stage2_ov": 2}
        if self.quick:
            default = {"stage1": 1, "stage1_5": 2, "stage2_si": 3, "stage2_ov": 2}
        return self.epochs.get(stage, default[stage])

    @property
    def data_spec(self) -> DemoDataSpec:
        return DemoDataSpec.quick(self.seed) if self.quick else DemoDataSpec(seed=self.seed)


def stage_dir(output: Path, variant: str, stage: str) -> Path:
    """Where ``variant``'s ``stage`` is trained (shared stages live once under ``runs/``)."""
    return output / "runs" / (stage if stage in SHARED_STAGES else f"{variant}/{stage}")


def init_model(directory: Path, data_root: Path, opts: DemoOptions) -> Path:
    """The tiny model with random weights and a tokenizer trained on the demo's text (skipped if it exists)."""
    import torch

    from onevision.pipeline import from_config
    from onevision.testing import tiny_config, train_tokenizer
    from onevision.train import load_recipe

    if (directory / "stage.json").is_file():
        return directory
    visual = load_recipe("demo/stage1.yaml").visual  # the encoder geometry the recipes declare
    texts = corpus(data_root) + [a for answers in ANSWERS.values() for a in answers]
    tokenizer = train_tokenizer(texts, vocab_size=384)
    torch.manual_seed(opts.seed)
    config = tiny_config(
        vocab_size=len(tokenizer),
        image_size=visual.tile_size,
        patch_size=visual.patch_size,
        vision_width=64,
        llm_width=128,
        llm_layers=2,
    )
    pipe = from_config(config, tokenizer=tokenizer)
    pipe.save(str(directory))
    # the engine only starts from finished stages: mark the random init as one
    (directory / "stage.json").write_text(
        json.dumps({"name": "demo-random", "stage": "init", "seed": opts.seed})
    )
    return directory


def train_stage(
    stage: str,
    variant: str,
    init_dir: Path,
    out_dir: Path,
    data_root: Path,
    opts: DemoOptions,
) -> Path:
    """Run one curriculum stage through the real recipe and engine (skipped if already finished)."""
    from onevision.train import load_recipe, train

    if (out_dir / "stage.json").is_file():
        return out_dir
    overrides = [
        f"output_dir={out_dir}",
        f"init_from={init_dir}",
        f"seed={opts.seed}",
        f"data.path={data_root / STAGE_DATA[stage]}",
        f"data.image_root={data_root / 'images'}",
        f"data.video_root={data_root / 'videos'}",
        f"train.epochs={opts.stage_epochs(stage)}",
    ]
    if stage not in SHARED_STAGES:
        overrides += VARIANTS[variant]
    recipe = load_recipe(f"demo/{stage}.yaml", overrides)
    train(recipe)
    return out_dir


def evaluate(model_dir: Path, data_root: Path, batch_size: int = 16) -> list[dict[str, Any]]:
    """Greedy answers to every held-out question; one row per question with the prediction."""
    import onevision

    pipe = onevision.load(str(model_dir))
    rows = []
    records = list(iter_eval(data_root))
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        requests = []
        for r in chunk:
            question = eval_question(r)
            if "video" in r:
                requests.append({"prompt": question, "videos": [str(data_root / "videos" / r["video"])]})
            else:
                images = r["image"] if isinstance(r["image"], list) else [r["image"]]
                requests.append(
                    {"prompt": question, "images": [str(data_root / "images" / i) for i in images]}
                )
        answers = pipe.batch(requests, batch_size=batch_size, max_new_tokens=4)
        for r, answer in zip(chunk, answers):
            expected = r["conversations"][1]["value"]
            predicted = (
                (answer or "").strip().split()[0].strip(".,!").lower() if (answer or "").strip() else ""
            )
            modality = "video" if "video" in r else ("multi" if isinstance(r["image"], list) else "single")
            rows.append(
                {
                    "id": r["id"],
                    "modality": modality,
                    "question_type": r["question_type"],
                    "expected": expected,
                    "predicted": predicted,
                    "raw": answer,
                    "correct": predicted == expected,
                }
            )
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Accuracy per (modality, detail|coarse) and the chance level of the same questions."""
    from onevision.demo.data import QUESTIONS

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        kind = QUESTIONS[row["question_type"]][0]
        groups[f"{MODALITY_OF[row['modality']]} / {kind}"].append(row)
    out = {}
    for key in sorted(groups):
        items = groups[key]
        out[key] = {
            "n": len(items),
            "accuracy": sum(r["correct"] for r in items) / len(items),
            "chance": sum(1 / len(ANSWERS[r["question_type"]]) for r in items) / len(items),
        }
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    variants = list(results)
    keys = sorted({k for v in results.values() for k in v})
    header = (
        f"{'modality / question':<28}{'n':>5}" + "".join(f"{v:>16}" for v in variants) + f"{'chance':>10}"
    )
    lines = [header, "-" * len(header)]
    for key in keys:
        first = next(results[v][key] for v in variants if key in results[v])
        cells = "".join(
            f"{results[v][key]['accuracy'] * 100:>15.1f}%" if key in results[v] else f"{'-':>16}"
            for v in variants
        )
        lines.append(f"{key:<28}{first['n']:>5}{cells}{first['chance'] * 100:>9.1f}%")
    return "\n".join(lines)


def variant_stages() -> tuple[str, ...]:
    """The stages each variant trains for itself (after the shared ones)."""
    return tuple(s for s in STAGES if s not in SHARED_STAGES)


def train_and_evaluate(
    variant: str, opts: DemoOptions, data_root: Path, start: Path
) -> tuple[Path, list[dict[str, Any]], float]:
    """One variant's own stages from ``start``, then its held-out answers: ``(final model, rows, seconds)``."""
    t0 = time.time()
    previous = start
    for stage in variant_stages():
        print(f"[demo] {variant}: {stage}", flush=True)
        previous = train_stage(
            stage, variant, previous, stage_dir(Path(opts.output), variant, stage), data_root, opts
        )
    rows = evaluate(previous, data_root)
    seconds = time.time() - t0
    print(f"[demo] {variant}: trained and evaluated in {seconds:.0f}s", flush=True)
    return previous, rows, seconds


def run(opts: DemoOptions) -> dict[str, Any]:
    """The whole demo; returns the metrics written to ``<output>/report/metrics.json``."""
    t0 = time.time()
    out = Path(opts.output)
    data_root = generate(out / "data", opts.data_spec)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    print(f"[demo] data ready in {data_root} ({time.time() - t0:.0f}s)", flush=True)
    previous = init_model(out / "runs" / "random", data_root, opts)
    for stage in SHARED_STAGES:
        print(f"[demo] {stage} (shared by {', '.join(opts.variants)})", flush=True)
        previous = train_stage(stage, "", previous, stage_dir(out, "", stage), data_root, opts)
    results, finals, timings = {}, {}, {}
    for variant in opts.variants:
        # the two variants run one after the other: on 2 cores, side-by-side processes measured no faster
        finals[variant], rows, timings[variant] = train_and_evaluate(variant, opts, data_root, previous)
        (report / f"predictions_{variant}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        results[variant] = summarise(rows)
    table = format_table(results)
    metrics = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "data": asdict(opts.data_spec),
        "results": results,
        "seconds": {**timings, "total": time.time() - t0},
        "models": {k: str(v) for k, v in finals.items()},
    }
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (report / "results.md").write_text("```\n" + table + "\n```\n")
    from onevision.demo.report import plot_losses, write_examples, write_layout

    dirs = {v: [(s, stage_dir(out, v, s)) for s in STAGES] for v in opts.variants}
    plot_losses(dirs, report / "loss_curves.png")
    from onevision.train import load_recipe

    strategies = [load_recipe("demo/stage2_si.yaml", VARIANTS[v]).image_strategy() for v in opts.variants]
    write_layout(data_root, strategies, report / "layout.png")
    write_examples(results, data_root, report)
    print("\n" + table + "\n", flush=True)
    if opts.chat_examples:
        from onevision.demo.report import chat_examples

        chat_examples(finals[opts.variants[0]], data_root, report / "chat_examples.txt")
    print(f"[demo] report written to {report} ({time.time() - t0:.0f}s in all)", flush=True)
    return metrics
