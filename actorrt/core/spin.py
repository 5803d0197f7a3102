"""Spin, then sleep: how long a thread polls its sockets before it parks in ``poll``.

A thread that sleeps in ``poll`` until its message arrives pays for being woken: its
peer's write must wake it (on a virtual machine an idle vCPU halts, and waking it is an
inter-processor interrupt through the hypervisor), and the scheduler must run it again.
On the 2-core test machine that is 15-20 µs on each end of a sequential call that took
~120 µs in all. A thread that is still polling when the message lands is not woken: its
next ``poll(0)`` sees it, and the writer's ``send`` returns sooner too. Two kinds of
thread poll: the owner of a thread's own connection, for its reply
(core/thread_channel.py), and an actor's lane, for its callers' next call
(worker/lane_reads.py). A client→actor call went from 120 to 78 µs with the first and
to 41 µs with both (benchmarks/bench_actors.py).

Polling only pays when the reply comes within the budget, and it costs a core while it
lasts, so the budget adapts per connection, as adaptive mutexes do (``SpinPolicy``):

* it keeps polling while few of its recent polls missed (at most one in five, as a
  moving average): a miss costs the whole budget, a catch saves a wake-up on each side;
* past that (a slow peer, a loaded machine, replies that come about as late as the
  budget, a reply that needs this process's own loop, which the poller keeps from the
  GIL) it parks at once for the next 1, 2, 4, ... 64 waits between two polls, until
  polls catch their replies again. A connection whose replies are slow therefore spends
  at most one budget per 64 waits polling.

``ACTORRT_SPIN_US`` sets the budget in microseconds (default ``DEFAULT_BUDGET_US``);
0 turns polling off. With one CPU it is off: the peer cannot run while we poll.
"""
from __future__ import annotations

import os
import select
import time
from typing import Callable

from .env import env_number

SWITCH = "ACTORRT_SPIN_US"

#: The default budget (µs): a little over a sequential call's reply time on the 2-core
#: test machine while its caller polls (40-50 µs), so a loaded moment still catches it.
DEFAULT_BUDGET_US = 100.0

#: The longest a connection parks without polling between two polls (in waits).
MAX_BACKOFF = 64

#: Polling goes on while at most this share of recent polls missed. A miss costs the
#: whole budget of CPU; a catch saves a wake-up on each side, 20-25 µs here: at a
#: 100 µs budget the two are even near one miss in five.
MAX_MISSES = 0.2

#: The weight of the latest poll in the share of misses (a moving average over ~8).
MISS_WEIGHT = 1 / 8


def default_budget() -> float:
    """The polling budget in seconds for this process: from ``ACTORRT_SPIN_US``, 0.0
    with a single CPU to run on."""
    micros = env_number(SWITCH, DEFAULT_BUDGET_US, "microseconds")
    return micros / 1e6 if _cpus() > 1 else 0.0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


class SpinPolicy:
    """One waiter's polling budget, wait by wait (module docstring).

    Not thread-safe: one waiting thread owns it (a thread channel's owner, a lane)."""

    __slots__ = ("budget", "misses", "_skip", "_backoff")

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.misses = 0.0    # the recent share of polls that missed (a moving average)
        self._skip = 0       # waits left that park at once
        self._backoff = 1    # waits to park at once after the next poll, if misses are many

    def next_budget(self) -> float:
        """How long the next wait polls before it parks (seconds; 0.0: park at once)."""
        if self._skip:
            self._skip -= 1
            return 0.0
        return self.budget

    def polled(self, caught: bool) -> None:
        """The outcome of a wait that polled: did its reply come while it did?"""
        self.misses += ((0.0 if caught else 1.0) - self.misses) * MISS_WEIGHT
        if self.misses <= MAX_MISSES:
            self._backoff = 1
        else:
            self._skip = self._backoff
            self._backoff = min(2 * self._backoff, MAX_BACKOFF)


class SocketPoll:
    """One thread's wait for a socket to turn readable (or to end): asleep in ``poll``,
    or polling without sleeping for a while. The GIL is let go in every ``poll``, also
    ``poll(0)``, so the process's other threads run on while one spins."""

    __slots__ = ("_poll",)

    def __init__(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self._poll = poller.poll

    def sleep(self, timeout: float) -> bool:
        """Whether it turned readable within ``timeout`` seconds, asleep meanwhile."""
        return bool(self._poll(max(0, int(timeout * 1000))))

    def spin(self, budget: float) -> bool:
        """Whether it turned readable within ``budget`` seconds, polling meanwhile."""
        return bool(poll_for(self._poll, budget))


def poll_for(poll: Callable[[int], list], budget: float) -> list:
    """``poll(0)`` of a ``select.poll`` again and again, for up to ``budget`` seconds:
    the first events it reports, or [] if none came."""
    clock = time.perf_counter
    end = clock() + budget
    while not (events := poll(0)):
        if clock() >= end:
            break
    return events
