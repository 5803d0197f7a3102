"""Admission control: how much work the scheduler takes in, and how fast.

Two limits, for two different failures:

* ``max_tasks``: the most tasks the scheduler holds at once (running, waiting or held
  in memory). A graph that would take it past this is refused whole, with an error
  naming the sizes, before any of it is accepted: a graph too large for the
  scheduler's memory fails fast instead of swapping the machine to a halt.
* ``max_unfinished``: how much work may wait for workers. A submission that leaves
  more unfinished tasks than this is accepted, but its acknowledgement is held back
  until the workers have worked the backlog down. A client sends only a bounded
  window of unacknowledged tasks (:class:`~actorrt.client.futures.FutureTable`), so
  a client that submits faster than the cluster computes is slowed down (its
  ``submit``/``map`` blocks) rather than growing the scheduler without bound.

Pure bookkeeping: the scheduler actor asks :meth:`check` and :meth:`admit` per
``update_graph`` and calls :meth:`progress` after work finished.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable

from ..protocol import GraphTooLargeError
from ..utils import env_count

#: A held task's budget when sizing the default ``max_tasks`` from the machine's
#: memory: measured ~0.7 KB in the scheduler and ~0.5 KB per Future in a client;
#: four times that leaves room for the tasks' own arguments.
TASK_BUDGET_BYTES = 4096

#: Default ``max_unfinished``: a backlog this deep keeps any cluster busy for long,
#: and costs the scheduler well under a GiB.
DEFAULT_MAX_UNFINISHED = 1_000_000


def default_max_tasks() -> int:
    """``ACTORRT_MAX_TASKS``, else what this machine's memory holds at
    :data:`TASK_BUDGET_BYTES` per task."""
    if os.environ.get("ACTORRT_MAX_TASKS"):
        return env_count("ACTORRT_MAX_TASKS", 0)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # (no sysconf: not Linux or macOS)
        memory = 16 << 30
    return max(100_000, memory // TASK_BUDGET_BYTES)


def default_max_unfinished() -> int:
    return env_count("ACTORRT_MAX_UNFINISHED", DEFAULT_MAX_UNFINISHED)


class Admission:
    """The two limits and the acknowledgements held back by the second."""

    def __init__(self, max_tasks: int | None = None, max_unfinished: int | None = None) -> None:
        self.max_tasks = default_max_tasks() if max_tasks is None else _checked("max_tasks", max_tasks)
        self.max_unfinished = (default_max_unfinished() if max_unfinished is None
                               else _checked("max_unfinished", max_unfinished))
        # Acknowledgements held back, oldest first: each is called once the backlog allows.
        self._held: deque[Callable[[], None]] = deque()

    def check(self, held: int, new: int) -> None:
        """Raise :class:`GraphTooLargeError` if ``new`` more tasks on top of ``held``
        would pass ``max_tasks``."""
        if held + new > self.max_tasks:
            raise GraphTooLargeError(
                f"a graph of {new:,} new tasks was refused: the scheduler holds {held:,} tasks and "
                f"its limit is {self.max_tasks:,} (release Futures you no longer need, submit in "
                f"parts, or raise the limit: ACTORRT_MAX_TASKS or the scheduler's max_tasks)")

    def admit(self, unfinished: int, acknowledge: Callable[[], None]) -> None:
        """Acknowledge a submission now, or once ``unfinished`` is back under the limit.
        (Behind ones held already: acknowledgements keep their order.)"""
        if self._held or unfinished > self.max_unfinished:
            self._held.append(acknowledge)
        else:
            acknowledge()

    def progress(self, unfinished: int) -> None:
        """Work finished: once the backlog is back under the limit, acknowledge all that
        was held. (Each lets its client send one more window: the scheduler's overshoot
        stays bounded by a window per client.)"""
        if self._held and unfinished <= self.max_unfinished:
            self.release_all()

    @property
    def waiting(self) -> int:
        """Acknowledgements held back."""
        return len(self._held)

    def release_all(self) -> None:
        """Acknowledge everything held (the scheduler is closing: nobody may hang)."""
        held, self._held = self._held, deque()
        for acknowledge in held:
            acknowledge()


def _checked(name: str, value: int) -> int:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


__all__ = ["Admission", "DEFAULT_MAX_UNFINISHED", "GraphTooLargeError", "TASK_BUDGET_BYTES",
           "default_max_tasks", "default_max_unfinished"]
