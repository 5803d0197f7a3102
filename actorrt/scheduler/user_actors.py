"""What the scheduler answers about user actors: where one lives now, and by name.

Actor calls never pass through the scheduler. A handle asks it only after a call
failed to reach the actor (its worker died, or the actor is gone): the answer is the
actor's current host, once it has one (a restart may be under way), or why it is
dead. A named actor's key is derived from its name, so the registry of names is the
task table itself; this module adds the checks that a name is taken at most once.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..core import Reply
from .state import Instruction, Report, SchedulerState, TaskSpec, TaskState

# How long a handle is kept waiting when it says it cannot reach the worker that the
# scheduler still believes alive: the scheduler normally learns of a worker's death
# at once (its connection closes); this only bounds the wait for a worker that hangs.
STALE_TIMEOUT = 30.0


class ActorDirectory:
    """Deferred answers to ``actor_status`` and the name checks of ``update_graph``."""

    def __init__(self, state: SchedulerState, stale_timeout: float = STALE_TIMEOUT) -> None:
        self.state = state
        self.stale_timeout = stale_timeout
        self.waiters: dict[str, list[tuple[str, Reply, Any]]] = {}

    # --- where is it? -----------------------------------------------------------------
    def status(self, key: str, stale: str, reply: Reply) -> None:
        """Answer now if the actor's fate is known, else once it is."""
        verdict = _verdict(self.state.tasks.get(key), stale)
        if verdict is not None:
            reply.ok(verdict)
            return
        timer = None
        ts = self.state.tasks[key]
        if ts.state == "memory":  # the caller cannot reach a worker we think is alive
            timer = asyncio.get_running_loop().call_later(self.stale_timeout, self._give_up, key, reply)
        self.waiters.setdefault(key, []).append((stale, reply, timer))

    def wake(self) -> None:
        """After each state change: answer the waiters whose actor's fate is now known."""
        for key in list(self.waiters):
            ts = self.state.tasks.get(key)
            still = []
            for stale, reply, timer in self.waiters[key]:
                verdict = _verdict(ts, stale)
                if verdict is None and not reply.done:
                    if timer is not None and ts is not None and ts.state != "memory":
                        timer.cancel()  # a restart is under way: it may take as long as it takes
                        timer = None
                    still.append((stale, reply, timer))
                    continue
                if timer is not None:
                    timer.cancel()
                reply.ok(verdict)
            if still:
                self.waiters[key] = still
            else:
                del self.waiters[key]

    def _give_up(self, key: str, reply: Reply) -> None:
        entries = self.waiters.get(key, [])
        self.waiters[key] = [e for e in entries if e[1] is not reply]
        if not self.waiters[key]:
            del self.waiters[key]
        reply.ok({"status": "dead", "reason": f"cannot be reached: its worker has not answered "
                                              f"for {self.stale_timeout:.0f} s"})

    def close(self) -> None:
        for entries in self.waiters.values():
            for _, _, timer in entries:
                if timer is not None:
                    timer.cancel()
        self.waiters.clear()

    # --- names ---------------------------------------------------------------------------
    def refuse_taken_names(self, client: str, specs: list[TaskSpec], wanted: list[str],
                           ) -> tuple[list[TaskSpec], list[str], list[Instruction]]:
        """Drop new named actors whose name is in use (unless ``get_if_exists``) and
        report the error to the submitting client alone."""
        refused: dict[str, str] = {}
        for spec in specs:
            options = spec.actor
            if not isinstance(options, dict) or options.get("name") is None or options.get("get_if_exists"):
                continue
            ts = self.state.tasks.get(spec.key)
            if ts is not None and ts.state != "released":
                refused[spec.key] = options["name"]
        if not refused:
            return specs, wanted, []
        reports: list[Instruction] = [Report(client, key, "erred", {
            "exception": ValueError(f"an actor named {name!r} already exists; pass "
                                    "get_if_exists=True to use it"),
            "traceback": None, "blame": None}) for key, name in refused.items()]
        return ([s for s in specs if s.key not in refused], [k for k in wanted if k not in refused],
                reports)

    def want_named(self, client: str, key: str, want: Callable[[str, list[str]], None]) -> bool:
        """``get_actor``: if the actor exists, make ``client`` a holder of it (atomically)."""
        ts = self.state.tasks.get(key)
        if ts is None or ts.state == "released" or not ts.actor:
            return False
        want(client, [key])
        return True


def _verdict(ts: TaskState | None, stale: str) -> dict | None:
    """The answer about an actor, or None while it is not known yet."""
    if ts is None or ts.state == "released":
        return {"status": "released",
                "reason": "was released: no Future or handle holds it any more (or it was cancelled)"}
    if ts.state == "erred":
        exc = ts.exception
        reason = str(exc) if isinstance(exc, BaseException) else "failed in its constructor"
        return {"status": "dead", "reason": f"is dead: {reason}"}
    if ts.state == "memory":
        addresses = [ws.address for ws in ts.who_has]
        if stale not in addresses:
            return {"status": "ok", "address": addresses[0]}
    return None  # being (re-)created, or still believed to live where the caller failed
