"""Worker death seen from the cluster object and from actors pinned to the dead worker.

* ``LocalCluster.workers`` and ``scale(n)`` count live workers only: a SIGKILLed worker
  process is replaced by ``scale``, and never makes ``scale`` stop a live worker.
* An actor pinned (``workers=`` without ``allow_other_workers``) to workers that are all
  gone cannot restart: its calls raise ``ActorDeadError`` instead of waiting for ever.
"""
import os
import signal
import subprocess
import time

import pytest

from actorrt import ActorDeadError, Client, LocalCluster
from actorrt.scheduler.state import Compute, Report, SchedulerState, TaskSpec
from actorrt.testing import wait_until


def inc(x):
    return x + 1


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()


def _process_cluster(n):
    # Without nannies: these workers stay dead once killed (with one, a killed worker
    # comes back under its name: tests/test_nanny.py).
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                        nanny=False)


def _pids(client):
    return {addr: info["pid"] for addr, info in client.scheduler_info()["workers"].items()}


def _kill(cluster, address):
    """SIGKILL the worker process at ``address``; return once the scheduler noticed."""
    os.kill(cluster.scheduler.worker_info[address]["pid"], signal.SIGKILL)
    wait_until(lambda: address not in cluster.scheduler.worker_info, timeout=10)


def _live_processes(cluster):
    procs = list(cluster.workers.values())
    assert all(isinstance(p, subprocess.Popen) for p in procs)
    return [p for p in procs if p.poll() is None]


# --- the cluster object counts the living -----------------------------------------------

def test_scale_replaces_a_killed_worker_process():
    with _process_cluster(2) as cluster, Client(cluster) as client:
        pids = _pids(client)
        victim, survivor = sorted(pids)
        _kill(cluster, victim)
        assert len(cluster.workers) == 1  # the dead one is not counted

        cluster.scale(3)
        client.wait_for_workers(3, timeout=20)
        after = _pids(client)
        assert len(after) == 3
        assert after[survivor] == pids[survivor]  # the live worker was not touched
        assert pids[victim] not in after.values()
        assert len(cluster.workers) == 3 and len(_live_processes(cluster)) == 3
        assert client.gather(client.map(inc, range(10))) == list(range(1, 11))


def test_scale_down_after_a_kill_keeps_a_live_worker():
    with _process_cluster(3) as cluster, Client(cluster) as client:
        pids = _pids(client)
        # Kill the lowest-numbered worker: scale(1) used to stop the two highest-numbered
        # entries, both alive, and leave only the dead one.
        by_name = {info["name"]: addr for addr, info in cluster.scheduler.worker_info.items()}
        _kill(cluster, by_name["0"])

        cluster.scale(1)
        wait_until(lambda: len(cluster.scheduler.worker_info) == 1, timeout=10)
        (left,) = _pids(client).items()
        assert left[0] in (by_name["1"], by_name["2"]) and left[1] == pids[left[0]]
        assert len(cluster.workers) == 1 and len(_live_processes(cluster)) == 1
        assert client.submit(inc, 1).result(timeout=20) == 2


# --- a pinned actor whose workers are gone: the scheduler's decision --------------------

def _state(nworkers):
    s = SchedulerState(validate=True)
    s.stimulus_add_client("c")
    for i in range(nworkers):
        s.stimulus_add_worker(f"w{i}", 1, "add")
    return s


def _actor_spec(key, workers, max_restarts):
    return TaskSpec(key, f"spec-{key}", (), name="Counter", workers=workers,
                    actor={"max_concurrency": 1, "max_restarts": max_restarts})


def _computes(instrs):
    return [(i.key, i.worker) for i in instrs if isinstance(i, Compute)]


def _build(s, spec, worker):
    """``worker`` reports actor ``spec`` built."""
    s.stimulus_task_finished(worker, spec.key, 256, "Actor", "built")
    assert s.tasks[spec.key].state == "memory"


