"""YAML with limits (issue 12): PyYAML's SafeLoader, counting aliases, depth and expanded size.

A "billion laughs" (9 anchors of 9 aliases each) composes to a few dozen nodes but expands to
hundreds of millions: the schema check and the error message then walk all of them. Nesting
thousands of ``[`` deep ends in a RecursionError in the composer. The loader here refuses both
while composing, before anything is built.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode


class TooBig(ValueError):
    """The document is over one of the limits; the message says which."""


class _Loader(yaml.SafeLoader):
    max_aliases = 100
    max_depth = 32
    max_nodes = 100_000

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                raise TooBig(f"too many aliases (more than {self.max_aliases})")
        self._depth += 1
        if self._depth > self.max_depth:
            raise TooBig(f"nested deeper than {self.max_depth} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded(node: Node, sizes: dict[int, int], limit: int) -> int:
    """Nodes in ``node`` with aliases expanded (each shared node counted where it is used)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded(child, sizes, limit) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(
            _expanded(key, sizes, limit) + _expanded(value, sizes, limit)
            for key, value in node.value
        )
    if size > limit:
        raise TooBig(f"expands to more than {limit} values (aliases of aliases?)")
    sizes[id(node)] = size
    return size


def load(raw: bytes | str, max_aliases: int, max_depth: int, max_nodes: int) -> Any:
    """The document's value, like yaml.safe_load; TooBig past a limit."""
    loader = _Loader(raw)
    loader.max_aliases, loader.max_depth, loader.max_nodes = max_aliases, max_depth, max_nodes
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, {}, max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()
