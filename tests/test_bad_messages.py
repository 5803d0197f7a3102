"""Well-framed but malformed messages from authenticated peers (issue 2's ground rule).

A peer holding the cluster's secret (a buggy client, a worker of another version, a
hostile script) may send any op with any fields to any actor. Each such message must
be refused with a BadMessageError naming the op and the field (an ask gets it as its
reply; a tell is logged and dropped), must leave the scheduler's state valid and
unchanged, and the cluster must keep serving correct clients with no data lost.

Most cases share one in-process cluster (``rig``): every case first waits for the
cluster to be quiet, snapshots the state, sends the bad message from the client's
host (so it arrives over a connection, with an origin, like a remote peer's), then
checks the state, an earlier result, and a new task. One test repeats the exercise
over TCP against worker processes, from a second host that knows the secret.
"""
import asyncio
import gc
import itertools
import logging
import math
import threading
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorrt import Client, LocalCluster
from actorrt.client.future import Future
from actorrt.core import ActorRef, BadMessageError, Host, Pickled, UnknownOpError
from actorrt.testing import gen_cluster, poll_for


def inc(x):
    return x + 1


# In-process clusters run tasks in this process: a plain threading.Event can hold one.
GATE = threading.Event()


def wait_for_gate(x):
    GATE.wait(10)
    return x


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


BLOB = Pickled.dumps(1)
_fresh = itertools.count()


def fresh(prefix="bad"):
    return f"{prefix}-{next(_fresh)}"


# --- the shared in-process cluster ---------------------------------------------------------

class Rig:
    """One in-process cluster, refs to every kind of actor, and the checks run per case."""

    def __init__(self, client, cluster):
        self.client = client
        self.cluster = cluster
        self.scheduler = ActorRef(cluster.scheduler_address, "scheduler")
        self.registry = ActorRef(cluster.scheduler_address, "registry")
        self.workers = [host.address for host, _ in cluster.workers.values()]
        self.worker = ActorRef(self.workers[0], "worker")
        self.earlier = client.submit(inc, 1, key="earlier")
        assert self.earlier.result() == 2
        self.counter = client.submit(Counter, actor=True).result()
        self.user_actor = self.counter._ref
        self.prims = {kind: self.run(self._resolve, kind) for kind in
                      ("queue", "lock", "semaphore", "event", "variable", "pubsub", "condition")}
        self.run(self._prepare_primitives)

    def run(self, fn, *args):
        return self.client.sync(fn, *args)

    async def _resolve(self, kind):
        ref, _ = await self.client.host.ask(self.registry, "get_or_create", kind=kind, name="bad-msgs")
        return ref

    async def _prepare_primitives(self):
        ask = self.client.host.ask
        await ask(self.prims["event"], "set")  # waits return at once
        await ask(self.prims["variable"], "set", value=BLOB, keys=[])  # gets return at once

    def holder_of(self, address):
        return next(w for h, w in self.cluster.workers.values() if h.address == address)

    # --- the checks -------------------------------------------------------------------------
    async def settle(self):
        """Wait until the cluster is quiet: our tells handled, workers hold what the
        scheduler thinks they hold, nothing running."""
        await asyncio.sleep(0)
        self.client.table.flush()  # (releases queued: they go before the identity ask)
        await self.client.host.ask(self.scheduler, "identity")
        scheduler = self.cluster.scheduler
        state = scheduler.state

        def quiet():
            if not scheduler.outbox.idle:
                return False
            # (A graph's task that nobody wants stays 'released': it is not running.)
            if any(ts.state not in ("memory", "erred", "released") for ts in state.tasks.values()):
                return False
            for address, ws in state.workers.items():
                if set(self.holder_of(address).data) != {ts.key for ts in ws.has_what}:
                    return False
            return True
        await poll_for(quiet, timeout=5)

    def snapshot(self):
        scheduler = self.cluster.scheduler
        state = scheduler.state
        tasks = {k: (ts.state, frozenset(ts.who_wants), frozenset(w.address for w in ts.who_has),
                     ts.nbytes, ts.type) for k, ts in state.tasks.items()}
        workers = {a: (ws.nthreads, ws.capacity, frozenset(t.key for t in ws.processing),
                       frozenset(t.key for t in ws.has_what)) for a, ws in state.workers.items()}
        data = {a: sorted(self.holder_of(a).data) for a in self.workers}
        registry = self.cluster.scheduler_host.actors["registry"]
        prims = {slot: _summary(actor) for slot, actor in registry.actors.items()}
        return (tasks, workers, frozenset(state.clients), dict(scheduler.client_refs),
                # (a worker's memory is a sample, reported as it changes: not state a message sets)
                {a: {k: v for k, v in i.items() if k != "memory"} for a, i in scheduler.worker_info.items()},
                {a: ws.paused for a, ws in state.workers.items()}, data, prims,
                len(scheduler._worker_waiters), state.saturation, state.mean_duration)

    async def still_serving(self):
        """The earlier result is there, new work runs, every actor answers."""
        assert await self.earlier == 2
        n = next(_fresh)
        f = self.client.submit(inc, n, pure=False)
        assert await f == n + 1
        f.release()
        # The release travels on its own: let it arrive, or the next case's "before"
        # holds a key its "after" does not.
        await poll_for(lambda: f.key not in self.cluster.scheduler.state.tasks)
        ask = self.client.host.ask
        assert await ask(self.prims["queue"], "qsize") >= 0
        assert await ask(self.prims["event"], "is_set") is True
        await ask(self.worker, "identity")
        await ask(self.user_actor, "info")
        self.cluster.scheduler.state.validate()

    async def refused(self, ref, op, fields, match=None):
        """Ask ``op`` with ``fields``: it must fail with a BadMessageError and change nothing."""
        await self.settle()
        before = self.snapshot()
        with pytest.raises(BadMessageError) as info:
            await asyncio.wait_for(self.client.host.ask(ref, op, **fields), 5)
        text = str(info.value)
        assert op in text, text
        if match is not None:
            assert match in text, text
        await self.settle()
        self.cluster.scheduler.state.validate()
        assert self.snapshot() == before
        await self.still_serving()
        return text


