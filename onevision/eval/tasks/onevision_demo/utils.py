"""Functions of the ``onevision_demo`` tasks (referenced from the YAMLs as ``!function``).

A document is one held-out demo question as :func:`onevision.eval.demo_tasks.demo_documents` writes it:
``id``, ``group``, ``modality``, ``question_type``, ``question`` (the text ``onevision demo`` asks), ``answer``,
``choices`` (every answer the question can have) and absolute media paths in ``images`` / ``video``.
"""

from __future__ import annotations

from typing import Any


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The document's media as paths: its images in order, or its video."""
    return [doc["video"]] if doc.get("video") else list(doc.get("images") or [])


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question exactly as ``onevision demo`` asks it (its evaluation sends the record's first turn)."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def first_word(answer: str | None) -> str:
    """The demo's reading of a generated answer: its first word, without trailing ``.,!``, lower case."""
    text = (answer or "").strip()
    return text.split()[0].strip(".,!").lower() if text else ""


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Generation: correct when the answer's first word is the expected answer (as ``onevision demo`` scores)."""
    return {
        "accuracy": float(first_word(results[0]) == doc["answer"]),
        "chance": 1.0 / len(doc["choices"]),
    }


def doc_to_target_index(doc: dict[str, Any]) -> int:
    return list(doc["choices"]).index(doc["answer"])


def process_results_mc(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Multiple choice: ``results`` holds one ``(log-likelihood, is_greedy)`` per choice; the highest wins."""
    scores = [float(r[0]) if isinstance(r, (tuple, list)) else float(r) for r in results]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {
        "accuracy": float(best == doc_to_target_index(doc)),
        "chance": 1.0 / len(doc["choices"]),
    }