def test_state_pinned_restartable_actor_dies_with_its_only_worker():
    s = _state(2)
    spec = _actor_spec("a", ("w0",), max_restarts=-1)
    assert _computes(s.stimulus_update_graph("c", [spec], ["a"], "create")) == [("a", "w0")]
    _build(s, spec, "w0")
    out = s.stimulus_remove_worker("w0", "died")
    assert _computes(out) == []
    assert [(i.key, i.status) for i in out if isinstance(i, Report)] == [("a", "erred")]
    ts = s.tasks["a"]
    assert ts.state == "erred" and ts not in s.placement.unrunnable
    assert isinstance(ts.exception, ActorDeadError)
    assert "pinned" in str(ts.exception) and "w0" in str(ts.exception)


def test_state_pinned_actor_restarts_on_another_allowed_worker_then_dies_rebuilding():
    s = _state(3)
    spec = _actor_spec("a", ("w0", "w1"), max_restarts=5)
    s.stimulus_update_graph("c", [spec], ["a"], "create")
    _build(s, spec, "w0")
    assert _computes(s.stimulus_remove_worker("w0", "died")) == [("a", "w1")]  # allowed: moves
    # Its last allowed worker dies while rebuilding it: nowhere left (w2 is not allowed).
    out = s.stimulus_remove_worker("w1", "died")
    assert _computes(out) == []
    ts = s.tasks["a"]
    assert ts.state == "erred" and ts not in s.placement.unrunnable
    assert isinstance(ts.exception, ActorDeadError) and "pinned" in str(ts.exception)


def test_state_actor_allowed_elsewhere_still_restarts():
    s = _state(2)
    spec = TaskSpec("a", "spec-a", (), name="Counter", workers=("w0",), allow_other_workers=True,
                    actor={"max_concurrency": 1, "max_restarts": 1})
    s.stimulus_update_graph("c", [spec], ["a"], "create")
    _build(s, spec, "w0")
    assert _computes(s.stimulus_remove_worker("w0", "died")) == [("a", "w1")]


# --- a pinned actor whose workers are gone: its calls ------------------------------------

def test_calls_on_pinned_actor_raise_when_its_worker_is_killed():
    with _process_cluster(2) as cluster, Client(cluster) as client:
        # One actor allowed on both workers; the worker it lands on is the victim.
        movable = client.submit(Counter, actor=True, workers=sorted(cluster.scheduler.worker_info),
                                max_restarts=1)
        other = movable.result(timeout=20)
        victim = other._ref.address
        (survivor,) = set(cluster.scheduler.worker_info) - {victim}
        pinned = client.submit(Counter, actor=True, workers=[victim], max_restarts=-1)
        counter = pinned.result(timeout=20)
        assert counter.increment().result(timeout=10) == 1
        assert other.increment().result(timeout=10) == 1
        victim_pid = cluster.scheduler.worker_info[victim]["pid"]
        assert counter.pid().result(timeout=10) == victim_pid

        os.kill(victim_pid, signal.SIGKILL)
        # A call made at once may be in flight when the worker dies (it may have run).
        with pytest.raises(ActorDeadError, match="Counter"):
            counter.increment().result(timeout=15)
        wait_until(lambda: victim not in cluster.scheduler.worker_info, timeout=10)
        # Made after the death: it cannot restart where it is allowed, so it is dead.
        start = time.monotonic()
        with pytest.raises(ActorDeadError, match="pinned") as info:
            counter.increment().result(timeout=15)
        assert "Counter" in str(info.value) and victim in str(info.value)
        assert time.monotonic() - start < 5

        # Known dead now: the actor's Future and any new call fail at once.
        with pytest.raises(ActorDeadError, match="pinned"):
            pinned.result(timeout=2)
        with pytest.raises(ActorDeadError):
            counter.increment().result(timeout=2)

        # An actor allowed on a surviving worker restarts there, from its constructor.
        assert other.increment().result(timeout=15) == 1
        assert other.pid().result(timeout=10) == cluster.scheduler.worker_info[survivor]["pid"]
        assert client.submit(inc, 1).result(timeout=20) == 2