def _summary(actor):
    """What a coordination actor holds, coarsely: sizes and keys of its containers."""
    out = {}
    for name, value in vars(actor).items():
        if name in ("host", "id") or name.startswith("_"):
            continue
        if isinstance(value, dict):
            out[name] = frozenset(repr(k) for k in value)
        elif isinstance(value, (list, deque, set)):
            out[name] = len(value)
        elif isinstance(value, (bool, int, float, str, type(None))):
            out[name] = value
    keys = getattr(actor, "keys", None)
    if keys is not None and hasattr(keys, "counts"):
        out["held keys"] = dict(keys.counts)
    return out


@pytest.fixture(scope="module")
def rig():
    with LocalCluster(2, 1, processes=False, validate=True) as lc, Client(lc) as client:
        yield Rig(client, lc)


@pytest.fixture(autouse=True)
def _collected():
    """The tests share one cluster. A Future an earlier test left in a reference cycle
    (a caught exception's traceback holds the frame that held it) releases its key
    whenever the collector runs: collect it now, so its release is not what a later
    test's "changes nothing" check sees between its snapshots."""
    gc.collect()


def target(rig, name):
    if name == "scheduler":
        return rig.scheduler
    if name == "worker":
        return rig.worker
    if name == "registry":
        return rig.registry
    if name == "user_actor":
        return rig.user_actor
    return rig.prims[name]


# --- every op, malformed ---------------------------------------------------------------------

def _task(key="t", spec=None, deps=(), name="t", priority=0, retries=0, workers=None,
          allow_other_workers=False, actor=False, resources=None):
    return [key, [BLOB, None] if spec is None else spec, list(deps), name, priority, retries,
            workers, allow_other_workers, actor, resources]


def _worker_task(key="t", spec=None, deps=None, name="t", actor=None):
    return [key, [BLOB, None] if spec is None else spec, {} if deps is None else deps, name, actor, None, {}]


