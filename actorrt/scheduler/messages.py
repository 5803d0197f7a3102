"""The scheduler's incoming ops with nested shapes, decoded before any state changes.

``update_graph``, ``tasks_done``, ``update_data`` and ``missing_data`` carry lists of
tuples and maps whose items the state machine would trust: a string priority fails
half-way through a graph, a string size breaks placement later, a bad item late in
a worker's report loses the earlier ones. Each decoder here checks a whole message
first and raises a :class:`~actorrt.core.errors.BadMessageError` naming the field and
item, so a message is applied entirely or not at all.

These run once per task on the hot paths (``update_graph``, ``tasks_done``): each
check is a ``type(x) is T`` test, a few hundred nanoseconds per task in all; the
precise explanation is worked out only once something is wrong.

>>> from actorrt.core import Pickled
>>> [spec] = decode_tasks([["k", [Pickled.dumps(len), None], [], "len", 0, 0, None, False, False]])
>>> spec.key, spec.deps
('k', [])
"""
from __future__ import annotations

import math
from typing import Any

from ..core import Pickled
from ..core.checks import bad, describe, is_count, is_duration, is_str_list, str_list, str_map
from ..core.errors import BadMessageError
from .state import TaskSpec

UPDATE_GRAPH = "Scheduler.update_graph"
TASKS_DONE = "Scheduler.tasks_done"

_TASK_FIELDS = TaskSpec._fields
_TASK_DEFAULTS = tuple(TaskSpec._field_defaults[f] for f in _TASK_FIELDS[3:])
_TASK_SHAPE = "[key, spec, deps, name, priority, retries, workers, allow_other_workers, actor]"

# A user actor's options (client/actor_handle.py ``actor_options``) and what each must be.
_ACTOR_OPTIONS = {
    "max_concurrency": ("an int >= 1", lambda v: type(v) is int and v >= 1),
    "max_restarts": ("an int >= -1", lambda v: type(v) is int and v >= -1),
    "name": ("a non-empty str", lambda v: type(v) is str and v != ""),
    "get_if_exists": ("a bool", lambda v: type(v) is bool),
}


# --- update_graph -------------------------------------------------------------------

def decode_tasks(tasks: list) -> list[TaskSpec]:
    """The TaskSpecs of an ``update_graph`` message, every field of every task checked."""
    specs = []
    make = tuple.__new__  # a NamedTuple from a checked sequence, without its __new__'s cost
    for i, t in enumerate(tasks):
        if (type(t) is not list and type(t) is not tuple) or not 3 <= len(t) <= 9:
            raise bad(UPDATE_GRAPH, f"'tasks'[{i}]", f"a list {_TASK_SHAPE}", t)
        if len(t) < 9:
            t = (*t, *_TASK_DEFAULTS[len(t) - 3:])
        key, blobs, deps, name, priority, retries, workers, allow_other, actor = t
        if not (type(key) is str and (type(blobs) is list or type(blobs) is tuple) and len(blobs) == 2
                and type(blobs[0]) is Pickled and (blobs[1] is None or type(blobs[1]) is Pickled)
                and (type(deps) is list or type(deps) is tuple) and type(name) is str
                and (type(priority) is int or type(priority) is float and math.isfinite(priority))
                and type(retries) is int and retries >= 0
                and (workers is None or is_str_list(workers)) and type(allow_other) is bool
                and (actor is False or actor is True or type(actor) is dict)):
            raise _task_error(i, make(TaskSpec, t))
        for dep in deps:
            if type(dep) is not str or dep == key:
                raise _task_error(i, make(TaskSpec, t))
        if type(actor) is dict:
            check_actor_options(f"'tasks'[{i}] actor", actor)
        specs.append(make(TaskSpec, t))
    return specs


