"""The invariants that tie a :class:`~.state.SchedulerState`'s tasks, workers and states
together: checked after every stimulus in tests (``validate=True``), and on demand."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .task_state import TASK_STATES, UNFINISHED

if TYPE_CHECKING:
    from .state import SchedulerState


class InvalidStateError(AssertionError):
    pass


def check_invariants(state: "SchedulerState") -> None:
    """Raise :class:`InvalidStateError` naming the first invariant that does not hold."""
    for key, ts in state.tasks.items():
        _check(ts.key == key, f"{ts} stored under {key!r}")
        s = ts.state
        _check(s in TASK_STATES, f"{ts} has unknown state")
        _check((s == "processing") == (ts.processing_on is not None), f"{ts} processing_on mismatch")
        if s == "processing":
            _check(ts in ts.processing_on.processing, f"{ts} not in its worker's processing")  # type: ignore[union-attr]
            _check(ts.processing_on.address in state.workers, f"{ts} on a removed worker")  # type: ignore[union-attr]
        _check((s == "memory") == bool(ts.who_has), f"{ts} who_has {ts.who_has} mismatch")
        for ws in ts.who_has:
            _check(ts in ws.has_what, f"{ts} not in has_what of {ws}")
        if s == "waiting":
            _check(bool(ts.waiting_on), f"{ts} waiting on nothing")
        if s == "queued":
            _check(not ts.waiting_on, f"{ts} ready but waiting on {ts.waiting_on}")
            for dep in ts.dependencies:
                _check(dep.state == "memory", f"{ts} ready but input {dep} not in memory")
        for dep in ts.waiting_on:
            # Released or erred, nothing would ever bring it: ``ts`` would wait for ever.
            _check(dep.state in ("waiting", "queued", "processing"), f"{ts} waiting on {dep}")
            _check(dep in ts.dependencies, f"{ts} waiting on {dep}, not an input")
        if s in ("waiting", "queued", "processing"):
            _check(state._needed(ts), f"{ts} runs for nobody")
        for dts in ts.waiters:
            _check(dts in ts.dependents, f"waiter {dts} of {ts} is not a dependent")
            _check(dts.key in state.tasks, f"waiter {dts} of {ts} is forgotten")
        for dep in ts.dependencies:
            _check(ts in dep.dependents, f"{ts} missing from dependents of {dep}")
    unfinished = sum(1 for ts in state.tasks.values() if ts.state in UNFINISHED)  # type: ignore[comparison-overlap]
    _check(state.unfinished == unfinished, f"unfinished counted {state.unfinished}, held {unfinished}")
    state.placement.validate(_check)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InvalidStateError(msg)
