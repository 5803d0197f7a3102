"""The name a result's type travels under: what a client turns back into the type.

A builtin is its bare name (``"int"``), anything else ``"module.qualname"``
(``"pandas.core.frame.DataFrame"``), so the receiving side can import it. One dict
look-up per result once a type has been seen: this runs for every task.
"""
from __future__ import annotations

from typing import Any

_NAMES: dict[type, str] = {}
_NAMES_LIMIT = 1000  # distinct types kept (classes made per call would grow it for ever)


def type_name(value: Any) -> str:
    """``"int"`` for a builtin's value, else ``"module.qualname"`` of its type."""
    typ = type(value)
    name = _NAMES.get(typ)
    if name is None:
        module = getattr(typ, "__module__", None)
        qualname = getattr(typ, "__qualname__", typ.__name__)
        name = typ.__name__ if module in (None, "builtins") else f"{module}.{qualname}"
        if len(_NAMES) > _NAMES_LIMIT:
            _NAMES.clear()
        _NAMES[typ] = name
    return name


__all__ = ["type_name"]
