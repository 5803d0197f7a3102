"""What the scheduler's state machine asks its actor to do: the instructions that
:class:`~actorrt.scheduler.state.SchedulerState`'s stimuli return.

Plain records, no behaviour: the actor turns each into a message (to a worker or a
client), and tests assert on them as they are.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class Compute(NamedTuple):
    """Run ``key`` on ``worker`` (build it, if ``actor``)."""
    worker: str
    key: str
    spec: Any
    deps: dict  # dep key -> [worker addresses holding it]
    name: str
    actor: bool
    run_id: int  # this run of the key: reports of an earlier run are told apart
    sizes: dict  # dep key -> its nbytes: the worker budgets its transfers with them


class Free(NamedTuple):
    """``worker`` drops its copies of ``keys`` (or stops running them). ``puts``: for a
    copy a client scattered there, the worker's serial number of that put (a later put
    of the key there is not dropped with it)."""
    worker: str
    keys: list
    puts: dict | None = None

    @classmethod
    def one(cls, worker: str, key: str, put: int | None) -> "Free":
        """The Free of one copy, naming the put that scattered it there (0/None: none did)."""
        return cls(worker, [key], {key: put} if put else None)


class Report(NamedTuple):
    """Tell ``client`` about ``key``: status is memory, erred, cancelled or lost."""
    client: str
    key: str
    status: str
    info: dict


Instruction = Compute | Free | Report
