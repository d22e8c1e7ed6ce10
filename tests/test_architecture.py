"""The package architecture (issue #14): one-way layered imports without cycles, small documented modules.

Imports are read with ``ast`` from every module under ``onevision/``: module-level and function-local ones, with
relative imports resolved. ``if TYPE_CHECKING:`` blocks are skipped (they never run). Importing ``a.b.c`` also runs
the ``__init__`` of ``a.b`` unless the importer lives inside ``a.b`` (then it already ran), so those edges count too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 700

#: Modules allowed over MAX_LINES (the test fails once one drops under it, so the list only shrinks).
OVERSIZE_ALLOWED: set[str] = set()

#: The layers, lowest first. A module may import only from its own layer or lower ones. Each entry names a module
#: or a package (covering everything under it; the longest entry that matches a module wins).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "onevision.errors",
            "onevision.schema",  # the one strict dict -> dataclass reader
            "onevision.policy",  # the one visual-policy schema (recipes, processor, model, token counter)
            "onevision.archs",  # encoder families as data (torch-free)
            "onevision.config",
            "onevision.model_configs",  # named architecture configs as data
            # the checkpoints package's __init__ is a lazy facade (it runs no imports), so the model can use the
            # tensor IO and format detection below it without loading the native/hf/original formats
            "onevision.checkpoints",
            "onevision.checkpoints.io",
            "onevision.checkpoints.detect",
        ),
    ),
    (
        "components",
        (
            "onevision.encoders",
            "onevision.projectors",
            "onevision.llm",
            "onevision.loss",
            "onevision.span_attention",  # causal attention of packed spans on the CPU kernel, in blocks
            "onevision.attention",  # per-sample attention for packed rows
            "onevision.templates",
        ),
    ),
    ("model", ("onevision.placement", "onevision.model", "onevision.lora", "onevision.quantization")),
    (
        "processor",
        (
            "onevision.processor",
            "onevision.conversation",
            "onevision.tokenization",
            "onevision.media",
            "onevision.counting",
            "onevision.batch",
        ),
    ),
    ("bundle", ("onevision.bundle",)),
    (
        "checkpoints",
        (
            "onevision.checkpoints.native",
            "onevision.checkpoints.hf",
            "onevision.checkpoints.original",
            "onevision.checkpoints.conversion",
            "onevision.checkpoints.adapter",
            "onevision.checkpoints.mapping",
        ),
    ),
    ("pipeline", ("onevision.pipeline", "onevision.testing")),
    (
        "train",
        ("onevision.train", "onevision.data"),
    ),  # onevision.data: the shard index, pack, check, generate
    (
        "application",
        (
            "onevision.serve",
            "onevision.eval",
            "onevision.demo",
            "onevision.web",
            "onevision.commands",
            "onevision.cli",
        ),
    ),
    # the top-level package re-exports the public API lazily; only it may name every layer
    ("facade", ("onevision",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import statement that can run (any depth, functions included; not under ``if TYPE_CHECKING``)."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        for stmt in node.orelse if _is_type_checking(node) else [node.test, *node.body, *node.orelse]:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.found.append(node)

    visit_ImportFrom = visit_Import


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    visitor = _Imports()
    visitor.visit(tree)
    return visitor.found


def _imported_names(module: str, path: Path, known: set[str]) -> set[str]:
    """The dotted names ``module`` imports (absolute, with ``from x import submodule`` resolved to the module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        names.add(target)
        names.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known)
    return names


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph(package: str = "onevision") -> dict[str, set[str]]:
    """module -> the modules of ``package`` whose code importing it runs (own ancestor packages excluded)."""
    modules = _modules(package)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        own = {*_ancestors(module), module}
        for name in _imported_names(module, path, known):
            while name and name not in known:  # ``from pkg.mod import func``: the module is pkg.mod
                name = name.rpartition(".")[0]
            if not name:
                continue
            edges.update(n for n in (*_ancestors(name), name) if n in known and n not in own)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _layer_of(module: str) -> int:
    best, layer = "", -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > len(best):
                best, layer = entry, index
    return layer


# ----------------------------------------------------------------------------------------------------------------
# The checks on the tree


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer():
    missing = [m for m in _modules("onevision") if _layer_of(m) < 0]
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"


def test_imports_point_down_the_layers():
    names = [name for name, _ in LAYERS]
    upward = [
        f"{module} ({names[_layer_of(module)]}) imports {target} ({names[_layer_of(target)]})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer_of(target) > _layer_of(module)
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_module_is_over_the_line_limit():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _modules("onevision").values()
    }
    too_long = {f: n for f, n in sizes.items() if n > MAX_LINES and f not in OVERSIZE_ALLOWED}
    assert not too_long, f"split these modules (> {MAX_LINES} lines): {too_long}"
    back_under = sorted(f for f in OVERSIZE_ALLOWED if sizes.get(f, 0) <= MAX_LINES)
    assert not back_under, f"remove from OVERSIZE_ALLOWED (now short enough or gone): {back_under}"


def test_every_module_has_a_docstring():
    bare = [m for m, p in _modules("onevision").items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not bare, f"modules without a docstring (say its one job in a sentence): {bare}"


def test_importing_the_model_loads_no_checkpoint_format():
    """The model uses ``checkpoints.io`` / ``checkpoints.detect``; the lazy ``checkpoints`` facade must not pull
    in the formats (built on the model) when that happens."""
    code = (
        "import sys, onevision.model; "
        "print(sorted(m for m in sys.modules if m.startswith('onevision.') and m.split('.')[1] in "
        "('checkpoints', 'bundle', 'processor', 'pipeline', 'train')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(
        ["onevision.checkpoints", "onevision.checkpoints.detect", "onevision.checkpoints.io"]
    )


@pytest.mark.parametrize("package", ["anyres", "video"])
def test_anyres_and_video_never_import_onevision(package):
    forbidden = {"onevision"} | ({"video"} if package == "anyres" else set())
    found = {
        f"{module} imports {name}"
        for module, path in _modules(package).items()
        for name in _imported_names(module, path, set())
        if name.split(".")[0] in forbidden
    }
    assert not found, sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# The checker itself (so that a green run means something)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "onevision"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Root."""\n')
    (pkg / "sub" / "__init__.py").write_text('"""Sub."""\nfrom . import b\n')
    (pkg / "a.py").write_text('"""A."""\ndef f():\n    from onevision.sub.b import g\n')
    (pkg / "sub" / "b.py").write_text('"""B."""\nfrom ..a import f\n')
    (pkg / "c.py").write_text(
        '"""C."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import onevision.a\n'
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    graph = _graph()
    assert graph["onevision.a"] == {"onevision.sub", "onevision.sub.b"}  # the package __init__ runs too
    assert graph["onevision.sub.b"] == {"onevision.a"}
    assert graph["onevision.sub"] == {"onevision.sub.b"}
    assert graph["onevision.c"] == set()  # TYPE_CHECKING imports never run
    assert _find_cycle(graph) == ["onevision.a", "onevision.sub", "onevision.sub.b", "onevision.a"]
