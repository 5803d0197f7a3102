"""What code running inside a task can reach: its worker, a client, its thread slot."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

from .worker.pool import current_job, current_pool

if TYPE_CHECKING:
    from .client.client import Client
    from .worker.actor import Worker


def get_worker() -> "Worker":
    """The Worker running the current task; ValueError outside a task."""
    job = current_job()
    task = getattr(job, "context", None) if job is not None else None
    worker = getattr(task, "worker", None)
    if worker is None:
        raise ValueError("get_worker() was called outside a task: no worker found")
    return worker


def get_client(timeout: float | None = None) -> "Client":
    """The client to use here: the task's worker's client inside a task, else the default.

    Inside a task the client shares the worker's host, loop and connections; no new
    connection is opened per task.
    """
    try:
        worker = get_worker()
    except ValueError:
        worker = None
    if worker is not None:
        return worker.client()
    from .client.client import default_client
    client = default_client()
    if client is None:
        raise ValueError("get_client() found no client: call it inside a task, or create a "
                         "Client first")
    return client


def secede() -> None:
    """Give this task's thread slot back to the worker (for long waits on other work)."""
    pool = current_pool()
    if pool is None or not pool.secede():
        raise ValueError("secede() must be called inside a task running on a worker")


def rejoin() -> None:
    """Take a thread slot again after :func:`secede`; waits until one is free."""
    pool = current_pool()
    if pool is None:
        raise ValueError("rejoin() must be called inside a task running on a worker")
    pool.rejoin()


@contextlib.contextmanager
def worker_client(timeout: float | None = None, separate_thread: bool = True) -> Iterator["Client"]:
    """A client for use inside a task, with the task's slot given back meanwhile."""
    client = get_client(timeout)
    pool = current_pool()
    seceded = bool(separate_thread and pool is not None and pool.secede())
    try:
        yield client
    finally:
        if seceded:
            assert pool is not None
            pool.rejoin()
