"""Local lmms-eval tasks shipped with onevision (task YAMLs + their functions).

``onevision_demo/`` holds the demo's held-out questions as lmms-eval tasks (see ``docs/evaluation.md``). Its YAMLs
read ``<group>.jsonl`` files next to them, which :func:`onevision.eval.demo_tasks.prepare_demo_tasks` writes from a
generated demo dataset together with copies of the YAMLs: point lmms-eval's ``--include_path`` at that folder.
"""

from __future__ import annotations

from pathlib import Path

#: the folder of the shipped task templates
TASKS_DIR = Path(__file__).resolve().parent
