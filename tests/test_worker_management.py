"""replicate, rebalance and retire_workers (dask's behaviour as the spec): the plans
on a bare state machine, then the moves on in-process clusters and worker processes."""
import pytest

from actorrt import Client, LocalCluster
from actorrt.protocol import TaskSpec
from actorrt.scheduler.replicas import (plan_rebalance, plan_replicate, plan_retire, replicas_added,
                                        replicas_dropped, unique_keys)
from actorrt.scheduler.state import SchedulerState
from actorrt.testing import gen_cluster, poll_for


def blob(n):
    return b"x" * n


# --- pure planning ----------------------------------------------------------------
def _state(n_workers=3, held=()):
    """A state with workers w0..w{n-1} and keys in memory: held = [(key, nbytes, [worker index])]."""
    s = SchedulerState(validate=True)
    for i in range(n_workers):
        s.stimulus_add_worker(f"w{i}", 1, f"add-{i}", name=str(i))
    for key, nbytes, where in held:
        s.stimulus_update_data("c", {key: [f"w{i}" for i in where]}, {key: nbytes}, {key: "bytes"}, f"d-{key}")
    return s


def test_replicate_plans_copies_to_the_least_loaded_workers():
    s = _state(3, [("a", 10, [0]), ("b", 100, [1])])
    moves, excess = plan_replicate(s, ["a"], 2, None)
    assert excess == {}
    assert [(m.key, m.sender) for m in moves] == [("a", "w0")]
    assert moves[0].recipient == "w2"  # (w1 holds 100 bytes already)
    moves, _ = plan_replicate(s, ["a", "b"], None, None)
    assert sorted((m.key, m.recipient) for m in moves) == [("a", "w1"), ("a", "w2"), ("b", "w0"), ("b", "w2")]


def test_replicate_to_fewer_drops_the_extra_copies_but_never_the_last():
    s = _state(3, [("a", 10, [0, 1, 2])])
    moves, excess = plan_replicate(s, ["a"], 1, None)
    assert moves == [] and sum(len(v) for v in excess.values()) == 2
    # Only within ``workers``: a copy outside them keeps the value alive.
    moves, excess = plan_replicate(s, ["a"], 1, ["w0"])
    assert moves == [] and excess == {}


def test_rebalance_evens_out_bytes_and_stops_within_tolerance():
    s = _state(2, [(f"k{i}", 100, [0]) for i in range(10)])
    moves = plan_rebalance(s, None, None)
    assert len(moves) == 5 and {m.recipient for m in moves} == {"w1"}
    assert plan_rebalance(_state(2, [("a", 100, [0]), ("b", 100, [1])]), None, None) == []
    # A single value larger than half the gap cannot narrow it: nothing moves.
    assert plan_rebalance(_state(2, [("big", 1000, [0])]), None, None) == []
    # Only the keys given move.
    assert {m.key for m in plan_rebalance(s, ["k1", "k2"], None)} <= {"k1", "k2"}


def test_retire_plans_only_values_no_other_worker_holds():
    s = _state(3, [("only0", 10, [0]), ("shared", 10, [0, 1]), ("on1", 10, [1])])
    moves, stuck = plan_retire(s, {"w0"})
    assert [(m.key, m.sender) for m in moves] == [("only0", "w0")] and stuck == set()
    assert moves[0].recipient == "w2"  # the least loaded
    assert unique_keys(s, {"w0"}) == {"w0": ["only0"]}
    moves, stuck = plan_retire(_state(1, [("a", 1, [0])]), {"w0"})
    assert moves == [] and stuck == {"w0"}


def test_replica_bookkeeping_keeps_the_invariants():
    s = _state(2, [("a", 10, [0])])
    assert replicas_added(s, "w1", ["a"], "t") == []
    assert {ws.address for ws in s.tasks["a"].who_has} == {"w0", "w1"}
    [free] = replicas_dropped(s, "w0", ["a"], "t")
    assert free.worker == "w0" and free.keys == ["a"]
    assert replicas_dropped(s, "w1", ["a"], "t") == []  # the last copy stays
    # A copy of a key released meanwhile is freed on its new holder.
    [free] = replicas_added(s, "w0", ["gone"], "t")
    assert free.keys == ["gone"]
    s.validate()


def test_reschedule_places_a_running_task_again_without_counting_a_failure():
    s = SchedulerState(validate=True)
    s.stimulus_add_worker("w0", 1, "a0")
    s.stimulus_add_client("c")
    spec = TaskSpec("t", [None, None], [], "t", 0, 0, None, False, False, None)
    out = s.stimulus_update_graph("c", [spec], ["t"], "g")
    assert s.tasks["t"].state == "processing"
    run = s.tasks["t"].run_id
    s.stimulus_add_worker("w1", 1, "a1")
    out = s.stimulus_reschedule("w0", "t", "r")
    ts = s.tasks["t"]
    assert ts.state == "processing" and ts.run_id != run and ts.suspicious == 0 and ts.retries == 0
    assert any(type(i).__name__ == "Free" and i.worker == "w0" for i in out)
    other = "w1" if ts.processing_on.address == "w0" else "w0"
    assert s.stimulus_reschedule(other, "t", "again") == []  # not running there: a stale word