# (target, op, fields, text the error must contain)
CASES = [
    # the scheduler: membership
    ("scheduler", "register_worker", dict(address=5, nthreads=1), "'address'"),
    ("scheduler", "register_worker", dict(address=None, nthreads=1), "'address'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads="2"), "'nthreads'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=2.5), "'nthreads'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=True), "'nthreads'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, name=5), "'name'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, pid="x"), "'pid'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1), "came from"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, extra=1), "unknown"),
    ("scheduler", "register_worker", dict(nthreads=1), "missing"),
    ("scheduler", "unregister_worker", dict(address=[1]), "'address'"),
    ("scheduler", "register_client", dict(client=5, ref=ActorRef("inproc://x", "y")), "'client'"),
    ("scheduler", "register_client", dict(client="c", ref="inproc://x/y"), "'ref'"),
    ("scheduler", "register_client", dict(client="c", ref=None), "'ref'"),
    ("scheduler", "register_client", dict(client="c", ref=ActorRef("tcp://10.9.9.9:1", "c")), "came from"),
    ("scheduler", "unregister_client", dict(client={"a": 1}), "'client'"),
    ("scheduler", "wait_for_workers", dict(n="2"), "'n'"),
    ("scheduler", "wait_for_workers", dict(n=None), "'n'"),
    ("scheduler", "wait_for_workers", dict(n=1.5), "'n'"),
    # the scheduler: graphs
    ("scheduler", "update_graph", dict(client=5, tasks=[], wanted=[]), "'client'"),
    ("scheduler", "update_graph", dict(client="c", tasks="abc", wanted=[]), "'tasks'"),
    ("scheduler", "update_graph", dict(client="c", tasks=[], wanted="abc"), "'wanted'"),
    ("scheduler", "update_graph", dict(client="c", tasks=[], wanted=[5]), "'wanted'[0]"),
    ("scheduler", "update_graph", dict(client="c", tasks=["t"], wanted=[]), "'tasks'[0]"),
    ("scheduler", "update_graph", dict(client="c", tasks=[["t"]], wanted=[]), "'tasks'[0]"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task() + [1]], wanted=[]), "'tasks'[0]"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(key=5)], wanted=[]), "key"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(key=None)], wanted=[]), "key"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(spec="f")], wanted=[]), "spec"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(spec=[1, 2])], wanted=[]), "spec"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(spec=[BLOB, "x"])], wanted=[]), "spec"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(spec=[BLOB])], wanted=[]), "spec"),
    ("scheduler", "update_graph",
     dict(client="c", tasks=[_task()[:2] + ["earlier"] + _task()[3:]], wanted=[]), "deps"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(deps=[5])], wanted=[]), "deps"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(deps=[["a"]])], wanted=[]), "deps"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(key="me", deps=["me"])], wanted=[]),
     "itself"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(name=5)], wanted=[]), "name"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(priority="high")], wanted=[]), "priority"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(priority=math.nan)], wanted=[]), "priority"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(retries="x")], wanted=[]), "retries"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(retries=None)], wanted=[]), "retries"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task()[:9]], wanted=[]), "'tasks'[0]"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(resources={"GPU": -1})], wanted=[]),
     "resources"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(workers=5)], wanted=[]), "workers"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(workers=[5])], wanted=[]), "workers"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(workers="tcp://a:1")], wanted=[]),
     "workers"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(allow_other_workers="y")], wanted=[]),
     "allow_other_workers"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(actor="yes")], wanted=[]), "actor"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(actor={"max_restarts": "x"})], wanted=[]),
     "max_restarts"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(actor={"max_concurrency": 0})], wanted=[]),
     "max_concurrency"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(actor={"name": 5})], wanted=[]), "name"),
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(actor={"bogus": 1})], wanted=[]), "bogus"),
    # a good task, then a bad one: neither may be applied
    ("scheduler", "update_graph",
     dict(client="c", tasks=[_task(key="good-then-bad"), _task(key="bad", priority="x")],
          wanted=["good-then-bad"]), "'tasks'[1]"),
    # the scheduler: holders
    ("scheduler", "release_keys", dict(client="c", keys="earlier"), "'keys'"),
    ("scheduler", "release_keys", dict(client="c", keys=["earlier", 5]), "'keys'[1]"),
    ("scheduler", "release_keys", dict(client=None, keys=["earlier"]), "'client'"),
    ("scheduler", "release_keys", dict(client="queue/bad-msgs", keys=["earlier"]), "not a client"),
    ("scheduler", "release_keys", dict(client="fire-and-forget", keys=["earlier"]), "not a client"),
    ("scheduler", "cancel", dict(client="c", keys=["earlier"]), "not a client"),
    ("scheduler", "unregister_client", dict(client="someone-else"), "not a client"),
    ("scheduler", "want_keys", dict(client="c", keys=[["a"]]), "'keys'[0]"),
    ("scheduler", "want_keys", dict(client="c", keys=None), "'keys'"),
    ("scheduler", "cancel", dict(client="c", keys=["earlier", None]), "'keys'[1]"),
    ("scheduler", "cancel", dict(client="c", keys=["earlier"], force="yes"), "'force'"),
    ("scheduler", "retry", dict(keys={"earlier": 1}), "'keys'"),
    ("scheduler", "update_data", dict(client="c", who_has=[1], nbytes={}, types={}), "'who_has'"),
    ("scheduler", "update_data", dict(client="c", who_has={"k": "w"}, nbytes={}, types={}), "'who_has'"),
    ("scheduler", "update_data", dict(client="c", who_has={5: []}, nbytes={}, types={}), "'who_has'"),
    ("scheduler", "update_data", dict(client="c", who_has={"k": [5]}, nbytes={}, types={}), "'who_has'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={"k": "big"}, types={}), "'nbytes'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={"k": -1}, types={}), "'nbytes'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={}, types={"k": 5}), "'types'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={}, types={}, puts=[1]), "'puts'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={}, types={}, puts={"k": {"w": -1}}),
     "'puts'"),
    ("scheduler", "update_data", dict(client="c", who_has={}, nbytes={}, types={}, puts={"k": {5: 1}}),
     "'puts'"),
    ("scheduler", "who_has", dict(keys=[[1]]), "'keys'[0]"),
    ("scheduler", "key_states", dict(keys="earlier"), "'keys'"),
    ("scheduler", "story", dict(keys=[None]), "'keys'[0]"),
    ("scheduler", "has_what", dict(workers=[[1]]), "'workers'[0]"),
    ("scheduler", "processing", dict(workers=5), "'workers'"),
    ("scheduler", "publish_dataset", dict(name="d", data=BLOB, keys=[5]), "'keys'[0]"),
    ("scheduler", "publish_dataset", dict(name="d", data="x", keys=[]), "'data'"),
    ("scheduler", "actor_status", dict(key=5), "'key'"),
    # the scheduler: events and metadata (scheduler/events.py)
    ("scheduler", "log_event", dict(topic=5, msg=BLOB), "'topic'"),
    ("scheduler", "log_event", dict(topic="", msg=BLOB), "'topic'"),
    ("scheduler", "log_event", dict(topic=["a", 5], msg=BLOB), "'topic'"),
    ("scheduler", "log_event", dict(topic="x" * 201, msg=BLOB), "'topic'"),
    ("scheduler", "get_events", dict(topic=["a"]), "'topic'"),
    ("scheduler", "subscribe_topic", dict(topic=5, client="c", ref=ActorRef("inproc://x", "t")), "'topic'"),
    ("scheduler", "subscribe_topic", dict(topic="t", client="nobody", ref=ActorRef("inproc://x", "t")),
     "'client'"),
    ("scheduler", "unsubscribe_topic", dict(topic=None, client="c"), "'topic'"),
    ("scheduler", "set_metadata", dict(keys=[], value=BLOB), "'keys'"),
    ("scheduler", "set_metadata", dict(keys=["a", 5], value=BLOB), "'keys'"),
    ("scheduler", "get_metadata", dict(keys="a"), "'keys'"),
    ("scheduler", "get_actor", dict(client="c", key=[1]), "'key'"),
    # the scheduler: what only workers say
    ("scheduler", "tasks_done", dict(worker=5, finished=[], erred=[]), "'worker'"),
    ("scheduler", "tasks_done", dict(worker="W", finished="x", erred=[]), "'finished'"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k"]], erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[[5, 1, "int", None, None, None]], erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", "big", "int", None, None, None]], erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, 5, None, None, None]], erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int", "slow", None, None]], erred=[]),
     "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int", math.nan, None, None]], erred=[]),
     "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int", -1.0, None, None]], erred=[]),
     "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int", math.inf, None, None]], erred=[]),
     "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int", None, None, "raw"]], erred=[]),
     "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 1, "int"]], erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[["k"]]), "'erred'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[[5, BLOB, "tb", None]]), "'erred'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[["k", BLOB, 5, None]]), "'erred'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["earlier", 8, "int", None, None, None, None, None, None]],
                                     erred=[]), "came from"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["k", 8, "int", None, None, None, math.nan, 1.0, 1]],
                                     erred=[]), "'finished'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[["k", BLOB, None, None, 1.0, 2.0, "t"]]),
     "'erred'[0]"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[], activity=[["fly", "k", 1.0, 2.0, 0, None]]),
     "'activity'[0]"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[0, 0, 0, None, None, False, None, None, None],
                                        activity="x"), "'activity'"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[0, 0, 0, None, None, False, -1.0, None, None]),
     "'memory'"),
    ("scheduler", "long_running", dict(worker="W", keys="earlier"), "'keys'"),
    ("scheduler", "long_running", dict(worker="W", keys=["earlier"]), "came from"),
    ("scheduler", "missing_data", dict(worker="W", key="k", missing=[1]), "'missing'"),
    ("scheduler", "missing_data", dict(worker="W", key="k", missing={"earlier": 5}), "'missing'"),
    ("scheduler", "missing_data", dict(worker="W", key="k", missing={"earlier": ["W"], "x": [5]}),
     "'missing'"),
    ("scheduler", "missing_data", dict(worker="W", key=5, missing={}), "'key'"),
    ("scheduler", "missing_data", dict(worker="W", key="k", missing={"earlier": ["W"]}), "came from"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[1, 2]), "'memory'"),
    ("scheduler", "tasks_done", dict(worker="W", finished=[], erred=[], memory=[0, 0, 0, None, None, 1]), "'memory'"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[-1, 0, 0, None, None, False]), "'memory'"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[0, 0, 0, 5, None, "yes"]), "'memory'"),
    ("scheduler", "worker_memory", dict(worker="W", memory=[0, 0, 0, None, None, False, 1.0, 2.0, 3.0]),
     "came from"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, memory=[0]), "'memory'"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, resources={"GPU": -1}),
     "'resources'['GPU'] must be a finite number >= 0"),
    ("scheduler", "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1, resources=["GPU"]),
     "'resources'"),
    # the scheduler: a client's lone tasks run on a worker it picked (direct_runs.py)
    ("scheduler", "direct_started", dict(client="c", tasks="x", workers=[]), "'tasks'"),
    ("scheduler", "direct_started", dict(client="c", tasks=[["t"]], workers=["W"]), "'tasks'[0]"),
    ("scheduler", "direct_started", dict(client="c", tasks=[_task(spec="f")], workers=["W"]), "spec"),
    ("scheduler", "direct_started", dict(client="c", tasks=[_task()], workers=[5]), "'workers'"),
    ("scheduler", "direct_started", dict(client="c", tasks=[_task()], workers=[]), "1 tasks but 0 workers"),
    ("scheduler", "direct_done", dict(client="c", worker=5, finished=[], erred=[]), "'worker'"),
    ("scheduler", "direct_done", dict(client="c", worker="W", finished=[["k"]], erred=[]), "'finished'[0]"),
    ("scheduler", "direct_done", dict(client="c", worker="W", finished=[], erred=[["k", "x"]]), "'erred'[0]"),
    ("scheduler", "direct_complete", dict(client="c", tasks=[_task()], workers="W", finished=[]), "'workers'"),
    ("scheduler", "direct_complete", dict(client="c", tasks=[_task()], workers=["W"], finished=[["t"]]),
     "'finished'[0]"),
    ("scheduler", "direct_complete", dict(client="c", tasks=[_task()], workers=["W"], finished=[]),
     "1 tasks, 1 workers and 0 reports"),
    ("scheduler", "direct_complete", dict(client="c", tasks=[_task()], workers=["W"], finished=[
        ["other", 8, "int", 0.001, -1, None, None, None, None]]), "reports 'other', not the task"),
    ("scheduler", "direct_complete", dict(client="queue/bad-msgs", tasks=[_task()], workers=["W"], finished=[
        ["t", 8, "int", 0.001, -1, None, None, None, None]]), "not a client"),
    ("scheduler", "direct_declined", dict(client="c", worker="W", keys="k"), "'keys'"),
    ("scheduler", "direct_declined", dict(client="c", worker=None, keys=["k"]), "'worker'"),
    # a worker
    ("worker", "run_direct", dict(key="k", spec="f", name="f"), "'spec'"),
    ("worker", "run_direct", dict(key="k", spec=[BLOB, "x"], name="f"), "'spec'"),
    ("worker", "run_direct", dict(key=5, spec=[BLOB, None], name="f"), "'key'"),
    ("worker", "compute", dict(tasks="x"), "'tasks'"),
    ("worker", "compute", dict(tasks=[_worker_task()]), "came from"),
    ("worker", "free_keys", dict(keys="earlier"), "'keys'"),
    ("worker", "free_keys", dict(keys=["earlier"]), "came from"),
    ("worker", "close", dict(), "came from"),
    ("worker", "acquire_replicas", dict(who_has={"k": ["tcp://10.9.9.9:1"]}), "came from"),
    ("scheduler", "replicate", dict(keys="k"), "'keys'"),
    ("scheduler", "replicate", dict(keys=[5]), "'keys'[0]"),
    ("scheduler", "replicate", dict(keys=["k"], n=0), "'n'"),
    ("scheduler", "replicate", dict(keys=["k"], n="2"), "'n'"),
    ("scheduler", "replicate", dict(keys=["k"], workers=[1]), "'workers'"),
    ("scheduler", "rebalance", dict(keys=[1]), "'keys'"),
    ("scheduler", "rebalance", dict(workers="w"), "'workers'"),
    ("scheduler", "retire_workers", dict(workers=[1]), "'workers'"),
    ("scheduler", "retire_workers", dict(names=[1]), "'names'"),
    ("scheduler", "retire_workers", dict(n="1"), "'n'"),
    ("scheduler", "retire_workers", dict(close_workers="yes"), "'close_workers'"),
    ("scheduler", "reschedule", dict(worker="tcp://10.9.9.9:1", key="k", run_id=1), "came from"),
    ("scheduler", "reschedule", dict(worker="w", key=5, run_id=1), "'key'"),
    ("scheduler", "task_spec", dict(key=5), "'key'"),
    ("worker", "get_data", dict(keys=[["earlier"]]), "'keys'[0]"),
    ("worker", "get_data", dict(keys="earlier"), "'keys'"),
    ("worker", "get_data", dict(keys=None), "'keys'"),
    ("worker", "put_data", dict(data=[1]), "'data'"),
    ("worker", "put_data", dict(data={"k": "raw"}), "'data'"),
    ("worker", "put_data", dict(data={5: BLOB}), "'data'"),
    ("worker", "put_data", dict(data={"good": BLOB, "bad": 5}), "'data'"),
    ("worker", "run", dict(function="print"), "'function'"),
    ("worker", "plugin_add", dict(name="p", plugin=BLOB), "came from"),
    ("worker", "plugin_add", dict(name="p", plugin="raw"), "'plugin'"),
    ("worker", "plugin_remove", dict(name=5), "'name'"),
    ("scheduler", "register_worker_plugin", dict(name=5, plugin=BLOB), "'name'"),
    ("scheduler", "register_worker_plugin", dict(name="", plugin=BLOB), "'name'"),
    ("scheduler", "register_worker_plugin", dict(name="p", plugin="raw"), "'plugin'"),
    ("scheduler", "register_worker_plugin", dict(name="p", plugin=BLOB, idempotent="yes"), "'idempotent'"),
    ("scheduler", "unregister_worker_plugin", dict(name=[1]), "'name'"),
    ("scheduler", "register_scheduler_plugin", dict(name=None, plugin=BLOB), "'name'"),
    ("scheduler", "register_scheduler_plugin", dict(name="p", plugin=5), "'plugin'"),
    ("scheduler", "unregister_scheduler_plugin", dict(name=""), "'name'"),
    # the registry and the system actors
    ("registry", "get_or_create", dict(kind=5, name="x"), "'kind'"),
    ("registry", "get_or_create", dict(kind="queue", name=5), "'name'"),
    ("registry", "get_or_create", dict(kind="queue", name="x", options=[1]), "'options'"),
    ("registry", "get_or_create", dict(kind="queue", name="bad-opts", options={5: 1}), "'options'"),
    ("registry", "get_or_create", dict(kind="queue", name="bad-opts", options={"bogus": 1}), "bogus"),
    ("registry", "get_or_create", dict(kind="queue", name="bad-opts", options={"maxsize": "x"}), "maxsize"),
    ("registry", "get_or_create", dict(kind="queue", name="x", holder=7), "'holder'"),
    ("registry", "release", dict(kind="queue", name=5, holder="t"), "'name'"),
    ("registry", "release", dict(kind="queue", name="x", holder=None), "'holder'"),
    ("registry", "release", dict(kind="queue", name="x"), "holder"),
    ("registry", "names", dict(kind=5), "'kind'"),
    ("queue", "put", dict(call=5, value=BLOB, keys=[]), "'call'"),
    ("queue", "put", dict(call="c", value="raw", keys=[]), "'value'"),
    ("queue", "put", dict(call="c", value=BLOB, keys="earlier"), "'keys'"),
    ("queue", "put", dict(call="c", value=BLOB, keys=[5]), "'keys'[0]"),
    ("queue", "put", dict(call="c", value=BLOB, keys=[], timeout="soon"), "'timeout'"),
    ("queue", "put_nowait", dict(value=5), "'value'"),
    ("queue", "get", dict(call="c", client="c", count="2"), "'count'"),
    ("queue", "get", dict(call="c", client="c", count=-1), "'count'"),
    ("queue", "get", dict(call="c", client=5), "'client'"),
    ("queue", "get", dict(call="c", client="c", timeout=[1]), "'timeout'"),
    ("queue", "unget", dict(items=[1]), "'items'[0]"),
    ("queue", "unget", dict(items=[[BLOB]]), "'items'[0]"),
    ("queue", "unget", dict(items=[["raw", []]]), "'items'[0]"),
    ("queue", "unget", dict(items=[[BLOB, []], [BLOB, [5]]]), "'items'[1]"),
    ("queue", "abandon", dict(call=[1]), "'call'"),
    ("lock", "acquire", dict(call="c", token=[1], names=["a"]), "'token'"),
    ("lock", "acquire", dict(call=5, token="t", names=["a"]), "'call'"),
    ("lock", "acquire", dict(call="c", token="t", names="a"), "'names'"),
    ("lock", "acquire", dict(call="c", token="t", names=[5]), "'names'[0]"),
    ("lock", "acquire", dict(call="c", token="t", names=["a"], timeout="x"), "'timeout'"),
    ("lock", "release", dict(token="t", names=[["a"]]), "'names'[0]"),
    ("lock", "locked", dict(names=[{}]), "'names'[0]"),
    ("semaphore", "acquire", dict(call="c", token=5), "'token'"),
    ("semaphore", "release", dict(token=None), "'token'"),
    ("event", "wait", dict(call=5), "'call'"),
    ("event", "wait", dict(call="c", timeout="x"), "'timeout'"),
    ("variable", "set", dict(value=5, keys=[]), "'value'"),
    ("variable", "set", dict(value=BLOB, keys=[5]), "'keys'[0]"),
    ("variable", "get", dict(call="c", client=5), "'client'"),
    ("pubsub", "publish", dict(msgs="x"), "'msgs'"),
    ("pubsub", "publish", dict(msgs=[BLOB, 5]), "'msgs'[1]"),
    ("pubsub", "subscribe", dict(inbox="x"), "'inbox'"),
    ("pubsub", "unsubscribe", dict(inbox=5), "'inbox'"),
    ("pubsub", "subscribe", dict(inbox=ActorRef("tcp://10.9.9.9:1", "inbox-1")), "came from"),
    ("condition", "notify", dict(token="t", n="x"), "'n'"),
    ("condition", "acquire", dict(call="c", token=5), "'token'"),
    # a user actor
    ("user_actor", "call", dict(method=5), "'method'"),
    ("user_actor", "call", dict(method="increment", args="x"), "'args'"),
    ("user_actor", "call", dict(method="increment", args=BLOB), "'args'"),  # not (args, kwargs)
    ("user_actor", "getattr", dict(name=5), "'name'"),
    # the task stream and the scheduler's limits
    ("scheduler", "get_task_stream", dict(start="yesterday"), "'start'"),
    ("scheduler", "get_task_stream", dict(stop=float("nan")), "'stop'"),
    ("scheduler", "get_task_stream", dict(count=-1), "'count'"),
    ("scheduler", "update_graph", dict(client="c", tasks=[], wanted=[], more="yes"), "'more'"),
]


