"""The demo's held-out questions as a local lmms-eval dataset (offline; written from the generated demo data).

``prepare_demo_tasks(data_root, out_dir)`` writes ``out_dir/onevision_demo/``: a copy of the shipped task YAMLs
(:data:`onevision.eval.tasks.TASKS_DIR`) and one ``<group>.jsonl`` per row of the demo's table, read by the YAMLs
through lmms-eval's local ``json`` builder. Point ``--include_path`` at ``out_dir`` and run ``onevision_demo``
(generation, scored like ``onevision demo``) or ``onevision_demo_mc`` (multiple choice by log-likelihood).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

#: subtask group -> the demo table's row (``modality / question``), in the demo's order
GROUPS = {
    "single_detail": "single image / detail",
    "single_coarse": "single image / coarse",
    "multi_coarse": "multi-image / coarse",
    "video_coarse": "video / coarse",
}
TASK_FOLDER = "onevision_demo"


def demo_documents(data_root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every held-out question of a generated demo dataset as a task document (absolute media paths)."""
    from onevision.demo.data import ANSWERS, QUESTIONS, eval_question, iter_eval

    root = Path(data_root).resolve()
    docs = []
    for r in iter_eval(root):
        modality = "video" if "video" in r else ("multi" if isinstance(r["image"], list) else "single")
        kind = QUESTIONS[r["question_type"]][0]
        images = [] if modality == "video" else (r["image"] if isinstance(r["image"], list) else [r["image"]])
        docs.append(
            {
                "id": r["id"],
                "group": f"{modality}_{kind}",
                "modality": modality,
                "question_type": r["question_type"],
                "question": eval_question(r),
                "answer": r["conversations"][1]["value"],
                "choices": list(ANSWERS[r["question_type"]]),
                "images": [str(root / "images" / name) for name in images],
                "video": str(root / "videos" / r["video"]) if modality == "video" else "",
            }
        )
    return docs


def prepare_demo_tasks(data_root: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the ``onevision_demo`` tasks with their data under ``out_dir``; returns ``out_dir``."""
    from onevision.eval.tasks import TASKS_DIR

    data_root = Path(data_root)
    if not (data_root / "spec.json").is_file():
        raise FileNotFoundError(
            f"{data_root}: not a generated demo dataset (no spec.json); run `onevision demo` first or pass "
            "the demo's data folder (onevision-demo/data)"
        )
    docs = demo_documents(data_root)
    if not docs:
        raise FileNotFoundError(f"{data_root}: the demo dataset has no held-out questions (eval_*.jsonl)")
    out_dir = Path(out_dir)
    folder = out_dir / TASK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for template in sorted((TASKS_DIR / TASK_FOLDER).iterdir()):
        if template.suffix == ".yaml" or template.name.endswith("_yaml"):
            shutil.copyfile(template, folder / template.name)
    for group in GROUPS:
        rows = [d for d in docs if d["group"] == group]
        (folder / f"{group}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in rows))
    (folder / "source.json").write_text(json.dumps({"data_root": str(data_root.resolve())}, indent=2) + "\n")
    return out_dir


def find_demo_data(model_path: str | os.PathLike) -> Path | None:
    """The demo dataset a demo model was trained on: ``<demo>/data`` above ``<demo>/runs/<variant>/<stage>``."""
    path = Path(model_path).resolve()
    for parent in [path, *path.parents]:
        if (parent / "data" / "spec.json").is_file() and (parent / "runs").is_dir():
            return parent / "data"
    return None