# --- in-process clusters ---------------------------------------------------------------
@gen_cluster(n_workers=3)
async def test_replicate_copies_and_the_scheduler_knows(client, cluster):
    [x] = await client.scatter([blob(1000)], workers=[cluster.worker_addresses()[0]])
    await client.replicate([x], n=2)
    assert len((await client.who_has([x]))[x.key]) == 2
    await client.replicate([x])
    holders = (await client.who_has([x]))[x.key]
    assert sorted(holders) == cluster.worker_addresses()
    data = await client.run(lambda dask_worker, key=x.key: key in dask_worker.data)
    assert all(data.values())  # really there, not only in the scheduler's books
    await client.replicate([x], n=1)
    await poll_for(lambda: sum(x.key in w.data for _, w in cluster._workers.values()) == 1)
    assert len((await client.who_has([x]))[x.key]) == 1
    assert await x == blob(1000)


@gen_cluster(n_workers=2)
async def test_replicate_refuses_bad_arguments_and_changes_nothing(client, cluster):
    [x] = await client.scatter([1], workers=[cluster.worker_addresses()[0]])
    with pytest.raises(ValueError, match="replicate's n must be a positive int"):
        client.replicate([x], n=0)
    with pytest.raises(ValueError, match="replicate's n must be a positive int"):
        client.replicate([x], n="2")
    with pytest.raises(TypeError, match="replicate got unexpected keyword arguments"):
        client.replicate([x], bogus=1)
    with pytest.raises(TypeError, match="rebalance got unexpected keyword arguments"):
        client.rebalance(bogus=1)
    with pytest.raises(ValueError, match="no worker"):
        await client.replicate([x], workers=["nowhere"])
    with pytest.raises(TypeError, match="Futures"):
        client.replicate(42)
    assert len((await client.who_has([x]))[x.key]) == 1


@gen_cluster(n_workers=2)
async def test_rebalance_moves_bytes_to_the_emptier_worker(client, cluster):
    a, b = cluster.worker_addresses()
    futures = await client.scatter([blob(10_000 + i) for i in range(8)], workers=[a])
    await client.rebalance(futures)
    has = await client.has_what()
    assert 3 <= len(has[a]) <= 5 and 3 <= len(has[b]) <= 5
    assert all(len(v) == 1 for v in (await client.who_has(futures)).values())  # moved, not copied
    await poll_for(lambda: sum(len(w.data) for _, w in cluster._workers.values()) == 8)
    assert await client.gather(futures) == [blob(10_000 + i) for i in range(8)]


@gen_cluster(n_workers=3)
async def test_retire_workers_keeps_unique_data_and_removes_the_worker(client, cluster):
    a, b, c = cluster.worker_addresses()
    name = (await client.scheduler_info())["workers"][a]["name"]
    [x] = await client.scatter([blob(5000)], workers=[a])
    y = client.submit(len, x, workers=[a])
    assert await y == 5000
    result = await client.retire_workers([a])
    assert list(result) == [a] and result[a]["type"] == "Worker" and result[a]["name"] == name
    assert a not in (await client.scheduler_info())["workers"]
    assert set((await client.who_has([x, y]))[x.key]) <= {b, c}
    assert await x == blob(5000) and await y == 5000
    assert name not in cluster.workers
    # New work still runs, and nothing goes to the retired worker.
    assert await client.submit(len, x) == 5000
    assert await client.retire_workers([a]) == {}  # gone already: nothing to do


@gen_cluster(n_workers=1)
async def test_the_last_worker_is_not_retired_when_its_data_has_nowhere_to_go(client, cluster):
    [x] = await client.scatter([1])
    assert await client.retire_workers(cluster.worker_addresses()) == {}
    assert await x == 1
    assert await client.submit(abs, -1) == 1  # and it takes work again


@gen_cluster(n_workers=3)
async def test_retire_workers_by_name_and_by_count(client, cluster):
    result = await client.retire_workers(names=["1"])
    assert [i["name"] for i in result.values()] == ["1"]
    result = await client.retire_workers(n=1)
    assert len(result) == 1
    assert len((await client.scheduler_info())["workers"]) == 1
    with pytest.raises(TypeError, match="mutually exclusive"):
        client.retire_workers(["x"], names=["y"])
    with pytest.raises(TypeError, match="unexpected"):
        client.retire_workers(bogus=1)


def test_sync_face_and_worker_processes_move_real_data():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        a, b = sorted(client.scheduler_info()["workers"])
        futures = client.scatter([blob(100_000 + i) for i in range(4)], workers=[a])
        client.replicate(futures[:1])
        assert sorted(client.who_has(futures[:1])[futures[0].key]) == [a, b]
        client.rebalance(futures)
        assert len(client.has_what()[b]) >= 2
        keys_on_b = client.run(lambda dask_worker: sorted(dask_worker.data), workers=[b])[b]
        assert set(keys_on_b) == set(client.has_what()[b])
        result = client.retire_workers([a])
        assert list(result) == [a]
        assert list(client.scheduler_info()["workers"]) == [b]
        assert client.gather(futures) == [blob(100_000 + i) for i in range(4)]
        assert len(lc.workers) == 1  # closed for good: its nanny did not start it again
