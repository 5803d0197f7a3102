"""The Scheduler actor: turns messages into stimuli of the state machine and its
instructions back into messages, batched per destination and per loop turn."""
from __future__ import annotations

import functools
import itertools
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..core import Actor, ActorRef, Pickled, Reply
from ..core.addresses import is_loopback, is_wildcard
from ..core.checks import check_origin
from ..core.comm import Comm, parse_address, split_host_port
from ..core.errors import BadMessageError
from ..core.serialize import dumps_exception
from ..protocol import (
    WORKER_ID,
    ComputeTask,
    KeyReport,
    WorkerMemory,
    check_missing,
    check_update_data,
    decode_activity,
    decode_memory,
    decode_resources,
    decode_tasks,
    decode_tasks_done,
    keys_field,
    plugin_name_field,
)
from ..run import run_here
from .datasets import Datasets
from .direct_runs import direct_complete, direct_declined, direct_erred, direct_finished, direct_started
from .moves import DataMover, workers_to_close
from .outbox import FIELD, Outbox
from .events import EventHandlers
from .placement import WorkerState
from .plugins import Plugins
from .restarts import RESTART_TIMEOUT, Restarts
from .snapshot import scheduler_snapshot
from .admission import Admission, GraphTooLargeError
from .task_stream import TaskStream
from .state import Compute, Free, Instruction, Report, SchedulerState, TaskState
from .user_actors import ActorDirectory

logger = logging.getLogger("actorrt.scheduler")



