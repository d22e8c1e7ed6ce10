"""docs/architecture.md stays true: its package map names every module of ``onevision``, and its worked examples
(a strategy, an encoder, a projector) run."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_the_package_map_names_every_module_once():
    table = DOC.split("<!-- package-map -->")[1].split("<!-- /package-map -->")[0]
    listed = re.findall(r"^\| `(onevision/[\w/]+\.py)` \|", table, flags=re.M)
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "onevision").rglob("*.py"))
    assert sorted(listed) == modules


EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)


@pytest.mark.parametrize("code", EXAMPLES, ids=["strategy", "encoder", "projector"])
def test_the_worked_examples_run(code):
    from anyres.strategies import _REGISTRY
    from onevision.encoders import base
    from onevision.projectors import _PROJECTORS

    before = (dict(_REGISTRY), dict(base._ENCODERS), dict(_PROJECTORS))
    try:
        module = types.ModuleType("docs_example")  # a real module: dataclasses look their module up
        sys.modules[module.__name__] = module
        exec(compile(code, "docs/architecture.md", "exec"), module.__dict__)
    finally:  # leave the registries (and sys.modules) as they were
        sys.modules.pop("docs_example", None)
        for registry, saved in zip((_REGISTRY, base._ENCODERS, _PROJECTORS), before):
            registry.clear()
            registry.update(saved)
