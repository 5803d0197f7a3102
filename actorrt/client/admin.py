"""Cluster housekeeping and introspection on the Client (dask.distributed's names).

``run`` and ``run_on_scheduler``, ``who_has``/``has_what``/``processing``/``nthreads``,
``scheduler_info``, ``dashboard_link``, ``get_versions``,
``restart`` and ``shutdown``: a mixin of :class:`~actorrt.Client`, with its sync/async
face (``client.sync``). See docs/api.md for the status of each dask name.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import platform
import sys
from typing import TYPE_CHECKING, Any, Callable, cast
from urllib.parse import urlsplit

from ..core import ActorRef, Pickled
from ..core.addresses import worker_entry
from ..core.errors import ActorNotFoundError, CommClosedError
from ..core.serialize import loads_exception
from ..durations import parse_timeout
from ..protocol import WORKER_ID
from ..spec import pack_args
from .datasets import NO_DEFAULT
from .future import Future, futures_of
from .part import ClientPart

logger = logging.getLogger("actorrt.client")

if TYPE_CHECKING:
    from .client import Client

ON_ERROR = ("raise", "return", "ignore")


class AdminMethods(ClientPart):
    """Mixin of Client: running functions on the cluster, asking it about itself, restarting it."""

    # --- run a function on every worker / on the scheduler -----------------------
    def run(self, function: Callable[..., Any], *args: Any, workers: Any = None,
            wait: bool = True, nanny: bool = False, on_error: str = "raise", **kwargs: Any) -> Any:
        """Call ``function(*args, **kwargs)`` on each worker; ``{worker address: result}``.

        The call runs on the worker's event loop thread, between messages (keep it
        short; a coroutine function is awaited there). A ``dask_worker`` parameter
        receives the Worker. ``workers`` limits it to some workers (addresses or
        names); ``on_error`` is ``"raise"`` (the first failure), ``"return"`` (the
        exception as that worker's value) or ``"ignore"`` (leave that worker out).
        With ``wait=False`` a coroutine function is started and left running, and
        ``run`` returns None.

        >>> client.run(os.getpid)                               # doctest: +SKIP
        {'tcp://127.0.0.1:40123': 4242, 'tcp://127.0.0.1:40125': 4243}
        >>> client.run(lambda dask_worker: len(dask_worker.data))   # doctest: +SKIP
        {'tcp://127.0.0.1:40123': 3, 'tcp://127.0.0.1:40125': 0}
        """
        _check_run_args(function, wait, on_error)
        if nanny:
            raise ValueError("run(..., nanny=True) is not supported: an actorrt nanny is a small "
                             "supervisor process with nothing to run functions on; leave nanny=False "
                             "to run on the workers")
        fn_blob, args_blob = _pack_call(function, args, kwargs)
        return self.sync(_run_on_workers, self, fn_blob, args_blob, workers, wait, on_error)

    def run_on_scheduler(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``function(*args, **kwargs)`` on the scheduler's loop; its result.

        A ``dask_scheduler`` parameter receives the Scheduler actor.

        >>> client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.state.tasks))  # doctest: +SKIP
        0
        """
        _check_run_args(function, True, "raise")
        fn_blob, args_blob = _pack_call(function, args, kwargs)
        return self.sync(_run_on_scheduler, self, fn_blob, args_blob)

    # --- where things are -----------------------------------------------------------
    def who_has(self, futures: Any = None, **kwargs: Any) -> Any:
        """``{key: [worker addresses]}`` for ``futures`` (every key in memory if None).

        >>> x = client.submit(inc, 1); x.result()      # doctest: +SKIP
        >>> client.who_has([x])                         # doctest: +SKIP
        {'inc-5e3c...': ['tcp://127.0.0.1:40123']}
        """
        keys = None if futures is None else [f.key for f in futures_of(futures)]
        return self.sync(_ask_after_flush, self, "who_has", keys=keys)

    def has_what(self, workers: Any = None, **kwargs: Any) -> Any:
        """``{worker address: [keys it holds]}`` (for ``workers``, addresses or names)."""
        return self.sync(_per_worker, self, "has_what", workers)

    def processing(self, workers: Any = None) -> Any:
        """``{worker address: [keys placed there and not finished]}``."""
        return self.sync(_per_worker, self, "processing", workers)

    def nthreads(self, workers: Any = None, **kwargs: Any) -> Any:
        """``{worker address: number of threads}``."""
        return self.sync(_nthreads, self, workers)

    ncores = nthreads  # (dask's older name)

    def scheduler_info(self, n_workers: int = -1, **kwargs: Any) -> Any:
        """The cluster at a glance, shaped like dask's: ``{"type", "address", "workers": {...}}``.

        >>> sorted(client.scheduler_info()["workers"])   # doctest: +SKIP
        ['tcp://127.0.0.1:40123', 'tcp://127.0.0.1:40125']
        """
        return self.sync(_scheduler_info, self, n_workers)

    def futures_of(self, futures: Any) -> list[Future]:
        """The Futures inside ``futures`` (nested containers, persisted collections)."""
        return futures_of(futures)

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's web dashboard, e.g. ``'http://127.0.0.1:8787/status'``; None if off.

        Known at once for a cluster object that has one; otherwise asked of the
        scheduler once (an asynchronous client learns it from ``await
        client.scheduler_info()``). See docs/dashboard.md.

        >>> Client(processes=False).dashboard_link         # doctest: +SKIP
        'http://127.0.0.1:8787/status'
        """
        if hasattr(self.cluster, "dashboard_link"):
            return self.cluster.dashboard_link
        cached = self.__dict__.get("_dashboard_link", NO_DEFAULT)
        if cached is not NO_DEFAULT:
            return cached
        if self.asynchronous or getattr(self, "status", "") != "running":
            return None
        try:
            return self.sync(_dashboard_link, self)
        except RuntimeError:  # called on the client's own loop: it cannot block for the answer
            return None

    def get_versions(self, check: bool = False, packages: Any = None) -> Any:
        """Python and package versions of the client, the scheduler and each worker.

        ``check=True`` raises ``ValueError`` when a package's version differs between
        them (a common cause of unpickling errors).
        """
        return self.sync(_get_versions, self, check, list(packages or ()))

    # --- restarts -----------------------------------------------------------
    def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> Any:
        """Cancel every task of every client and replace the cluster's workers with fresh ones.

        Every Future becomes cancelled (``result()`` raises ``CancelledError``) and
        the published datasets are dropped. When every worker has a nanny (the
        default for ``actorrt-worker`` and ``LocalCluster(processes=True)``), each
        worker process is restarted by its nanny, and this works for a client that
        knows only the scheduler's address; ``restart`` returns when every worker is
        back (new addresses, the same names) and raises if one is not within
        ``timeout`` (60 s by default). Otherwise it needs the cluster object (a
        :class:`~actorrt.LocalCluster` this client started or was given), which stops
        its workers and starts new ones; in-process workers are replaced, but a task
        still running on one of their threads cannot be killed and finishes unseen.
        Without either, ``RuntimeError``, and nothing is cancelled.
        With ``wait_for_workers=False`` it returns once the futures are cancelled and the
        workers are told to restart (or, through the cluster object, their replacement
        has begun), without waiting for them to be back.
        """
        return self.sync(_restart, self, parse_timeout(timeout), wait_for_workers)

    def restart_workers(self, workers: Any, timeout: float | None = None, raise_for_error: bool = True) -> Any:
        """Restart some workers (addresses or names) through their nannies.

        Each worker process exits and its nanny starts a new one, which comes back with
        a new address and the same name; results held only by the old one are
        recomputed if still wanted (tasks are not cancelled: see :meth:`restart` for
        that). Returns ``{address: "OK" | exception}`` once every one is back or
        ``timeout`` seconds (60 by default) have passed. With ``raise_for_error`` (the
        default) any failure raises instead: ``TimeoutError`` if a worker did not come
        back in time, else ``RuntimeError`` (e.g. a worker without a nanny).

        >>> client.restart_workers(["0"])                 # doctest: +SKIP
        {'tcp://127.0.0.1:40123': 'OK'}
        """
        return self.sync(_restart_workers, self, workers, parse_timeout(timeout), raise_for_error)

    def shutdown(self) -> Any:
        """Close this client and the cluster it reaches through its cluster object.

        Other clients of that cluster lose it too. A client that knows only the
        scheduler's address cannot stop it: ``RuntimeError`` (stop the
        ``actorrt-scheduler`` process instead).
        """
        if self.cluster is None or not hasattr(self.cluster, "_close_async"):
            raise RuntimeError("shutdown needs the cluster object (Client(LocalCluster(...)) or a "
                               "Client that started its cluster); stop the scheduler process instead")
        if self.asynchronous:
            return _shutdown(cast("Client", self))
        cluster = self.cluster
        self.close()  # stops a cluster this client started
        if cluster.status != "closed" and not getattr(cluster, "asynchronous", False):
            cluster.close()
        return None



def _check_run_args(function: Any, wait: bool, on_error: str) -> None:
    if not callable(function):
        raise TypeError(f"run needs a callable, got {type(function).__name__}: {function!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not wait and not inspect.iscoroutinefunction(function):
        raise ValueError("run(..., wait=False) needs a coroutine function (async def): a plain "
                         "function runs to its end before the worker replies anyway")



def _pack_call(function: Any, args: tuple, kwargs: dict) -> tuple[Pickled, Pickled | None]:
    # Pickled in the caller's thread, so an unpicklable argument fails right here.
    return Pickled.dumps(function, what="function"), pack_args(args, kwargs)



def _outcome(reply: Any, where: str) -> tuple[bool, Any]:
    """``(ok, value or exception)`` from a run reply, or from the error that replaced it."""
    if isinstance(reply, (CommClosedError, ActorNotFoundError)):
        return False, type(reply)(f"{where} went away during run: {reply}")
    if isinstance(reply, BaseException):
        return False, reply
    if reply[0] == "ok":
        return True, reply[1].loads()
    return False, loads_exception(reply[1], reply[2])



async def _run_on_workers(client: "Client", fn: Pickled, args: Pickled | None, workers: Any,
                          wait: bool, on_error: str, timeout: float | None = None) -> Any:
    info = await client.host.ask(client.scheduler, "workers")
    targets = _resolve_workers(info, workers)
    replies = await asyncio.wait_for(asyncio.gather(*[
        client.host.ask(ActorRef(a, WORKER_ID), "run", function=fn, args=args, wait=wait)
        for a in targets], return_exceptions=True), timeout)
    results: dict[str, Any] = {}
    for address, reply in zip(targets, replies):
        ok, value = _outcome(reply, f"worker {address}")
        if ok or on_error == "return":
            results[address] = value
        elif on_error == "raise":
            raise value
    return results if wait else None



async def _run_on_scheduler(client: "Client", fn: Pickled, args: Pickled | None,
                            timeout: float | None = None) -> Any:
    reply = await asyncio.wait_for(
        client.host.ask(client.scheduler, "run", function=fn, args=args, wait=True), timeout)
    ok, value = _outcome(reply, "the scheduler")
    if not ok:
        raise value
    return value



def _resolve_workers(info: dict, workers: Any, strict: bool = True) -> list[str]:
    """Worker addresses for ``workers`` (None: all; else addresses or names). An entry
    that names no worker raises when ``strict``, else is skipped."""
    if workers is None:
        return sorted(info)
    if isinstance(workers, (str, int)):
        workers = [workers]
    by_name = {str(i.get("name")): a for a, i in info.items()}
    out = []
    for w in workers:
        address = w if w in info else by_name.get(str(w))
        if address is None and isinstance(w, str) and worker_entry(w) in info:
            address = worker_entry(w)  # ("10.0.0.2:40123" is that worker's tcp:// address)
        if address is not None:
            out.append(address)
        elif strict:
            raise ValueError(f"no worker {w!r} in the cluster; its workers are {sorted(info)}")
    return out



async def _ask_after_flush(client: "Client", op: str, timeout: float | None = None, **fields: Any) -> Any:
    # Submissions still in the client's outbox must reach the scheduler first.
    client.table.flush()
    return await asyncio.wait_for(client.host.ask(client.scheduler, op, **fields), timeout)



async def _per_worker(client: "Client", op: str, workers: Any, timeout: float | None = None) -> dict:
    addresses = None
    if workers is not None:
        addresses = _resolve_workers(await client.host.ask(client.scheduler, "workers"), workers)
    return await _ask_after_flush(client, op, workers=addresses, timeout=timeout)



async def _nthreads(client: "Client", workers: Any, timeout: float | None = None) -> dict:
    info = await client.host.ask(client.scheduler, "workers")
    return {a: info[a]["nthreads"] for a in _resolve_workers(info, workers)}



async def _dashboard_link(client: "Client", timeout: float | None = None) -> str | None:
    link = await asyncio.wait_for(client.host.ask(client.scheduler, "dashboard"), timeout)
    client.__dict__["_dashboard_link"] = link
    return link



async def _scheduler_info(client: "Client", n_workers: int, timeout: float | None = None) -> dict:
    ident, link = await asyncio.wait_for(asyncio.gather(
        client.host.ask(client.scheduler, "identity"), _dashboard_link(client)), timeout)
    workers = {a: _worker_entry(a, i) for a, i in sorted(ident["workers"].items())}
    total_memory = sum(w["memory_limit"] for w in workers.values())
    if n_workers is not None and n_workers >= 0:
        workers = dict(list(workers.items())[:n_workers])
    address = ident["address"]
    return {
        "type": "Scheduler", "id": f"Scheduler-{address}", "address": address,
        "n_workers": len(ident["workers"]),
        "total_threads": sum(i.get("nthreads", 0) for i in ident["workers"].values()),
        "total_memory": total_memory, "tasks": ident.get("tasks", 0),
        "services": {"dashboard": urlsplit(link).port} if link else {},
        "workers": workers,
    }



def _worker_entry(address: str, info: dict) -> dict:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    memory = dict(info.get("memory", {}))
    return {"type": "Worker", "id": info.get("name"), "name": info.get("name"), "host": host,
            "address": address, "nthreads": info.get("nthreads"), "pid": info.get("pid"),
            "status": "paused" if memory.get("paused") else "running",
            "resources": dict(info.get("resources") or {}),
            "memory_limit": memory.get("limit") or 0, "services": {},
            # managed: bytes of the values stored there and in memory (numpy nbytes, buffer
            # lengths, else an estimate); spilled: those on disk; rss: the process.
            "memory": memory,
            "metrics": {"managed_bytes": memory.get("managed", 0), "memory": memory.get("rss") or 0,
                        "spilled_bytes": {"memory": memory.get("spilled", 0),
                                          "disk": memory.get("spilled_disk", 0)}}}



def _versions() -> dict:
    """This process's Python and package versions (run on each server too)."""
    from importlib import metadata
    packages: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("actorrt", "cloudpickle", "msgpack", "tornado", "numpy", "dask"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"host": {"python": sys.version, "OS": platform.system(), "machine": platform.machine()},
            "packages": packages}