def _case_id(case):
    target, op, fields, _ = case
    return f"{target}.{op}({', '.join(f'{k}={v!r}'[:30] for k, v in fields.items())})"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_malformed_ask_is_refused_and_changes_nothing(rig, case):
    name, op, fields, match = case
    # "W" stands for a real worker's address (the sender is not that worker, though).
    fields = {k: rig.workers[0] if v == "W" else _with_worker(v, rig.workers[0])
              for k, v in fields.items()}
    rig.run(rig.refused, target(rig, name), op, fields, match)


def _with_worker(value, address):
    if isinstance(value, dict):
        return {k: _with_worker(v, address) for k, v in value.items()}
    if isinstance(value, list):
        return [address if v == "W" else _with_worker(v, address) for v in value]
    return value


def test_unknown_op_is_refused(rig):
    async def main():
        for ref in (rig.scheduler, rig.worker, rig.registry, rig.prims["queue"], rig.user_actor):
            with pytest.raises(UnknownOpError, match="no op 'frobnicate'"):
                await rig.client.host.ask(ref, "frobnicate", x=1)
        await rig.still_serving()
    rig.run(main)


# --- tells: logged and dropped -------------------------------------------------------------

@pytest.mark.parametrize("name, op, fields", [
    ("scheduler", "update_graph", dict(client="c", tasks=[_task(key="t-told"), ["t2"]], wanted=["t-told"])),
    ("scheduler", "release_keys", dict(client="c", keys=[["earlier"]])),
    ("scheduler", "tasks_done", dict(worker="W", finished=[["earlier", "x", "int"]], erred=[])),
    ("worker", "free_keys", dict(keys=["earlier"])),
    ("queue", "put_nowait", dict(value="raw")),
    ("user_actor", "call", dict(method="increment", args="x")),
])
def test_malformed_tell_is_logged_and_dropped(rig, caplog, name, op, fields):
    fields = {k: rig.workers[0] if v == "W" else v for k, v in fields.items()}
    ref = target(rig, name)

    async def main():
        await rig.settle()
        before = rig.snapshot()
        rig.client.host.tell(ref, op, **fields)
        await rig.client.host.ask(ref, "identity" if name in ("scheduler", "worker") else
                                  "info" if name == "user_actor" else "qsize")  # after the tell
        await rig.settle()
        assert rig.snapshot() == before
        await rig.still_serving()
    with caplog.at_level(logging.WARNING, logger="actorrt"):
        rig.run(main)
    dropped = [r.getMessage() for r in caplog.records if "bad message" in r.getMessage()]
    assert len(dropped) == 1, caplog.text
    assert op in dropped[0] and rig.client.host.address in dropped[0]


