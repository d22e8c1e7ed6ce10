"""The repository's promises: README's test command is exactly what CI runs, and the reliability doc names real tests.

The package boundaries (layers, cycles, anyres/video never importing onevision) are checked in test_architecture.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_gives_two_commands_and_ci_runs_the_test_one_verbatim():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2, "README must give exactly two set-up commands (main job, tests)"
    test_command = blocks[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    assert "pytest" in test_command and ".ci/constraints.txt" in test_command and '".[dev]"' in test_command


def test_ci_constraints_pin_torch():
    pins = (ROOT / ".ci" / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    project = (ROOT / "pyproject.toml").read_text()
    assert "torch==" not in project  # the package itself never pins torch


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}


def test_reliability_doc_names_only_tests_that_exist():
    """Every ``tests/...py::test_name`` in docs/reliability.md exists (``::name`` alone refers to the test file
    named last before it in the same section)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    checked = 0
    current: Path | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            current = None
        if not line.startswith("|"):
            continue
        for file, name in re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", line):
            if file:
                current = ROOT / file
                assert current.is_file(), file
            if name:
                assert current is not None, f"{name}: no test file named before it in {line!r}"
                assert name in _test_names(current), f"{current.relative_to(ROOT)}::{name} does not exist"
                checked += 1
    assert checked >= 60
