"""Checking a message's fields at the edge, before any state is touched.

Any peer holding the cluster's secret may send any op with any fields: a buggy
client, a worker of another version, a hostile script. An actor must answer such a
message with a clear error (or, for a tell, log and drop it) and change nothing.

Two layers do that:

* The dispatch table (core/actor.py) reads each handler's annotations once and the
  host checks simple field types before the handler runs: ``keys: list`` refuses a
  string, ``nthreads: int`` refuses ``"2"``, ``value: Pickled`` refuses a bare str.
* Handlers whose fields have deeper shapes (a list of task tuples, a map of key ->
  addresses) decode them first thing with the helpers below and only then touch
  their state, so a bad item late in a batch cannot leave the batch half applied.

Every failure is a :class:`BadMessageError` naming the op, the field and what was
wrong, e.g. ``Scheduler.release_keys: field 'keys'[2] must be a str, got int 7``.

>>> str_list("Worker.free_keys", "keys", ["a", "b"])
['a', 'b']
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable

from .errors import BadMessageError

# Every string in an error is cut to this, so a huge bad value makes a short message.
_REPR_LIMIT = 80


def describe(value: Any) -> str:
    """``int 5``, ``str 'abc'``: the type and a short repr of a bad value."""
    try:
        text = repr(value)
    except Exception:  # a repr that raises must not hide the real problem
        text = "<unrepresentable>"
    if len(text) > _REPR_LIMIT:
        text = text[:_REPR_LIMIT - 3] + "..."
    return f"{type(value).__name__} {text}"


def bad(op: str, field: str, expected: str, value: Any) -> BadMessageError:
    """The error for field ``field`` of ``op`` that should have been ``expected``."""
    return BadMessageError(f"{op}: field {field} must be {expected}, got {describe(value)}")


# --- simple types from annotations ----------------------------------------------------

# Annotation names the dispatch table can check, and what each accepts. ``list`` takes a
# tuple too (a local sender's message is not re-encoded); ``float`` takes an int.
_SIMPLE: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (float, int), "bool": (bool,),
    "list": (list, tuple), "tuple": (tuple, list), "dict": (dict,), "bytes": (bytes,),
    "None": (type(None),),
}


class FieldCheck:
    """One field's accepted types, checked by :func:`check_fields`."""

    __slots__ = ("name", "types", "integral", "real", "expected")

    def __init__(self, name: str, types: tuple[type, ...], expected: str) -> None:
        self.name = name
        self.types = types
        # A numpy integer from a local sender is an int for our purposes (never a bool).
        self.integral = int in types
        self.real = float in types
        self.expected = expected


def field_check(name: str, annotation: Any, known: dict[str, type]) -> FieldCheck | None:
    """The check for a parameter annotated ``annotation``; None if it is not one of
    the simple forms (``str``, ``list[str]``, ``dict | None``, a type in ``known``)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    types: list[type] = []
    names = []
    for part in text.strip("'\"").split("|"):
        part = part.strip().split("[", 1)[0].rsplit(".", 1)[-1]
        if part in _SIMPLE:
            types.extend(_SIMPLE[part])
        elif part in known:
            types.append(known[part])
        else:
            return None  # Any, a protocol, a forward reference: the handler's own business
        names.append(part)
    return FieldCheck(name, tuple(dict.fromkeys(types)), " or ".join(names))


def check_fields(where: str, checks: tuple[FieldCheck, ...], fields: dict) -> BadMessageError | None:
    """The first field of ``fields`` whose type ``checks`` refuse, as an error; else None."""
    for check in checks:
        value = fields.get(check.name, check)
        if value is check or type(value) in check.types:
            continue  # absent (the handler's default applies) or of an accepted type
        if isinstance(value, numbers.Number) and not isinstance(value, bool) and (
                (check.integral and isinstance(value, numbers.Integral))
                or (check.real and isinstance(value, numbers.Real))):
            continue
        return bad(where, repr(check.name), f"a {check.expected}", value)
    return None


# --- deeper shapes, called by handlers ----------------------------------------------------

def str_list(op: str, field: str, value: Any) -> "list[Any] | tuple[Any, ...]":
    """``value`` if it is a list (or tuple) of strings, else a BadMessageError."""
    if type(value) is not list and type(value) is not tuple:
        raise bad(op, repr(field), "a list of str", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise bad(op, f"{field!r}[{i}]", "a str", item)
    return value


def str_map(op: str, field: str, value: Any, item_ok: Callable[[Any], bool], expected: str) -> dict:
    """``value`` if it is a dict of str -> items passing ``item_ok``."""
    if type(value) is not dict:
        raise bad(op, repr(field), "a dict", value)
    for key, item in value.items():
        if type(key) is not str:
            raise bad(op, f"{field!r} key", "a str", key)
        if not item_ok(item):
            raise bad(op, f"{field!r}[{key!r}]", expected, item)
    return value


def check_origin(where: str, sender: str, expected: str, origin: Any, host: Any = None) -> None:
    """Refuse a message that only the host at ``expected`` may send (``sender`` says
    who that is) when it came on a connection from another host. ``origin`` is the
    Comm it came on; None (this same host) passes, and so does the connection
    ``host`` opened to ``expected`` (a scheduler dialled as ``tcp://localhost:8786``
    names itself ``tcp://127.0.0.1:8786``, or ``tcp://0.0.0.0:8786``).

    A peer proves it knows the cluster's secret, and then names itself: this keeps a
    client from speaking for a worker (or a worker for the scheduler) by mistake.
    """
    if origin is None or origin.peer_address == expected:
        return
    if host is not None and host.comm_to(expected) is origin:
        return
    raise BadMessageError(f"{where}: only {sender} ({expected!r}) may send this, but it came "
                          f"from {origin.peer_address!r}")


def is_str_list(value: Any) -> bool:
    return (type(value) is list or type(value) is tuple) and all(type(x) is str for x in value)


def is_count(value: Any) -> bool:
    """A non-negative int (a size, a count of bytes)."""
    return type(value) is int and value >= 0


def is_duration(value: Any) -> bool:
    """A finite, non-negative number of seconds."""
    return (type(value) is float or type(value) is int) and 0 <= value < math.inf


__all__ = ["FieldCheck", "bad", "check_fields", "check_origin", "describe", "field_check", "is_count",
           "is_duration", "is_str_list", "str_list", "str_map"]