# --- tricky states ----------------------------------------------------------------------------

def test_update_data_of_a_key_being_computed_leaves_the_computation_alone(rig):
    """A scatter under the key of a running task must not corrupt the task's state."""
    async def main():
        GATE.clear()
        f = rig.client.submit(wait_for_gate, 7, key="computing", workers=[rig.workers[0]])
        state = rig.cluster.scheduler.state
        await poll_for(lambda: "computing" in state.tasks and state.tasks["computing"].state == "processing")
        rig.client.host.tell(rig.scheduler, "update_data", client="someone", who_has={
            "computing": [rig.workers[1]]}, nbytes={"computing": 8}, types={"computing": "int"})
        await rig.client.host.ask(rig.scheduler, "identity")
        state.validate()
        assert state.tasks["computing"].state == "processing"
        GATE.set()
        assert await f == 7
        f.release()
        await rig.still_serving()
    rig.run(main)


def test_refused_graph_fails_the_senders_futures_instead_of_hanging(rig):
    """update_graph is a tell: when it is refused, its sender's Futures must learn why."""
    async def main():
        client = rig.client
        f = Future("refused-graph", client)
        client.host.tell(rig.scheduler, "update_graph", client=client.id,
                         tasks=[_task(key="refused-graph", priority="high")], wanted=["refused-graph"])
        with pytest.raises(BadMessageError, match="priority"):
            await asyncio.wait_for(f, 5)
        f.release()
        await rig.settle()
        assert "refused-graph" not in rig.cluster.scheduler.state.tasks
        await rig.still_serving()
    rig.run(main)


