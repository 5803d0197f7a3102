"""The Client: dask.distributed's futures API over actorrt's actors.

The async code is the truth; the sync face runs it on the client's loop thread.
Submitting is cheap and never blocks: the task is pickled in the caller's thread (so
an unpicklable argument fails right there), a Future is returned, and the task joins
an outbox that goes to the scheduler as one message per loop turn.
"""
from __future__ import annotations

import asyncio
import collections.abc
import functools
import hashlib
import logging
import os
import uuid
from typing import Any, Callable, Iterable

from .. import runtime
from ..core import ActorRef, Host, Pickled, secret_file
from ..core.addresses import with_default_scheme
from ..core.comm import Comm
from ..core.env import env_switch
from ..core.errors import BadMessageError, CommClosedError, SerializationError
from ..core.security import Security
from ..core.tracebacks import remote_tail
from ..durations import parse_timeout
from ..protocol import FIRE_AND_FORGET, SCHEDULER_ID, GraphTooLargeError, runs_alone
from ..spec import funcname, pack_args, replace_refs
from ..integrations import joblib_backend
from ..utils import LoopRunner, fresh_ids, when_imported
from . import transfer
from .actor_handle import (
    actor_futures_of,
    actor_options,
    gather_actor_futures,
    get_named_actor,
    is_actor_handle,
    submit_when_ready,
    waits_for_actor_futures,
)
from .admin import AdminMethods
from .arguments import (
    FunctionCache,
    check_key,
    check_map_keys,
    check_priority,
    check_resources,
    check_retries,
    check_running,
    check_workers,
)
from .collections import DaskDefault
from .compat import (
    CurrentClientMethods,
    without_dask_only_options,
)
from .data_moves import DataMoveMethods
from .datasets import DatasetMethods
from .errors import ClosedClientError
from .events import EventMethods
from .extras import ExtraMethods
from .future import CallbackThread, Future, FutureState, futures_of, held_future
from .plugins import PluginMethods
from .profiling import ProfilingMethods
from .direct import DirectRuns, by_worker, fold_lives
from .reports import ClientActor
from .futures import FutureTable
from .task_stream import TaskStreamMethods
from .semantics import cancelled_dependency, check_workers_wanted, released_future

# Seconds a client with timeout=None tries to reconnect to a scheduler it lost.
RECONNECT_TIMEOUT = 30.0

logger = logging.getLogger("actorrt.client")


