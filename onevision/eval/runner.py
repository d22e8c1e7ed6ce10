"""``onevision eval``: lmms-eval in-process (``simple_evaluate``) on the ``onevision`` model, results on disk.

Writes ``<output>/results.json`` (lmms-eval's results dictionary: metrics per task and group, configs, sample
counts), ``<output>/samples_<task>.jsonl`` (every logged sample: document, arguments, responses, metrics) and
``<output>/table.txt`` (the table printed). A run that fails raises; a run that returns no results raises
:class:`EvaluationFailed`: the command exits non-zero either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_PREFIX = "onevision_demo"


class EvaluationFailed(RuntimeError):
    """lmms-eval returned without results (or they could not be written)."""


def run_eval(
    model: str,
    tasks: Sequence[str],
    output: str | os.PathLike,
    *,
    include_path: Sequence[str | os.PathLike] = (),
    limit: float | None = None,
    batch_size: int = 1,
    dtype: str = "auto",
    device: str | None = None,
    max_frames: int | None = None,
    gen_kwargs: str | None = None,
    demo_data: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate checkpoint ``model`` on lmms-eval ``tasks``; returns lmms-eval's results (samples removed)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in tasks if t.strip()]
    if not tasks:
        raise ValueError("no tasks given (--tasks T1,T2)")
    include = [str(Path(p)) for p in include_path]
    for p in include:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"--include-path {p}: no such folder")
    if any(t.startswith(DEMO_PREFIX) for t in tasks):
        include.append(str(_demo_tasks(model, output, demo_data)))

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from onevision.eval.lmms_model import OneVisionLMM

    manager = TaskManager("WARNING", include_path=include or None, model_name="onevision")
    matched = manager.match_tasks(tasks)
    missing = [t for t in tasks if t not in matched and "*" not in t]
    if missing:
        raise ValueError(f"unknown task(s) {missing} (lmms-eval tasks, or local tasks under --include-path)")
    lm = OneVisionLMM(
        pretrained=model, dtype=dtype, device=device, batch_size=batch_size, max_frames=max_frames, seed=seed
    )
    results = simple_evaluate(
        model=lm,
        tasks=matched,
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        gen_kwargs=gen_kwargs,
        task_manager=manager,
        verbosity="WARNING",
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        bootstrap_iters=0,
    )
    if not results or "results" not in results:
        raise EvaluationFailed("lmms-eval returned no results")
    write_results(results, output)
    table = format_table(results)
    (output / "table.txt").write_text(table + "\n")
    if not (output / "results.json").is_file():
        raise EvaluationFailed(f"{output / 'results.json'} was not written")
    return results


def write_results(results: dict[str, Any], output: Path) -> None:
    """``results.json`` (without samples) and one ``samples_<task>.jsonl`` per task."""
    from lmms_eval.utils import handle_non_serializable

    samples = results.pop("samples", None) or {}
    (output / "results.json").write_text(json.dumps(results, indent=2, default=handle_non_serializable))
    for task, rows in samples.items():
        with open(output / f"samples_{task}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=handle_non_serializable) + "\n")


def metric_rows(results: dict[str, Any]) -> list[tuple[str, int | None, dict[str, float]]]:
    """``(label, samples, {metric: value})`` per group and task: a group first, then its tasks (by alias)."""
    counts = results.get("n-samples", {})
    groups = results.get("groups") or {}
    subtasks = results.get("group_subtasks") or {}

    def metrics(entry: dict[str, Any]) -> dict[str, float]:
        out = {}
        for key, value in entry.items():
            if (
                key == "alias"
                or "_stderr" in key
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            out[key.split(",")[0]] = float(value)
        return out

    def n_of(name: str) -> int | None:
        if name in counts:
            return counts[name].get("effective")
        if name in subtasks:
            return sum(n_of(t) or 0 for t in subtasks[name])
        return None

    rows, seen = [], set()

    def add(name: str, depth: int) -> None:
        seen.add(name)
        entry = groups.get(name) or results.get("results", {}).get(name, {})
        alias = str(entry.get("alias", name)).strip().lstrip("- ").strip() or name
        rows.append(("  " * depth + (alias if depth else name), n_of(name), metrics(entry)))
        for child in subtasks.get(name, []):
            add(child, depth + 1)

    children = {t for ts in subtasks.values() for t in ts}
    for name in subtasks:
        if name not in children:
            add(name, 0)
    for name in results.get("results", {}):
        if name not in seen:
            add(name, 0)
    return rows


def format_table(results: dict[str, Any]) -> str:
    """One row per group and task, one column per metric (lmms-eval's values, not scaled)."""
    rows = metric_rows(results)
    names = sorted({m for _, _, values in rows for m in values})
    width = max([len("task")] + [len(label) for label, _, _ in rows]) + 2
    header = f"{'task':<{width}}{'n':>6}" + "".join(f"{m:>14}" for m in names)
    lines = [header, "-" * len(header)]
    for label, n, values in rows:
        cells = "".join(f"{values[m]:>14.4f}" if m in values else f"{'-':>14}" for m in names)
        lines.append(f"{label:<{width}}{n if n is not None else '-':>6}" + cells)
    return "\n".join(lines)


def _demo_tasks(model: str, output: Path, demo_data: str | os.PathLike | None) -> Path:
    from onevision.eval.demo_tasks import find_demo_data, prepare_demo_tasks

    data = Path(demo_data) if demo_data is not None else find_demo_data(model)
    if data is None:
        raise FileNotFoundError(
            f"onevision_demo tasks need the demo's data: {model} is not under an `onevision demo` folder; "
            "pass --demo-data onevision-demo/data"
        )
    return prepare_demo_tasks(data, output / "tasks")