class Scheduler(EventHandlers, Actor):
    """The only actor that knows the task graph. Lives on the scheduler host."""

    #: The web dashboard's URL, set by actorrt.dashboard.start_dashboard; None when off.
    dashboard_link: str | None = None

    def __init__(self, state: SchedulerState | None = None, admission: Admission | None = None) -> None:
        self.state = state or SchedulerState()
        self.admission = admission or Admission()  # max_tasks, max_unfinished (admission.py)
        self.client_refs: dict[str, ActorRef] = {}
        self.worker_info: dict[str, dict] = {}
        # ("worker", address) or ("client", id) -> the connection that registered it
        # (None: this same host). Identity is that connection, not the name it gave.
        self._peer_comms: dict[tuple[str, str], Comm | None] = {}
        self._stimuli = itertools.count()
        # Messages to workers and clients, batched per loop turn (outbox.py).
        self.outbox = Outbox(self._message_fields)
        # Per client (by its actor's ref, where its reports go): tasks it sent with
        # ``ack_later`` and that were admitted, not yet acknowledged (the count rides on
        # its next report, or on the reply to its next ask).
        self._owed_acks: dict[ActorRef, int] = {}
        self._worker_waiters: list[tuple[int, Reply]] = []
        self.actors = ActorDirectory(self.state)  # user actors: locations and names
        self.datasets = Datasets(self.handle_want_keys, self.handle_release_keys)
        self.restarts = Restarts()  # workers told to restart, until one of the same name is back
        self.moves = DataMover(self)  # replicate, rebalance, retire_workers (moves.py)
        self.plugins = Plugins(self)  # client.register_plugin's plugins (plugins.py)
        self.init_events()  # log_event, get_events, subscribe_topic; metadata (events.py)
        self.task_stream = TaskStream()  # what ran where and when (task_stream.py)

    def on_start(self) -> None:
        self.host.peer_lost_callbacks.append(self._on_peer_lost)
        self.outbox.host = self.host

    def on_stop(self) -> None:
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)
        self.actors.close()
        self.plugins.close()
        self.outbox.close()

    def _sid(self, what: str) -> str:
        return f"{what}-{next(self._stimuli)}"

    # --- membership -------------------------------------------------------
    def handle_register_worker(self, address: str, nthreads: int, origin: Comm | None, name: str = "",
                               pid: int = 0, memory: list | None = None, nanny: bool = False,
                               resources: dict | None = None) -> dict:
        # A worker registers itself: the scheduler must be able to reach the address it
        # gives, and learns of its death when this connection closes.
        report = decode_memory(memory, "Scheduler.register_worker") if memory is not None else None
        declared = decode_resources("Scheduler.register_worker", resources)
        check_origin("Scheduler.register_worker", "the worker at field 'address'", address, origin)
        _check_reachable(address, origin)
        known = self._peer_comms.get(("worker", address))
        if address in self.worker_info and known is not origin and not getattr(known, "closed", False):
            raise BadMessageError(f"Scheduler.register_worker: worker {address!r} is already registered "
                                  "from another connection")
        self._peer_comms[("worker", address)] = origin
        self.worker_info[address] = {"nthreads": nthreads, "name": name, "pid": pid, "memory": None,
                                     "nanny": nanny, "resources": declared}
        self.plugins.worker_joined(address)  # (its plugins go out before any task is placed there)
        self._apply(self.state.stimulus_add_worker(address, nthreads, self._sid("add-worker"), name, declared))
        if report is not None:  # (a worker rejoining may be paused already)
            self._memory_reported(address, report)
        self._wake_worker_waiters()
        self.restarts.registered(name)
        self.workers_event("add-worker", address, name=name)
        return {"address": self.host.address}

    def handle_unregister_worker(self, address: str, origin: Comm | None) -> None:
        self._check_worker("unregister_worker", address, origin)
        self._remove_worker(address, "worker-closed")

    def handle_register_client(self, client: str, ref: ActorRef, origin: Comm | None) -> dict:
        # The client's actor lives on the host that registers it (its death is noticed
        # when that connection closes), and a live client's id is not up for grabs.
        check_origin("Scheduler.register_client", "the host of field 'ref'", ref.address, origin)
        known = self.client_refs.get(client)
        if known is not None and known != ref:
            raise BadMessageError(f"Scheduler.register_client: client id {client!r} is already "
                                  f"registered for {known!r}")
        self.client_refs[client] = ref
        self._peer_comms[("client", client)] = origin
        self.state.stimulus_add_client(client)
        self.plugins.client_joined(client)
        return {"workers": self._workers_info(), "max_tasks": self.admission.max_tasks}

    def handle_unregister_client(self, client: str, origin: Comm | None = None) -> None:
        self._check_holder("unregister_client", client, origin)
        self._remove_client(client)

    def _check_holder(self, op: str, client: str, origin: Comm | None) -> None:
        """Only a client lets go of its own keys: a peer releasing for another holder
        (a client elsewhere, a queue, a dataset) would lose data they still need."""
        ref = self.client_refs.get(client)
        if ref is not None:
            self._check_peer(op, "client", client, origin)
        elif origin is not None:
            raise BadMessageError(f"Scheduler.{op}: field 'client' is {client!r}, which is not a "
                                  f"client registered by {origin.peer_address!r}")

    def _check_peer(self, op: str, kind: str, name: str, origin: Comm | None) -> None:
        """A message naming a registered worker or client is taken only from the
        connection that registered it: a second connection that merely names it (it
        knows the secret, but is not that peer) neither speaks for it nor, by closing,
        removes it."""
        if origin is None or (kind, name) not in self._peer_comms:
            return
        if self._peer_comms[(kind, name)] is not origin:
            raise BadMessageError(f"Scheduler.{op}: only {kind} {name!r} may send this, on the connection "
                                  f"it registered on; this came from {origin.peer_address!r} on another")

    def _check_worker(self, op: str, worker: str, origin: Comm | None) -> None:
        check_origin(f"Scheduler.{op}", "the worker at field 'worker'", worker, origin, self.host)
        self._check_peer(op, "worker", worker, origin)

    def _remove_client(self, client: str) -> None:
        self._peer_comms.pop(("client", client), None)
        self.event_log.forget_client(client)
        ref = self.client_refs.pop(client, None)
        if ref is not None:
            self._owed_acks.pop(ref, None)
            self._apply(self.state.stimulus_remove_client(client, self._sid("remove-client")))
            self.plugins.client_left(client)

    def _remove_worker(self, address: str, why: str) -> None:
        self._peer_comms.pop(("worker", address), None)
        if self.worker_info.pop(address, None) is None:
            return
        logger.info("removing worker %s (%s)", address, why)
        self.outbox.forget(address)
        self.workers_event("remove-worker", address, reason=why)
        self._apply(self.state.stimulus_remove_worker(address, self._sid(why)))
        self.plugins.worker_left(address)

    def _on_peer_lost(self, address: str, comm: Comm) -> None:
        # By connection, not by the name it gave: only the loss of the connection a
        # worker or client registered on means that peer is gone.
        for kind, name in [k for k, c in self._peer_comms.items() if c is comm]:
            if kind == "worker":
                self._remove_worker(name, "worker-lost")
            else:
                self._remove_client(name)

    def handle_workers(self) -> dict:
        return self._workers_info()

    def _workers_info(self) -> dict:
        out = {}
        for address, info in self.worker_info.items():
            out[address] = entry = dict(info)
            entry["memory"] = self.memory_of(address)
        return out

    def memory_of(self, address: str) -> dict:
        """A worker's memory as ``scheduler_info()`` shows it. What is stored there is
        known here at once (the values placed there); how much of it is on disk, the
        process's size and whether it paused come from the worker's last report."""
        ws = self.state.workers.get(address)
        stored = ws.managed_bytes if ws is not None else 0
        report = self.worker_info.get(address, {}).get("memory")
        if report is None:
            return {"managed": stored, "spilled": 0, "spilled_disk": 0, "rss": None, "unmanaged": None,
                    "limit": None, "paused": False}
        unmanaged = None if report.rss is None else max(0, report.rss - report.managed)
        return {"managed": max(0, stored - report.spilled), "spilled": report.spilled,
                "spilled_disk": report.spilled_disk, "rss": report.rss, "unmanaged": unmanaged,
                "limit": report.limit, "paused": report.paused}

    def usage_of(self, address: str) -> dict:
        """A worker's process CPU % and bytes sent/received per second, from its last
        report (None before its first)."""
        report = self.worker_info.get(address, {}).get("memory")
        if report is None:
            return {"cpu": None, "sent_per_s": None, "received_per_s": None}
        return {"cpu": report.cpu, "sent_per_s": report.sent_per_s, "received_per_s": report.received_per_s}

    def handle_wait_for_workers(self, n: int, reply: Reply) -> None:
        self._worker_waiters.append((n, reply))
        self._wake_worker_waiters()

    def _wake_worker_waiters(self) -> None:
        still = []
        for n, reply in self._worker_waiters:
            if len(self.worker_info) >= n:
                reply.ok(self._workers_info())
            elif not reply.done:
                still.append((n, reply))
        self._worker_waiters = still

    # --- client stimuli ----------------------------------------------------
    def handle_update_graph(self, client: str, tasks: list, wanted: list, reply: Reply,
                            origin: Comm | None = None, more: bool = False, ack_later: bool = False) -> None:
        """A client's tasks. The acknowledgement paces the client: held back while too
        much work waits (admission.py). Asked, the reply acknowledges them (and what
        this client sent before with ``ack_later``); told with ``ack_later``, the count
        rides on the client's next report instead of costing a message of its own.
        ``more``: a part of a graph whose next part follows."""
        self._check_peer("update_graph", "client", client, origin)
        try:
            specs = decode_tasks(tasks)
            keys_field("update_graph", wanted, "wanted")  # ('more' is checked at dispatch: a bool)
            known = self.state.tasks
            if len(known) + len(specs) > self.admission.max_tasks:  # (only near the limit: count the new)
                self.admission.check(len(known), sum(1 for spec in specs if spec.key not in known))
        except (BadMessageError, GraphTooLargeError) as e:
            self._refuse_graph(client, tasks, wanted, e)
            if not ack_later:
                raise
            reply.ok()
            self._owe_ack(client, len(tasks))  # (its Futures erred with the reason already)
            return
        specs, wanted, refused = self.actors.refuse_taken_names(client, specs, wanted)
        self._apply(refused)
        self._apply(self.state.stimulus_update_graph(client, specs, wanted, self._sid("update-graph"), more))
        if ack_later:
            reply.ok()  # (a tell's: answers nothing, but no longer counts as open)
            self.admission.admit(self.state.unfinished, functools.partial(self._owe_ack, client, len(tasks)))
        else:
            self.admission.admit(self.state.unfinished, lambda: reply.ok(len(tasks) + self._take_owed(client)))

    def _owe_ack(self, client: str, n: int) -> None:
        ref = self.client_refs.get(client)
        if ref is not None:
            self._owed_acks[ref] = self._owed_acks.get(ref, 0) + n

    def _take_owed(self, client: str) -> int:
        ref = self.client_refs.get(client)
        return self._owed_acks.pop(ref, 0) if ref is not None else 0

    def _refuse_graph(self, client: str, tasks: list, wanted: Any, exc: Exception) -> None:
        """A refused graph (a tell) changes nothing, but its sender's Futures of new keys
        fail with the reason rather than wait for tasks that will never run."""
        if client not in self.client_refs:
            return
        keys = {t[0] for t in tasks if isinstance(t, (list, tuple)) and t and isinstance(t[0], str)}
        if isinstance(wanted, (list, tuple)):
            keys.update(k for k in wanted if isinstance(k, str))
        info = {"exception": exc, "traceback": None, "blame": None}
        self._apply([Report(client, k, "erred", info) for k in keys if k not in self.state.tasks])

    # --- user actors (calls never come here; see user_actors.py) -----------------
    def handle_actor_status(self, key: str, reply: Reply, stale: str = "") -> None:
        """Where actor ``key`` lives now; deferred while it restarts."""
        self.actors.status(key, stale, reply)

    def handle_get_actor(self, client: str, key: str) -> bool:
        """``client.get_actor(name)``: True, and ``client`` holds the actor, if it exists."""
        return self.actors.want_named(client, key, lambda c, keys: self._apply(
            self.state.stimulus_want_keys(c, keys, self._sid("get-actor"))))

    def handle_release_keys(self, client: str, keys: list, origin: Comm | None = None) -> None:
        keys_field("release_keys", keys)
        self._check_holder("release_keys", client, origin)
        self._apply(self.state.stimulus_release_keys(client, keys, self._sid("release")))

    def handle_want_keys(self, client: str, keys: list) -> None:
        # Not checked against the sender: a worker hands a Future an actor method returned
        # to the calling client by naming that client here. Wanting only adds a holder.
        keys_field("want_keys", keys)
        self._apply(self.state.stimulus_want_keys(client, keys, self._sid("want")))

    def handle_cancel(self, client: str, keys: list, origin: Comm | None, force: bool = False) -> None:
        keys_field("cancel", keys)
        self._check_holder("cancel", client, origin)
        if not force:
            # Only this client's interest goes away unless nobody else wants the keys.
            shared = [k for k in keys if k in self.state.tasks and self.state.tasks[k].who_wants - {client}]
            if shared:
                # The client marked its own futures cancelled already; no report needed.
                self._apply(self.state.stimulus_release_keys(client, shared, self._sid("cancel")))
                keys = [k for k in keys if k not in shared]
        self._apply(self.state.stimulus_cancel(keys, None, self._sid("cancel"), requester=client))

    def handle_retry(self, keys: list) -> None:
        keys_field("retry", keys)
        self._apply(self.state.stimulus_retry(keys, self._sid("retry")))

    def handle_update_data(self, client: str, who_has: dict, nbytes: dict, types: dict,
                           origin: Comm | None = None, puts: dict | None = None) -> None:
        check_update_data(who_has, nbytes, types, puts)
        self._check_peer("update_data", "client", client, origin)
        self._apply(self.state.stimulus_update_data(client, who_has, nbytes, types, self._sid("scatter"), puts))

    def handle_who_has(self, keys: list | None = None) -> dict:
        """Where each key's data is; every key in memory when ``keys`` is None."""
        tasks = self.state.tasks
        if keys is None:
            keys = [k for k, ts in tasks.items() if ts.who_has]
        keys_field("who_has", keys)
        return {k: [ws.address for ws in tasks[k].who_has] if k in tasks else [] for k in keys}

    def handle_has_what(self, workers: list | None = None) -> dict:
        """The keys each worker holds (``client.has_what``)."""
        return self._keys_per_worker("has_what", workers, lambda ws: ws.has_what)

    def handle_processing(self, workers: list | None = None) -> dict:
        """The keys each worker is running or has queued (``client.processing``)."""
        return self._keys_per_worker("processing", workers, lambda ws: ws.processing)

    def _keys_per_worker(self, op: str, workers: list | None,
                         tasks_of: Callable[[WorkerState], Iterable[TaskState]]) -> dict:
        ws_by = self.state.workers
        if workers is not None:
            keys_field(op, workers, "workers")
        return {a: [ts.key for ts in tasks_of(ws_by[a])] if a in ws_by else []
                for a in (ws_by if workers is None else workers)}

    async def handle_run(self, function: Pickled, args: Pickled | None = None, wait: bool = True) -> list:
        """``client.run_on_scheduler``: call a function here, on the loop (actorrt/run.py)."""
        return await run_here(self, "dask_scheduler", function, args, wait)

    def handle_restart(self, reason: str = "the cluster restarted") -> int:
        """Cancel every task for every holder and drop the datasets (``client.restart``).

        The workers themselves are replaced by whoever owns them: their nannies
        (``restart_workers``) or the LocalCluster.
        """
        for name in self.datasets.names():
            self.datasets.unpublish(name)
        keys = list(self.state.tasks)
        self.log_event("cluster", {"action": "restart", "reason": reason, "tasks": len(keys)})
        self._apply(self.state.stimulus_cancel(keys, reason, self._sid("restart")))
        return len(keys)

    async def handle_restart_workers(self, addresses: list, timeout: float | None = None,
                                     wait: bool = True) -> dict:
        """Restart these workers through their nannies (restarts.py): ``{address: "OK" |
        [kind, message]}`` once each is back under its name, or ``timeout`` passed (with
        ``wait=False``, once each was told)."""
        keys_field("restart_workers", addresses, "addresses")
        if timeout is not None and not timeout > 0:
            raise BadMessageError(f"Scheduler.restart_workers: 'timeout' must be positive, got {timeout!r}")
        return await self.restarts.restart(list(addresses), self.worker_info, self._tell_restart,
                                           RESTART_TIMEOUT if timeout is None else timeout, wait)

    def _tell_restart(self, address: str) -> None:
        self.host.tell(ActorRef(address, WORKER_ID), "restart")

    # --- moving data (moves.py, replicas.py) ----------------------------------------
    async def handle_replicate(self, keys: list, n: int | None = None, workers: list | None = None) -> int:
        """Copy each key to ``n`` of ``workers`` (all when None); the copies made."""
        keys_field("replicate", keys)
        if workers is not None:
            keys_field("replicate", workers, "workers")
        if n is not None and n < 1:
            raise BadMessageError(f"Scheduler.replicate: field 'n' must be at least 1, got {n!r}")
        return await self.moves.replicate(list(keys), n, None if workers is None else list(workers))

    async def handle_rebalance(self, keys: list | None = None, workers: list | None = None) -> int:
        """Even out the bytes the workers hold; the values moved."""
        if keys is not None:
            keys_field("rebalance", keys)
        if workers is not None:
            keys_field("rebalance", workers, "workers")
        return await self.moves.rebalance(None if keys is None else list(keys),
                                          None if workers is None else list(workers))

    async def handle_retire_workers(self, workers: list | None = None, names: list | None = None,
                                    n: int | None = None, close_workers: bool = True,
                                    remove: bool = True) -> dict:
        """Move what only these workers hold elsewhere, then close and remove them."""
        if workers is not None:
            keys_field("retire_workers", workers, "workers")
        if names is not None:
            keys_field("retire_workers", names, "names")
        if workers is not None and (names is not None or n is not None):
            raise BadMessageError("Scheduler.retire_workers: give 'workers', or 'names' or 'n', not both")
        if n is not None and (type(n) is not int or n < 0):
            raise BadMessageError(f"Scheduler.retire_workers: field 'n' must be an int >= 0, got {n!r}")
        if workers is None:
            workers = workers_to_close(self.state, self.worker_info, names, n)
        return await self.moves.retire(list(workers), close_workers, remove)

    def handle_reschedule(self, worker: str, key: str, run_id: int | None, origin: Comm | None) -> None:
        """A task raised ``Reschedule`` on ``worker``: place it again."""
        self._check_worker("reschedule", worker, origin)
        ts = self.state.tasks.get(key)
        if ts is not None and (run_id is None or ts.run_id == run_id):
            self._apply(self.state.stimulus_reschedule(worker, key, self._sid("reschedule")))

    def handle_dump_state(self) -> dict:
        """The scheduler's state as plain data (``client.dump_cluster_state``)."""
        return scheduler_snapshot(self)

    def handle_task_spec(self, key: str) -> dict:
        """A task's recipe and inputs (``client.recreate_error_locally``)."""
        ts = self.state.tasks.get(key)
        if ts is None or ts.spec is None:
            raise KeyError(f"the scheduler has no recipe for {key!r} (forgotten, or scattered data)")
        return {"spec": ts.spec, "deps": sorted(d.key for d in ts.dependencies), "state": ts.state,
                "blame": ts.blame}

    def reported_paused(self, address: str) -> bool:
        """Whether the worker's last memory report said it is paused."""
        report = self.worker_info.get(address, {}).get("memory")
        return bool(report is not None and report.paused)

    def worker_identity(self, address: str) -> dict:
        """A worker as dask's ``WorkerState.identity()`` shows it."""
        info = self.worker_info.get(address, {})
        memory = self.memory_of(address)
        ws = self.state.workers.get(address)
        return {"type": "Worker", "id": info.get("name"), "name": info.get("name"), "address": address,
                "host": ws.host if ws is not None else None, "nthreads": info.get("nthreads"),
                "memory_limit": memory.get("limit") or 0, "resources": dict(info.get("resources") or {}),
                "nanny": bool(info.get("nanny")), "pid": info.get("pid"),
                "metrics": {"managed_bytes": memory.get("managed", 0)}}
    # --- plugins (plugins.py) --------------------------------------------------------
    async def handle_register_worker_plugin(self, name: str, plugin: Pickled, idempotent: bool = False) -> dict:
        return await self.plugins.register_worker_plugin(
            plugin_name_field("Scheduler.register_worker_plugin", name), plugin, idempotent)

    async def handle_unregister_worker_plugin(self, name: str) -> dict:
        return await self.plugins.unregister_worker_plugin(
            plugin_name_field("Scheduler.unregister_worker_plugin", name))

    async def handle_register_scheduler_plugin(self, name: str, plugin: Pickled, idempotent: bool = False) -> None:
        await self.plugins.add(plugin_name_field("Scheduler.register_scheduler_plugin", name), plugin, idempotent)

    async def handle_unregister_scheduler_plugin(self, name: str) -> None:
        await self.plugins.remove(plugin_name_field("Scheduler.unregister_scheduler_plugin", name))

    # --- published datasets (datasets.py) -----------------------------------------
    def handle_publish_dataset(self, name: str, data: Pickled, keys: list, override: bool = False) -> None:
        keys_field("publish_dataset", keys)
        self.datasets.publish(name, data, keys, override)

    def handle_get_dataset(self, name: str) -> Pickled | None:
        return self.datasets.get(name)

    def handle_list_datasets(self) -> list:
        return self.datasets.names()

    def handle_unpublish_dataset(self, name: str) -> bool:
        return self.datasets.unpublish(name)

    def handle_key_states(self, keys: list) -> dict:
        keys_field("key_states", keys)
        return {k: self.state.tasks[k].state if k in self.state.tasks else "forgotten" for k in keys}

    def handle_story(self, keys: list) -> list:
        keys_field("story", keys)
        return [list(e) for e in self.state.story(*keys)]

    def handle_validate(self) -> bool:
        self.state.validate()
        return True

    def handle_identity(self) -> dict:
        return {"address": self.host.address, "workers": self._workers_info(),
                "tasks": len(self.state.tasks)}

    def handle_dashboard(self) -> str | None:
        """The dashboard's URL (``client.dashboard_link``), None when it is off."""
        return self.dashboard_link

    # --- worker stimuli ----------------------------------------------------
    def handle_tasks_done(self, worker: str, finished: list, erred: list, origin: Comm | None,
                          memory: list | None = None, activity: list | None = None) -> None:
        # All or nothing: one bad item refuses the whole report (protocol.py).
        done, failed = decode_tasks_done(finished, erred)
        report = decode_memory(memory, "Scheduler.tasks_done") if memory is not None else None
        moved = decode_activity(activity, "Scheduler.tasks_done") if activity is not None else None
        self._check_worker("tasks_done", worker, origin)
        if report is not None:
            self._memory_reported(worker, report)
        state = self.state
        if moved:
            self.task_stream.add_activity(worker, moved, state.key_and_name)
        self.task_stream.add_reports(worker, done, failed, state.key_and_name)
        out: list[Instruction] = []
        for f in done:
            out += state.stimulus_task_finished(worker, f.key, f.nbytes, f.type, self._sid("task-finished"),
                                                f.duration, f.run_id)
        for e in failed:
            out += state.stimulus_task_erred(worker, e.key, e.exception, e.traceback, self._sid("task-erred"),
                                             e.run_id)
        # Small values ride on to the clients with the news that they are done (the
        # scheduler keeps none of them: a later holder fetches from the worker).
        self._apply(out, {f.key: f.value for f in done if f.value is not None})

    # --- a client's tasks run on a worker it chose (direct_runs.py) ----------
    def handle_direct_started(self, client: str, tasks: list, workers: list, origin: Comm | None) -> None:
        """``client`` submitted ``tasks`` and handed each to its worker in ``workers`` itself."""
        self._check_peer("direct_started", "client", client, origin)
        specs = decode_tasks(tasks, "Scheduler.direct_started")
        keys_field("direct_started", workers, "workers")
        if len(workers) != len(specs):
            raise BadMessageError(f"Scheduler.direct_started: {len(specs)} tasks but {len(workers)} workers")
        for spec, worker in zip(specs, workers):
            self._apply(direct_started(self.state, client, spec, worker, self._sid("direct-started")))

    def handle_direct_done(self, client: str, worker: str, finished: list, erred: list,
                           origin: Comm | None) -> None:
        """The report ``worker`` gave ``client`` of the runs it handed it, relayed: as the
        worker's own ``tasks_done``, but it comes in order with the client's messages."""
        self._check_peer("direct_done", "client", client, origin)
        done, failed = decode_tasks_done(finished, erred, "Scheduler.direct_done")
        state = self.state
        self.task_stream.add_reports(worker, done, failed, state.key_and_name)
        out: list[Instruction] = []
        for f in done:
            out += direct_finished(state, client, worker, f.key, f.nbytes, f.type, self._sid("direct-finished"),
                                   f.duration)
        for e in failed:
            out += direct_erred(state, client, worker, e.key, e.exception, e.traceback, self._sid("direct-erred"))
        self._apply(out, {f.key: f.value for f in done if f.value is not None})

    def handle_direct_complete(self, client: str, tasks: list, workers: list, finished: list,
                               origin: Comm | None) -> None:
        """Tasks ``client`` handed ``workers`` itself, which finished there (``finished``:
        the reports it relays) and which it released since: each one's whole life, as
        ``direct_started``, ``direct_done`` and ``release_keys`` in one message."""
        specs = decode_tasks(tasks, "Scheduler.direct_complete")
        keys_field("direct_complete", workers, "workers")
        done, _ = decode_tasks_done(finished, [], "Scheduler.direct_complete")
        if not len(specs) == len(workers) == len(done):
            raise BadMessageError(f"Scheduler.direct_complete: {len(specs)} tasks, {len(workers)} workers "
                                  f"and {len(done)} reports")
        for i, (spec, f) in enumerate(zip(specs, done)):
            if spec.key != f.key:
                raise BadMessageError(f"Scheduler.direct_complete: 'finished'[{i}] reports {f.key!r:.100}, "
                                      f"not the task it stands beside ({spec.key!r:.100})")
        self._check_holder("direct_complete", client, origin)  # (it releases the keys, too)
        state = self.state
        names = {spec.key: spec.name for spec in specs}
        for worker in dict.fromkeys(workers):
            self.task_stream.add_reports(worker, [f for f, w in zip(done, workers) if w == worker], [],
                                         lambda key: (key, sys.intern(names[key])))
        self._apply(direct_complete(state, client, list(zip(specs, workers, done)), self._sid("direct-complete")))

    def handle_direct_declined(self, client: str, worker: str, keys: list, origin: Comm | None) -> None:
        """The runs of ``keys`` that ``client`` handed ``worker`` will not happen there."""
        self._check_peer("direct_declined", "client", client, origin)
        keys_field("direct_declined", keys)
        for key in keys:
            self._apply(direct_declined(self.state, worker, key, self._sid("direct-declined")))

    def handle_long_running(self, worker: str, keys: list, origin: Comm | None) -> None:
        """Tasks on ``worker`` gave their thread slots back (seceded while waiting)."""
        keys_field("long_running", keys)
        self._check_worker("long_running", worker, origin)
        for key in keys:
            self._apply(self.state.stimulus_long_running(worker, key, self._sid("long-running")))

    def handle_worker_memory(self, worker: str, memory: list, origin: Comm | None,
                             activity: list | None = None) -> None:
        """A worker's memory, sampled by its monitor; a change of pause goes to placement.
        Its transfers and disk reads/writes since its last report ride along."""
        report = decode_memory(memory)
        moved = decode_activity(activity, "Scheduler.worker_memory") if activity is not None else None
        self._check_worker("worker_memory", worker, origin)
        self._memory_reported(worker, report)
        if moved:
            self.task_stream.add_activity(worker, moved, self.state.key_and_name)

    def handle_get_task_stream(self, start: float | None = None, stop: float | None = None,
                               count: int | None = None) -> list:
        """``client.get_task_stream``: records in dask's shape (task_stream.py)."""
        for name, bound in (("start", start), ("stop", stop)):
            if bound is not None and (type(bound) not in (int, float) or bound != bound):
                raise BadMessageError(f"Scheduler.get_task_stream: field {name!r} must be seconds since "
                                      f"the epoch or None, got {bound!r:.100}")
        if count is not None and (type(count) is not int or count < 0):
            raise BadMessageError(f"Scheduler.get_task_stream: field 'count' must be an int >= 0 or None, "
                                  f"got {count!r:.100}")
        return self.task_stream.window(start, stop, count)

    def handle_worker_figures(self) -> dict:
        """Each worker's latest CPU, memory and network figures (performance_report)."""
        out = {}
        for address, info in self.worker_info.items():
            memory = self.memory_of(address)
            out[address] = {
                "nthreads": info.get("nthreads"), "rss": memory["rss"], "managed": memory["managed"],
                "spilled": memory["spilled"], "limit": memory["limit"], **self.usage_of(address)}
        return out

    def _memory_reported(self, worker: str, report: WorkerMemory) -> None:
        info = self.worker_info.get(worker)
        if info is None:
            return
        before, info["memory"] = info.get("memory"), report
        if worker in self.moves.retiring:
            return  # paused until it goes, whatever its memory says
        if report.paused != (before.paused if before is not None else False):
            self._apply(self.state.stimulus_worker_paused(worker, report.paused, self._sid("worker-paused")))
            self.workers_event("pause" if report.paused else "resume", worker)

    def handle_missing_data(self, worker: str, key: str, missing: dict, origin: Comm | None) -> None:
        check_missing(missing)
        self._check_worker("missing_data", worker, origin)
        self._apply(self.state.stimulus_missing_data(worker, key, missing, self._sid("missing-data")))

    # --- instructions -> messages -----------------------------------------
    def _apply(self, instructions: list[Instruction], inline: dict[str, bytes] | None = None) -> None:
        """Send what the state machine asks; ``inline``: small values (by key) that the
        memory reports carry to their clients."""
        send = self.outbox.send
        for ins in instructions:
            if type(ins) is Compute:
                actor = ins.actor
                send(ActorRef(ins.worker, WORKER_ID), "compute", ComputeTask(
                    ins.key, ins.spec, ins.deps, ins.name,
                    None if actor is False else actor if type(actor) is dict else {}, ins.run_id, ins.sizes))
            elif type(ins) is Free:
                send(ActorRef(ins.worker, WORKER_ID), "free_keys", *(
                    ins.keys if not ins.puts else [(k, ins.puts[k]) if k in ins.puts else k for k in ins.keys]))
            elif type(ins) is Report:
                ref = self.client_refs.get(ins.client)
                if ref is not None:
                    send(ref, "report", KeyReport(ins.key, ins.status, _wire_info(ins, inline)))
        if self.actors.waiters:  # a handle waits to learn where its actor went
            self.actors.wake()
        if self.admission.waiting:  # work finished or went: a held-back client may go on
            self.admission.progress(self.state.unfinished)

    def _message_fields(self, ref: ActorRef, op: str, items: list) -> dict[str, Any]:
        if op == "free_keys":
            return _free_fields(items)
        fields: dict[str, Any] = {FIELD[op]: items}
        if op == "report" and self._owed_acks:
            acked = self._owed_acks.pop(ref, 0)
            if acked:
                fields["acked"] = acked
        return fields


