"""Reading YAML files given by users, with one-line errors that name the file.

The loader is PyYAML's safe loader with three guards: a duplicate mapping key is an error naming
the key and its line (PyYAML silently keeps the last one), a document whose aliases expand to
more than ``MAX_NODES`` nodes is refused before it is built (a "billion laughs" alias bomb
would otherwise build 9^8 list elements), and a file that is not UTF-8 is named with the byte
offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fluidserve.errors import InputError

MAX_NODES = 1_000_000  # nodes of one document after alias expansion; a config has a few hundred


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (see :func:`safe_load` for the alias guard)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: PyYAML's own check reports it
                continue
            if first is not None:
                raise yaml.YAMLError(f"duplicate key {key!r} at line {line} (first at line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node) -> int:
    """Nodes of the document once every alias is expanded (shared nodes counted per use)."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key not in memo:
            memo[key] = 1  # guards against recursive aliases
            if isinstance(n, yaml.SequenceNode):
                memo[key] = 1 + sum(size(c) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                memo[key] = 1 + sum(size(k) + size(v) for k, v in n.value)
        return memo[key]

    return size(node)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the duplicate-key and alias-expansion guards (raises ``yaml.YAMLError``)."""
    loader = _GuardedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = expanded_size(node)
        if n > MAX_NODES:
            raise yaml.YAMLError(
                f"aliases expand the document to {n:,} nodes (limit {MAX_NODES:,}); refusing a possible alias bomb"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path, kind: str = "config") -> Any:
    """Parse ``path`` as YAML; missing, unparsable or empty files raise :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{kind} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise InputError(f"{path}: not valid YAML (nested too deeply)") from None
    if data is None:
        raise InputError(f"{path}: {kind} file is empty")
    return data