class Client(AdminMethods, DatasetMethods, CurrentClientMethods, DataMoveMethods, ExtraMethods,
             PluginMethods, EventMethods, TaskStreamMethods, ProfilingMethods):
    """Connect to a cluster (or start a local one) and run work on it.

    >>> client = Client()                          # doctest: +SKIP
    >>> client.submit(lambda x: x + 1, 1).result() # doctest: +SKIP
    2
    """

    def __init__(self, address: Any = None, *, n_workers: int | None = None,
                 threads_per_worker: int | None = None, processes: bool = True,
                 asynchronous: bool = False, timeout: float = 30, secret: bytes | str | None = None,
                 set_as_default: bool = True, name: str | None = None, security: Security | None = None,
                 **cluster_kwargs: Any) -> None:
        self.asynchronous = asynchronous
        # ACTORRT_DIRECT_TASKS=0: every task through the scheduler (client/direct.py);
        # read first, so that a bad value starts nothing.
        self._direct_tasks = env_switch("ACTORRT_DIRECT_TASKS", True)
        self.security = security  # TLS files for tls:// (core/security.py)
        self.id = f"client-{name or ''}{uuid.uuid4().hex[:12]}"
        self.status = "created"
        self.timeout = parse_timeout(timeout)  # also how long a client that lost its scheduler tries to reconnect
        self._reconnecting: asyncio.Task | None = None
        self.cluster: Any = None
        self._own_cluster = False
        self._address = address
        self._secret = _secret_bytes(secret)
        self._cluster_args = dict(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                  processes=processes, **cluster_kwargs)
        self._set_as_default = set_as_default
        self._dask_default = DaskDefault()  # dask's scheduler while this client runs
        self.table = FutureTable()  # the keys this client holds, and the scheduler's outbox
        self._max_tasks: int | None = None  # the scheduler's limit, told at registration
        self.functions = FunctionCache()  # each function object pickled once
        self.callbacks = CallbackThread()  # done-callbacks of a sync client run there
        self._own_host = True
        self._loop_runner: LoopRunner | None = None
        self.host: Host
        self.scheduler: ActorRef
        self.loop: asyncio.AbstractEventLoop
        self._start_task: Any = None
        self._own_loop = True
        if not asynchronous:
            # joblib.parallel_backend("dask") runs here (docs/joblib.md); registering
            # imports joblib, so it waits for the user's own import of it.
            when_imported("joblib", joblib_backend.register)
            if address is None:
                # A sync client's cluster has a sync face too (``client.cluster.scale(4)``
                # works), and the client shares its loop and its inproc addresses.
                address = self.cluster = self._local_cluster(asynchronous=False)
                self._own_cluster = True
            shared = getattr(address, "_loop_runner", None)
            if shared is not None:  # a sync LocalCluster: share its loop (and inproc addresses)
                self._loop_runner, self._own_loop = shared, False
            else:
                self._loop_runner = LoopRunner("actorrt-client")
            self.loop = self._loop_runner.loop
            try:
                self._loop_runner.run(self._start, timeout=None if self.timeout is None else self.timeout + 5)
            except BaseException:
                self._loop_runner.run(self._close_async)
                self._stop_loop()
                raise

    @classmethod
    def _on_host(cls, host: Host, scheduler_address: str, asynchronous: bool = False) -> "Client":
        """A client sharing an existing host (a worker's), its loop and its connections."""
        self = cls.__new__(cls)
        cls.__init__(self, scheduler_address, asynchronous=True, set_as_default=False)
        self.asynchronous = asynchronous
        self._own_host = False
        self.host = host
        assert host.loop is not None
        self.loop = host.loop
        self.scheduler = ActorRef(scheduler_address, SCHEDULER_ID)
        self._scheduler_comm = host.comm_to(scheduler_address)  # the worker's, which it shares
        self.table.attach(self.loop, self._deliver)
        self.direct = DirectRuns(self, self._direct_tasks)
        host.spawn(ClientActor(self), self.id)
        self.status = "running"
        host.tell(self.scheduler, "register_client", client=self.id, ref=ActorRef(host.address, self.id))
        return self

    # --- start and stop -------------------------------------------------------
    def __await__(self) -> Any:
        return self._started().__await__()

    async def _started(self) -> "Client":
        if self.status == "created":
            await self._start()
        return self

    async def _start(self) -> "Client":
        self.loop = asyncio.get_running_loop()
        address = self.cluster if self._own_cluster else self._address
        if address is None:
            self.cluster = self._local_cluster(asynchronous=True)
            self._own_cluster = True
            await self.cluster
            address = self.cluster.scheduler_address
            self._secret = self.cluster.secret
        elif not isinstance(address, str):  # a cluster object
            self.cluster = address
            if getattr(address, "asynchronous", True):
                await address
            address = address.scheduler_address
            self._secret = self._secret or getattr(self.cluster, "secret", None)
            self.security = self.security or getattr(self.cluster, "security", None)
        else:
            address = with_default_scheme(address)  # ("127.0.0.1:8786" means tcp://, as in dask)
        if self._secret is None and os.environ.get("ACTORRT_SECRET"):
            self._secret = _secret_bytes(os.environ["ACTORRT_SECRET"])
        if self._secret is None:  # a scheduler of this user on this machine published its own
            self._secret = secret_file.lookup(address)
        self.host = Host(None, secret=self._secret, name="client", security=self.security)
        await self.host.start()
        # The scheduler may still be starting: wait for it as long as `timeout` says.
        # Later connections (to workers) fail fast, so a dead peer is noticed quickly.
        self._scheduler_comm: Comm | None = await self.host.connect(address, timeout=self.timeout)
        self.scheduler = ActorRef(address, SCHEDULER_ID)
        self.table.attach(self.loop, self._deliver)
        self.direct = DirectRuns(self, self._direct_tasks)  # lone tasks a waiting thread runs (direct.py)
        actor = ClientActor(self)
        self.host.spawn(actor, self.id)
        registered = await asyncio.wait_for(
            self.host.ask(self.scheduler, "register_client", client=self.id, ref=actor.ref),
            self.timeout)
        self._max_tasks = registered.get("max_tasks") if isinstance(registered, dict) else None
        self.host.peer_lost_callbacks.append(self._on_peer_lost)
        self.status = "running"
        self._subscribe_console()  # actorrt.print/warn in tasks show here
        if self._set_as_default:
            runtime.set_default_client(self)
            self._dask_default.install(self)
        return self

    def _local_cluster(self, asynchronous: bool) -> Any:
        """The LocalCluster this client starts when given no address."""
        from ..deploy.local import (
            LocalCluster,  # (the one lazy import: deploy sits above client)
        )
        # (None means "the cluster's default", except for the dashboard and the memory
        # limit: None turns them off.)
        args = without_dask_only_options({k: v for k, v in self._cluster_args.items()
                                          if v is not None or k in ("dashboard_address", "memory_limit")},
                                         LocalCluster)
        return LocalCluster(asynchronous=asynchronous, security=self.security, **args)

    def _stop_loop(self) -> None:
        """Stop the loop thread this client (or the sync cluster it started) runs."""
        if self._own_loop and self._loop_runner is not None:
            self._loop_runner.stop()
        elif self._own_cluster and self.cluster is not None and not self.cluster.asynchronous:
            self.cluster.close()  # (closed already on the loop: this stops its loop thread)

    def _on_peer_lost(self, address: str, comm: Any) -> None:
        # By connection, not only by name: the scheduler may call itself by another
        # name (localhost, 0.0.0.0) than the address this client dialled.
        lost = comm is getattr(self, "_scheduler_comm", None)
        if not lost or self.status != "running":
            return
        self._scheduler_comm = None
        self.table.connection_lost()  # nothing sent on it will be acknowledged
        for st in self.table.clear():  # the scheduler forgot them with this client
            if not st.done():
                st.err(RuntimeError(f"lost connection to the scheduler at {address}"), None)
        if not self._own_host:
            # A task's client: its worker rejoins the scheduler and makes a new one.
            logger.warning("client %s lost its scheduler at %s", self.id, address)
            return
        logger.warning("client %s lost its scheduler at %s; its futures are lost; reconnecting for up "
                       "to %g s", self.id, address, self._reconnect_window)
        self.status = "connecting"
        self._reconnecting = self.loop.create_task(self._reconnect(self.scheduler.address))

    @property
    def _reconnect_window(self) -> float:
        """Seconds a client that lost its scheduler tries to reconnect: its ``timeout``
        (``timeout=None`` waits for nothing else, but a reconnection still ends)."""
        return RECONNECT_TIMEOUT if self.timeout is None else self.timeout

    async def _reconnect(self, address: str) -> None:
        """Dial the scheduler again and register anew, for up to ``timeout`` seconds
        (a network blip, a scheduler restarted at the same address); then close."""
        loop = asyncio.get_running_loop()
        window = self._reconnect_window
        deadline = loop.time() + window
        delay = 0.05
        while self.status == "connecting":
            try:
                comm = await self.host.connect(address, timeout=max(0.1, min(5.0, deadline - loop.time())))
                await asyncio.wait_for(self.host.ask(
                    self.scheduler, "register_client", client=self.id, ref=ActorRef(self.host.address, self.id)),
                    max(0.1, deadline - loop.time()))
            except (CommClosedError, BadMessageError, OSError, asyncio.TimeoutError) as e:
                if loop.time() + delay >= deadline:
                    logger.error("client %s could not reconnect to its scheduler at %s within %g s (%s); "
                                 "closing it", self.id, address, window, e)
                    await self._close_async()
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            if self.status != "connecting":  # closed meanwhile
                return
            self._scheduler_comm = comm
            self.status = "running"
            logger.warning("client %s reconnected to its scheduler at %s", self.id, address)

    async def __aenter__(self) -> "Client":
        return await self._started()

    async def __aexit__(self, *exc: Any) -> None:
        await self._close_async()

    def __enter__(self) -> "Client":
        if self.asynchronous:  # its close is a coroutine that ``__exit__`` could only drop
            raise TypeError("an asynchronous Client is a context manager with `async with`, not `with`")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> Any:
        """Release everything this client holds; stop the cluster it started."""
        timeout = parse_timeout(timeout)
        if self.asynchronous:
            return self._close_async()
        if self.status in ("closing", "closed"):
            return None
        if self._loop_runner is not None:
            try:
                self._loop_runner.run(self._close_async, timeout=self.timeout if timeout is None else timeout)
            finally:
                self._stop_loop()
        else:
            self.sync(self._close_async)
        return None

    async def _close_async(self) -> None:
        if self.status in ("closing", "closed"):
            return
        was_running = self.status == "running"
        if self._reconnecting is not None and self._reconnecting is not asyncio.current_task():
            self._reconnecting.cancel()
        self.status = "closing"
        self.table.close()  # Futures dropped from now on release nothing remotely
        runtime.unset_default_client(self)
        self._dask_default.uninstall()
        if was_running:
            self.table.flush()
            try:
                self.host.tell(self.scheduler, "unregister_client", client=self.id)
            except CommClosedError:
                pass
        if self._own_host and hasattr(self, "host"):
            # Let the unregister message leave before the connection goes.
            await asyncio.sleep(0)
            await self.host.close()
        elif hasattr(self, "host"):
            self.host.stop_actor(self.id)
        if self._own_cluster and self.cluster is not None:
            await self.cluster._close_async()
        self.callbacks.shutdown()
        for st in self.table.states():
            if not st.done():
                st.cancel("the client closed")
        self.status = "closed"

    # --- the sync face --------------------------------------------------------
    def sync(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run coroutine function ``fn`` on the loop: awaitable if asynchronous, else its result.

        Called from a task on a worker, the task's thread slot is given back while it
        waits, so nested gathers cannot starve the pool (dask/distributed#4738).
        """
        if timeout is not None:  # every public timeout passes here: "2s", a timedelta, ...
            kwargs["timeout"] = parse_timeout(timeout)
        if self.status == "closed":
            # Its loop may be gone: waiting on it would hang for ever.
            exc = ClosedClientError(f"client is closed; cannot call {getattr(fn, '__name__', '?').lstrip('_')}()")
            if self.asynchronous:
                return runtime.Ready(error=exc)
            raise exc
        if self.asynchronous:
            return fn(*args, **kwargs)
        self.table.flush_soon()  # (a report relayed lazily reaches the scheduler before this asks it)
        try:
            return runtime.block_on(self.loop, lambda: fn(*args, **kwargs))
        except BaseException as e:
            # A task's error shows its own frames, not the wait's (docs/futures.md).
            tail = remote_tail(e.__traceback__)
            if tail is None:
                raise
            raise e.with_traceback(tail)

    # --- the outbox -------------------------------------------------------------
    def _deliver(self, box: list) -> None:
        """On the loop: turn the table's outbox into messages to the scheduler."""
        if self.status not in ("running", "closing"):
            self.table.unsent(sum(len(items) for op, items in box if op in ("update_graph", "update_graph_more")))
            return
        tell = self.host.tell
        for op, items in fold_lives(box):
            try:
                if op in ("update_graph", "update_graph_more"):
                    self._send_graph(items, more=op == "update_graph_more")
                elif op in ("release_keys", "want_keys"):
                    tell(self.scheduler, op, client=self.id, keys=items)
                elif op == "update_data":
                    for who_has, nbytes, types, puts in items:
                        tell(self.scheduler, "update_data", client=self.id, who_has=who_has,
                             nbytes=nbytes, types=types, puts=puts)
                elif op == "cancel":
                    for keys, force in items:
                        tell(self.scheduler, "cancel", client=self.id, keys=keys, force=force)
                elif op == "retry":
                    tell(self.scheduler, "retry", keys=[k for ks in items for k in ks])
                elif op == "direct_started":
                    tell(self.scheduler, "direct_started", client=self.id, tasks=[t for t, _, _ in items],
                         workers=[w for _, _, w in items])
                elif op == "direct_complete":
                    tell(self.scheduler, "direct_complete", client=self.id, tasks=[t for t, _, _ in items],
                         workers=[w for _, w, _ in items], finished=[f for _, _, f in items])
                elif op == "direct_done":
                    for worker, (finished, erred) in by_worker(items).items():
                        tell(self.scheduler, "direct_done", client=self.id, worker=worker, finished=finished,
                             erred=erred)
                elif op == "direct_declined":
                    for worker, (keys, _) in by_worker(items).items():
                        tell(self.scheduler, "direct_declined", client=self.id, worker=worker, keys=keys)
                elif op == "fire_and_forget":
                    # The scheduler's holder that keeps work alive until it is done.
                    tell(self.scheduler, "want_keys", client=FIRE_AND_FORGET, keys=items)
            except CommClosedError:
                logger.warning("scheduler connection closed; dropped %s", op)
        # On the wire before this turn ends: a thread that submitted, and then writes
        # an actor call carrying the Future itself, waits for this flush to have run
        # (runtime.caught_up), so its call then cannot leave before the submission.
        self.host.flush_pending()

    def _send_graph(self, items: list, more: bool) -> None:
        """One chunk of tasks. The scheduler's acknowledgement (now, or once its backlog
        shrank) lets the table send more (futures.py, admission.py). While the table has
        half its window to spare, the chunk is told and its acknowledgement rides on a
        later report: a lone ``submit(...).result()`` then costs no reply message."""
        tasks = [t for t, _ in items]
        wanted = [k for _, k in items if k is not None]
        fields: dict[str, Any] = {"more": True} if more else {}
        try:
            if self.table.may_ack_later():
                self.host.tell(self.scheduler, "update_graph", client=self.id, tasks=tasks, wanted=wanted,
                               ack_later=True, **fields)
                return
            answer = self.host.ask(self.scheduler, "update_graph", client=self.id, tasks=tasks, wanted=wanted,
                                   **fields)
        except CommClosedError:
            self.table.acknowledged(len(tasks))
            raise
        answer.add_done_callback(functools.partial(self._graph_acknowledged, len(tasks)))

    def _graph_acknowledged(self, n: int, answer: "asyncio.Future[Any]") -> None:
        """The reply counts this chunk and the earlier ones told with ``ack_later``; a
        refused or lost chunk counts as itself."""
        acked = n
        if not answer.cancelled():
            if answer.exception() is not None:
                # Refused (too large, malformed): its Futures already err with the reason.
                logger.debug("update_graph refused: %s", answer.exception())
            elif type(value := answer.result()) is int:
                acked = value
        self.table.acknowledged(acked)

    # --- submitting ------------------------------------------------------------
    def submit(self, func: Callable[..., Any], *args: Any, key: str | None = None,
               workers: Any = None, allow_other_workers: bool = False, retries: int | None = None,
               priority: float = 0, pure: bool | None = None, actor: bool | dict = False, actors: bool = False,
               resources: dict | None = None, fifo_timeout: Any = None, **kwargs: Any) -> Future:
        """Run ``func(*args, **kwargs)`` on a worker; returns a Future at once.

        ``resources={"GPU": 1}`` runs it only on a worker that declared that much and
        has it free, holding it while it runs (docs/resources.md); ``workers=`` takes
        worker addresses, names or hosts. ``fifo_timeout=`` has no meaning here.
        """
        if not callable(func):
            raise TypeError(f"first argument to submit must be callable, got {type(func).__name__}: {func!r}")
        check_running(self)
        key, priority, retries = check_key(key), check_priority(priority), check_retries(retries)
        workers, allow_other_workers = check_workers(workers), bool(allow_other_workers)
        resources = check_resources(resources)
        actor = actor or actors
        if actor and not isinstance(actor, dict):  # options: name, max_restarts, ... (actor_handle.py)
            actor, key = actor_options(kwargs, key, self)
        if pure is None:
            pure = not actor
        fn_blob = self.functions.pickled(func)
        try:
            [future] = self._submit_batch(func, fn_blob, [(args, kwargs)], [key] if key else None, pure,
                                          workers, allow_other_workers, retries or 0, priority, actor,
                                          resources=resources)
        except SerializationError as e:
            if not waits_for_actor_futures(e):
                raise
            # The arguments hold actor calls still in flight: send the task once they reply.
            return submit_when_ready(self, func, args, kwargs, key, dict(
                workers=workers, allow_other_workers=allow_other_workers, retries=retries,
                priority=priority, pure=pure, actor=actor, resources=resources))
        return future

    def map(self, func: Callable[..., Any], *iterables: Iterable, key: str | list | None = None,
            workers: Any = None, allow_other_workers: bool = False, retries: int | None = None,
            priority: float = 0, pure: bool | None = None, actor: bool | dict = False, actors: bool = False,
            batch_size: int | None = None, resources: dict | None = None, fifo_timeout: Any = None,
            **kwargs: Any) -> list[Future]:
        """Submit ``func`` over the items of ``iterables``; one Future per item.

        ``batch_size`` and ``fifo_timeout`` are accepted for dask's sake (every call
        goes out in one message per loop turn anyway); ``resources`` as in :meth:`submit`.
        """
        if not callable(func):
            raise TypeError(f"first argument to map must be callable, got {type(func).__name__}: {func!r}")
        if not iterables:
            raise TypeError("map needs at least one iterable")
        for it in iterables:
            if isinstance(it, (str, bytes, dict)) or not hasattr(it, "__iter__"):
                raise TypeError(f"map's arguments must be iterables (not str, bytes or dict), got "
                                f"{type(it).__name__}")
        check_running(self)
        priority, retries = check_priority(priority), check_retries(retries)
        workers, allow_other_workers = check_workers(workers), bool(allow_other_workers)
        resources = check_resources(resources)
        actor = actor or actors
        if actor and not isinstance(actor, dict):
            actor, _ = actor_options(kwargs, None, self, allow_name=False)
        if pure is None:
            pure = not actor
        calls = [(args, kwargs) for args in zip(*iterables)]
        keys, prefix = check_map_keys(key, len(calls))
        fn_blob = self.functions.pickled(func)
        try:
            return self._submit_batch(func, fn_blob, calls, keys, pure, workers, allow_other_workers,
                                      retries or 0, priority, actor, prefix=prefix, resources=resources)
        except SerializationError as e:
            if not waits_for_actor_futures(e):
                raise
            options = dict(workers=workers, allow_other_workers=allow_other_workers, retries=retries,
                           priority=priority, pure=pure, actor=actor, resources=resources)
            return [submit_when_ready(self, func, a, kw, keys[i] if keys else None, options)
                    for i, (a, kw) in enumerate(calls)]

    def _submit_batch(self, func: Any, fn_blob: Pickled, calls: list[tuple[tuple, dict]],
                      keys: list[str] | None, pure: bool, workers: Any, allow_other_workers: bool,
                      retries: int, priority: float, actor: bool | dict, prefix: str | None = None,
                      resources: dict[str, float] | None = None) -> list[Future]:
        self._check_size(len(calls))
        name = prefix or funcname(func)
        options = (name, priority, retries, check_workers(workers), allow_other_workers, actor, resources)
        fn_hash = hashlib.blake2b(fn_blob.header, digest_size=16)  # copied per call, not redone
        futures: list[Future] = []
        # In chunks: a million calls are pickled and queued a chunk at a time, so what
        # waits to be sent stays bounded, and a thread that submits faster than the
        # cluster keeps up waits here for room (backpressure, FutureTable.wait_for_room).
        size = self.table.chunk
        for first in range(0, len(calls), size):
            chunk = calls[first:first + size]
            chunk_keys = keys[first:first + size] if keys is not None else None
            futures.extend(self._submit_chunk(fn_blob, fn_hash, chunk, chunk_keys, pure, options))
            self.table.wait_for_room()
        return futures

    def _check_size(self, n: int) -> None:
        """Refuse at the call a submission the scheduler could never hold (its
        ``max_tasks``, told at registration): nothing of it is sent."""
        limit = self._max_tasks
        if limit is not None and n + self.table.held() > limit:
            raise GraphTooLargeError(
                f"a submission of {n:,} tasks was refused: with the {self.table.held():,} keys this "
                f"client holds it passes the scheduler's limit of {limit:,} tasks (release Futures "
                f"you no longer need, submit in parts, or raise ACTORRT_MAX_TASKS on the scheduler)")

    def _submit_chunk(self, fn_blob: Pickled, fn_hash: Any, calls: list[tuple[tuple, dict]],
                      keys: list[str] | None, pure: bool, options: tuple) -> list[Future]:
        name, priority, retries, restrict, allow_other_workers, actor, resources = options
        specs = []
        out_keys = []
        hidden: dict[int, list[Future]] = {}  # call -> Futures pickled inside its arguments' objects
        is_ref = self._ref_key
        pickled: list[Future] = []  # Futures met while pickling, for the whole chunk
        with runtime.collecting_futures(pickled):
            packed = []
            for i, (args, kwargs) in enumerate(calls):
                deps: set[str] = set()
                args2 = replace_refs(args, is_ref, deps)
                kwargs2 = replace_refs(kwargs, is_ref, deps) if kwargs else kwargs
                seen = len(pickled)
                packed.append((deps, pack_args(args2, kwargs2)))
                if len(pickled) > seen:
                    hidden[i] = pickled[seen:]
        for i, (deps, args_blob) in enumerate(packed):
            if keys is not None:
                k = keys[i]
            elif pure:
                h = fn_hash.copy()
                if args_blob is not None:
                    h.update(args_blob.header)
                    for b in args_blob.buffers:
                        h.update(b)
                k = f"{name}-{h.hexdigest()}"
            else:
                k = f"{name}-{fresh_ids.next()}"
            out_keys.append(k)
            specs.append([k, [fn_blob, args_blob], sorted(deps), name, priority, retries,
                          restrict, allow_other_workers, actor, resources])
        table = self.table
        # A lone task the thread may run on a worker itself waits for its result() call
        # rather than wake the loop (client/direct.py).
        lazy = len(specs) == 1 and not hidden and runs_alone(specs[0]) and self.direct.may_run_here()
        with table.lock:
            futures = [held_future(k, self, table.hold_new(k, spec, lazy=lazy)) for k, spec in zip(out_keys, specs)]
        for i, kept in hidden.items():
            # A Future hidden in an argument is no dependency: the worker's unpickled copy
            # claims its key, and the caller's copy may be a temporary. Keep it until the
            # task is done, by when the worker's claim has reached the scheduler.
            runtime.call_on(self.loop, futures[i]._state.add_callback, functools.partial(_keep, kept))
        return futures

    def _ref_key(self, obj: Any) -> str | None:
        if isinstance(obj, Future):
            if obj.client is not self and obj.key not in self.table:
                raise ValueError(f"{obj!r} belongs to another client")
            if obj._state.status == "cancelled":  # its key is gone: fail here, naming it
                raise cancelled_dependency(obj)
            return obj.key
        return is_actor_handle(obj)  # a task given a handle depends on the actor's key

    # --- gathering -------------------------------------------------------------
    def gather(self, futures: Any, errors: str = "raise", direct: Any = None,
               asynchronous: bool | None = None, progress: bool = False) -> Any:
        """The values of ``futures`` (a Future or nested lists/tuples/dicts of them).

        ``progress=True`` shows a progress bar while the futures finish
        (see :func:`actorrt.progress`).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if isinstance(futures, collections.abc.Iterator):  # e.g. as_completed: lazily, as dask
            return (self.gather(f, errors=errors) for f in futures)
        if progress:
            from .progress import (
                progress as show_progress,  # (progress waits on Futures: imported late)
            )
            if self.asynchronous:
                return self._gather_after(show_progress(futures), futures, errors)
            show_progress(futures)
        return self.sync(self._gather, futures, errors)

    async def _gather_after(self, shown: Any, futures: Any, errors: str) -> Any:
        if shown is not None:
            await shown
        return await self._gather(futures, errors)

    async def _gather(self, futures: Any, errors: str = "raise", timeout: float | None = None) -> Any:
        flat = futures_of(futures)
        foreign = [f for f in flat if f.client is not self]
        if foreign:  # their keys are held (and reported) for another client, maybe another cluster
            raise ValueError(f"cannot gather {len(foreign)} Future(s) of another client (e.g. "
                             f"{foreign[0].key!r} of {foreign[0].client.id}); this is {self.id}")
        released = [f for f in flat if f._released]
        if released:  # no report reaches a released Future: waiting on it would never end
            raise released_future(released[0].key)
        values = await transfer.gather_keys(self, flat, errors, timeout)
        data = {f.key: v for f, v in zip(flat, values) if v is not transfer.SKIP}
        calls = actor_futures_of(futures)
        if calls:  # actor calls: their replies are already in this process
            data.update(await gather_actor_futures(calls, errors, timeout))
        return transfer.rebuild(futures, data, errors)

    # --- scatter -------------------------------------------------------------
    def scatter(self, data: Any, workers: Any = None, broadcast: bool = False, direct: Any = None,
                hash: bool = True, timeout: float | None = None) -> Any:
        """Put local data on workers; returns Futures in the shape of ``data``."""
        return self.sync(transfer.scatter, self, data, workers, broadcast, hash, timeout=timeout)

    # --- graphs (translation in graph.py) ---------------------------------------
    def get(self, dsk: Any, keys: Any, workers: Any = None, allow_other_workers: bool = False,
            retries: int | None = None, priority: int = 0, sync: bool = True,
            resources: dict | None = None, **kwargs: Any) -> Any:
        """Run a task graph and return the values of ``keys`` (nested like ``keys``).

        Usable as a dask scheduler: ``dask.compute(x, scheduler=client.get)``.

        >>> client.get({"x": 1, "y": (inc, "x")}, "y")    # doctest: +SKIP
        2
        """
        from . import graph
        # Extra keywords are what dask forwards from compute(**kwargs): not ours to judge.
        return graph.get(self, dsk, keys, sync=sync, workers=workers, retries=retries,
                         allow_other_workers=allow_other_workers, priority=priority,
                         resources=resources)

    def compute(self, collections: Any, sync: bool = False, optimize_graph: bool = True,
                workers: Any = None, allow_other_workers: bool = False, retries: int | None = None,
                priority: int = 0, traverse: bool = True, **kwargs: Any) -> Any:
        """Start computing dask collections; a Future per collection (values if ``sync``).

        >>> total = client.compute(dask.delayed(sum)([1, 2]))   # doctest: +SKIP
        >>> total.result()                                     # doctest: +SKIP
        3
        """
        from . import collections as dask_collections
        return dask_collections.compute(self, collections, optimize_graph=optimize_graph, sync=sync,
                             traverse=traverse, workers=workers, allow_other_workers=allow_other_workers,
                             retries=retries, priority=priority, resources=kwargs.get("resources"))

    def persist(self, collections: Any, optimize_graph: bool = True, workers: Any = None,
                allow_other_workers: bool = False, retries: int | None = None, priority: int = 0,
                **kwargs: Any) -> Any:
        """Start computing dask collections; the same collections, backed by Futures.

        >>> x = client.persist(dask.array.ones(10, chunks=5))   # doctest: +SKIP
        """
        from . import collections as dask_collections
        return dask_collections.persist(self, collections, optimize_graph=optimize_graph, workers=workers,
                             allow_other_workers=allow_other_workers, retries=retries,
                             priority=priority, resources=kwargs.get("resources"))

    # --- cancel, retry ---------------------------------------------------------
    def cancel(self, futures: Any, force: bool = False, reason: str | None = None) -> Any:
        """Stop the tasks behind ``futures`` (and what depends on them)."""
        flat = futures_of(futures)
        keys = [f.key for f in flat]
        with self.table.lock:
            # Detach the cancelled states now (not when the loop gets to it): a submit of
            # the same key right after this call must start afresh.
            self.table.detach(f._state for f in flat)
            self.table.queue_locked("cancel", (keys, bool(force)))

        def mark() -> None:
            for f in flat:
                f._state.cancel(reason or f"{f.key} was cancelled")
        return self._update_states(mark)

    def retry(self, futures: Any) -> Any:
        """Run failed tasks again."""
        flat = futures_of(futures)

        def reset() -> None:
            for f in flat:
                if f._state.status == "error":
                    f._state.status = "pending"
        self.table.queue("retry", [f.key for f in flat])
        return self._update_states(reset)

    def _update_states(self, update: Callable[[], None]) -> Any:
        """Run ``update`` (of future states) on the loop; the sync face returns once it
        has run, so ``f.cancelled()`` holds right after ``client.cancel(f)`` (as in dask)."""
        if self.asynchronous or self.status == "closed" or runtime.on_loop(self.loop):
            runtime.call_on(self.loop, update)
            return runtime.Ready() if self.asynchronous else None
        return self.sync(_run_now, update)

    # --- introspection (more in admin.py) ------------------------------------------
    def get_actor(self, name: str, timeout: float | None = None) -> Any:
        """The handle of the actor created with ``submit(Cls, actor=True, name=name)``.

        >>> cache = client.get_actor("cache")   # doctest: +SKIP
        """
        return self.sync(get_named_actor, self, name, timeout=timeout)

    def story(self, *keys: str) -> Any:
        return self.sync(self._ask_scheduler, "story", keys=list(keys))

    async def _ask_scheduler(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        return await asyncio.wait_for(self.host.ask(self.scheduler, op, **fields), timeout)

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Return once the cluster has ``n_workers`` workers; TimeoutError after ``timeout`` s."""
        return self.sync(self._wait_for_workers, check_workers_wanted(n_workers), timeout=timeout)

    async def _wait_for_workers(self, n: int, timeout: float | None = None) -> dict:
        try:
            return await asyncio.wait_for(self.host.ask(self.scheduler, "wait_for_workers", n=n), timeout)
        except asyncio.TimeoutError:
            have = len(await self.host.ask(self.scheduler, "workers"))
            raise TimeoutError(f"wait_for_workers: {have} of {n} workers after {timeout} s") from None

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    def __repr__(self) -> str:
        addr = self.scheduler.address if hasattr(self, "scheduler") else self._address
        return f"<Client: scheduler={addr!r} status={self.status}>"


def _secret_bytes(secret: bytes | str | None) -> bytes | None:
    if secret is None or isinstance(secret, bytes):
        return secret
    return secret.encode()


def _keep(futures: list[Future], state: FutureState) -> None:
    """A done-callback whose only job is to hold ``futures`` until it runs."""


async def _run_now(fn: Callable[[], None]) -> None:
    fn()