def _free_fields(items: list) -> dict[str, Any]:
    """A ``free_keys`` message's fields from its items: keys, and (key, put) for a
    scattered copy, whose put the worker keeps if put again since (WorkerState.stimulus_free_keys)."""
    keys, puts = [], {}
    for item in items:
        if type(item) is str:
            keys.append(item)
        else:
            keys.append(item[0])
            puts[item[0]] = item[1]
    return {"keys": keys, "puts": puts} if puts else {"keys": keys}


def _wire_info(report: Report, inline: dict[str, bytes] | None) -> dict:
    info = report.info
    if report.status == "memory":
        value = inline.get(report.key) if inline else None
        return info if value is None else {**info, "value": value}
    exc = info.get("exception")
    if isinstance(exc, BaseException):
        blob, tb = dumps_exception(exc)
        return {**info, "exception": blob, "traceback": info.get("traceback") or tb}
    return info


def _check_reachable(address: str, origin: Comm | None) -> None:
    """A worker's peers must be able to dial the address it registers: refuse one that
    only its own machine can reach (it would hold results nobody can fetch)."""
    peer_ip = getattr(origin, "peer_ip", None)
    if peer_ip is None:
        return
    try:
        scheme, rest = parse_address(address)
        host = split_host_port(rest)[0] if scheme in ("tcp", "tls") else None
    except ValueError as e:
        raise BadMessageError(f"Scheduler.register_worker: field 'address' {address!r} is not an "
                              f"address: {e}") from None
    if host is None:
        return
    if is_wildcard(host) or (is_loopback(host) and not is_loopback(peer_ip)):
        raise BadMessageError(
            f"Scheduler.register_worker: the worker registers as {address}, which other machines cannot "
            f"reach, but it connects from {peer_ip}: start it with --host {peer_ip} (or leave --host "
            "out to listen toward the scheduler), or give --contact-address")
