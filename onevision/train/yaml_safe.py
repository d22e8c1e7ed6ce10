"""YAML text to data through PyYAML's safe loader, refusing duplicate keys, self-references and alias bombs.

Used for recipe files, their ``extends:`` parents and command-line override values. PyYAML keeps the last of two
equal keys silently and expands aliases without bound; here a key repeated in one mapping is an error naming both
lines, and a document that would expand to more than :data:`MAX_YAML_NODES` nodes is refused before anything
expands it.
"""

from __future__ import annotations

from typing import Any

import yaml

from onevision.errors import RecipeError

#: the most YAML nodes one recipe file or override value may expand to, every alias use counted in full
MAX_YAML_NODES = 100_000


def load_yaml(text: str, source: str) -> Any:
    """One YAML document through PyYAML's safe loader, refusing duplicate keys and alias bombs.

    ``source`` names the text in errors (``file:LINE`` for a duplicate key). Raises :class:`RecipeError` for
    invalid YAML, a key repeated in one mapping, a self-referencing alias and a document that expands to more
    than :data:`MAX_YAML_NODES` nodes.
    """
    try:
        return _parse_yaml(text, source)
    except yaml.YAMLError as exc:
        raise RecipeError(source, None, f"invalid YAML ({exc})") from None


def _parse_yaml(text: str, source: str, *, prefix: str = "") -> Any:
    """:func:`load_yaml` that lets PyYAML's own syntax errors through (``prefix`` starts every dotted key)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source, prefix)
        return loader.construct_document(node)
    except RecursionError:
        raise RecipeError(source, prefix.rstrip(".") or None, "YAML nested too deeply") from None
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, source: str, prefix: str) -> None:
    """Count the expanded size of the node graph (each node once, memoised) and look for duplicate keys."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    lines = source != "command line"

    def where(node: yaml.Node) -> str:
        return f"{source}:{node.start_mark.line + 1}" if lines else source

    def visit(node: yaml.Node, path: str) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise RecipeError(where(node), path or None, "an alias refers to the node that contains it")
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                dotted = f"{path}.{name}" if path else str(name)
                if name is not None and key_node.tag != "tag:yaml.org,2002:merge":
                    if name in seen:
                        first = seen[name].start_mark.line + 1
                        err = RecipeError(
                            where(key_node), None, f"duplicate key {dotted!r} (first at line {first})"
                        )
                        err.key = dotted
                        raise err
                    seen[name] = key_node
                total += visit(key_node, dotted) + visit(value_node, dotted)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(visit(child, f"{path}[{i}]") for i, child in enumerate(node.value))
        active.discard(id(node))
        if total > MAX_YAML_NODES:
            raise RecipeError(
                source,
                path or None,
                f"expands to more than {MAX_YAML_NODES:,} YAML nodes through anchors and aliases (an alias "
                "bomb?); write the values out or use fewer aliases",
            )
        sizes[id(node)] = total
        return total

    visit(root, prefix.rstrip("."))