def _task_error(i: int, spec: TaskSpec) -> BadMessageError:
    """What exactly is wrong with task ``i`` (the slow path, only for bad tasks)."""
    where = f"'tasks'[{i}]"
    key, blobs, deps, name, priority, retries, workers, allow_other, actor = spec
    if type(key) is not str:
        return bad(UPDATE_GRAPH, f"{where} key", "a str", key)
    where = f"{where} (key {key!r})"
    if not ((type(blobs) is list or type(blobs) is tuple) and len(blobs) == 2
            and type(blobs[0]) is Pickled and (blobs[1] is None or type(blobs[1]) is Pickled)):
        return bad(UPDATE_GRAPH, f"{where} spec", "[pickled function, pickled arguments or None]", blobs)
    if type(deps) is not list and type(deps) is not tuple:
        return bad(UPDATE_GRAPH, f"{where} deps", "a list of keys", deps)
    for dep in deps:
        if type(dep) is not str:
            return bad(UPDATE_GRAPH, f"{where} deps", "a list of str keys", dep)
        if dep == key:
            return BadMessageError(f"{UPDATE_GRAPH}: task {key!r} in field 'tasks'[{i}] deps "
                                   "depends on itself")
    if type(name) is not str:
        return bad(UPDATE_GRAPH, f"{where} name", "a str", name)
    if not (type(priority) is int or type(priority) is float and math.isfinite(priority)):
        return bad(UPDATE_GRAPH, f"{where} priority", "an int or a finite float", priority)
    if type(retries) is not int or retries < 0:
        return bad(UPDATE_GRAPH, f"{where} retries", "an int >= 0", retries)
    if workers is not None and not is_str_list(workers):
        return bad(UPDATE_GRAPH, f"{where} workers", "None or a list of str addresses", workers)
    if type(allow_other) is not bool:
        return bad(UPDATE_GRAPH, f"{where} allow_other_workers", "a bool", allow_other)
    return bad(UPDATE_GRAPH, f"{where} actor", "a bool or a dict of actor options", actor)


def check_actor_options(where: str, options: dict) -> None:
    """A user actor's options: known names, each of the right type (a bad
    ``max_restarts`` would otherwise fail only when the actor's worker dies)."""
    for name, value in options.items():
        rule = _ACTOR_OPTIONS.get(name) if type(name) is str else None
        if rule is None:
            raise BadMessageError(f"{UPDATE_GRAPH}: field {where} has unknown option {describe(name)} "
                                  f"(known: {', '.join(sorted(_ACTOR_OPTIONS))})")
        expected, ok = rule
        if not ok(value):
            raise bad(UPDATE_GRAPH, f"{where} option {name!r}", expected, value)


# --- tasks_done -----------------------------------------------------------------------

_FINISHED_SHAPE = ("[key: str, nbytes: int >= 0, type: str or None, (duration: finite seconds >= 0 "
                   "or None, (run id: int or None))]")
_ERRED_SHAPE = "[key: str, exception: pickled, traceback: str or None, (run id: int or None)]"


def check_tasks_done(finished: list, erred: list) -> None:
    """Every item of a worker's report, before any is applied."""
    for i, item in enumerate(finished):
        if not ((type(item) is list or type(item) is tuple) and 3 <= len(item) <= 5
                and type(item[0]) is str and is_count(item[1])
                and (item[2] is None or type(item[2]) is str)
                and (len(item) < 4 or item[3] is None or is_duration(item[3]))
                and (len(item) < 5 or item[4] is None or type(item[4]) is int)):
            raise bad(TASKS_DONE, f"'finished'[{i}]", _FINISHED_SHAPE, item)
    for i, item in enumerate(erred):
        if not ((type(item) is list or type(item) is tuple) and 3 <= len(item) <= 4
                and type(item[0]) is str and type(item[1]) is Pickled
                and (item[2] is None or type(item[2]) is str)
                and (len(item) < 4 or item[3] is None or type(item[3]) is int)):
            raise bad(TASKS_DONE, f"'erred'[{i}]", _ERRED_SHAPE, item)


# --- maps of keys ------------------------------------------------------------------------

def check_update_data(who_has: dict, nbytes: dict, types: dict) -> None:
    op = "Scheduler.update_data"
    str_map(op, "who_has", who_has, is_str_list, "a list of str addresses")
    str_map(op, "nbytes", nbytes, is_count, "an int >= 0")
    str_map(op, "types", types, lambda v: v is None or type(v) is str, "a str or None")


def check_missing(missing: dict) -> None:
    str_map("Scheduler.missing_data", "missing", missing, is_str_list, "a list of str addresses")


def keys_field(op: str, keys: Any, field: str = "keys") -> "list[Any] | tuple[Any, ...]":
    """A list of str keys (``None`` stays None where the op allows it)."""
    return str_list(f"Scheduler.{op}", field, keys)


__all__ = ["check_actor_options", "check_missing", "check_tasks_done", "check_update_data",
           "decode_tasks", "keys_field"]
