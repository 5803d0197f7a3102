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

import itertools
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


#: Outbox ops that may be folded: about direct runs, and releases (client/futures.py).
_LIFE_OPS = frozenset(("direct_started", "direct_done", "release_keys"))


def fold_lives(box: list) -> list:
    """``box`` (the outbox's ``[[op, items], ...]``, about to go) with the whole lives
    of lone tasks folded: a key started on a worker, finished there and released, in
    that order, within one stretch of direct-run messages and releases, goes as one
    ``direct_complete`` item, not as one item in each of three messages.
    ``submit(f, x).result()`` in a loop then costs the scheduler one message per batch
    (and, for a key it never held, no task at all: scheduler/direct_runs.py).

    Only a stretch is folded: nothing else this client says (a dependent's
    submission, a want, a cancel) may name the key between its start and its release,
    and messages about other keys in the stretch do not touch a lone task."""
    out: list = []
    for is_stretch, entries in itertools.groupby(box, lambda entry: entry[0] in _LIFE_OPS):
        out.extend(_fold_stretch(list(entries)) if is_stretch else entries)
    return out


def _fold_stretch(stretch: list) -> list:
    """One stretch of ``_LIFE_OPS`` messages, its whole lives folded (see fold_lives)."""
    # key -> [start item, finished record, released]; None: seen out of order or twice
    lives: dict[str, list | None] = {}
    for op, items in stretch:
        if op == "direct_started":
            for item in items:
                key = item[1]
                lives[key] = None if key in lives else [item, None, False]
        elif op == "direct_done":
            for worker, finished, erred in items:
                for record in finished:
                    life = lives.get(record[0])
                    if life is not None and life[1] is None and life[0][2] == worker:
                        life[1] = record
                    elif life is not None:
                        lives[record[0]] = None
                for record in erred:
                    lives[record[0]] = None
        else:
            for key in items:
                life = lives.get(key)
                if life is not None and life[1] is not None and not life[2]:
                    life[2] = True
                elif life is not None:
                    lives[key] = None
    whole = {key: life for key, life in lives.items() if life is not None and life[2]}
    if not whole:
        return stretch
    folded: list = [["direct_complete", [(life[0][0], life[0][2], life[1]) for life in whole.values()]]]
    for op, items in stretch:
        if op == "direct_started":
            kept = [item for item in items if item[1] not in whole]
        elif op == "direct_done":
            kept = []
            for worker, finished, erred in items:
                finished = [record for record in finished if record[0] not in whole]
                if finished or erred:
                    kept.append((worker, finished, erred))
        else:
            kept = [key for key in items if key not in whole]
        if kept:
            folded.append([op, kept])
    return folded


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
