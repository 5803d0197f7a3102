"""Testing helpers for actorrt and its users.

* :func:`gen_cluster` runs an ``async def`` test against a fresh in-process cluster
  with a deadline, validating the scheduler's invariants at teardown;
* :func:`cluster` is the same as an async context manager;
* :func:`poll_for` waits for a condition with a deadline (never an unbounded sleep).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from ..client.client import Client
from ..deploy.local import LocalCluster


@contextlib.asynccontextmanager
async def cluster(n_workers: int = 2, threads_per_worker: int = 1, processes: bool = False,
                  validate: bool = True, **kwargs: Any) -> AsyncIterator[tuple[Client, LocalCluster]]:
    """An in-process (or process) cluster and an async client on the running loop."""
    lc = LocalCluster(n_workers, threads_per_worker, processes=processes, asynchronous=True,
                      validate=validate, **kwargs)
    await lc
    client = Client(lc, asynchronous=True)
    try:
        await client
        yield client, lc
        if validate and lc.scheduler is not None:
            lc.scheduler.state.validate()
    finally:
        await client.close()
        await lc._close_async()


def gen_cluster(n_workers: int = 2, threads_per_worker: int = 1, timeout: float = 30,
                processes: bool = False, **kwargs: Any) -> Callable:
    """Decorate ``async def test(client, cluster)`` to run on a fresh cluster."""

    def decorator(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            async def main() -> Any:
                async with cluster(n_workers, threads_per_worker, processes=processes,
                                   **kwargs) as (client, lc):
                    return await asyncio.wait_for(fn(client, lc, *args, **kw), timeout)
            before = set(threading.enumerate())
            result = asyncio.run(main())
            _check_threads(before)
            return result
        # pytest must not mistake the client and cluster parameters for fixtures.
        params = list(inspect.signature(fn).parameters.values())[2:]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return wrapper
    return decorator


def _check_threads(before: set, grace: float = 5.0) -> None:
    deadline = time.monotonic() + grace
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left behind: {[t.name for t in extra]}")
        extra[0].join(0.05)


async def poll_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> None:
    """Wait until ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> None:
    """Blocking twin of :func:`poll_for` for sync tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def stop_processes(procs: list, grace: float = 10.0) -> None:
    """Stop processes a test started (``subprocess.Popen``): SIGTERM to each still
    running, then wait up to ``grace`` seconds (kill after), and close their output
    pipes, so no process or pipe outlives the test."""
    import signal
    import subprocess
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


__all__ = ["cluster", "gen_cluster", "poll_for", "stop_processes", "wait_until"]
