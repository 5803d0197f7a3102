"""The Worker actor: carries out what its state machine (state.py) decides.

Messages from the scheduler and peers are checked here and turned into stimuli;
the instructions that come back are carried out here: fetches from peers, jobs on
the pool (or an actor's lane), reports to the scheduler, batched once per loop turn.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable

from .. import runtime
from ..core import Actor, ActorRef, Host, Pickled, Reply, own_task
from ..core import secret_file
from ..core.addresses import format_host, interface_toward, with_default_scheme
from ..core.checks import is_str_list, str_list, str_map
from ..core.comm import Comm, parse_address, split_host_port
from ..core.errors import BadMessageError, CommClosedError, SerializationError
from ..core.security import Security
from ..core.serialize import dumps_exception, loads_exception
from ..core.typenames import type_name
from ..protocol import (
    INLINE_RESULT_BYTES,
    SCHEDULER_ID,
    WORKER_ID,
    Erred,
    Finished,
    WorkerMemory,
    check_direct_spec,
    check_topic,
    event_message,
    decode_compute,
    plugin_name_field,
)
from ..run import run_here
from ..spec import Reschedule
from ..utils import sizeof
from .activity import ActivityLog, ProcessUsage
from .direct import DirectAsks
from .memory import MemorySettings, parse_memory_limit
from .monitor import MemoryMonitor
from .plugins import WorkerPlugins
from .profiler import RunningThreads, Sampler, interval_from_environ, profile_request
from .pool import Job, TaskPool
from .replicas import acquire_replicas
from .spill import SpillBuffer, make_spill_directory
from .state import (
    TRANSFER_INCOMING_BYTES_LIMIT,
    Abandon,
    Execute,
    Fetch,
    Instruction,
    InvalidStateError,
    LongRunning,
    ReportErred,
    ReportFinished,
    ReportMissing,
    StopActor,
    WorkerState,
)
from .task import FunctionCache, TaskRun, user_frames_only
from .user_actor import ActorBuilds, stop_user_actor

logger = logging.getLogger("actorrt.worker")

# Seconds a worker keeps trying to rejoin a scheduler it lost (a network blip, a
# scheduler restart) before it stops; dask's --death-timeout.
DEATH_TIMEOUT = 60.0

_ABSENT = object()

# Seconds between a worker's memory reports to the scheduler, at most (a pause or a
# resume is told at once).
MEMORY_REPORT_INTERVAL = 0.5


class Worker(Actor):
    """Holds results, runs tasks, serves its data to peers and clients."""

    # A run a client handed us is answered from the thread that ran it (direct.py).
    answers_from_threads = True

    def __init__(self, scheduler_address: str, nthreads: int = 1, name: str = "",
                 death_timeout: float = DEATH_TIMEOUT, *, memory_limit: object = None,
                 local_directory: str | None = None, memory: MemorySettings | None = None,
                 nanny: bool = False, resources: dict[str, float] | None = None,
                 profile_interval: float | None = None) -> None:
        self.scheduler = ActorRef(scheduler_address, SCHEDULER_ID)
        # Abstract resources (``{"GPU": 2}``) declared to the scheduler, which places
        # tasks asking for them here only while enough are free (scheduler/resources.py).
        self.resources = dict(resources or {})
        # How long to keep trying to rejoin a scheduler this worker lost (0: stop at once).
        self.death_timeout = death_timeout
        self.nthreads = nthreads
        self.name = name
        # Bytes this worker may hold (None: no limit); see worker/memory.py.
        self.memory_limit = parse_memory_limit(memory_limit)
        self.memory = memory or MemorySettings()
        self.local_directory = local_directory
        self.nanny = nanny  # a nanny process restarts this one when it dies or is asked to
        self.restart_requested = False  # set by the scheduler's restart: the process asks its nanny for a new one
        self.data = _spill_buffer(self.memory_limit, self.memory, local_directory)
        self.state = WorkerState(self.data, transfer_limit=transfer_limit_for(self.memory_limit))
        self.monitor: MemoryMonitor | None = None
        self._memory_sent: WorkerMemory | None = None
        self._memory_sent_at = 0.0
        self.functions = FunctionCache()
        self._finished: list = []
        self._erred: list = []
        self._run: TaskRun | None = None  # the run whose outcome is being carried out
        self.activity = ActivityLog()  # transfers, disk reads/writes: the task stream's
        self.data.on_disk = self.activity.add
        self.usage = ProcessUsage()
        self._report_scheduled = False
        self._scheduler_comm: Any = None
        self.pool: TaskPool
        self.closed: asyncio.Event | None = None
        self._client: Any = None
        self.user_actors: dict[str, Any] = {}  # key -> UserActor hosted here (user_actor.py)
        self._builds = ActorBuilds(self)
        self.direct = DirectAsks(self)  # runs clients handed us themselves (direct.py)
        self._on_task_done = self._task_done  # (one bound method, not one per task)
        self.plugins = WorkerPlugins(self)  # client.register_plugin's WorkerPlugins (plugins.py)
        self.running_tasks = RunningThreads()  # thread id -> its task (task.py), for:
        self.profiler = Sampler(self.running_tasks, interval_from_environ() if profile_interval is None
                                else profile_interval, name=f"actorrt-profiler-{name or 'worker'}")

    def on_start(self) -> None:
        self.state.address = self.host.address
        self.pool = TaskPool(self.nthreads, name=f"actorrt-{self.name or 'worker'}")
        self.pool.on_secede = self._job_seceded
        self.pool.on_burst_done = self._send_reports  # (a burst's reports go at once)
        # A task reports itself from its thread (_report_from_thread), before this loop
        # stores its value: every message is handled after that, as the sender expects.
        self.before_dispatch = self.pool.hand_back_finished
        self.closed = asyncio.Event()
        self.host.peer_lost_callbacks.append(self._on_peer_lost)
        # In-process workers share one process: its size says nothing about any of them.
        own_process = parse_address(self.host.address)[0] != "inproc"
        self.monitor = MemoryMonitor(self.data, self.memory_limit, self.memory, on_pause=self._paused,
                                     on_sample=self._report_memory, watch_process=own_process)
        self.monitor.start()
        self.profiler.start()

    async def register(self, timeout: float = 30.0) -> None:
        self._scheduler_comm = await self.host.connect(self.scheduler.address, timeout=timeout)
        await self.host.ask(self.scheduler, "register_worker", address=self.host.address,
                            nthreads=self.nthreads, name=self.name, pid=os.getpid(), nanny=self.nanny,
                            memory=list(self.memory_report()), resources=self.resources)

    def on_stop(self) -> None:
        self.plugins.close()
        self.profiler.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self.data.close()  # (its spill files with it)
        self.pool.close()
        self._builds.close()
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)
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
        self.carry_out(self.state.stimulus_scheduler_lost())
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
        # All of them checked before any runs: no batch is half started.
        self.carry_out(self.state.stimulus_compute(decode_compute(tasks)))

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

    def handle_free_keys(self, keys: list, origin: Comm | None, puts: dict | None = None) -> None:
        self._from_scheduler("free_keys", origin)
        str_list("Worker.free_keys", "keys", keys)
        if puts is not None:
            str_map("Worker.free_keys", "puts", puts, lambda v: type(v) is int, "a put's serial number")
        self.carry_out(self.state.stimulus_free_keys(keys, puts=puts))

    def handle_close(self, origin: Comm | None) -> None:
        self._from_scheduler("close", origin)
        self.host.stop_actor(self.id)

    def handle_restart(self, origin: Comm | None) -> None:
        """Stop, and have this process exit so that its nanny starts a fresh one
        (``client.restart``); the scheduler sees this worker go and a new one of the
        same name register."""
        self._from_scheduler("restart", origin)
        if not self.nanny:
            raise BadMessageError(f"Worker.restart: worker {self.host.address} has no nanny to start it "
                                  "again; it would only stop")
        logger.info("worker %s restarting at the scheduler's request", self.host.address)
        self.restart_requested = True
        self.host.stop_actor(self.id)

    def handle_plugin_add(self, name: str, plugin: Pickled, origin: Comm | None, reply: Reply,
                          replace: bool = True) -> None:
        """Set up a WorkerPlugin (worker/plugins.py): ``["ok"]`` or ``["error", exc, tb]``.
        Not an async handler: a plain ``setup`` runs before the next message (a task) is handled."""
        self._from_scheduler("plugin_add", origin)
        self._answer(reply, self.plugins.add(plugin_name_field("Worker.plugin_add", name), plugin, replace))

    def handle_plugin_remove(self, name: str, origin: Comm | None, reply: Reply) -> None:
        self._from_scheduler("plugin_remove", origin)
        self._answer(reply, self.plugins.remove(plugin_name_field("Worker.plugin_remove", name)))

    def _answer(self, reply: Reply, outcome: Any) -> None:
        if isinstance(outcome, list):
            reply.ok(outcome)
        else:  # a coroutine hook: answered when it is done
            own_task(self, _reply_with(reply, outcome))

    @property
    def connected(self) -> bool:
        """Whether this worker is registered with its scheduler, on a live connection."""
        return self._scheduler_comm is not None and not self._scheduler_comm.closed

    def handle_run_direct(self, key: str, spec: list, name: str, reply: Reply) -> None:
        """A client's lone task, to run now and answer with its report (direct.py)."""
        check_direct_spec(spec)
        self.direct.accept(key, spec, name, reply)

    # --- data ----------------------------------------------------------------
    def handle_get_data(self, keys: list) -> dict:
        """Values of ``keys`` held here: ``{"data": {key: pickled}, "errors": {key: [pickled
        exception, traceback]}}``. A value that cannot be pickled is an error of its own
        key (the asker errs the tasks that need it), not of the whole request."""
        str_list("Worker.get_data", "keys", keys)
        data: dict[str, Pickled] = {}
        errors: dict[str, list] = {}
        store = self.data
        for key in keys:
            if key in store:
                try:
                    # A spilled value goes as its file's bytes, never unpickled here.
                    data[key] = store.serialized(key) or Pickled.dumps(store[key], what=f"result of {key!r}")
                except Exception as e:
                    errors[key] = list(dumps_exception(e))
        return {"data": data, "errors": errors}

    def handle_put_data(self, data: dict) -> dict:
        """Scattered data arrives: store it and say how big each value is."""
        str_map("Worker.put_data", "data", data, lambda v: type(v) is Pickled, "a pickled value")
        # Every value loads before any is stored: a value that cannot be unpickled here
        # fails the scatter without leaving the others behind, unknown to the scheduler.
        values = {key: blob.loads() for key, blob in data.items()}
        nbytes = {key: sizeof(value) for key, value in values.items()}
        self.carry_out(self.state.stimulus_put_data(values, nbytes))
        # (The put's serial goes to the scheduler with the client's update_data: its
        # free of this copy names it, so a later put of the key is not freed with it.)
        return {key: [nbytes[key], type_name(value), self.state.put_serial(key)] for key, value in values.items()}

    async def handle_acquire_replicas(self, who_has: dict, origin: Comm | None) -> list:
        """Take copies of ``{key: [holders]}`` from peers, as our own (replicate,
        rebalance, retire_workers); the keys held here now (replicas.py)."""
        self._from_scheduler("acquire_replicas", origin)
        str_map("Worker.acquire_replicas", "who_has", who_has, is_str_list, "a list of str addresses")
        return await acquire_replicas(self, who_has)

    def handle_keys(self) -> list:
        return list(self.data)

    def handle_actor_info(self) -> list:
        """Each user actor hosted here: calls so far, running, queued, last error (the
        dashboard's actors page asks while it is open; nothing is counted for it otherwise)."""
        return [ua.handle_info() for ua in list(self.user_actors.values())]

    def client(self) -> Any:
        """This worker's client for tasks: shares the host, the loop and the connections."""
        if self._client is None:
            loop = self.host.loop
            assert loop is not None

            async def make() -> Any:
                if self._client is None:
                    self._client = runtime.make_task_client(self.host, self.scheduler.address)
                return self._client
            if runtime.on_loop(loop):
                self._client = runtime.make_task_client(self.host, self.scheduler.address)
            else:  # from a task's thread: build it on the loop, which owns the host
                runtime.wait_on_loop(loop, make)
        return self._client

    async def handle_run(self, function: Pickled, args: Pickled | None = None, wait: bool = True) -> list:
        """``client.run``: call a function here, on the loop (see actorrt/run.py)."""
        return await run_here(self, "dask_worker", function, args, wait)

    async def handle_profile(self, start: float | None = None, stop: float | None = None,
                             key: str | None = None, max_nodes: int | None = None) -> dict:
        """``client.profile``: the call tree sampled here in ``[start, stop]`` (worker/profiler.py)."""
        return await profile_request(self.profiler, start, stop, key, max_nodes)

    @property
    def address(self) -> str:
        """This worker's address, as ``client.run`` and ``who_has`` name it."""
        return self.host.address

    def handle_identity(self) -> dict:
        return {"address": self.host.address, "nthreads": self.nthreads, "name": self.name,
                "keys": len(self.data), "running": self.pool.running,
                "memory": self.memory_report()._asdict(), "spill_directory": self.data.directory}

    # --- memory ----------------------------------------------------------------
    def memory_report(self) -> WorkerMemory:
        paused = self.monitor.paused if self.monitor is not None else False
        rss = self.monitor.rss if self.monitor is not None else None
        data = self.data
        usage = self.usage
        return WorkerMemory(data.fast_bytes, data.slow_bytes, data.disk_bytes, rss, self.memory_limit, paused,
                            usage.cpu, usage.sent_per_s, usage.received_per_s)

    def _paused(self, paused: bool) -> None:
        """The monitor paused the worker for memory, or resumed it: queued tasks wait
        (or go on), and the scheduler hears of it at once to place work elsewhere."""
        if paused:
            self.pool.pause()
        else:
            self.pool.resume()
        self._report_memory(force=True)

    def _report_memory(self, force: bool = False) -> None:
        """Tell the scheduler this worker's memory: at most every MEMORY_REPORT_INTERVAL
        seconds, and only when it changed (a pause at once)."""
        self.usage.sample()
        if self._scheduler_comm is None:
            return  # not registered yet, or rejoining
        report = self.memory_report()
        now = asyncio.get_running_loop().time()
        if not force and ((not self.activity and not _news(self._memory_sent, report))
                          or now - self._memory_sent_at < MEMORY_REPORT_INTERVAL):
            return
        self._memory_sent, self._memory_sent_at = report, now
        extra = {"activity": self.activity.drain()} if self.activity else {}
        self._tell_scheduler("worker_memory", memory=list(report), **extra)

    @property
    def transfer_limit(self) -> int:
        """Bytes fetched from peers at once (one request always may run, however big)."""
        return self.state.transfer_limit

    @transfer_limit.setter
    def transfer_limit(self, value: int) -> None:
        self.state.transfer_limit = value

    @property
    def transfer_incoming_bytes(self) -> int:
        return self.state.transfer_incoming_bytes

    @property
    def transfer_incoming_bytes_peak(self) -> int:
        return self.state.transfer_incoming_bytes_peak

    def validate(self) -> None:
        """The state machine's invariants, and every actor hosted here is a key it holds."""
        self.state.validate()
        for key in self.user_actors:
            row = self.state.rows.get(key)
            if row is None or row.state != "memory" or row.actor is None:
                raise InvalidStateError(f"actor {key!r} hosted here, but its key is {row}")

    # --- carrying out instructions ---------------------------------------------
    def carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            _CARRY_OUT[type(instruction)](self, instruction)

    def _execute(self, ex: Execute) -> None:
        run = TaskRun(self, ex.key, ex.job, ex.spec, ex.inputs, ex.name, ex.run_id)
        if ex.actor is None:
            self.pool.submit(Job(run, self._on_task_done, context=run, then=self._report_from_thread))
        else:
            self._builds.start(run, ex.name, ex.actor)

    def _task_done(self, job: Job) -> None:
        run: TaskRun = job.context
        if job.error is None:
            value = job.result
            # (A size its thread measured for its report is not measured again.)
            nbytes = run.reported.nbytes if run.reported is not None else sizeof(value)
            out = self.state.stimulus_executed(run.key, run.job, value, nbytes, type_name(value), run.duration)
        else:
            out = self.state.stimulus_execute_erred(run.key, run.job, user_frames_only(job.error))
        self._run = run  # its report carries its start, stop and thread
        try:
            self.carry_out(out)
        finally:
            self._run = None

    def _job_seceded(self, job: Job) -> None:
        """A task gave its slot back: the scheduler may place more work here meanwhile."""
        run = job.context
        if isinstance(run, TaskRun):
            self.carry_out(self.state.stimulus_seceded(run.key, run.job))

    def _fetch(self, fetch: Fetch) -> None:
        own_task(self, self._fetch_from(fetch))

    async def _fetch_from(self, fetch: Fetch) -> None:
        """Ask ``fetch.peer`` for its keys; the state machine hears what came (on
        cancellation, the worker is stopping: it hears nothing)."""
        try:
            start = time.time()
            got = await self.host.ask_bulk(ActorRef(fetch.peer, WORKER_ID), "get_data", keys=fetch.keys)
            self.activity.add("transfer", fetch.keys[0], start, time.time(),
                              sum(blob.nbytes for blob in got["data"].values()), fetch.peer)
            values, unmovable = self._unpack_fetched(fetch.peer, got)
        except SerializationError as e:  # the reply could not be sent to us (e.g. too large)
            values = {}
            unmovable = {key: SerializationError(f"cannot move {key!r} from {fetch.peer}: {e}")
                         for key in fetch.keys}
        except Exception as e:
            logger.info("could not fetch %s from %s: %s", fetch.keys, fetch.peer, e)
            self.carry_out(self.state.stimulus_fetch_failed(fetch.transfer))
            return
        self.carry_out(self.state.stimulus_fetched(fetch.transfer, values, unmovable))

    def _unpack_fetched(self, peer: str, got: dict) -> tuple[dict[str, Any], dict[str, BaseException]]:
        """The values a peer sent that are still wanted, loaded, and the keys that cannot
        move here: their value failed to pickle on the peer or to unpickle here."""
        unmovable: dict[str, BaseException] = {}
        for key, (blob, tb) in got["errors"].items():
            unmovable[key] = loads_exception(blob, tb)
        values: dict[str, Any] = {}
        awaits = self.state.awaits
        for key, blob in got["data"].items():
            if awaits(key):  # not over our own data, and not for a task that stopped meanwhile
                try:
                    values[key] = blob.loads()
                except Exception as e:
                    unmovable[key] = _note(e, f"while loading input {key!r} from {peer} on {self.host.address}")
        return values, unmovable

    def _abandon(self, abandon: Abandon) -> None:
        self._builds.abandon(abandon.job)  # (a job on the pool runs on; its outcome is ignored)
        if self.direct.asks:
            self.direct.declined(abandon.key, "the scheduler freed or placed the key meanwhile")

    def _stop_actor(self, stop: StopActor) -> None:
        stop_user_actor(self, stop.key)

    # --- reports, batched per loop turn -------------------------------------
    def _report_finished(self, r: ReportFinished) -> None:
        run = self._run
        if self.direct.asks and r.key in self.direct.asks:
            self._direct_finished(r, run)
            return
        if run is not None and run.key == r.key:
            if run.reported is not None:  # its thread sent it (or will: _report_late)
                self._schedule_report()  # (what storing it moved to disk still goes)
                return
            self._finished.append(Finished(r.key, r.nbytes, r.type, r.duration, r.run_id,
                                           self._inline_value(r), run.start, run.stop, run.thread))
        else:  # (a key found here already: no run)
            self._finished.append(Finished(r.key, r.nbytes, r.type, r.duration, r.run_id,
                                           self._inline_value(r), None, None, None))
        self._schedule_report()

    def _direct_finished(self, r: ReportFinished, run: TaskRun | None) -> None:
        """A run a client handed us ended: the report is its answer (unless its thread
        gave it), never the scheduler's (the client relays it)."""
        if run is not None and run.key == r.key and run.reported is not None:
            self.direct.asks.pop(r.key, None)  # (answered from its thread)
        else:
            self.direct.report(Finished(r.key, r.nbytes, r.type, r.duration, None, self._inline_value(r),
                                        *_run_times(run, r.key)), run is None or run.quiet)
        self._schedule_report()  # (what storing it moved to disk still goes)

    def _inline_value(self, r: ReportFinished) -> bytes | None:
        value = self.data.peek(r.key, _ABSENT)  # (one lookup; a spilled value is not loaded)
        return None if value is _ABSENT else inline_value(r.key, value, r.nbytes, r.type)

    def _report_from_thread(self, job: Job) -> Callable[[], None] | None:
        """Pool thread, the task just ran: its report, to leave from this thread once the
        job is handed back (pool.Job.then), or None for the usual way, from the loop.

        The scheduler, and a client waiting on it, then hear without this worker's loop
        waking up and running the state machine first: a cross-CPU wake-up and the
        bookkeeping taken off every task's round trip. The loop, handling the job after,
        stores the value as ever and reports nothing more for it (``_report_finished``);
        any message it handles meanwhile waits for that (``before_dispatch``).

        Only a plain success qualifies, whose function handed the loop nothing (a
        submit, a secede, an event: the report must not overtake them), with no report
        of this worker pending (an input's, which must arrive first; read off the loop,
        but one pending was set before this task started), to a scheduler on a
        connection threads may write to. The job is handed over first, so a message
        whose sender learned of the value from the report finds it taken back. The
        state machine is not asked: a run it would no longer report is one the
        scheduler freed or moved, and the scheduler ignores reports of runs it gave up
        (their run id)."""
        run: TaskRun = job.context
        if job.error is not None or not run.quiet:
            return None
        direct = run.run_id is None and run.key in self.direct.asks  # (its answer goes to a client)
        comm = None
        if not direct:
            if run.run_id is None or self._report_scheduled:
                return None
            comm = self.host.comm_to(self.scheduler.address)
            if comm is None or not comm.threads_may_send:
                return None
        value = job.result
        nbytes, typ = sizeof(value), type_name(value)
        report = Finished(run.key, nbytes, typ, run.duration, run.run_id, inline_value(run.key, value, nbytes, typ),
                          run.start, run.stop, run.thread)
        if comm is None:
            return self.direct.answer_from_thread(job, run, report)
        data = comm.frame_for_thread(
            [SCHEDULER_ID, "tasks_done", 0, {"worker": self.host.address, "finished": [report], "erred": []}])
        if data is None:
            return None
        run.reported = report
        return lambda: self._send_from_thread(comm, data, report)

    def _send_from_thread(self, comm: Comm, data: bytes, report: Finished) -> None:
        if not comm.write_from_thread(data):  # (something is queued ahead of it meanwhile)
            loop = self.host.loop
            assert loop is not None
            try:
                runtime.post(loop, self._report_late, report)
            except RuntimeError:
                pass  # the loop is closed: the worker is gone, and with it the report

    def _report_late(self, report: Finished) -> None:
        """A report its thread could not send: it goes with the loop's next batch."""
        self._finished.append(report)
        self._schedule_report()

    def _report_erred(self, r: ReportErred) -> None:
        if isinstance(r.error, Reschedule):  # not a failure: the scheduler places it again
            if self.direct.declined(r.key, "the task raised Reschedule"):
                return
            self._tell_scheduler("reschedule", key=r.key, run_id=r.run_id)
            return
        blob, tb = dumps_exception(r.error)
        run = self._run
        if self.direct.asks and r.key in self.direct.asks:
            self.direct.report(Erred(r.key, blob, tb, None, *_run_times(run, r.key)), run is None or run.quiet)
            return
        if run is not None and run.key == r.key:
            self._erred.append(Erred(r.key, blob, tb, r.run_id, run.start, run.stop, run.thread))
        else:  # (an input that could not be moved here: no run)
            self._erred.append(Erred(r.key, blob, tb, r.run_id, None, None, None))
        self._schedule_report()

    def _report_missing(self, r: ReportMissing) -> None:
        self._tell_scheduler("missing_data", key=r.key, missing=r.missing)

    def _long_running(self, r: LongRunning) -> None:
        self._tell_scheduler("long_running", keys=[r.key])

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log ``msg`` (picklable) under ``topic`` on the scheduler, as dask's
        ``Worker.log_event``; from a task's thread or the loop, without waiting."""
        fields = {"topic": check_topic(topic, many=True), "msg": event_message(msg)}
        loop = self.host.loop
        assert loop is not None
        runtime.call_on(loop, lambda: self.host.tell(self.scheduler, "log_event", **fields))

    def _tell_scheduler(self, op: str, **fields: Any) -> None:
        try:
            self.host.tell(self.scheduler, op, worker=self.host.address, **fields)
        except CommClosedError:
            pass

    def _schedule_report(self) -> None:
        if not self._report_scheduled:
            self._report_scheduled = True
            if not self.pool.handing_back:  # (else the burst's end sends them: on_burst_done)
                asyncio.get_running_loop().call_soon(self._send_reports)

    def _send_reports(self) -> None:
        if not self._report_scheduled:
            return  # (sent already: by the pool's burst, before this turn came)
        self._report_scheduled = False
        finished, self._finished = self._finished, []
        erred, self._erred = self._erred, []
        memory = self._memory_news()
        extra: dict[str, Any] = {} if memory is None else {"memory": memory}
        if self.activity:  # transfers and disk reads/writes ride along
            extra["activity"] = self.activity.drain()
        if not (finished or erred or extra):
            return  # (the only report was sent from its task's thread)
        self._tell_scheduler("tasks_done", finished=finished, erred=erred, **extra)
        self.host.flush_pending()

    def _memory_news(self) -> list | None:
        """The memory report, when storing these results moved values to or from disk:
        it rides with them, so the scheduler's view of spilled bytes is as fresh as its
        view of the results (``scheduler_info()`` right after ``wait``). What is stored
        the scheduler knows already; a report per batch would cost every small task."""
        sent = self._memory_sent
        if self.data.slow_bytes == (sent.spilled if sent is not None else 0):
            return None
        report = self.memory_report()
        self._memory_sent, self._memory_sent_at = report, asyncio.get_running_loop().time()
        return list(report)


