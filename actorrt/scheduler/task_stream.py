"""The task stream: what ran where and when, as the workers reported it. No I/O.

Each task run's start, stop and thread arrive with the worker's ``tasks_done`` report
(protocol.Finished / Erred); transfers and disk reads/writes (protocol.Activity) ride
on the same reports. :class:`TaskStream` keeps the latest ``limit`` of them in a ring
of plain tuples (a tuple per run: the scheduler's cost per task), and builds dask's
record shape only when asked::

    {"key", "name", "worker", "thread", "status": "OK" | "error", "nbytes", "type",
     "startstops": [{"action": "compute" | "transfer" | "disk-write" | "disk-read",
                     "start", "stop", ("source" for a transfer)}]}

Records are numbered in arrival order from 0, for good: ``since(index)`` is what a
page that has seen everything before ``index`` still lacks (an incremental push).
"""
from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ..protocol import ACTIVITY_ACTIONS, Activity, Erred, Finished

#: Records kept (~180 bytes each: the tuple, two floats and a thread id; the strings are
#: shared): ~18 MB at most.
TASK_STREAM_LIMIT = 100_000
#: Distinct workers, threads and type names shared before :meth:`TaskStream._same`
#: starts over (a bound for a cluster whose workers come and go for hours).
_SAME_LIMIT = 10_000

# A row: (worker, key, start, stop, thread, nbytes, type, action, source, name).
# ``action`` is "compute" for a run that finished, "error" for one that raised, else the
# Activity's; ``source`` the peer of a transfer; ``name`` the task's name as submitted
# (what the status page counts by), None when the scheduler no longer knew the key.
_Row = tuple

_COMPUTE = "compute"
_ERROR = "error"


def _unknown(key: str) -> tuple[str, str | None]:
    return key, None


class TaskStream:
    """A bounded ring of the latest task runs, transfers and disk reads/writes."""

    def __init__(self, limit: int = TASK_STREAM_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"a task stream keeps at least 1 record, got limit={limit}")
        self._rows: deque[_Row] = deque(maxlen=limit)
        self.count = 0  # records ever added: the index the next one gets
        # action -> [records, bytes] ever added (/metrics' counters: the ring forgets)
        self.totals: dict[str, list[int]] = {action: [0, 0] for action in ACTIVITY_ACTIONS}
        # Each report decodes its own copies of a worker's address, its threads' ids and
        # its type names: kept as they came, they were 150 of a row's ~330 bytes.
        self._shared: dict[Any, Any] = {}

    def _same(self, value: Any) -> Any:
        """The one copy of ``value`` the ring keeps (for few-valued fields only)."""
        shared = self._shared.setdefault(value, value)
        if len(self._shared) > _SAME_LIMIT:
            self._shared.clear()
        return shared

    @property
    def limit(self) -> int:
        return self._rows.maxlen or 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def first_index(self) -> int:
        """The index of the oldest record still kept."""
        return self.count - len(self._rows)

    # --- adding: once per report, on the scheduler's hot path ------------------------
    def add_reports(self, worker: str, finished: list[Finished], erred: list[Erred],
                    task: Callable[[str], tuple[str, str | None]] = _unknown) -> None:
        """The runs of one ``tasks_done`` report (those that ran: a key found on a
        worker without a run has no times and is left out). ``task`` gives the copy of a
        key the scheduler already holds (so a row costs no string of its own) and the
        task's name."""
        worker, same = self._same(worker), self._same
        new = []
        for f in finished:
            if f[6] is not None:
                key, name = task(f[0])
                new.append((worker, key, f[6], f[7], same(f[8]), f[1], same(f[2]), _COMPUTE, None, name))
        for e in erred:
            if e[4] is not None:
                key, name = task(e[0])
                new.append((worker, key, e[4], e[5], same(e[6]), 0, None, _ERROR, None, name))
        self._rows.extend(new)
        self.count += len(new)

    def add_activity(self, worker: str, activity: Iterable[Activity],
                     task: Callable[[str], tuple[str, str | None]] = _unknown) -> None:
        worker = self._same(worker)
        new = []
        for a in activity:
            key, name = task(a[1])
            new.append((worker, key, a[2], a[3], None, a[4], None, a[0], a[5], name))
        self._rows.extend(new)
        self.count += len(new)
        totals = self.totals
        for row in new:
            total = totals[row[7]]
            total[0] += 1
            total[1] += row[5]

    # --- queries: build dicts only here ---------------------------------------------
    def since(self, index: int, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Records numbered ``index`` on (the oldest still kept if those are gone), at most
        ``limit`` of them (the oldest first), and the index to ask from next time."""
        start = max(index, self.first_index)
        skip = start - self.first_index
        n = len(self._rows) - skip
        if limit is not None:
            n = max(0, min(n, limit))
        rows = itertools.islice(self._rows, skip, skip + n) if n > 0 else ()
        return [record(row) for row in rows], start + max(n, 0)

    def window(self, start: float | None = None, stop: float | None = None,
               count: int | None = None) -> list[dict[str, Any]]:
        """Records that ended at or after ``start`` and began at or before ``stop``
        (seconds since the epoch; None: no bound), the latest ``count`` of them if given,
        oldest first."""
        if start is None and stop is None:
            if count is None:
                return [record(row) for row in self._rows]
            latest = list(itertools.islice(reversed(self._rows), max(count, 0)))  # not a copy of the ring
            return [record(row) for row in reversed(latest)]
        lo = float("-inf") if start is None else start
        hi = float("inf") if stop is None else stop
        rows = [r for r in self._rows if r[3] >= lo and r[2] <= hi]
        if count is not None:
            rows = rows[-count:] if count > 0 else []
        return [record(row) for row in rows]

    def rows(self) -> list[_Row]:
        """The raw rows, oldest first (the dashboard's /metrics and tests)."""
        return list(self._rows)


def record(row: _Row) -> dict[str, Any]:
    """One row in dask's task stream shape."""
    worker, key, start, stop, thread, nbytes, type_, action, source, name = row
    if action == _COMPUTE or action == _ERROR:
        startstop: dict[str, Any] = {"action": "compute", "start": start, "stop": stop}
        status = "error" if action == _ERROR else "OK"
    else:
        startstop = {"action": action, "start": start, "stop": stop}
        if source is not None:
            startstop["source"] = source
        status = "OK"
    return {"key": key, "name": name or key_name(key), "worker": worker, "thread": thread, "status": status,
            "nbytes": nbytes, "type": type_, "startstops": [startstop]}


_HASHLIKE = re.compile(r"^(?:[0-9a-f]{8,}|\d+)$")


def key_name(key: str) -> str:
    """A key's function name when the task's own is not known, as dask's key_split
    reads it: ``"inc-9f3a2c1d..."`` ->
    ``"inc"``, ``"('sum-abc123', 0)"`` -> ``"sum"``; a key with no such tail is its
    own name."""
    if key.startswith("(") and key.endswith(")"):  # a collection's tuple key, as str
        inner = key[1:].split(",", 1)[0].strip().strip("'\"")
        key = inner or key
    parts = key.split("-")
    while len(parts) > 1 and _HASHLIKE.match(parts[-1]):
        parts.pop()
    return "-".join(parts)


__all__ = ["TASK_STREAM_LIMIT", "TaskStream", "key_name", "record"]
