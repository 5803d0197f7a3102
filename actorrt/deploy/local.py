"""LocalCluster: a scheduler and workers on this machine, in processes or in-process."""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

from ..client import html
from ..client.arguments import check_resources
from ..coordination.registry import install as install_system_actors
from ..core import ActorRef, Host
from ..core import secret_file
from ..core.security import Security
from ..durations import parse_interval, parse_timeout
from ..dashboard import (
    DEFAULT_DASHBOARD_ADDRESS,
    close_dashboard,
    parse_dashboard_address,
    start_dashboard,
)
from ..scheduler import Scheduler, SchedulerState
from ..scheduler.admission import Admission
from ..protocol import SCHEDULER_ID, WORKER_ID
from ..utils import LoopRunner
from ..worker import MemorySettings, parse_memory_limit, start_worker

logger = logging.getLogger("actorrt.deploy")


async def start_scheduler(address: str = "tcp://127.0.0.1:0", *, secret: bytes | None = None,
                          validate: bool = False, dashboard_address: str | int | None = None,
                          contact_address: str | None = None, security: Security | None = None,
                          max_tasks: int | None = None, max_unfinished: int | None = None,
                          **state_kwargs: Any) -> tuple[Host, Scheduler]:
    """Start a scheduler host on the running loop, with its system actors.

    ``dashboard_address`` (e.g. ``":8787"``) also serves the web dashboard there
    (docs/dashboard.md); its URL is then ``scheduler.dashboard_link``. ``max_tasks`` and
    ``max_unfinished`` bound what it takes in (scheduler/admission.py; defaults from
    ``ACTORRT_MAX_TASKS``/``ACTORRT_MAX_UNFINISHED`` or this machine's memory).
    """
    admission = Admission(max_tasks, max_unfinished)  # (bad limits fail before anything starts)
    host = Host(address, secret=secret, name="scheduler", contact_address=contact_address, security=security)
    await host.start()
    scheduler = Scheduler(SchedulerState(validate=validate, **state_kwargs), admission)
    host.spawn(scheduler, SCHEDULER_ID)
    install_system_actors(host)  # the named system actors (queues, locks, ...) live beside it
    try:
        start_dashboard(scheduler, dashboard_address, secret_configured=bool(secret))
    except BaseException:
        await host.close()
        raise
    return host, scheduler


