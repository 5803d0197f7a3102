"""How a task travels: a function blob, an argument blob, and references to inputs.

The client replaces every Future found in a task's arguments (inside lists, tuples,
sets and dicts, however nested) by a :class:`TaskRef`; the worker substitutes the
input values back before calling the function. Functions are pickled once per
function object and cached, so ``map`` over 10,000 items pickles ``fn`` once.
"""
from __future__ import annotations

from typing import Any, Callable

from .core.serialize import Pickled, register_plain


class Reschedule(Exception):
    """Raised by a task to be placed again, maybe on another worker: not an error.

    >>> def task():                        # doctest: +SKIP
    ...     if not ready_here():
    ...         raise Reschedule()
    """


@register_plain  # (its state is one str key: the standard pickler will do)
class TaskRef:
    """Placeholder for the value of another task's key inside task arguments."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> Any:
        return TaskRef, (self.key,)

    def __repr__(self) -> str:
        return f"TaskRef({self.key!r})"


def replace_refs(obj: Any, is_ref: Callable[[Any], str | None], deps: set[str]) -> Any:
    """Copy ``obj`` with every object ``is_ref`` names replaced by a TaskRef.

    Containers with no reference inside are returned as they are (no copy).
    """
    key = is_ref(obj)
    if key is not None:
        deps.add(key)
        return TaskRef(key)
    typ = type(obj)
    if typ in (list, tuple, set, frozenset):
        items = [replace_refs(x, is_ref, deps) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return typ(items)
    if typ is dict:
        new = {k: replace_refs(v, is_ref, deps) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        return new
    if isinstance(obj, tuple) and hasattr(typ, "_make"):  # a namedtuple: Futures in its fields
        items = [replace_refs(x, is_ref, deps) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return typ._make(items)
    return obj


def substitute(obj: Any, data: dict) -> Any:
    """Replace TaskRefs in ``obj`` by ``data[key]``."""
    typ = type(obj)
    if typ is TaskRef:
        return data[obj.key]
    if typ in (list, tuple, set, frozenset):
        return typ(substitute(x, data) for x in obj)
    if typ is dict:
        return {k: substitute(v, data) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(typ, "_make"):  # a namedtuple
        return typ._make(substitute(x, data) for x in obj)
    return obj


def funcname(fn: Any) -> str:
    """A short, key-friendly name for ``fn`` (as dask's key prefixes)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        return "lambda"
    # (A name with a lone surrogate could not be sent: show its bytes escaped instead.)
    return str(name).replace("-", "_").encode("utf-8", "backslashreplace").decode("utf-8")


def pack_args(args: tuple, kwargs: dict) -> Pickled | None:
    if not args and not kwargs:
        return None
    return Pickled.dumps((args, kwargs), what="task arguments")
