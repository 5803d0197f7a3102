"""The Scheduler actor: turns messages into stimuli of the state machine and its
instructions back into messages, batched per destination and per loop turn."""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from ..core import Actor, ActorRef, Pickled, Reply
from ..core.comm import Comm
from ..core.serialize import dumps_exception
from .datasets import Datasets
from .state import Compute, Free, Instruction, Report, SchedulerState, TaskSpec
from .user_actors import ActorDirectory

logger = logging.getLogger("actorrt.scheduler")

SCHEDULER_ID = "scheduler"
WORKER_ID = "worker"


class Scheduler(Actor):
    """The only actor that knows the task graph. Lives on the scheduler host."""

    def __init__(self, state: SchedulerState | None = None) -> None:
        self.state = state or SchedulerState()
        self.client_refs: dict[str, ActorRef] = {}
        self.worker_info: dict[str, dict] = {}
        self._stimuli = itertools.count()
        self._out: dict[ActorRef, list[tuple[str, list]]] = {}  # per ref: (op, items) in order
        self._flush_scheduled = False
        self._worker_waiters: list[tuple[int, Reply]] = []
        self.actors = ActorDirectory(self.state)  # user actors: locations and names
        self.datasets = Datasets(self.handle_want_keys, self.handle_release_keys)

    def on_start(self) -> None:
        self.host.peer_lost_callbacks.append(self._on_peer_lost)

    def on_stop(self) -> None:
        if self._on_peer_lost in self.host.peer_lost_callbacks:
            self.host.peer_lost_callbacks.remove(self._on_peer_lost)
        self.actors.close()

    def _sid(self, what: str) -> str:
        return f"{what}-{next(self._stimuli)}"

    # --- membership -------------------------------------------------------
    def handle_register_worker(self, address: str, nthreads: int, name: str = "",
                               pid: int = 0) -> dict:
        self.worker_info[address] = {"nthreads": nthreads, "name": name, "pid": pid}
        self._apply(self.state.handle_add_worker(address, nthreads, self._sid("add-worker")))
        self._wake_worker_waiters()
        return {"address": self.host.address}

    def handle_unregister_worker(self, address: str) -> None:
        self._remove_worker(address, "worker-closed")

    def handle_register_client(self, client: str, ref: ActorRef) -> dict:
        self.client_refs[client] = ref
        self.state.handle_add_client(client)
        return {"workers": self._workers_info()}

    def handle_unregister_client(self, client: str) -> None:
        self._remove_client(client)

    def _remove_client(self, client: str) -> None:
        if self.client_refs.pop(client, None) is not None:
            self._apply(self.state.handle_remove_client(client, self._sid("remove-client")))

    def _remove_worker(self, address: str, why: str) -> None:
        if self.worker_info.pop(address, None) is None:
            return
        logger.info("removing worker %s (%s)", address, why)
        self._apply(self.state.handle_remove_worker(address, self._sid(why)))

    def _on_peer_lost(self, address: str, comm: Comm) -> None:
        if address in self.worker_info:
            self._remove_worker(address, "worker-lost")
        gone = [c for c, ref in self.client_refs.items() if ref.address == address]
        for client in gone:
            self._remove_client(client)

    def handle_workers(self) -> dict:
        return self._workers_info()

    def _workers_info(self) -> dict:
        return {a: dict(info) for a, info in self.worker_info.items()}

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
    def handle_update_graph(self, client: str, tasks: list, wanted: list) -> None:
        specs = [TaskSpec(*t) for t in tasks]
        specs, wanted, refused = self.actors.refuse_taken_names(client, specs, wanted)
        self._apply(refused)
        self._apply(self.state.handle_update_graph(client, specs, wanted, self._sid("update-graph")))

    # --- user actors (calls never come here; see user_actors.py) -----------------
    def handle_actor_status(self, key: str, reply: Reply, stale: str = "") -> None:
        """Where actor ``key`` lives now; deferred while it restarts."""
        self.actors.status(key, stale, reply)

    def handle_get_actor(self, client: str, key: str) -> bool:
        """``client.get_actor(name)``: True, and ``client`` holds the actor, if it exists."""
        return self.actors.want_named(client, key, lambda c, keys: self._apply(
            self.state.handle_want_keys(c, keys, self._sid("get-actor"))))

    def handle_release_keys(self, client: str, keys: list) -> None:
        self._apply(self.state.handle_release_keys(client, keys, self._sid("release")))

    def handle_want_keys(self, client: str, keys: list) -> None:
        self._apply(self.state.handle_want_keys(client, keys, self._sid("want")))

    def handle_cancel(self, client: str, keys: list, force: bool = False) -> None:
        if not force:
            # Only this client's interest goes away unless nobody else wants the keys.
            shared = [k for k in keys if k in self.state.tasks and self.state.tasks[k].who_wants - {client}]
            if shared:
                # The client marked its own futures cancelled already; no report needed.
                self._apply(self.state.handle_release_keys(client, shared, self._sid("cancel")))
                keys = [k for k in keys if k not in shared]
        self._apply(self.state.handle_cancel(keys, None, self._sid("cancel"), requester=client))

    def handle_retry(self, keys: list) -> None:
        self._apply(self.state.handle_retry(keys, self._sid("retry")))

    def handle_update_data(self, client: str, who_has: dict, nbytes: dict, types: dict) -> None:
        self._apply(self.state.handle_update_data(client, who_has, nbytes, types, self._sid("scatter")))

    def handle_who_has(self, keys: list | None = None) -> dict:
        """Where each key's data is; every key in memory when ``keys`` is None."""
        tasks = self.state.tasks
        if keys is None:
            keys = [k for k, ts in tasks.items() if ts.who_has]
        return {k: [ws.address for ws in tasks[k].who_has] if k in tasks else [] for k in keys}

    def handle_has_what(self, workers: list | None = None) -> dict:
        """The keys each worker holds (``client.has_what``)."""
        ws_by = self.state.workers
        return {a: [ts.key for ts in ws_by[a].has_what] if a in ws_by else []
                for a in (ws_by if workers is None else workers)}

    def handle_processing(self, workers: list | None = None) -> dict:
        """The keys each worker is running or has queued (``client.processing``)."""
        ws_by = self.state.workers
        return {a: [ts.key for ts in ws_by[a].processing] if a in ws_by else []
                for a in (ws_by if workers is None else workers)}

    async def handle_run(self, function: Pickled, args: Pickled | None = None, wait: bool = True) -> list:
        """``client.run_on_scheduler``: call a function here, on the loop (actorrt/run.py)."""
        from ..run import run_here
        return await run_here(self, "dask_scheduler", function, args, wait)

    def handle_restart(self, reason: str = "the cluster restarted") -> int:
        """Cancel every task for every holder and drop the datasets (``client.restart``).

        The workers themselves are replaced by whoever owns them (the LocalCluster).
        """
        for name in self.datasets.names():
            self.datasets.unpublish(name)
        keys = list(self.state.tasks)
        self._apply(self.state.handle_cancel(keys, reason, self._sid("restart")))
        return len(keys)

    # --- published datasets (datasets.py) -----------------------------------------
    def handle_publish_dataset(self, name: str, data: Pickled, keys: list, override: bool = False) -> None:
        self.datasets.publish(name, data, keys, override)

    def handle_get_dataset(self, name: str) -> Pickled | None:
        return self.datasets.get(name)

    def handle_list_datasets(self) -> list:
        return self.datasets.names()

    def handle_unpublish_dataset(self, name: str) -> bool:
        return self.datasets.unpublish(name)

    def handle_key_states(self, keys: list) -> dict:
        return {k: self.state.tasks[k].state if k in self.state.tasks else "forgotten" for k in keys}

    def handle_story(self, keys: list) -> list:
        return [list(e) for e in self.state.story(*keys)]

    def handle_validate(self) -> bool:
        self.state.validate()
        return True

    def handle_identity(self) -> dict:
        return {"address": self.host.address, "workers": self._workers_info(),
                "tasks": len(self.state.tasks)}

    # --- worker stimuli ----------------------------------------------------
    def handle_tasks_done(self, worker: str, finished: list, erred: list) -> None:
        state = self.state
        out: list[Instruction] = []
        for key, nbytes, typ, *duration in finished:
            out += state.handle_task_finished(worker, key, nbytes, typ, self._sid("task-finished"),
                                              duration[0] if duration else None)
        for key, exc, tb in erred:
            out += state.handle_task_erred(worker, key, exc, tb, self._sid("task-erred"))
        self._apply(out)

    def handle_long_running(self, worker: str, keys: list) -> None:
        """Tasks on ``worker`` gave their thread slots back (seceded while waiting)."""
        for key in keys:
            self._apply(self.state.handle_long_running(worker, key, self._sid("long-running")))

    def handle_missing_data(self, worker: str, key: str, missing: dict) -> None:
        self._apply(self.state.handle_missing_data(worker, key, missing, self._sid("missing-data")))

    # --- instructions -> messages -----------------------------------------
    def _apply(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if type(ins) is Compute:
                self._send(ActorRef(ins.worker, WORKER_ID), "compute",
                           [ins.key, ins.spec, ins.deps, ins.name, ins.actor])
            elif type(ins) is Free:
                self._send(ActorRef(ins.worker, WORKER_ID), "free_keys", *ins.keys)
            elif type(ins) is Report:
                ref = self.client_refs.get(ins.client)
                if ref is not None:
                    self._send(ref, "report", [ins.key, ins.status, _wire_info(ins.info)])
        if self.actors.waiters:  # a handle waits to learn where its actor went
            self.actors.wake()

    def _send(self, ref: ActorRef, op: str, *items: Any) -> None:
        """Queue items for ``op`` at ``ref``, batched per loop turn.

        Consecutive items of one op share a message, but ops keep their order: a
        ``compute``, ``free_keys``, ``compute`` of one key (cancelled, then submitted
        again) must not reach the worker as compute, compute, free.
        """
        queue = self._out.setdefault(ref, [])
        if queue and queue[-1][0] == op:
            queue[-1][1].extend(items)
        else:
            queue.append((op, list(items)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, {}
        for ref, ops in out.items():
            for op, items in ops:
                field = {"compute": "tasks", "free_keys": "keys", "report": "msgs"}[op]
                try:
                    self.host.tell(ref, op, **{field: items})
                except Exception:
                    logger.exception("could not send %s to %s", op, ref)


def _wire_info(info: dict) -> dict:
    exc = info.get("exception")
    if isinstance(exc, BaseException):
        blob, tb = dumps_exception(exc)
        return {**info, "exception": blob, "traceback": info.get("traceback") or tb}
    return info
