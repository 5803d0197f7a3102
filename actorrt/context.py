"""What code running inside a task can reach: its worker, a client, its thread slot.

Inside a task, :func:`get_client` returns the worker's own client: it shares the
worker's host, event loop and connections, so a task that submits more work opens
no connection of its own. Every blocking call of that client (``result``,
``gather``, ``wait``, iterating ``as_completed``) gives the task's thread slot back
while it waits and takes one again afterwards, so tasks that wait on tasks cannot
starve a worker of threads (dask/distributed#4738, #7223). :func:`secede`,
:func:`rejoin` and :func:`worker_client` remain for code written for dask and for
long waits on things other than futures.
"""
from __future__ import annotations

import builtins
import contextlib
import sys
import warnings
from typing import TYPE_CHECKING, Any, Iterator

from . import runtime
from .client.client import Client
from .core.addresses import with_default_scheme
from .durations import parse_timeout

if TYPE_CHECKING:
    from .worker.actor import Worker

#: Seconds a new client of ``get_client(address)`` tries to connect (dask's
#: ``distributed.comm.timeouts.connect``).
CONNECT_TIMEOUT = 30.0


def get_worker() -> "Worker":
    """The Worker running the current task; ValueError outside a task.

    >>> def where():                         # doctest: +SKIP
    ...     return get_worker().host.address
    >>> client.submit(where).result()        # doctest: +SKIP
    'tcp://127.0.0.1:40123'
    """
    worker = runtime.current_worker()
    if worker is None:
        raise ValueError("get_worker() was called outside a task: no worker found")
    return worker


def get_client(address: Any = None, timeout: Any = None,
               resolve_address: bool = True) -> "Client":
    """The client to use here: the task's worker's client inside a task, else the default.

    Inside a task the client shares the worker's host, loop and connections; no new
    connection is opened per task (so ``timeout`` never runs out there). Outside a
    task it is the last Client created in this process. An ``address`` of another
    scheduler than that client's (or with no client) gets a new Client connecting to
    it as in dask, within ``timeout`` (a duration; 30 s by default), else
    ``TimeoutError`` (an ``OSError``); with neither, ``ValueError``.
    ``resolve_address`` is accepted for dask's sake (addresses are used as given).

    >>> def fib(n):                                          # doctest: +SKIP
    ...     if n < 2:
    ...         return n
    ...     c = get_client()
    ...     return sum(c.gather([c.submit(fib, n - 1), c.submit(fib, n - 2)]))
    >>> client.submit(fib, 15).result()                      # doctest: +SKIP
    610
    """
    seconds = parse_timeout(timeout)
    if address is None or _current_scheduler() == with_default_scheme(address):
        return runtime.current_client()
    return Client(address, timeout=CONNECT_TIMEOUT if seconds is None else seconds)


def _current_scheduler() -> str | None:
    """The scheduler address of the client get_client() gives here without an address."""
    worker = runtime.current_worker()
    if worker is not None:
        return worker.scheduler.address
    default = runtime.default_client()
    return default.scheduler.address if default is not None else None


def secede() -> None:
    """Give this task's thread slot back to the worker (before a long wait).

    The scheduler may then place other work on the slot. Calling it again before
    :func:`rejoin` does nothing. ValueError outside a task.
    """
    slots = runtime.current_slots()
    if slots is None or runtime.current_job() is None:
        raise ValueError("secede() must be called inside a task running on a worker")
    slots.secede()


def rejoin() -> None:
    """Take a thread slot again after :func:`secede`; waits until one is free.

    Does nothing if the task holds its slot. ValueError outside a task.
    """
    slots = runtime.current_slots()
    if slots is None or runtime.current_job() is None:
        raise ValueError("rejoin() must be called inside a task running on a worker")
    slots.rejoin()


@contextlib.contextmanager
def worker_client(timeout: Any = None, separate_thread: bool = True) -> Iterator["Client"]:
    """A client for use inside a task, with the task's slot given back meanwhile.

    Kept for code written for dask: in actorrt, ``get_client()`` does the same, as its
    blocking calls give the slot back by themselves.

    >>> def total(n):                                        # doctest: +SKIP
    ...     with worker_client() as c:
    ...         return sum(c.gather(c.map(abs, range(n))))
    """
    client = get_client(timeout=timeout)
    slots = runtime.current_slots()
    seceded = bool(separate_thread and slots is not None and slots.secede())
    try:
        yield client
    finally:
        if seceded:
            assert slots is not None
            slots.rejoin()



#: dask's older name of :func:`worker_client`: a client for use inside a task.
local_client = worker_client


def ensure_default_client(client: "Client") -> None:
    """Make ``client`` the default client (what ``default_client()`` and code without a
    client at hand use), as dask's ``ensure_default_client``."""
    runtime.set_default_client(client)


@contextlib.contextmanager
def temp_default_client(client: "Client") -> Iterator[None]:
    """Make ``client`` the default client inside the ``with`` block; the previous one after.

    >>> with temp_default_client(other):     # doctest: +SKIP
    ...     default_client() is other
    True
    """
    with runtime.default_client_as(client):
        yield


def print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
          flush: bool = False) -> None:
    """``print``, and inside a task also on the console of every client (as dask's
    ``distributed.print``): the worker prints it and sends it under the "print" topic.

    Inside a task ``file`` may only be ``sys.stdout`` or ``sys.stderr`` (the client
    prints to its own); the arguments travel as their ``str``.

    >>> def work(x):                                     # doctest: +SKIP
    ...     actorrt.print("working on", x)
    ...     return x
    """
    worker = runtime.current_worker()
    if worker is not None and file not in (None, sys.stdout, sys.stderr):  # (before printing)
        raise TypeError("actorrt.print in a task: file must be sys.stdout or sys.stderr (the "
                        f"client prints to its own), not {file!r:.80}")
    builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
    if worker is None:
        return
    worker.log_event("print", {"args": tuple(str(a) for a in args), "sep": sep, "end": end,
                               "file": 2 if file is sys.stderr else 1, "flush": flush})


def warn(message: Any, category: type[Warning] | None = UserWarning, stacklevel: int = 1,
         source: Any = None) -> None:
    """``warnings.warn``, and inside a task also on every client (as dask's
    ``distributed.warn``): the warning is raised there with its message and category."""
    warnings.warn(message, category, stacklevel + 1, source)
    worker = runtime.current_worker()
    if worker is not None:
        worker.log_event("warn", {"message": message, "category": category})
