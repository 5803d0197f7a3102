"""The Worker actor: a data store, a thread pool, and the spawner of Task actors."""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from typing import Any

from ..core import Actor, ActorRef, Host, Pickled, own_task
from ..core.addresses import format_host, interface_toward
from ..core.checks import bad, str_list, str_map
from ..core.comm import Comm, parse_address, split_host_port
from ..core.errors import BadMessageError, CommClosedError, SerializationError
from ..core.security import Security
from ..core.serialize import dumps_exception, loads_exception
from .pool import TaskPool
from .task import Task
from .user_actor import make_actor_task, stop_user_actor

logger = logging.getLogger("actorrt.worker")

WORKER_ID = "worker"
# Seconds a worker keeps trying to rejoin a scheduler it lost (a network blip, a
# scheduler restart) before it stops; dask's --death-timeout.
DEATH_TIMEOUT = 60.0
# Bytes a worker fetches from its peers at once (dask: transfer_incoming_bytes_limit).
TRANSFER_INCOMING_BYTES_LIMIT = 512 << 20
SCHEDULER_ID = "scheduler"


class Worker(Actor):
    """Holds results, runs tasks, serves its data to peers and clients."""

    def __init__(self, scheduler_address: str, nthreads: int = 1, name: str = "",
                 death_timeout: float = DEATH_TIMEOUT) -> None:
        self.scheduler = ActorRef(scheduler_address, SCHEDULER_ID)
        # How long to keep trying to rejoin a scheduler this worker lost (0: stop at once).
        self.death_timeout = death_timeout
        self.nthreads = nthreads
        self.name = name
        self.data: dict[str, Any] = {}
        self.tasks: dict[str, Task] = {}
        self._functions: dict[bytes, Any] = {}
        self._fetching: dict[str, asyncio.Future] = {}
        # Transfer budget: bytes being fetched at once stay under this (one request
        # always may run, however big), so a wide fan-in cannot exhaust memory.
        self.transfer_limit = TRANSFER_INCOMING_BYTES_LIMIT
        self.transfer_incoming_bytes = 0
        self.transfer_incoming_bytes_peak = 0
        self._transfer_queue: collections.deque = collections.deque()
        # Inputs fetched from peers are copies the scheduler does not know of (it never
        # frees them here): they are kept only while a local task still needs them.
        self._copies: set[str] = set()
        self._uses: dict[str, int] = {}  # key -> live local tasks that take it as input
        self._finished: list = []
        self._run_ids: dict[str, int | None] = {}
        self._scheduler_comm: Any = None
        self._erred: list = []
        self._report_scheduled = False
        self.pool: TaskPool
        self.closed: asyncio.Event | None = None
        self._client: Any = None
        self.user_actors: dict[str, Any] = {}  # key -> UserActor hosted here (user_actor.py)

    def on_start(self) -> None:
        self.pool = TaskPool(self.nthreads, name=f"actorrt-{self.name or 'worker'}")
        self.pool.on_secede = self._job_seceded
        self.closed = asyncio.Event()
        self.host.peer_lost_callbacks.append(self._on_peer_lost)

    async def register(self, timeout: float = 30.0) -> None:
        self._scheduler_comm = await self.host.connect(self.scheduler.address, timeout=timeout)
        await self.host.ask(self.scheduler, "register_worker", address=self.host.address,
                            nthreads=self.nthreads, name=self.name, pid=os.getpid())

    def on_stop(self) -> None:
        self.pool.close()
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)
        for fut in self._fetching.values():
            if not fut.done():
                fut.cancel()
        assert self.closed is not None
        self.closed.set()

    def _on_peer_lost(self, address: str, comm: Any) -> None:
        # By connection, not by name: the scheduler may call itself by another name
        # (localhost, 0.0.0.0) than the address this worker dialled, and a second
        # connection that merely names the scheduler's address is not the scheduler.
        if comm is not self._scheduler_comm:
            return
        self._scheduler_comm = None
        if self.death_timeout <= 0:
            logger.info("worker %s lost its scheduler; stopping", self.host.address)
            self.host.stop_actor(self.id)
            return
        logger.warning("worker %s lost its scheduler at %s; trying to rejoin for up to %g s",
                       self.host.address, self.scheduler.address, self.death_timeout)
        self._forget_everything()
        own_task(self, self._rejoin())

    def _forget_everything(self) -> None:
        """Drop all tasks, results and actors: the scheduler has given them up (rerun,
        recomputed, restarted elsewhere), so on rejoining this worker starts empty and
        can hand in no stale or duplicate result."""
        for task in list(self.tasks.values()):
            self.host.stop_actor(task.id)
        self.tasks.clear()
        for key in list(self.user_actors):
            stop_user_actor(self, key)
        self.data.clear()
        self._copies.clear()
        self._run_ids.clear()
        self._finished.clear()
        self._erred.clear()
        if self._client is not None:  # its registration died with the connection
            self.host.stop_actor(self._client.id)
            self._client = None

    async def _rejoin(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.death_timeout
        delay = 0.1
        while True:
            try:
                await self.register(timeout=max(0.1, min(5.0, deadline - loop.time())))
            except (CommClosedError, BadMessageError, OSError, asyncio.TimeoutError) as e:
                # (BadMessageError: the scheduler still holds the old registration until
                # it notices the old connection is gone.)
                if loop.time() + delay >= deadline:
                    logger.error("worker %s could not rejoin its scheduler at %s within %g s (%s); stopping",
                                 self.host.address, self.scheduler.address, self.death_timeout, e)
                    self.host.stop_actor(self.id)
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
                continue
            logger.warning("worker %s rejoined its scheduler at %s", self.host.address, self.scheduler.address)
            return

    # --- scheduler instructions ---------------------------------------------
    def handle_compute(self, tasks: list, origin: Comm | None) -> None:
        self._from_scheduler("compute", origin)
        _check_compute(tasks)  # all of them before any runs: no batch is half started
        host = self.host
        for key, spec, deps, name, actor, *rest in tasks:  # rest: [run id[, input sizes]]
            # Reports carry the run they are about, so late news of an earlier run of
            # the same key (cancelled, then submitted again) is told apart.
            self._run_ids[key] = rest[0] if rest else None
            sizes = rest[1] if len(rest) > 1 else {}
            old = self.tasks.get(key)
            if old is not None:
                host.stop_actor(old.id)
            if key in self.data and actor:
                # A copy of an actor's handle fetched as some task's input: the actor
                # itself is to be created here (a restart), not the copy reported.
                del self.data[key]
            if key in self.data:  # already here (e.g. recomputed elsewhere and copied)
                self._copies.discard(key)  # the scheduler now knows it is here: ours
                self.report_finished(key, 0, type(self.data[key]).__name__)
                continue
            task = self._make_task(key, spec, deps, name, actor)
            task.sizes = sizes
            self.tasks[key] = task
            host.spawn(task, f"task-{key}")

    def _make_task(self, key: str, spec: Any, deps: dict, name: str, actor: Any) -> Task:
        if actor:  # ``actor`` is the actor's options (a dict) or True
            return make_actor_task(self, key, spec, deps, name, actor)
        return Task(self, key, spec, deps, name)

    def _from_scheduler(self, op: str, origin: Comm | None) -> None:
        """Only the scheduler places, frees and closes: a peer that could would make
        the scheduler's view of this worker wrong (and lose data it believes is here).
        The scheduler is the connection this worker registered on, not any peer that
        gives the scheduler's address as its name."""
        if origin is None or origin is self._scheduler_comm:
            return
        raise BadMessageError(f"Worker.{op}: only the scheduler ({self.scheduler.address!r}) may send this, "
                              f"on the connection this worker registered on; this came from "
                              f"{origin.peer_address!r} on another")

    def handle_free_keys(self, keys: list, origin: Comm | None) -> None:
        self._from_scheduler("free_keys", origin)
        str_list("Worker.free_keys", "keys", keys)
        for key in keys:
            self.data.pop(key, None)
            self._copies.discard(key)
            self._run_ids.pop(key, None)
            task = self.tasks.pop(key, None)
            if task is not None:
                self.host.stop_actor(task.id)
            if key in self.user_actors:
                stop_user_actor(self, key)

    def handle_close(self, origin: Comm | None) -> None:
        self._from_scheduler("close", origin)
        self.host.stop_actor(self.id)

    # --- data ----------------------------------------------------------------
    def handle_get_data(self, keys: list) -> dict:
        """Values of ``keys`` held here: ``{"data": {key: pickled}, "errors": {key: [pickled
        exception, traceback]}}``. A value that cannot be pickled is an error of its own
        key (the asker errs the tasks that need it), not of the whole request."""
        str_list("Worker.get_data", "keys", keys)
        data: dict[str, Pickled] = {}
        errors: dict[str, list] = {}
        for key in keys:
            if key in self.data:
                try:
                    data[key] = Pickled.dumps(self.data[key], what=f"result of {key!r}")
                except Exception as e:
                    errors[key] = list(dumps_exception(e))
        return {"data": data, "errors": errors}

    def handle_put_data(self, data: dict) -> dict:
        """Scattered data arrives: store it and say how big each value is."""
        from ..utils import sizeof
        str_map("Worker.put_data", "data", data, lambda v: type(v) is Pickled, "a pickled value")
        # Every value loads before any is stored: a value that cannot be unpickled here
        # fails the scatter without leaving the others behind, unknown to the scheduler.
        values = {key: blob.loads() for key, blob in data.items()}
        self.data.update(values)
        self._copies.difference_update(values)
        return {key: [sizeof(value), type(value).__name__] for key, value in values.items()}

    def handle_keys(self) -> list:
        return list(self.data)

    def client(self) -> Any:
        """This worker's client for tasks: shares the host, the loop and the connections."""
        if self._client is None:
            from ..client.client import Client
            loop = self.host.loop
            assert loop is not None

            async def make() -> Any:
                if self._client is None:
                    self._client = Client._on_host(self.host, self.scheduler.address)
                return self._client
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._client = Client._on_host(self.host, self.scheduler.address)
            else:  # from a task's thread: build it on the loop, which owns the host
                asyncio.run_coroutine_threadsafe(make(), loop).result()
        return self._client

    async def handle_run(self, function: Pickled, args: Pickled | None = None, wait: bool = True) -> list:
        """``client.run``: call a function here, on the loop (see actorrt/run.py)."""
        from ..run import run_here
        return await run_here(self, "dask_worker", function, args, wait)

    @property
    def address(self) -> str:
        """This worker's address, as ``client.run`` and ``who_has`` name it."""
        return self.host.address

    def handle_identity(self) -> dict:
        return {"address": self.host.address, "nthreads": self.nthreads, "name": self.name,
                "keys": len(self.data), "running": self.pool.running}

    def store(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._copies.discard(key)

    def use_inputs(self, keys: Any) -> None:
        """A local task (until it stops) needs ``keys``: fetched copies stay meanwhile."""
        uses = self._uses
        for key in keys:
            uses[key] = uses.get(key, 0) + 1

    def drop_inputs(self, keys: Any) -> None:
        """A local task stopped: drop fetched copies no other local task needs."""
        uses = self._uses
        for key in keys:
            n = uses.get(key, 0) - 1
            if n > 0:
                uses[key] = n
                continue
            uses.pop(key, None)
            if key in self._copies:
                self._copies.discard(key)
                self.data.pop(key, None)

    def load_function(self, blob: Pickled) -> Any:
        fn = self._functions.get(blob.header)
        if fn is None:
            fn = blob.loads()
            if len(self._functions) > 1000:
                self._functions.clear()
            self._functions[blob.header] = fn
        return fn

    async def fetch(self, missing: dict[str, list[str]], sizes: dict[str, int] | None = None
                    ) -> tuple[dict[str, list[str]], dict[str, BaseException]]:
        """Bring ``missing`` inputs here from peers.

        Returns ``(lost, unmovable)``: the keys that could not be had, each with the holders
        that failed (only those: the scheduler forgets them as holders), and the keys that
        were reached but cannot be moved (their value fails to pickle on the holder or to
        unpickle here, or exceeds what this host accepts), each with that error.
        Retrying those would fail the same way, so the task that needs them errs.
        """
        by_peer: dict[str, list[str]] = {}
        tried: dict[str, list[str]] = {}  # (a fetch begun by another task blames no one here)
        waits = []
        for key, holders in missing.items():
            if key in self._fetching:
                waits.append(self._fetching[key])
                continue
            candidates = [h for h in holders if h != self.host.address]
            if not candidates:
                tried[key] = list(holders)  # only this worker was named, and it has not got it
                continue
            peer = random.choice(candidates)
            tried[key] = [peer]
            by_peer.setdefault(peer, []).append(key)
        loop = asyncio.get_running_loop()
        sizes = sizes or {}
        for peer, keys in by_peer.items():
            for batch, nbytes in _batches(keys, sizes, self.transfer_limit):
                fut = loop.create_future()
                for key in batch:
                    self._fetching[key] = fut
                waits.append(fut)
                self._transfer_queue.append((peer, batch, fut, nbytes))
        self._start_transfers()
        unmovable: dict[str, BaseException] = {}
        if waits:
            for result in await asyncio.gather(*waits, return_exceptions=True):
                if isinstance(result, dict):
                    unmovable.update((k, e) for k, e in result.items() if k in missing)
        lost = {k: tried.get(k, []) for k in missing if k not in self.data and k not in unmovable}
        return lost, unmovable

    def _start_transfers(self) -> None:
        """Start queued fetches, oldest first, while they fit in the transfer budget."""
        queue = self._transfer_queue
        while queue:
            peer, keys, fut, nbytes = queue[0]
            if self.transfer_incoming_bytes and self.transfer_incoming_bytes + nbytes > self.transfer_limit:
                return
            queue.popleft()
            self.transfer_incoming_bytes += nbytes
            self.transfer_incoming_bytes_peak = max(self.transfer_incoming_bytes_peak, self.transfer_incoming_bytes)
            own_task(self, self._fetch_from(peer, keys, fut, nbytes))

    async def _fetch_from(self, peer: str, keys: list[str], fut: asyncio.Future, nbytes: int = 0) -> None:
        """Fetch ``keys`` from ``peer``; ``fut`` gets ``{key: error}`` for values that cannot move."""
        unmovable: dict[str, BaseException] = {}
        try:
            got = await self.host.ask_bulk(ActorRef(peer, WORKER_ID), "get_data", keys=keys)
            for key, (blob, tb) in got["errors"].items():
                unmovable[key] = loads_exception(blob, tb)
            for key, blob in got["data"].items():
                # Not over our own data, and not for a task that stopped meanwhile.
                if key not in self.data and self._uses.get(key):
                    try:
                        value = blob.loads()
                    except Exception as e:
                        unmovable[key] = _note(e, f"while loading input {key!r} from {peer} on {self.host.address}")
                        continue
                    self.data[key] = value
                    self._copies.add(key)
        except SerializationError as e:  # the reply could not be sent to us (e.g. too large)
            for key in keys:
                unmovable[key] = SerializationError(f"cannot move {key!r} from {peer}: {e}")
        except Exception as e:
            logger.info("could not fetch %s from %s: %s", keys, peer, e)
        finally:
            for key in keys:
                if self._fetching.get(key) is fut:
                    del self._fetching[key]
            if not fut.done():
                fut.set_result(unmovable)
            self.transfer_incoming_bytes -= nbytes
            self._start_transfers()

    def _job_seceded(self, job: Any) -> None:
        """A task gave its slot back: the scheduler may place more work here meanwhile."""
        task = job.context
        if isinstance(task, Task) and self.tasks.get(task.key) is task and not task.told_long_running:
            task.told_long_running = True  # once per run: the scheduler's view does not flip back
            try:
                self.host.tell(self.scheduler, "long_running", worker=self.host.address,
                               keys=[task.key])
            except CommClosedError:
                pass

    # --- reports, batched per loop turn -------------------------------------
    def report_finished(self, key: str, nbytes: int, typ: str, duration: float | None = None) -> None:
        self._finished.append([key, nbytes, typ, duration, self._run_ids.pop(key, None)])
        self._schedule_report()

    def report_erred(self, key: str, exc: Pickled, tb: str) -> None:
        self._erred.append([key, exc, tb, self._run_ids.pop(key, None)])
        self._schedule_report()

    def report_missing(self, task: Task, missing: dict) -> None:
        if self.tasks.get(task.key) is task:
            del self.tasks[task.key]
            self._run_ids.pop(task.key, None)
        self.host.stop_actor(task.id)
        self.host.tell(self.scheduler, "missing_data", worker=self.host.address, key=task.key,
                       missing=missing)

    def _schedule_report(self) -> None:
        if not self._report_scheduled:
            self._report_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_reports)

    def _send_reports(self) -> None:
        self._report_scheduled = False
        finished, self._finished = self._finished, []
        erred, self._erred = self._erred, []
        try:
            self.host.tell(self.scheduler, "tasks_done", worker=self.host.address,
                           finished=finished, erred=erred)
        except CommClosedError:
            pass


def _batches(keys: list[str], sizes: dict[str, int], limit: int) -> list[tuple[list[str], int]]:
    """Split one holder's keys into requests of at most ``limit`` bytes (a bigger value
    goes alone), so the budget can interleave holders instead of waiting on one."""
    out: list[tuple[list[str], int]] = []
    batch: list[str] = []
    total = 0
    for key in keys:
        n = sizes.get(key, 0)
        if batch and total + n > limit:
            out.append((batch, total))
            batch, total = [], 0
        batch.append(key)
        total += n
    if batch:
        out.append((batch, total))
    return out


def _default_listen_address(scheduler_address: str) -> str:
    """Toward the scheduler, any free port, in the scheduler's scheme (tcp or tls)."""
    scheme, rest = parse_address(scheduler_address)
    if scheme == "inproc":
        return "tcp://127.0.0.1:0"
    return f"{scheme}://{format_host(interface_toward(split_host_port(rest)[0]))}:0"


def _note(exc: BaseException, note: str) -> BaseException:
    """The original exception, so ``result()`` raises what the user's code raised, with where."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


_COMPUTE_SHAPE = ("[key: str, spec: [pickled function, pickled arguments or None], deps: {key: "
                  "[addresses]}, name: str, actor: bool or dict of options, (run id: int or None, (input sizes: "
                  "{key: nbytes >= 0}))]")


def _check_compute(tasks: list) -> None:
    """Every task of a ``compute`` message is well formed (see core/checks.py)."""
    for i, t in enumerate(tasks):
        if not ((type(t) is list or type(t) is tuple) and 5 <= len(t) <= 7 and type(t[0]) is str
                and (type(t[1]) is list or type(t[1]) is tuple) and len(t[1]) == 2
                and type(t[1][0]) is Pickled and (t[1][1] is None or type(t[1][1]) is Pickled)
                and type(t[2]) is dict and type(t[3]) is str
                and (t[4] is False or t[4] is True or type(t[4]) is dict)
                and (len(t) == 5 or t[5] is None or type(t[5]) is int)
                and (len(t) < 7 or (type(t[6]) is dict and all(
                    type(k) is str and type(n) is int and n >= 0 for k, n in t[6].items())))):
            raise bad("Worker.compute", f"'tasks'[{i}]", _COMPUTE_SHAPE, t)
        for dep, holders in t[2].items():
            if type(dep) is not str or not (type(holders) is list or type(holders) is tuple) or not all(
                    type(h) is str for h in holders):
                raise bad("Worker.compute", f"'tasks'[{i}] deps", "a dict of key -> [addresses]", t[2])


async def start_worker(scheduler_address: str, *, nthreads: int = 1, address: str | None = None,
                       secret: bytes | None = None, name: str = "",
                       contact_address: str | None = None, security: Security | None = None,
                       death_timeout: float = DEATH_TIMEOUT) -> tuple[Host, Worker]:
    """Start a worker host on the running loop and register it with the scheduler.

    Without ``address`` it listens on the interface this machine reaches the scheduler
    through (loopback for a scheduler on this machine), any free port: the address
    its peers will dial to fetch its results.
    """
    if address is None:
        address = _default_listen_address(scheduler_address)
    host = Host(address, secret=secret, name=name or "worker", contact_address=contact_address,
                security=security)
    await host.start()
    worker = Worker(scheduler_address, nthreads=nthreads, name=name, death_timeout=death_timeout)
    host.spawn(worker, WORKER_ID)
    try:
        await worker.register()
    except BaseException:
        await host.close()
        raise
    return host, worker