def _run_times(run: TaskRun | None, key: str) -> tuple[float | None, float | None, int | None]:
    """A report's start, stop and thread: ``run``'s if it is the run of ``key``."""
    if run is not None and run.key == key:
        return run.start, run.stop, run.thread
    return None, None, None


def inline_value(key: str, value: Any, nbytes: int, typ: str | None) -> bytes | None:
    """A small result's pickle, to travel with its report (no fetch needed for it);
    None for a large one, one that does not pickle, or an actor's handle (which stays
    with its worker). Plain bytes, not a Pickled: a msgpack extension per task costs
    every hop a Python callback, which measured 25-45% of map+gather's throughput
    (protocol.Finished)."""
    if nbytes > INLINE_RESULT_BYTES or typ == "Actor":
        return None
    try:
        blob = Pickled.dumps(value, what=f"result of {key!r}")
    except Exception:
        return None  # fetched (and failing) the usual way, with the usual error
    if blob.buffers or len(blob.header) > INLINE_RESULT_BYTES:
        return None
    return blob.header


_CARRY_OUT: dict[type, Callable[[Worker, Any], None]] = {
    Execute: Worker._execute,
    ReportFinished: Worker._report_finished,
    ReportErred: Worker._report_erred,
    ReportMissing: Worker._report_missing,
    Fetch: Worker._fetch,
    LongRunning: Worker._long_running,
    StopActor: Worker._stop_actor,
    Abandon: Worker._abandon,
}


