"""Small helpers shared by the client, worker and deploy layers."""
from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from typing import Any, Awaitable, Callable, TypeVar

from . import runtime

T = TypeVar("T")


class LoopRunner:
    """An asyncio loop running in a daemon thread: the engine of every sync face."""

    def __init__(self, name: str = "actorrt-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()
        # Drain what is left so no task is destroyed pending.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None,
            **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot block on the event loop from its own thread; use the async API")
        return runtime.block_on(self.loop, lambda: asyncio.wait_for(fn(*args, **kwargs), timeout))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)


# Containers are measured from a sample of this many items, scaled to their length:
# a result of a million small objects must not cost a million calls to report.
_SIZEOF_SAMPLE = 16


def sizeof(obj: Any, depth: int = 3) -> int:
    """An estimate of the memory ``obj`` holds: buffers' lengths, numpy's ``nbytes``,
    a sample of a container's items, else ``sys.getsizeof`` (pandas answers that deeply).

    The scheduler accounts each stored value with it (``scheduler_info()``'s per-worker
    ``memory["managed"]``), so it must be cheap and never raise.
    """
    nbytes = getattr(obj, "nbytes", None)
    if type(nbytes) is int:
        return nbytes
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj)
    try:
        own = sys.getsizeof(obj)
    except Exception:
        return 64
    if depth > 1 and type(obj) in (list, tuple, set, frozenset, dict) and obj:
        items = list(itertools.islice(obj.values() if type(obj) is dict else obj, _SIZEOF_SAMPLE))
        sample = sum(sizeof(x, depth - 1) for x in items)
        own += sample * len(obj) // len(items)
    return own