def test_tasks_done_for_a_running_task_is_all_or_nothing(rig):
    """A worker's report with one bad item is refused whole: no item of it is applied,
    and the worker's later, correct report still finishes the task."""
    async def main():
        GATE.clear()
        f = rig.client.submit(wait_for_gate, 8, key="reported", workers=[rig.workers[0]])
        state = rig.cluster.scheduler.state
        await poll_for(lambda: "reported" in state.tasks and state.tasks["reported"].state == "processing")
        worker_host = next(h for h, _ in rig.cluster.workers.values() if h.address == rig.workers[0])
        # Sent from the worker's own host, so only the shape is wrong.
        worker_host.tell(rig.scheduler, "tasks_done", worker=rig.workers[0],
                         finished=[["reported", 8, "int"], ["reported", "many", "int"]], erred=[])
        await worker_host.ask(rig.scheduler, "identity")
        state.validate()
        assert state.tasks["reported"].state == "processing"
        GATE.set()
        assert await f == 8
        f.release()
        await rig.still_serving()
    rig.run(main)


def test_a_peer_cannot_let_go_of_another_clients_keys(rig):
    """Releasing, cancelling or unregistering for a client is that client's own act:
    from another host it would free data the client still holds."""
    async def main():
        client = rig.client
        worker_host = next(h for h, _ in rig.cluster.workers.values() if h.address == rig.workers[0])
        await rig.settle()
        before = rig.snapshot()
        for op, fields in [("release_keys", dict(keys=["earlier"])), ("cancel", dict(keys=["earlier"])),
                           ("unregister_client", {})]:
            with pytest.raises(BadMessageError, match=f"only client {client.id!r}"):
                await worker_host.ask(rig.scheduler, op, client=client.id, **fields)
        await rig.settle()
        assert rig.snapshot() == before
        await rig.still_serving()
    rig.run(main)


def test_report_to_a_client_from_a_peer_other_than_its_scheduler_is_refused(rig):
    async def main():
        client = rig.client
        worker_host = next(h for h, _ in rig.cluster.workers.values() if h.address == rig.workers[0])
        f = client.submit(inc, 100, pure=False)
        me = ActorRef(client.host.address, client.id)
        # A worker host cannot reach the client unless the client connected to it.
        await client.host.ask(rig.worker, "identity")
        with pytest.raises(BadMessageError, match="came from"):
            await worker_host.ask(me, "report", msgs=[[f.key, "memory", {"workers": [], "type": "int"}]])
        assert await f == 101
        f.release()
    rig.run(main)


@pytest.mark.parametrize("msgs, match", [
    ("x", "'msgs'"),
    ([["k"]], "'msgs'[0]"),
    ([[5, "memory", {}]], "'msgs'[0]"),
    ([["k", "memory", "notadict"]], "'msgs'[0]"),
    ([["k", "memory", {"workers": 5}]], "'msgs'[0]"),
    ([["k", "exploded", {}]], "'msgs'[0]"),
    ([["k", "memory", {"workers": ["W"], "type": "int"}], ["k"]], "'msgs'[1]"),
])
def test_malformed_report_is_refused_whole(rig, msgs, match):
    """Reports come from the scheduler only; even from there, a bad one changes nothing."""
    async def main():
        client = rig.client
        gate = rig.client.submit(wait_for_gate, 1, pure=False)  # a pending key to report on
        GATE.clear()
        key = gate.key
        bad = [[key if m[0] == "k" else m[0], *m[1:]] if isinstance(m, list) and m else m
               for m in msgs] if isinstance(msgs, list) else msgs
        me = ActorRef(client.host.address, client.id)
        with pytest.raises(BadMessageError, match=match.replace("[", r"\[").replace("]", r"\]")):
            await rig.cluster.scheduler_host.ask(me, "report", msgs=bad)
        assert not gate.done()
        GATE.set()
        assert await gate == 1
        gate.release()
    rig.run(main)


