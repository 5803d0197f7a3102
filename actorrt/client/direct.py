"""A lone task its submitter runs on a worker itself: ``submit(f, x).result()`` in one hop.

Through the scheduler, a task's round trip crosses five threads: the caller's, the
client's loop (and the scheduler's turn on it), the worker's loop, its pool thread, and
back through the scheduler's loop to the caller. A thread that waits for a task it
just submitted may instead write the task to a worker itself, on its own connection
there (client/routes.py, core/thread_channel.py), and read the worker's answer on that
connection while it waits: caller -> worker loop -> pool thread -> caller.

The scheduler still owns the task. The submission, queued and not yet sent, becomes a
``direct_started`` message in its place in the client's outbox (the task is 'processing'
on that worker from then on), and the worker's report, which comes back in the answer,
is relayed as ``direct_done``. Both go on the client's own connection to the scheduler,
so they reach it in order with anything else this client says about the key: a release,
a dependent, a cancel (scheduler/direct_runs.py).

Only a task that needs nothing from the scheduler goes this way: no inputs, no
restrictions, resources, retries or actor, submitted alone and still unsent when
``result()`` is called, from a thread that is neither the loop nor a task's, with a
connection of its own to a worker this client saw finish a task. A worker declines when
it has no free thread (or knows the key); then, or if the worker cannot be reached, the
client says ``direct_declined`` and the scheduler places the task as any other.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..core.errors import BadMessageError
from ..protocol import DIRECT_DECLINED, DIRECT_ERRED, DIRECT_FINISHED, WORKER_ID, decode_tasks_done
from .routes import routes_of

if TYPE_CHECKING:
    from .client import Client
    from .future import FutureState

logger = logging.getLogger("actorrt.client")


class DirectRuns:
    """One client's runs of lone tasks on workers it picks (see the module docstring)."""

    def __init__(self, client: "Client", enabled: bool = True) -> None:
        self.loop = client.loop
        self.table = client.table
        self.routes = routes_of(client)
        self.enabled = enabled  # (off: every task through the scheduler; ACTORRT_DIRECT_TASKS=0)
        # The worker to try: the last one the scheduler said holds a result of ours
        # (``seen``), or the last that ran one for us. None after a decline, until the
        # scheduler names one again.
        self.worker: str | None = None

    def seen(self, workers: list) -> None:
        """Loop: the scheduler reported a result of ours held by ``workers``. (Only a
        TCP worker is remembered: a thread has a connection of its own only to one.)"""
        if workers and workers[0].startswith("tcp://"):
            self.worker = workers[0]

    def may_run_here(self) -> bool:
        """Calling thread: whether a lone task it submits now would run on a worker from
        here, if it waits for it at once (its submission may then wait for company)."""
        worker = self.worker
        if worker is None or not self.enabled or runtime.current_slots() is not None:
            return False
        route = self.routes.known(worker)
        return route is not None and route.channel_open() is not None and not runtime.on_loop(self.loop)

    def run(self, key: str, st: "FutureState") -> bool:
        """Calling thread, about to wait for ``key``: run its task on a worker now and
        read the answer here. True if it went so (``st`` is settled, or the scheduler
        places the task after all and will report as usual); False if it may not, and
        nothing changed."""
        worker = self.worker
        if worker is None or not self.enabled or runtime.on_loop(self.loop):
            return False
        route = self.routes.route(worker)
        if route is None:
            return False
        channel = route.channel_open()
        if channel is None:  # (opened by the loop for the thread's second try)
            self.routes.open_if_wanted(route, worker)
            return False
        with self.table.lock:
            spec = self.table.take_lone(key, worker)
            if spec is None:
                return False
        waiter = runtime.Waiter()

        def settle(ok: bool, value: Any) -> None:  # (on this thread, or the loop's if it reads)
            try:
                self._answered(key, st, worker, ok, value)
            finally:
                waiter.set(None)

        rid = channel.ask(WORKER_ID, "run_direct", {"key": key, "spec": spec[1], "name": spec[3]}, settle,
                          may_write=True)
        if not channel.wait(rid):
            waiter.wait()
        return True

    def _answered(self, key: str, st: "FutureState", worker: str, ok: bool, value: Any) -> None:
        """The worker's answer (or the failure to get one): relay its report to the
        scheduler and settle the Future's state, or have the scheduler place the task."""
        report = _report(key, value) if ok else None
        if report is None:
            why = value[1] if ok and _is_declined(value) else value
            logger.debug("%s not run on %s directly: %s", key, worker, why)
            self.worker = None
            self.table.queue("direct_declined", (worker, [key], []))
            return
        kind, record = report
        if kind == DIRECT_FINISHED:
            self.table.queue("direct_done", (worker, [record], []), lazy=True)
            st.finish_off_loop(self.loop, [worker], record[2], record[5])
        else:
            self.table.queue("direct_done", (worker, [], [record]), lazy=True)
            st.err_off_loop(self.loop, record[1], record[2])


def by_worker(items: list) -> dict[str, tuple[list, list]]:
    """``(worker, firsts, seconds)`` items (the outbox's ``direct_done`` and
    ``direct_declined``) merged per worker: one message each."""
    merged: dict[str, tuple[list, list]] = {}
    for worker, first, second in items:
        into = merged.get(worker)
        if into is None:
            merged[worker] = (list(first), list(second))
        else:
            into[0].extend(first)
            into[1].extend(second)
    return merged


def _is_declined(value: Any) -> bool:
    return type(value) is list and len(value) == 2 and value[0] == DIRECT_DECLINED


def _report(key: str, value: Any) -> tuple[str, Any] | None:
    """``(kind, record)`` of a worker's answer carrying a report; None for a decline or
    anything malformed (the scheduler then places the task, and nothing is relayed
    that it would refuse)."""
    if type(value) is not list or len(value) != 2 or value[0] not in (DIRECT_FINISHED, DIRECT_ERRED):
        return None
    kind, record = value
    if (type(record) is not list and type(record) is not tuple) or not record or record[0] != key:
        return None
    try:
        if kind == DIRECT_FINISHED:
            decode_tasks_done([record], [])
        else:
            decode_tasks_done([], [record])
    except BadMessageError as e:
        logger.warning("a worker's answer to a direct run is malformed: %s", e)
        return None
    return kind, record
