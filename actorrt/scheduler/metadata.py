"""The scheduler's metadata store (dask's ``set_metadata``/``get_metadata``): a nested
dict addressed by a path of keys.

``set(["a", "b"], 1)`` makes ``{"a": {"b": 1}}``, so ``get(["a"]) == {"b": 1}``.
Values are opaque (a client's value arrives pickled, except dicts, which it sends as
nested maps so that a path can go into them).
"""
from __future__ import annotations

from typing import Any


class MetadataStore:
    def __init__(self) -> None:
        self.root: dict[str, Any] = {}

    def set(self, keys: list[str], value: Any) -> None:
        """Store ``value`` at the path ``keys`` (a non-empty list), making the dicts on
        the way and replacing a non-dict that is in the way."""
        node = self.root
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = node[k] = {}
            node = nxt
        node[keys[-1]] = value

    def get(self, keys: list[str]) -> Any:
        """The value at ``keys``; KeyError naming the path when it is absent."""
        node: Any = self.root
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                raise KeyError(keys[: i + 1])
            node = node[k]
        return node


__all__ = ["MetadataStore"]