@pytest.mark.parametrize("acked, match", [(-1, "'acked' must be at least 0"), ("3", "acked")])
def test_a_report_with_a_bad_acknowledgement_count_is_refused(rig, acked, match):
    """``acked`` (tasks the scheduler took) cannot shrink or garble the client's window."""
    async def main():
        client = rig.client
        GATE.clear()
        gate = rig.client.submit(wait_for_gate, 1, pure=False)
        await poll_for(lambda: gate.key in rig.cluster.scheduler.state.tasks)
        me = ActorRef(client.host.address, client.id)
        before = client.table.unacknowledged
        with pytest.raises(BadMessageError, match=match):
            await rig.cluster.scheduler_host.ask(
                me, "report", msgs=[[gate.key, "memory", {"workers": [], "type": "int"}]], acked=acked)
        assert not gate.done() and client.table.unacknowledged == before
        GATE.set()
        assert await gate == 1
        gate.release()
    rig.run(main)


# --- junk of every shape, generated -------------------------------------------------------------

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12) | st.just(BLOB),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
    max_leaves=8)


def _baselines(rig):
    """Per op: a harmless, well-formed message, the places junk may go (a field, or an
    item inside one), and the errors a well-typed but meaningless message may get.
    Blocking asks are built so that they never wait (a fresh lock, a set event)."""
    c, me = "junk-client", rig.client.host.address
    task = ["tasks", 0]
    return {
        ("scheduler", "update_graph"): (
            lambda: dict(client=c, tasks=[_task(key=fresh("junk"))], wanted=[]),
            [task + [i] for i in range(9)], ()),
        ("scheduler", "release_keys"): (lambda: dict(client=c, keys=["nope"]), [["keys", 0]], ()),
        ("scheduler", "want_keys"): (lambda: dict(client=c, keys=["nope"]), [["keys", 0]], ()),
        ("scheduler", "cancel"): (lambda: dict(client=c, keys=["nope"], force=False), [], ()),
        ("scheduler", "retry"): (lambda: dict(keys=["nope"]), [], ()),
        ("scheduler", "update_data"): (lambda: dict(client=c, who_has={}, nbytes={}, types={}), [], ()),
        ("scheduler", "who_has"): (lambda: dict(keys=["earlier"]), [], ()),
        ("scheduler", "key_states"): (lambda: dict(keys=["earlier"]), [], ()),
        ("scheduler", "tasks_done"): (
            lambda: dict(worker=me, finished=[["nope", 1, "int", 0.1]], erred=[["nope", BLOB, "tb"]]),
            [["finished", 0, i] for i in range(4)] + [["erred", 0, i] for i in range(3)], ()),
        ("scheduler", "long_running"): (lambda: dict(worker=me, keys=[]), [], ()),
        ("scheduler", "worker_memory"): (lambda: dict(worker=me, memory=[0, 0, 0, None, None, False, None, None, None]),
                                         [["memory", i] for i in range(9)], ()),
        ("scheduler", "missing_data"): (
            lambda: dict(worker=me, key="nope", missing={"earlier": ["nowhere"]}),
            [["missing", "earlier"]], ()),
        ("scheduler", "register_worker"): (lambda: dict(address="tcp://10.9.9.9:1", nthreads=1), [], ()),
        ("scheduler", "register_client"): (
            lambda: dict(client=fresh("junk-client"), ref=ActorRef(me, "nobody")), [], ()),
        ("scheduler", "actor_status"): (lambda: dict(key="nope", stale=""), [], ()),
        ("scheduler", "get_actor"): (lambda: dict(client=c, key="nope"), [], ()),
        ("worker", "get_data"): (lambda: dict(keys=["nope"]), [["keys", 0]], ()),
        ("worker", "put_data"): (lambda: dict(data={}), [], ()),
        ("worker", "free_keys"): (lambda: dict(keys=["nope"]), [], ()),
        ("worker", "compute"): (lambda: dict(tasks=[_worker_task(key=fresh())]),
                                [["tasks", 0, i] for i in range(5)], ()),
        ("registry", "get_or_create"): (
            lambda: dict(kind="queue", name="bad-msgs", options={}), [["options", "maxsize"]],
            (ValueError,)),  # an unknown kind; options that differ from the actor's
        ("registry", "names"): (lambda: dict(kind=None), [], ()),
        ("queue", "put"): (lambda: dict(call=fresh(), value=BLOB, keys=["nope"], timeout=0),
                           [["keys", 0]], ()),
        ("queue", "get"): (lambda: dict(call=fresh(), client=c, timeout=0, count=0), [], ()),
        ("queue", "unget"): (lambda: dict(items=[[BLOB, []]]), [["items", 0, 0], ["items", 0, 1]], ()),
        ("lock", "acquire"): (
            lambda: dict(call=fresh(), token="junk", names=[fresh("lock")], timeout=0), [], ()),
        ("lock", "locked"): (lambda: dict(names=["nope"]), [["names", 0]], ()),
        ("event", "wait"): (lambda: dict(call=fresh(), timeout=0), [], ()),
        ("variable", "set"): (lambda: dict(value=BLOB, keys=[]), [], ()),
        ("pubsub", "publish"): (lambda: dict(msgs=[BLOB]), [["msgs", 0]], ()),
        ("user_actor", "call"): (lambda: dict(method="increment", args=None), [],
                                 (AttributeError,)),  # no such method
        ("user_actor", "getattr"): (lambda: dict(name="n"), [], (AttributeError,)),
    }