def _versions_with(extra: list) -> dict:
    out = _versions()
    from importlib import metadata
    for name in extra:
        try:
            out["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out["packages"][name] = None
    return out



async def _get_versions(client: "Client", check: bool, packages: list,
                        timeout: float | None = None) -> dict:
    fn, args = _pack_call(_versions_with, (packages,), {})
    workers = await _run_on_workers(client, fn, args, None, True, "raise")
    scheduler = await _run_on_scheduler(client, fn, args)
    out = {"scheduler": scheduler, "workers": workers, "client": _versions_with(packages)}
    if check:
        _check_versions(out)
    return out



def _check_versions(versions: dict) -> None:
    where = {"client": versions["client"], "scheduler": versions["scheduler"], **versions["workers"]}
    differ = []
    for name, mine in versions["client"]["packages"].items():
        seen = {w: v["packages"].get(name) for w, v in where.items()}
        if len(set(seen.values())) > 1:
            differ.append(f"{name}: {seen}")
    if differ:
        raise ValueError("package versions differ across the cluster:\n  " + "\n  ".join(differ))



async def _shutdown(client: "Client", timeout: float | None = None) -> None:
    cluster = client.cluster
    await client.close()  # (an asynchronous client's: a coroutine)
    if cluster.status != "closed":
        await cluster._close_async()



async def _restart(client: "Client", timeout: float | None, wait_for_workers: bool) -> None:
    info = await client.host.ask(client.scheduler, "workers")
    cluster = client.cluster
    through_nannies = _restart_route(info, cluster, client.scheduler.address)
    # (Decided before anything changes: a restart that cannot replace the workers
    # cancels nothing.)
    reason = "the cluster restarted (client.restart)"
    client.table.flush()
    await asyncio.wait_for(client.host.ask(client.scheduler, "restart", reason=reason), timeout)
    # The scheduler's "cancelled" reports leave after its reply; one more round trip
    # brings them in, so none can reach a Future submitted after restart returns.
    await client.host.ask(client.scheduler, "who_has", keys=[])
    _cancel_local_futures(client, reason)
    if through_nannies:
        _raise_for_errors(await _ask_restart_workers(client, sorted(info), timeout, wait=wait_for_workers))
        return
    n = len(cluster.workers)
    if wait_for_workers:
        await asyncio.wait_for(_replace_workers(cluster, n), timeout)
    else:
        replacing = asyncio.ensure_future(_replace_workers(cluster, n))
        _replacements.add(replacing)  # (the loop keeps only a weak reference to a task)
        replacing.add_done_callback(_replacements.discard)
        replacing.add_done_callback(_log_failed_replacement)



def _restart_route(info: dict, cluster: Any, address: str) -> bool:
    """True to restart the workers through their nannies, False through the cluster
    object; RuntimeError when neither can."""
    if info and all(i.get("nanny") for i in info.values()):
        return True
    if cluster is not None and hasattr(cluster, "_scale_async"):
        return False
    if not info:
        return True  # no workers: nothing to replace, only the cancelling
    without = sorted(a for a, i in info.items() if not i.get("nanny"))
    raise RuntimeError(f"restart needs every worker to have a nanny, or the cluster object to replace "
                       f"them: workers {without} have no nanny, and this client only knows the "
                       f"scheduler address {address!r} (connect with Client(LocalCluster(...)) or let "
                       "the Client start one)")



async def _restart_workers(client: "Client", workers: Any, timeout: float | None,
                           raise_for_error: bool) -> dict:
    addresses = _resolve_workers(await client.host.ask(client.scheduler, "workers"), workers)
    results = await _ask_restart_workers(client, addresses, timeout)
    if raise_for_error:
        _raise_for_errors(results)
    return results



async def _ask_restart_workers(client: "Client", addresses: list[str], timeout: float | None,
                               wait: bool = True) -> dict:
    """``{address: "OK" | exception}`` from the scheduler's restart_workers."""
    replies = await client.host.ask(client.scheduler, "restart_workers", addresses=addresses, timeout=timeout,
                                    wait=wait)
    return {a: r if r == "OK" else (TimeoutError if r[0] == "timeout" else RuntimeError)(r[1])
            for a, r in replies.items()}



def _raise_for_errors(results: dict) -> None:
    errors = {a: e for a, e in results.items() if isinstance(e, BaseException)}
    if not errors:
        return
    kind = TimeoutError if any(isinstance(e, TimeoutError) for e in errors.values()) else RuntimeError
    raise kind(f"{len(errors)} of {len(results)} workers did not restart: "
               + "; ".join(str(e) for e in errors.values()))



# Replacements started by restart(wait_for_workers=False), kept alive until done.
_replacements: set["asyncio.Future[None]"] = set()


def _log_failed_replacement(task: "asyncio.Future[None]") -> None:
    """No one waits for a replacement started with ``restart(wait_for_workers=False)``:
    its failure goes to the log rather than nowhere."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("restart(wait_for_workers=False): replacing the workers failed: %r", task.exception())



async def _replace_workers(cluster: Any, n: int) -> None:
    await cluster._scale_async(0)
    if cluster.status in ("closing", "closed"):  # closed meanwhile (a restart not waited for)
        return
    await cluster._scale_async(n)  # (a close from here on stops it: LocalCluster starts nothing then)



def _cancel_local_futures(client: "Client", reason: str) -> None:
    """Mark every Future of this client cancelled; detached, as ``cancel`` does, so a
    submit of the same key after the restart starts afresh."""
    for st in client.table.clear():
        st.cancel(reason)


__all__ = ["AdminMethods"]