def _default_layout(n_workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    cores = os.cpu_count() or 1
    if n_workers is None and threads_per_worker is None:
        n_workers = min(cores, 4)
    if n_workers is None:
        n_workers = max(1, cores // (threads_per_worker or 1))
    if threads_per_worker is None:
        threads_per_worker = max(1, cores // max(n_workers, 1))
    return n_workers, threads_per_worker


def _tls_flags(security: Security) -> list[str]:
    if not security.enabled:
        return []
    return ["--tls-ca-file", str(security.tls_ca_file), "--tls-cert", str(security.tls_cert),
            "--tls-key", str(security.tls_key)]


class LocalCluster:
    """A scheduler in this process and ``n_workers`` workers.

    ``processes=True`` starts each worker as its own Python process talking TCP on
    127.0.0.1; ``processes=False`` runs them on this process's loop over ``inproc://``.
    A random cluster secret is made so that every connection is authenticated.
    ``dashboard_address`` serves the web dashboard (default ``":8787"`` on loopback,
    another free port if that one is taken; None turns it off): ``dashboard_link``.

    ``memory_limit`` is each worker's: bytes, ``"4GiB"``, a fraction of this machine's
    memory, None for no limit, or ``"auto"`` (the default: this machine's memory
    divided among ``n_workers``). ``memory_target_fraction``, ``memory_spill_fraction``,
    ``memory_pause_fraction`` and ``memory_terminate_fraction`` (fractions of it, or
    False for off) say when a worker spills, pauses, and is restarted; values spill to
    ``local_directory`` (the system's temporary directory by default).

    ``resources`` (``{"GPU": 1}``) are declared by every worker: tasks submitted with
    ``resources=`` run only where enough is free (docs/resources.md).

    ``nanny=True`` (the default) runs each worker process under a nanny process that
    starts it again when it dies, grows past the terminate fraction of its memory
    limit, or is asked to (``client.restart()``, ``client.restart_workers``): the new
    worker has a new address and the same name. In-process workers
    (``processes=False``) have no nanny; the option is ignored for them.

    >>> cluster = LocalCluster(n_workers=2, memory_limit="2GiB")   # doctest: +SKIP
    >>> client = Client(cluster)                                    # doctest: +SKIP
    """

    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool = True, *, asynchronous: bool = False, secret: bytes | None = None,
                 host: str = "127.0.0.1", scheduler_port: int = 0, validate: bool = False,
                 worker_env: dict | None = None,
                 dashboard_address: str | int | None = DEFAULT_DASHBOARD_ADDRESS,
                 memory_limit: Any = "auto", local_directory: str | None = None, nanny: bool = True,
                 memory_target_fraction: float | bool | None = MemorySettings.target,
                 memory_spill_fraction: float | bool | None = MemorySettings.spill,
                 memory_pause_fraction: float | bool | None = MemorySettings.pause,
                 memory_terminate_fraction: float | bool | None = MemorySettings.terminate,
                 worker_start_timeout: float = 60.0, resources: dict | None = None,
                 security: Security | None = None, **state_kwargs: Any) -> None:
        self.worker_start_timeout = parse_interval(worker_start_timeout, "worker_start_timeout")
        # Declared by every worker (``{"GPU": 1}``): tasks asking for them run there.
        self.resources = check_resources(resources, "LocalCluster(resources=...)")
        self.n_workers, self.threads_per_worker = _default_layout(n_workers, threads_per_worker)
        # Parsed once, here, so nonsense fails before anything starts: each worker's
        # share in bytes, or None.
        self.memory_limit = _parse_limit(memory_limit, self.n_workers)
        self.memory = MemorySettings(memory_target_fraction, memory_spill_fraction, memory_pause_fraction,
                                     memory_terminate_fraction)
        self.local_directory = local_directory
        self.nanny = nanny and processes
        self.processes = processes
        self.asynchronous = asynchronous
        # A secret of its own is published for this user (core/secret_file.py), so that
        # Client(address) and actorrt-worker find it; a given one is the caller's to share.
        self._publish_secret = secret is None
        self.secret = secret if secret is not None else os.urandom(32)
        self.validate = validate
        self.status = "created"
        self.security = security or Security()
        self._listen = f"{self.security.scheme}://{host}:{scheduler_port}" if processes else "inproc://"
        self._state_kwargs = state_kwargs
        if dashboard_address is not None:  # a bad one fails here, before anything starts
            parse_dashboard_address(dashboard_address)
        self._dashboard_address = dashboard_address
        self._worker_env = worker_env or {}
        self.scheduler_host: Host | None = None
        self.scheduler: Scheduler | None = None
        # name -> Popen (the nanny, or the worker without one) or (Host, Worker), alive as far
        # as known. Addresses are looked up by name: a nanny's restarted worker has a new one.
        self._workers: dict[str, Any] = {}
        self._registered: set[str] = set()  # names that registered at least once
        self._departed: list[subprocess.Popen] = []  # left the scheduler, not yet reaped
        self._closed_hosts: list[Host] = []  # in-process workers closed by the scheduler (retired)
        self._names = iter(range(1 << 30))
        self._loop_runner: LoopRunner | None = None
        if not asynchronous:
            self._loop_runner = LoopRunner("actorrt-cluster")
            try:
                self._loop_runner.run(self._start)
            except BaseException:
                self._loop_runner.stop()  # (_start closed what it had started)
                raise

    def __await__(self) -> Any:
        return self._started().__await__()

    async def _started(self) -> "LocalCluster":
        if self.status == "created":
            await self._start()
        return self

    async def _start(self) -> "LocalCluster":
        self.status = "starting"
        self.scheduler_host, self.scheduler = await start_scheduler(
            self._listen, secret=self.secret, validate=self.validate,
            dashboard_address=self._dashboard_address, security=self.security, **self._state_kwargs)
        if self._publish_secret:
            secret_file.publish(self.scheduler_host.address, self.secret)
        try:
            await self._scale_async(self.n_workers)
        except BaseException:
            # A worker that could not start fails the cluster: nothing of it may stay
            # (the scheduler's socket, the workers that did start, their processes).
            await self._close_async()
            raise
        self.status = "running"
        return self

    @property
    def scheduler_address(self) -> str:
        assert self.scheduler_host is not None, "cluster not started"
        return self.scheduler_host.address

    @property
    def dashboard_link(self) -> str | None:
        """The web dashboard's URL, e.g. ``http://127.0.0.1:8787/status``; None when off."""
        return self.scheduler.dashboard_link if self.scheduler is not None else None

    # --- workers -------------------------------------------------------------
    @property
    def workers(self) -> dict[str, Any]:
        """The live workers, name -> ``Popen`` (processes) or ``(Host, Worker)``.

        A worker found dead is dropped whenever this is read (``scale`` reads it), so a
        killed worker is neither counted nor "stopped" in place of a live one.
        """
        self._drop_dead_workers()
        return self._workers

    def _drop_dead_workers(self) -> None:
        for name, entry in list(self._workers.items()):
            if self._worker_is_dead(name, entry):
                self._workers.pop(name, None)
                self._registered.discard(name)
                if isinstance(entry, subprocess.Popen) and entry.returncode is None:
                    self._departed.append(entry)  # still exiting: reaped on close
                elif isinstance(entry, tuple) and entry[0].status not in ("closing", "closed"):
                    self._closed_hosts.append(entry[0])  # its worker stopped; its host closes with us
        self._departed = [p for p in self._departed if p.poll() is None]

    def _worker_is_dead(self, name: str, entry: Any) -> bool:
        if isinstance(entry, tuple):
            closed = entry[1].closed  # (its actor closed by the scheduler: retire_workers)
            return entry[0].status in ("closing", "closed") or (closed is not None and closed.is_set())
        if entry.poll() is not None:
            return True
        if self.nanny:
            # Between a worker's death and its successor's registration the name is
            # missing from the scheduler: that is a restart, not a loss. Only the
            # nanny's own exit ends this worker.
            return False
        # The scheduler saw it go (its connection closed) before the process is reaped:
        # such a worker stops itself, so it counts as gone already.
        return name in self._registered and self._address_of(name) is None

    def _address_of(self, name: str) -> str | None:
        """The address worker ``name`` registered with, now; None while it has none."""
        if self.scheduler is None:
            return None
        return next((a for a, i in self.scheduler.worker_info.items() if i.get("name") == name), None)

    def _sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """The face: an awaitable on an asynchronous cluster, else the value."""
        if self.asynchronous:
            return fn(*args, **kwargs)
        assert self._loop_runner is not None
        return self._loop_runner.run(fn, *args, **kwargs)

    def scale(self, n: int) -> Any:
        """Grow or shrink to ``n`` workers."""
        return self._sync(self._scale_async, n)

    async def _scale_async(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cannot scale to {n} workers")
        while len(self.workers) > n:
            name = sorted(self.workers, key=int)[-1]
            await self._stop_worker(name)
        started = [self._start_worker(self.threads_per_worker) for _ in range(n - len(self.workers))]
        if started:
            await asyncio.gather(*started)

    def start_worker(self, nthreads: int | None = None, ncores: int | None = None, **kw: Any) -> Any:
        """Add one worker (``ncores`` is the older spelling of ``nthreads``)."""
        return self._sync(self._start_worker, nthreads or ncores or self.threads_per_worker)

    async def _start_worker(self, nthreads: int) -> str:
        if self.status in ("closing", "closed"):
            # (a restart not waited for may still be scaling up): nothing may outlive close
            raise RuntimeError(f"cannot start a worker: the cluster is {self.status}")
        name = str(next(self._names))
        address = self.scheduler_address
        if not self.processes:
            host, worker = await start_worker(address, nthreads=nthreads, address="inproc://",
                                              secret=self.secret, name=name, security=self.security,
                                              death_timeout=0, memory_limit=self.memory_limit,
                                              local_directory=self.local_directory, memory=self.memory,
                                              resources=self.resources)
            self._workers[name] = (host, worker)
            return host.address
        env = {**os.environ, "ACTORRT_SECRET": self.secret.hex(), **self._worker_env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorrt.deploy.cli", "worker", address, "--nthreads", str(nthreads),
             "--name", name, "--secret-from-env", "--quiet",
             # Its scheduler lives in this process: gone, it is not coming back.
             "--death-timeout", "0", *self._worker_flags(), *_tls_flags(self.security)],
            env=env, stdin=subprocess.DEVNULL)
        self._workers[name] = proc
        assert self.scheduler is not None
        # Registered once its host shows up among the scheduler's workers.
        deadline = asyncio.get_running_loop().time() + self.worker_start_timeout
        while True:
            addr = self._address_of(name)
            if addr is not None:
                self._registered.add(name)
                return addr
            if proc.poll() is not None:
                self._workers.pop(name, None)
                raise RuntimeError(f"worker process {name} exited with code {proc.returncode} at start")
            if asyncio.get_running_loop().time() > deadline:
                # Neither registered nor gone (stuck importing, or cannot reach us).
                self._workers.pop(name, None)
                proc.kill()
                await _wait_process(proc, 5.0)
                raise TimeoutError(f"worker process {name} did not register with the scheduler "
                                   f"within {self.worker_start_timeout} s")
            await self._wait_registration()

    async def _wait_registration(self) -> None:
        assert self.scheduler_host is not None
        try:
            await asyncio.wait_for(self.scheduler_host.ask(
                self.scheduler.ref, "wait_for_workers", n=len(self.scheduler.worker_info) + 1), 0.5)  # type: ignore[union-attr]
        except asyncio.TimeoutError:
            pass

    def _worker_flags(self) -> list[str]:
        """The memory and nanny options, as ``actorrt-worker`` flags."""
        limit = self.memory_limit
        flags = ["--memory-limit", f"{limit}B" if limit else "0"]  # (a bare "1" would mean all memory)
        for name in ("target", "spill", "pause", "terminate"):
            value = getattr(self.memory, name)
            flags += [f"--memory-{name}-fraction", "false" if value is None else repr(value)]
        if self.local_directory:
            flags += ["--local-directory", self.local_directory]
        if self.resources:
            flags += ["--resources", format_resources(self.resources)]
        if not self.nanny:
            flags.append("--no-nanny")
        return flags

    async def _stop_worker(self, name: str) -> None:
        entry = self._workers.pop(name, None)
        self._registered.discard(name)
        if entry is None:
            return
        if isinstance(entry, tuple):
            host, worker = entry
            addr = host.address
            host.tell(worker.scheduler, "unregister_worker", address=addr)
            await asyncio.sleep(0)
            await host.close()
            return
        proc: subprocess.Popen = entry
        if self.nanny:
            # The nanny forwards SIGTERM to its worker, which leaves the scheduler and
            # exits; then the nanny exits. This holds while a worker is restarting too
            # (it has no address to send "close" to then).
            if proc.poll() is None:
                proc.terminate()
        else:
            addr = self._address_of(name)
            if addr is not None and self.scheduler_host is not None:
                self.scheduler_host.tell(ActorRef(addr, WORKER_ID), "close")
        await _wait_process(proc, 5.0)

    async def _forget_retired(self, names: list[str]) -> None:
        """Workers retired through the scheduler (``client.retire_workers``) are gone for
        good: not counted, not restarted; an in-process one's host closes here."""
        for name in names:
            entry = self._workers.pop(str(name), None)
            self._registered.discard(str(name))
            if isinstance(entry, tuple):
                await entry[0].close()
            elif entry is not None:
                self._departed.append(entry)  # exiting by itself: reaped on close

    def worker_addresses(self) -> list[str]:
        assert self.scheduler is not None
        return sorted(self.scheduler.worker_info)

    # --- closing -------------------------------------------------------------
    def close(self, timeout: Any = None) -> Any:
        """Stop the workers and the scheduler; TimeoutError if that takes longer than
        ``timeout`` (a duration; no limit by default)."""
        timeout = parse_timeout(timeout)
        if self.asynchronous:
            return self._close_async() if timeout is None else asyncio.wait_for(self._close_async(), timeout)
        assert self._loop_runner is not None
        try:
            if self.status != "closed" and not self._loop_runner.loop.is_closed():
                self._loop_runner.run(self._close_async, timeout=timeout)
        finally:
            self._loop_runner.stop()  # (also after a client closed it on this loop)
        return None

    async def _close_async(self) -> None:
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        if self.scheduler_host is not None:
            await close_dashboard(self.scheduler_host)
        await asyncio.gather(*[self._stop_worker(n) for n in list(self.workers)],
                             *[_wait_process(p, 5.0) for p in self._departed],
                             *[h.close() for h in self._closed_hosts])
        self._closed_hosts = []
        self._departed = []
        if self.scheduler_host is not None:
            if self._publish_secret:
                secret_file.withdraw(self.scheduler_host.address)
            await self.scheduler_host.close()
        self.status = "closed"

    async def __aenter__(self) -> "LocalCluster":
        return await self._started()

    async def __aexit__(self, *exc: Any) -> None:
        await self._close_async()

    def __enter__(self) -> "LocalCluster":
        if self.asynchronous:  # its close is a coroutine that ``__exit__`` could only drop
            raise TypeError("an asynchronous LocalCluster is a context manager with `async with`, "
                            "not `with`")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _repr_html_(self) -> str:
        """Jupyter's display: status, the workers, threads, memory, the dashboard link."""
        kind = "processes" if self.processes else "in-process"
        rows = [("Scheduler", html.text(self.scheduler_address if self.scheduler is not None else "-")),
                ("Status", html.text(self.status)), ("Workers", html.text(f"{len(self.workers)} ({kind})")),
                ("Threads per worker", html.text(self.threads_per_worker)),
                ("Memory per worker", html.limit_text(self.memory_limit)),
                ("Dashboard", html.summary_rows(None, self.dashboard_link)[0][1])]
        workers = None
        if self.scheduler is not None:
            workers = {a: {"name": i.get("name"), "nthreads": i.get("nthreads"), "memory_limit": self.memory_limit}
                       for a, i in self.scheduler.worker_info.items()}
        return html.cluster_html(type(self).__name__, rows, workers)

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "in-process"
        addr = self.scheduler_host.address if self.scheduler_host else None
        return f"<LocalCluster {addr} {len(self.workers)} workers ({kind}) {self.status}>"


def _parse_limit(memory_limit: Any, n_workers: int) -> int | None:
    try:
        return parse_memory_limit(memory_limit, max(n_workers, 1))
    except (TypeError, ValueError) as e:
        raise type(e)(f"LocalCluster(memory_limit={memory_limit!r}): {e}") from None


async def _wait_process(proc: subprocess.Popen, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, proc.wait), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await loop.run_in_executor(None, proc.wait)


def format_resources(resources: dict[str, float]) -> str:
    """``{"GPU": 2.0, "MEM": 6.4e10}`` as ``actorrt-worker --resources`` takes it."""
    return ",".join(f"{name}={amount!r}" for name, amount in resources.items())


def parse_resources(text: str) -> dict[str, float] | None:
    """``"GPU=2,MEM=64e9"`` (``actorrt-worker --resources``): checked like ``resources=``;
    ValueError naming the part that is wrong."""
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, amount = part.partition("=")
        try:
            if not sep:
                raise ValueError("expected NAME=AMOUNT")
            out[name.strip()] = float(amount)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not NAME=AMOUNT (such as GPU=2)") from None
    try:
        return check_resources(out)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
