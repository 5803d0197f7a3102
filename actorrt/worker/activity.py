"""What a worker records besides its memory: transfers and disk reads/writes for the
task stream, and the process's CPU and network figures.

Both are read on the worker's loop and leave with reports the worker sends anyway
(``tasks_done``, ``worker_memory``): no message of their own.
"""
from __future__ import annotations

import time
from collections import deque

from ..core.tcp import traffic
from ..protocol import Activity

# Records kept until the next report: a worker that cannot report (its scheduler is
# away) drops the oldest rather than grow.
ACTIVITY_LIMIT = 10_000


class ActivityLog:
    """Transfers and disk reads/writes since the last report, oldest first."""

    def __init__(self, limit: int = ACTIVITY_LIMIT) -> None:
        self._records: deque[Activity] = deque(maxlen=limit)

    def add(self, action: str, key: str, start: float, stop: float, nbytes: int,
            source: str | None = None) -> None:
        self._records.append(Activity(action, key, start, stop if stop > start else start, nbytes, source))

    def __len__(self) -> int:
        return len(self._records)

    def drain(self) -> list[Activity]:
        """Everything recorded, now forgotten here (it goes out with a report)."""
        out = list(self._records)
        self._records.clear()
        return out


class ProcessUsage:
    """The process's CPU use (percent of one core) and bytes sent and received per
    second, between two calls of :meth:`sample` (the memory monitor's ticks)."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._cpu = time.process_time()
        self._sent = traffic.sent
        self._received = traffic.received
        self.cpu: float | None = None
        self.sent_per_s: float | None = None
        self.received_per_s: float | None = None

    def sample(self) -> None:
        now, cpu, sent, received = time.monotonic(), time.process_time(), traffic.sent, traffic.received
        elapsed = now - self._at
        if elapsed < 0.01:
            return  # too short to say anything (a forced report right after a tick)
        # Rounded: an idle worker's figures then stay equal and its report is not resent.
        self.cpu = round(max(0.0, 100 * (cpu - self._cpu) / elapsed), 1)
        self.sent_per_s = float(round(max(0, sent - self._sent) / elapsed))
        self.received_per_s = float(round(max(0, received - self._received) / elapsed))
        self._at, self._cpu, self._sent, self._received = now, cpu, sent, received


__all__ = ["ACTIVITY_LIMIT", "ActivityLog", "ProcessUsage"]