def transfer_limit_for(memory_limit: int | None) -> int:
    """Bytes fetched from peers at once: a tenth of the memory limit (dask's default),
    at most TRANSFER_INCOMING_BYTES_LIMIT. Values arrive in memory before they can
    spill, so a wide fan-in must not bring in more than the worker may hold."""
    if memory_limit is None:
        return TRANSFER_INCOMING_BYTES_LIMIT
    return max(1, min(TRANSFER_INCOMING_BYTES_LIMIT, memory_limit // 10))


def _spill_buffer(limit: int | None, settings: MemorySettings, local_directory: str | None) -> SpillBuffer:
    """The worker's store: with a limit and a target, values past the target spill to
    a directory of this worker's own; without, everything stays in memory."""
    if limit is None or (settings.target is None and settings.spill is None):
        return SpillBuffer()
    target = int(settings.target * limit) if settings.target is not None else None
    return SpillBuffer(None, target, limit=limit, make_directory=lambda: make_spill_directory(local_directory))


def default_listen_address(scheduler_address: str, port: int = 0) -> str:
    """Toward the scheduler, on ``port`` (0: any free one), in the scheduler's scheme."""
    scheme, rest = parse_address(scheduler_address)
    if scheme == "inproc":
        return f"tcp://127.0.0.1:{port}"
    return f"{scheme}://{format_host(interface_toward(split_host_port(rest)[0]))}:{port}"


def _news(sent: WorkerMemory | None, report: WorkerMemory) -> bool:
    """Whether ``report`` says something ``sent`` did not: any change of memory or pause,
    or a usage figure that moved noticeably. (An idle worker's CPU and traffic wobble by a
    little all the time: resent at each tick, a hundred idle workers would keep the
    scheduler busy reading that nothing happens.)"""
    if sent is None or report._replace(cpu=None, sent_per_s=None, received_per_s=None) != sent._replace(
            cpu=None, sent_per_s=None, received_per_s=None):
        return True
    return (_moved(sent.cpu, report.cpu, 5.0)
            or _moved(sent.sent_per_s, report.sent_per_s, max(4096.0, 0.25 * (sent.sent_per_s or 0)))
            or _moved(sent.received_per_s, report.received_per_s, max(4096.0, 0.25 * (sent.received_per_s or 0))))


def _moved(old: float | None, new: float | None, by: float) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) >= by


async def _reply_with(reply: Reply, outcome: Any) -> None:
    reply.ok(await outcome)


def _note(exc: BaseException, note: str) -> BaseException:
    """The original exception, so ``result()`` raises what the user's code raised, with where."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


async def start_worker(scheduler_address: str, *, nthreads: int = 1, address: str | None = None,
                       secret: bytes | None = None, name: str = "",
                       contact_address: str | None = None, security: Security | None = None,
                       death_timeout: float = DEATH_TIMEOUT, memory_limit: object = None,
                       local_directory: str | None = None, memory: MemorySettings | None = None,
                       nanny: bool = False, resources: dict[str, float] | None = None) -> tuple[Host, Worker]:
    """Start a worker host on the running loop and register it with the scheduler.

    Without ``address`` it listens on the interface this machine reaches the scheduler
    through (loopback for a scheduler on this machine), any free port: the address
    its peers will dial to fetch its results.

    ``memory_limit`` (bytes, ``"4GiB"``, a fraction, ``"auto"`` or None) bounds what it
    holds: results spill to ``local_directory`` (a temporary directory by default) and
    new tasks pause as ``memory`` (:class:`MemorySettings`) says. ``nanny`` tells the
    scheduler a nanny process restarts this one (``client.restart``). ``resources``
    (``{"GPU": 2}``) are declared to the scheduler: tasks asking for them run here.
    """
    scheduler_address = with_default_scheme(scheduler_address)  # ("host:port" means tcp://)
    if secret is None:  # a scheduler of this user on this machine may have published its own
        secret = secret_file.lookup(scheduler_address)
    if address is None:
        address = default_listen_address(scheduler_address)
    host = Host(address, secret=secret, name=name or "worker", contact_address=contact_address,
                security=security)
    await host.start()
    worker = Worker(scheduler_address, nthreads=nthreads, name=name, death_timeout=death_timeout,
                    memory_limit=memory_limit, local_directory=local_directory, memory=memory,
                    nanny=nanny, resources=resources)
    host.spawn(worker, WORKER_ID)
    try:
        await worker.register()
    except BaseException:
        await host.close()
        raise
    return host, worker
