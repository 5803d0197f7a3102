"""``client.get_executor()``: the cluster as a :class:`concurrent.futures.Executor`.

Its futures are real :class:`concurrent.futures.Future` s, so
``concurrent.futures.wait`` and ``as_completed`` work on them; each mirrors one
actorrt Future. Cancelling one (while pending) cancels the task on the cluster.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .client import Client
    from .future import Future


class ClientExecutor(cf.Executor):
    """Submits to ``client`` with ``submit_kwargs`` (``workers=``, ``resources=``, ...).

    >>> with client.get_executor(pure=False) as ex:         # doctest: +SKIP
    ...     list(ex.map(pow, [2, 3], [2, 2]))
    [4, 9]
    """

    def __init__(self, client: "Client", **submit_kwargs: Any) -> None:
        if client.asynchronous:
            raise ValueError("get_executor needs a synchronous Client: concurrent.futures waits by "
                             "blocking (an asynchronous client's futures are awaited instead)")
        self.client = client
        self.submit_kwargs = submit_kwargs
        self._lock = threading.Lock()
        self._shutdown = False
        # The cluster's futures still pending, each by its mirror: kept so the task is
        # not released while someone may still wait for it (and to cancel on shutdown).
        self._pending: dict[cf.Future, "Future"] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = self.client.submit(fn, *args, **self.submit_kwargs, **kwargs)
            mirror: cf.Future = cf.Future()
            self._pending[mirror] = future
        mirror.add_done_callback(self._mirror_done)
        future.add_done_callback(lambda f: self._copy(f, mirror))
        return mirror

    def _mirror_done(self, mirror: cf.Future) -> None:
        with self._lock:
            future = self._pending.pop(mirror, None)
        if mirror.cancelled() and future is not None and not future.done():
            future.cancel()  # cancelled here: cancel the task on the cluster too

    @staticmethod
    def _copy(future: "Future", mirror: cf.Future) -> None:
        """On a client callback thread: the outcome of ``future`` into its mirror."""
        if future.status == "cancelled":
            mirror.cancel()
            return
        if not mirror.set_running_or_notify_cancel():
            return  # cancelled by its user meanwhile
        try:
            mirror.set_result(future.result())
        except BaseException as e:  # (the task's own exception, as concurrent.futures keeps it)
            mirror.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for mirror in pending:
                mirror.cancel()
        if wait:
            cf.wait(pending)


__all__ = ["ClientExecutor"]
