"""What the task page shows of one key: state, story, holders, links, failure.

Read on the scheduler's loop, never written. A failed task's exception reaches the
scheduler pickled (it never unpickles user data): the page shows the text the worker
formatted, whose last line names the exception.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .status import story

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler
    from ..scheduler.task_state import TaskState

#: Longest key a page or API request may name: anything longer is refused with a 400
#: (keys are user input in a URL; no real key is this long).
MAX_KEY_LENGTH = 1000
#: Dependencies/dependents listed per task (a reduction's root may have thousands).
MAX_LINKS = 200


class BadKey(ValueError):
    """A key in a URL that the dashboard refuses to look up."""


def check_key(key: str) -> str:
    """``key`` if it is one the dashboard looks up; else :class:`BadKey` saying why.

    >>> check_key("x" * 1001)
    Traceback (most recent call last):
    BadKey: a key in a dashboard URL may have at most 1000 characters; this one has 1001
    """
    if not key:
        raise BadKey("the URL names no key")
    if len(key) > MAX_KEY_LENGTH:
        raise BadKey(f"a key in a dashboard URL may have at most {MAX_KEY_LENGTH} characters; "
                     f"this one has {len(key)}")
    return key


def task_info(scheduler: Scheduler, key: str) -> dict[str, Any] | None:
    """Everything the task page shows of ``key``; None if the scheduler knows nothing
    of it (the story of a forgotten key is still shown while it is kept)."""
    told = story(scheduler, key)
    if told is None:
        return None
    ts = scheduler.state.tasks.get(key)
    info: dict[str, Any] = {**told, "name": None, "type": None, "nbytes": None, "who_has": [],
                            "processing_on": None, "dependencies": [], "dependents": [],
                            "links_omitted": 0, "exception": None, "traceback": None,
                            "actor": False, "restarts": 0, "holders": 0}
    if ts is None:
        return info
    deps, n_deps = _linked(ts.dependencies)
    dependents, n_dependents = _linked(ts.dependents)
    info.update(
        name=ts.name, type=ts.type, nbytes=ts.nbytes if ts.state == "memory" else None,
        who_has=sorted(ws.address for ws in ts.who_has),
        processing_on=ts.processing_on.address if ts.processing_on is not None else None,
        dependencies=deps, dependents=dependents, links_omitted=n_deps + n_dependents,
        actor=bool(ts.actor), restarts=ts.restarts, holders=len(ts.who_wants))
    if ts.state == "erred":
        info["exception"], info["traceback"] = failure(ts)
    return info


def _linked(tasks: Any) -> tuple[list[dict[str, str]], int]:
    """The first MAX_LINKS linked tasks as ``{key, state}``, and how many were left out."""
    out: list[dict[str, str]] = []
    for i, other in enumerate(tasks):
        if i == MAX_LINKS:
            return sorted(out, key=lambda d: d["key"]), len(tasks) - MAX_LINKS
        out.append({"key": other.key, "state": other.state})
    return sorted(out, key=lambda d: d["key"]), 0


def failure(ts: TaskState) -> tuple[str, str | None]:
    """(exception text, traceback text) of an erred task, without unpickling anything.

    The scheduler's own errors (a lost worker, a missing input) are exception objects;
    a task's are pickled, and their text is the traceback's last line.
    """
    exc, tb = ts.exception, ts.traceback
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}", tb
    if tb:
        lines = [line for line in tb.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1], tb
    return "the task failed (its exception was not described)", tb