def _put(fields, path, value):
    *inner, last = path
    container = fields
    for step in inner:
        container = container[step]
    container[last] = value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_junk_fields_never_corrupt_or_stop_the_cluster(rig, data):
    baselines = _baselines(rig)
    name, op = data.draw(st.sampled_from(sorted(baselines)), label="op")
    make, inner_paths, allowed = baselines[(name, op)]
    fields = make()
    path = data.draw(st.sampled_from([[f] for f in sorted(fields)] + inner_paths), label="where")
    _put(fields, path, data.draw(JUNK, label="junk"))

    async def main():
        await rig.settle()
        before = rig.snapshot()
        try:
            reply = await asyncio.wait_for(rig.client.host.ask(target(rig, name), op, **fields), 5)
        except BadMessageError as e:
            assert op in str(e)
            await rig.settle()
            assert rig.snapshot() == before
        except allowed:
            pass
        else:
            if op == "put_data":  # junk that happened to be good data: not the scheduler's
                for key in reply:
                    rig.holder_of(rig.workers[0]).data.pop(key, None)
        await rig.settle()
        await rig.still_serving()
    rig.run(main)


# --- over TCP, against worker processes -------------------------------------------------------

def test_hostile_peer_with_the_secret_over_tcp(pclient):
    """A second host that knows the cluster's secret sends junk to the scheduler, a
    worker and the registry over TCP; the cluster shrugs it off and loses nothing."""
    earlier = pclient.submit(inc, 41)
    assert earlier.result() == 42
    cluster = pclient.cluster
    scheduler = ActorRef(cluster.scheduler_address, "scheduler")
    worker = ActorRef(earlier._state.workers[0], "worker")
    registry = ActorRef(cluster.scheduler_address, "registry")
    asks = [
        (scheduler, "update_graph", dict(client="evil", tasks=[_task(key="evil", priority="x")], wanted=[])),
        (scheduler, "release_keys", dict(client=pclient.id, keys=[earlier.key, 5])),
        (scheduler, "release_keys", dict(client=pclient.id, keys=[earlier.key])),  # not its client
        (scheduler, "unregister_client", dict(client=pclient.id)),
        (scheduler, "tasks_done", dict(worker=worker.address, finished=[[earlier.key, 8, "int"]], erred=[])),
        (scheduler, "register_worker", dict(address="tcp://10.9.9.9:1", nthreads=1)),
        (scheduler, "register_client", dict(client=pclient.id, ref=ActorRef("tcp://10.9.9.9:1", "x"))),
        (scheduler, "missing_data", dict(worker=worker.address, key="k", missing={earlier.key: [worker.address]})),
        (scheduler, "update_data", dict(client="evil", who_has={earlier.key: [worker.address]},
                                        nbytes={earlier.key: "x"}, types={})),
        (worker, "free_keys", dict(keys=[earlier.key])),
        (worker, "compute", dict(tasks=[_worker_task(key=earlier.key)])),
        (worker, "put_data", dict(data={earlier.key: BLOB, "x": 5})),
        (worker, "get_data", dict(keys=[[1]])),
        (worker, "close", dict()),
        (registry, "get_or_create", dict(kind="queue", name="q", options={"maxsize": "big"})),
    ]
    tells = [(scheduler, "tasks_done", dict(worker=worker.address, finished=[["x"]], erred=[])),
             (worker, "free_keys", dict(keys=[earlier.key]))]

    async def attack():
        async with Host(None, secret=cluster.secret, name="hostile") as host:
            for ref, op, fields in tells:
                host.tell(ref, op, **fields)
            errors = []
            for ref, op, fields in asks:
                with pytest.raises(BadMessageError) as info:
                    await asyncio.wait_for(host.ask(ref, op, **fields), 5)
                errors.append(str(info.value))
            # The connections still work: a well-formed ask is answered.
            assert (await host.ask(scheduler, "who_has", keys=[earlier.key]))[earlier.key] == [worker.address]
            return errors
    errors = asyncio.run(attack())
    assert all(op in e for (_, op, _), e in zip(asks, errors)), errors

    async def validate():
        cluster.scheduler.state.validate()
    pclient.sync(validate)
    assert earlier.result() == 42
    assert pclient.submit(inc, 1, pure=False).result() == 2
    assert pclient.gather(pclient.map(inc, range(20))) == list(range(1, 21))
    assert len(pclient.scheduler_info()["workers"]) == 2


def test_sender_checks_accept_a_scheduler_dialled_under_another_name():
    """The scheduler names itself by its listening address; a worker or client may dial
    it by another (``localhost`` for 127.0.0.1, a DNS name for 0.0.0.0). What comes on
    the connection they opened to it is still the scheduler's."""
    from actorrt.deploy.local import start_scheduler
    from actorrt.worker import start_worker

    async def main():
        secret = b"s" * 32
        host, scheduler = await start_scheduler("tcp://127.0.0.1:0", secret=secret)
        alias = "tcp://localhost:" + host.address.rsplit(":", 1)[1]
        worker_host, worker = await start_worker(alias, address="tcp://127.0.0.1:0", secret=secret)
        try:
            async with Client(alias, asynchronous=True, secret=secret, set_as_default=False) as c:
                assert await c.submit(inc, 1) == 2  # compute reached the worker, report the client
                futures = c.map(inc, range(5))
                assert await c.gather(futures) == [1, 2, 3, 4, 5]
                del futures
                [x] = await c.scatter([10])
                assert await c.submit(inc, x) == 11
            await poll_for(lambda: not worker.data)  # free_keys reached it too
        finally:
            await worker_host.close()
            await host.close()
    asyncio.run(asyncio.wait_for(main(), 20))


# --- the whole cluster, fresh, for messages that would disturb the shared one -------------------

@gen_cluster(n_workers=2)
async def test_worker_only_ops_from_the_worker_itself_still_work(c, cluster):
    """The sender checks refuse impostors, not the real thing: a worker that leaves
    unregisters itself, and the scheduler forgets it."""
    f = c.submit(inc, 1)
    assert await f == 2
    name = sorted(cluster.workers)[-1]
    await cluster._stop_worker(name)
    await poll_for(lambda: len(cluster.scheduler.worker_info) == 1)
    assert await c.submit(inc, 5, pure=False) == 6
    assert await f == 2


@gen_cluster(n_workers=1)
async def test_client_id_cannot_be_taken_over(c, cluster):
    scheduler = ActorRef(cluster.scheduler_address, "scheduler")
    with pytest.raises(BadMessageError, match="already registered"):
        await c.host.ask(scheduler, "register_client", client=c.id, ref=ActorRef(c.host.address, "other"))
    # The real client still gets its reports.
    assert await c.submit(inc, 2) == 3
