"""The worker's state machine on its own: stimuli in, instructions out, no I/O.

Every stimulus is followed by ``validate()`` (the ``W`` wrapper), so a test that only
looks at instructions still checks the invariants at each step.
"""
import gc
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorrt import rejoin, secede
from actorrt.testing import gen_cluster, poll_for
from actorrt.worker.state import (Abandon, ComputeTask, Execute, Fetch, InvalidStateError, LongRunning,
                                  ReportErred, ReportFinished, ReportMissing, StopActor, WorkerState)

ME = "tcp://me:1"
P1 = "tcp://p1:1"
P2 = "tcp://p2:1"


class W:
    """A WorkerState whose every stimulus is followed by validate()."""

    def __init__(self, **kwargs):
        kwargs.setdefault("rng", random.Random(0))
        self.s = WorkerState(None, ME, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self.s, name)
        if not name.startswith("stimulus_"):
            return attr

        def call(*args, **kwargs):
            out = attr(*args, **kwargs)
            self.s.validate()
            return out
        return call


def task(key, deps=None, run_id=1, actor=None, sizes=None):
    return ComputeTask(key, f"spec-{key}", deps or {}, key, actor, run_id, sizes or {})


def only(out, kind):
    [instruction] = out
    assert type(instruction) is kind, out
    return instruction


def fetch_one(s, key, holders=(P1,), size=0, consumer="t"):
    """Place ``consumer`` needing ``key`` from a peer; return its Fetch."""
    return only(s.stimulus_compute([task(consumer, {key: list(holders)}, sizes={key: size})]), Fetch)


# --- running ---------------------------------------------------------------------------

def test_compute_with_all_inputs_here_executes_at_once():
    s = W()
    s.stimulus_put_data({"x": 1}, {"x": 28})
    ex = only(s.stimulus_compute([task("y", {"x": [ME]})]), Execute)
    assert ex == Execute("y", ex.job, "spec-y", "y", None, {"x": 1}, 1)  # (run 1: its reports say so)
    assert s.rows["y"].state == "executing" and s.rows["x"].uses == 1
    assert s.stimulus_executed("y", ex.job, 2, 28, "int", 0.5) == [ReportFinished("y", 28, "int", 0.5, 1)]
    assert s.data == {"x": 1, "y": 2}
    assert s.rows["x"].uses == 0 and s.rows["x"].state == "memory"  # scattered: ours, kept


def test_a_failing_run_is_reported_with_its_run_id_and_forgotten():
    s = W()
    ex = only(s.stimulus_compute([task("t", run_id=7)]), Execute)
    error = ZeroDivisionError("boom")
    assert s.stimulus_execute_erred("t", ex.job, error) == [ReportErred("t", error, 7)]
    assert not s.rows and not s.data
    assert [e[1:3] for e in s.story("t")] == [("released", "executing"), ("executing", "erred"),
                                              ("erred", "forgotten")]


def test_a_key_already_here_is_reported_at_once_and_becomes_ours():
    s = W()
    f = fetch_one(s, "x")
    ex = only(s.stimulus_fetched(f.transfer, {"x": 5}, {}), Execute)
    assert s.rows["x"].copy
    # Recomputed elsewhere and lost, then placed here where a copy is: no run.
    assert s.stimulus_compute([task("x", run_id=3)]) == [ReportFinished("x", 0, "int", None, 3)]
    s.stimulus_executed("t", ex.job, 6, 28, "int", 0.1)
    assert s.data == {"x": 5, "t": 6}  # no longer a copy: the last user going does not drop it


# --- fetching and the transfer budget ----------------------------------------------------

def test_missing_inputs_are_fetched_in_batches_within_the_budget():
    s = W(transfer_limit=10)
    deps = {"a": [P1], "b": [P1], "c": [P1], "d": [P2]}
    sizes = {"a": 4, "b": 4, "c": 30, "d": 5}
    first = only(s.stimulus_compute([task("t", deps, sizes=sizes)]), Fetch)
    assert (first.peer, first.keys, first.nbytes) == (P1, ["a", "b"], 8)
    assert s.rows["t"].state == "waiting"
    assert [s.rows[k].state for k in "abcd"] == ["flight", "flight", "fetch", "fetch"]
    assert s.transfer_incoming_bytes == 8
    # The oversized one goes alone, once nothing else is on the wire.
    big = only(s.stimulus_fetched(first.transfer, {"a": 1, "b": 2}, {}), Fetch)
    assert (big.peer, big.keys, big.nbytes) == (P1, ["c"], 30)
    last = only(s.stimulus_fetched(big.transfer, {"c": 3}, {}), Fetch)
    assert (last.peer, last.keys, last.nbytes) == (P2, ["d"], 5)
    ex = only(s.stimulus_fetched(last.transfer, {"d": 4}, {}), Execute)
    assert ex.inputs == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert s.transfer_incoming_bytes == 0 and s.transfer_incoming_bytes_peak == 30
    assert all(s.rows[k].copy for k in "abcd")


def test_two_holders_share_the_budget():
    s = W(transfer_limit=10)
    out = s.stimulus_compute([task("t", {"a": [P1], "b": [P2]}, sizes={"a": 4, "b": 4})])
    assert sorted((f.peer, tuple(f.keys)) for f in out) == [(P1, ("a",)), (P2, ("b",))]
    assert s.transfer_incoming_bytes == 8


def test_an_input_wanted_by_two_tasks_is_fetched_once():
    s = W()
    f = only(s.stimulus_compute([task("t1", {"x": [P1]}), task("t2", {"x": [P1]})]), Fetch)
    out = s.stimulus_fetched(f.transfer, {"x": 1}, {})
    assert sorted(i.key for i in out if type(i) is Execute) == ["t1", "t2"]
    assert s.rows["x"].uses == 2


def test_a_failed_fetch_reports_the_holder_it_asked():
    s = W()
    f = fetch_one(s, "x", holders=(P1, P2))
    assert f.peer in (P1, P2)
    assert s.stimulus_fetch_failed(f.transfer) == [ReportMissing("t", {"x": [f.peer]})]
    assert not s.rows and not s.data and s.transfer_incoming_bytes == 0


def test_a_key_the_peer_did_not_send_is_lost_for_every_task_waiting():
    s = W()
    f = only(s.stimulus_compute([task("t1", {"x": [P1], "y": [P1]}), task("t2", {"x": [P1]})]), Fetch)
    out = s.stimulus_fetched(f.transfer, {"y": 2}, {})
    assert sorted(out, key=lambda r: r.key) == [ReportMissing("t1", {"x": [P1]}), ReportMissing("t2", {"x": [P1]})]
    assert not s.rows  # the tasks went, and their inputs with them


def test_an_input_only_this_worker_was_said_to_hold_is_missing_at_once():
    s = W()
    assert s.stimulus_compute([task("t", {"x": [ME]})]) == [ReportMissing("t", {"x": [ME]})]
    assert not s.rows


def test_a_missing_input_is_reported_once_the_others_have_come():
    s = W()
    f = only(s.stimulus_compute([task("t", {"x": [ME], "y": [P1]})]), Fetch)
    assert s.stimulus_fetched(f.transfer, {"y": 1}, {}) == [ReportMissing("t", {"x": [ME]})]
    assert not s.rows and not s.data


def test_an_unmovable_input_errs_the_task():
    s = W()
    f = only(s.stimulus_compute([task("t", {"x": [P1], "y": [P1]}, run_id=4)]), Fetch)
    error = ValueError("cannot be loaded here")
    # (Erring takes precedence over a lost input: retrying would fail the same way.)
    assert s.stimulus_fetched(f.transfer, {}, {"x": error}) == [ReportErred("t", error, 4)]
    assert not s.rows


def test_an_input_freed_while_its_task_waits_is_reported_missing():
    s = W()
    s.stimulus_put_data({"x": 1}, {"x": 8})
    f = only(s.stimulus_compute([task("t", {"x": [ME], "y": [P1]})]), Fetch)
    assert s.stimulus_free_keys(["x"]) == []
    assert s.rows["x"].state == "released"  # t still takes it
    assert s.stimulus_fetched(f.transfer, {"y": 1}, {}) == [ReportMissing("t", {"x": [ME]})]
    assert not s.rows and not s.data



def test_a_free_of_a_put_keeps_the_value_put_again_since():
    """A client released a scattered key and scattered it again (the same value: the
    same key) before the scheduler's free of the first put arrived here: the second put
    stays. The free of the put the scheduler learns of next drops it."""
    s = W()
    s.stimulus_put_data({"x": 1}, {"x": 8})
    first = s.put_serial("x")
    s.stimulus_put_data({"x": 1}, {"x": 8})
    second = s.put_serial("x")
    assert 0 < first < second
    assert s.stimulus_free_keys(["x"], puts={"x": first}) == []
    assert s.rows["x"].state == "memory" and s.data["x"] == 1
    s.stimulus_free_keys(["x"], puts={"x": second})
    assert not s.rows and not s.data


def test_a_free_drops_the_put_it_names_and_any_value_named_by_none():
    s = W()
    s.stimulus_put_data({"x": 1, "y": 2}, {"x": 8, "y": 8})
    s.stimulus_free_keys(["x"], puts={"x": s.put_serial("x")})
    s.stimulus_free_keys(["y"])  # (a free naming no put: as before puts were numbered)
    assert not s.rows and not s.data


def test_copies_made_on_the_schedulers_word_are_not_numbered_puts():
    s = W()
    s.stimulus_put_data({"x": 1}, {"x": 8}, scattered=False)  # (acquire_replicas)
    assert s.put_serial("x") == 0
    s.stimulus_put_data({"x": 1}, {"x": 8})
    assert s.put_serial("x") > 0
    f = fetch_one(s, "z")
    s.stimulus_fetched(f.transfer, {"z": 3}, {})
    assert s.put_serial("z") == 0  # (fetched for a task: no put)

def test_data_scattered_here_wakes_the_task_waiting_for_it():
    s = W()
    f = fetch_one(s, "x")
    ex = only(s.stimulus_put_data({"x": 1}, {"x": 8}), Execute)
    assert ex.inputs == {"x": 1} and not s.rows["x"].copy
    assert s.stimulus_fetched(f.transfer, {"x": 2}, {}) == []  # the late transfer changes nothing
    assert s.data["x"] == 1


def test_an_input_on_its_way_placed_here_waits_for_the_run_not_the_fetch():
    s = W()
    f = fetch_one(s, "x")
    ex_x = only(s.stimulus_compute([task("x", run_id=2)]), Execute)
    assert not s.awaits("x")
    assert s.stimulus_fetch_failed(f.transfer) == []  # t is not told: x is being computed here
    out = s.stimulus_executed("x", ex_x.job, 5, 28, "int", 0.1)
    assert out[0] == ReportFinished("x", 28, "int", 0.1, 2)
    assert only(out[1:], Execute).inputs == {"x": 5}


def test_a_run_placed_again_keeps_the_tasks_waiting_for_it():
    s = W()
    fetch_one(s, "x", consumer="t")
    ex1 = only(s.stimulus_compute([task("x", run_id=1)]), Execute)  # x is placed here meanwhile
    out = s.stimulus_compute([task("x", run_id=2)])
    assert out[0] == Abandon("x", ex1.job)
    ex2 = only(out[1:], Execute)
    assert s.rows["t"].state == "waiting"
    out = s.stimulus_executed("x", ex2.job, 5, 28, "int", 0.1)
    assert out[0] == ReportFinished("x", 28, "int", 0.1, 2)
    assert only(out[1:], Execute).key == "t"


# --- runs that nobody wants any more -------------------------------------------------------

def test_freed_while_fetching_the_late_outcome_is_ignored():
    s = W()
    f = fetch_one(s, "x", size=100)
    assert s.stimulus_free_keys(["t"]) == []
    assert not s.rows and not s.awaits("x")
    assert s.transfer_incoming_bytes == 100  # still on the wire
    assert s.stimulus_fetched(f.transfer, {"x": 1}, {}) == []
    assert not s.data and s.transfer_incoming_bytes == 0


def test_freed_before_its_transfer_starts_the_transfer_is_skipped():
    s = W(transfer_limit=10)
    first = fetch_one(s, "a", size=10, consumer="t1")
    assert s.stimulus_compute([task("t2", {"b": [P1]}, sizes={"b": 10})]) == []  # queued
    s.stimulus_free_keys(["t2"])
    assert s.stimulus_fetched(first.transfer, {"a": 1}, {})[0].key == "t1"
    assert not s.queued_transfers and s.transfer_incoming_bytes == 0


def test_freed_while_executing_the_late_outcome_is_ignored():
    s = W()
    ex = only(s.stimulus_compute([task("t")]), Execute)
    assert s.stimulus_free_keys(["t"]) == [Abandon("t", ex.job)]
    assert not s.is_running("t", ex.job)
    assert s.stimulus_executed("t", ex.job, 1, 28, "int", 0.1) == []
    assert s.stimulus_execute_erred("t", ex.job, ValueError()) == []
    assert s.stimulus_seceded("t", ex.job) == []
    assert not s.rows and not s.data


def test_a_second_compute_supersedes_the_first_run():
    s = W()
    ex1 = only(s.stimulus_compute([task("t", run_id=1)]), Execute)
    out = s.stimulus_compute([task("t", run_id=2)])
    assert out[0] == Abandon("t", ex1.job)
    ex2 = only(out[1:], Execute)
    assert ex2.job != ex1.job
    assert s.stimulus_executed("t", ex1.job, "old", 28, "str", 0.1) == []
    assert s.stimulus_executed("t", ex2.job, "new", 28, "str", 0.1) == [ReportFinished("t", 28, "str", 0.1, 2)]
    assert s.data == {"t": "new"}


# --- copies ------------------------------------------------------------------------------------

def test_copies_are_dropped_when_the_last_local_user_finishes():
    s = W()
    f = only(s.stimulus_compute([task("t1", {"x": [P1]}), task("t2", {"x": [P1]})]), Fetch)
    ex1, ex2 = s.stimulus_fetched(f.transfer, {"x": 1}, {})
    s.stimulus_executed("t1", ex1.job, 2, 28, "int", 0.1)
    assert "x" in s.data  # t2 still runs with it
    s.stimulus_execute_erred("t2", ex2.job, ValueError())
    assert "x" not in s.data and "x" not in s.rows
    assert s.data == {"t1": 2}


def test_a_copy_is_dropped_when_its_user_is_freed():
    s = W()
    f = fetch_one(s, "x")
    ex = only(s.stimulus_fetched(f.transfer, {"x": 1}, {}), Execute)
    assert s.stimulus_free_keys(["t"]) == [Abandon("t", ex.job)]
    assert not s.data and not s.rows


# --- long-running ------------------------------------------------------------------------------

def test_seceded_tells_the_scheduler_once_per_run():
    s = W()
    ex = only(s.stimulus_compute([task("t")]), Execute)
    assert s.stimulus_seceded("t", ex.job) == [LongRunning("t")]
    assert s.stimulus_seceded("t", ex.job) == []
    assert s.stimulus_seceded("t", ex.job + 1) == []
    # A task that waited on others says nothing about how long work takes.
    assert s.stimulus_executed("t", ex.job, 1, 28, "int", 9.0) == [ReportFinished("t", 28, "int", None, 1)]


def test_a_new_run_may_secede_again():
    s = W()
    ex1 = only(s.stimulus_compute([task("t", run_id=1)]), Execute)
    s.stimulus_seceded("t", ex1.job)
    ex2 = only(s.stimulus_compute([task("t", run_id=2)])[1:], Execute)
    assert s.stimulus_seceded("t", ex2.job) == [LongRunning("t")]


# --- actors --------------------------------------------------------------------------------------

def test_an_actor_is_built_by_a_run_and_stopped_when_freed():
    s = W()
    ex = only(s.stimulus_compute([task("a", actor={"max_concurrency": 2}, run_id=5)]), Execute)
    assert ex.actor == {"max_concurrency": 2}
    assert s.stimulus_executed("a", ex.job, "handle", 256, "Actor", None) == [
        ReportFinished("a", 256, "Actor", None, 5)]
    assert s.stimulus_free_keys(["a"]) == [StopActor("a")]
    assert not s.rows and not s.data


def test_an_actor_placed_where_a_copy_of_its_handle_is_is_built_not_reported():
    s = W()
    f = fetch_one(s, "a")
    ex_t = only(s.stimulus_fetched(f.transfer, {"a": "handle copy"}, {}), Execute)
    ex_a = only(s.stimulus_compute([task("a", actor={})]), Execute)  # no StopActor: a copy hosts nothing
    assert ex_a.actor == {} and "a" not in s.data
    s.stimulus_executed("t", ex_t.job, 1, 28, "int", 0.1)
    assert s.rows["a"].state == "executing"


# --- losing the scheduler ----------------------------------------------------------------------

def test_scheduler_lost_forgets_everything():
    s = W()
    s.stimulus_put_data({"x": 1}, {"x": 8})
    ex_a = only(s.stimulus_compute([task("a", actor={})]), Execute)
    s.stimulus_executed("a", ex_a.job, "handle", 256, "Actor", None)
    ex_t = only(s.stimulus_compute([task("t")]), Execute)
    f = fetch_one(s, "y", size=50, consumer="u")
    out = s.stimulus_scheduler_lost()
    assert sorted(map(repr, out)) == sorted(map(repr, [StopActor("a"), Abandon("t", ex_t.job)]))
    assert not s.rows and not s.data and not s.queued_transfers
    assert s.stimulus_executed("t", ex_t.job, 1, 28, "int", 0.1) == []
    assert s.stimulus_fetched(f.transfer, {"y": 1}, {}) == []
    assert s.transfer_incoming_bytes == 0 and not s.data
    assert all(e[2] == "forgotten" for e in s.story("x", "a", "t", "u", "y")[-5:])


# --- story and validate --------------------------------------------------------------------

def test_story_records_each_transition_with_its_stimulus():
    s = W()
    f = fetch_one(s, "x")
    ex = only(s.stimulus_fetched(f.transfer, {"x": 1}, {}, stimulus_id="got-x"), Execute)
    s.stimulus_executed("t", ex.job, 2, 28, "int", 0.1, stimulus_id="ran-t")
    story = s.story("t", "x")
    compute_sid = story[0][3]
    assert story == [
        ("x", "released", "fetch", compute_sid),
        ("t", "released", "waiting", compute_sid),
        ("x", "fetch", "flight", compute_sid),
        ("x", "flight", "memory", "got-x"),
        ("t", "waiting", "executing", "got-x"),
        ("x", "memory", "forgotten", "ran-t"),
        ("t", "executing", "memory", "ran-t"),
    ]
    assert s.story("nothing") == []


def test_the_story_is_bounded():
    s = W(story_length=5)
    for i in range(10):
        s.stimulus_compute([task(f"t{i}")])
    assert len(s.log) == 5


def test_validate_catches_a_broken_invariant():
    s = WorkerState(None, ME)
    s.stimulus_put_data({"x": 1}, {"x": 8})
    s.stimulus_compute([task("t", {"x": [ME]})])
    s.validate()
    s.rows["x"].uses += 1
    with pytest.raises(InvalidStateError, match="uses"):
        s.validate()
    s.rows["x"].uses -= 1
    s.data["stray"] = 1
    with pytest.raises(InvalidStateError, match="stray"):
        s.validate()
    del s.data["stray"]
    s.rows["t"].job = None
    with pytest.raises(InvalidStateError, match="job"):
        s.validate()


def test_an_illegal_transition_is_refused():
    s = WorkerState(None, ME)
    s.stimulus_put_data({"x": 1}, {"x": 8})
    with pytest.raises(InvalidStateError, match="memory -> executing"):
        s._move(s.rows["x"], "executing", "test")


# --- random sequences ------------------------------------------------------------------------------

KEYS = ["a", "b", "c", "d"]
HOLDERS = st.lists(st.sampled_from([P1, P2, ME]), min_size=1, max_size=2, unique=True)


@st.composite
def computes(draw):
    key = draw(st.sampled_from(KEYS))
    deps = draw(st.dictionaries(st.sampled_from([k for k in KEYS if k != key]), HOLDERS, max_size=3))
    sizes = {dep: draw(st.integers(0, 12)) for dep in deps}
    actor = draw(st.sampled_from([None, None, None, {}]))
    return key, deps, sizes, actor


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_stimuli_keep_the_invariants(data):
    s = WorkerState(None, ME, transfer_limit=10, rng=random.Random(0))
    fetches: dict[int, Fetch] = {}
    jobs: list[tuple[str, int]] = []
    run_ids = itertools.count(1)
    kinds = ["compute", "compute", "fetched", "fetched", "executed", "executed", "erred", "free",
             "put", "seceded", "lost"]
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        kind = data.draw(st.sampled_from(kinds), label="stimulus")
        if kind == "compute":
            key, deps, sizes, actor = data.draw(computes(), label="task")
            out = s.stimulus_compute([ComputeTask(key, None, deps, key, actor, next(run_ids), sizes)])
        elif kind == "fetched" and fetches:
            f = fetches.pop(data.draw(st.sampled_from(sorted(fetches)), label="transfer"))
            sent = data.draw(st.lists(st.sampled_from(f.keys), unique=True), label="sent")
            broken = data.draw(st.lists(st.sampled_from(f.keys), unique=True), label="unmovable")
            values = {k: f"v-{k}" for k in sent if s.awaits(k)}
            out = s.stimulus_fetched(f.transfer, values, {k: ValueError(k) for k in broken if k not in values})
        elif kind in ("executed", "erred", "seceded") and jobs:
            key, job = data.draw(st.sampled_from(jobs), label="job")
            running = s.is_running(key, job)
            if kind == "executed":
                out = s.stimulus_executed(key, job, f"r-{key}", 1, "str", 0.1)
                assert bool(out) == running and (not running or out[0].key == key)
                jobs.remove((key, job))
            elif kind == "erred":
                out = s.stimulus_execute_erred(key, job, ValueError(key))
                assert bool(out) == running
                jobs.remove((key, job))
            else:
                out = s.stimulus_seceded(key, job)
                assert len(out) <= 1 and (not out or running)
        elif kind == "free":
            out = s.stimulus_free_keys(data.draw(st.lists(st.sampled_from(KEYS), unique=True), label="keys"))
        elif kind == "put":
            key = data.draw(st.sampled_from(KEYS), label="key")
            out = s.stimulus_put_data({key: f"p-{key}"}, {key: 1})
        elif kind == "lost" and data.draw(st.booleans(), label="really lost"):
            out = s.stimulus_scheduler_lost()
        else:
            continue
        s.validate()
        for instruction in out:
            if type(instruction) is Fetch:
                assert instruction.transfer not in fetches
                fetches[instruction.transfer] = instruction
            elif type(instruction) is Execute:
                jobs.append((instruction.key, instruction.job))
                assert set(instruction.inputs) == set(s.rows[instruction.key].task.deps)
                assert all(s.data.get(k) is v for k, v in instruction.inputs.items())
        # One request may be bigger than the budget, but only alone (requests of unknown
        # size, 0 bytes, do not count).
        assert s.transfer_incoming_bytes <= s.transfer_limit or sum(
            1 for f in s.transfers_in_flight.values() if f.nbytes) == 1


# --- the Worker carrying it out ------------------------------------------------------------

def inc(x):
    return x + 1


def add_all(*xs):
    return sum(xs)


def gives_its_slot_back(x):
    secede()
    rejoin()
    return x


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


@gen_cluster(n_workers=2)
async def test_real_work_keeps_the_workers_invariants(c, lc):
    a, b = lc.worker_addresses()
    workers = {host.address: w for host, w in lc.workers.values()}
    xs = [c.submit(inc, i, workers=[a], pure=False) for i in range(5)]
    total = c.submit(add_all, *xs, workers=[b], pure=False)  # its inputs come from a
    counter_future = c.submit(Counter, actor=True, workers=[b])
    counter = await counter_future
    assert await total == 15
    assert await counter.incr() == 1
    assert await c.submit(gives_its_slot_back, 7, workers=[b], pure=False) == 7
    for w in workers.values():
        w.validate()
    wb = workers[b]
    assert [e[1:3] for e in wb.state.story(total.key)] == [
        ("released", "waiting"), ("waiting", "executing"), ("executing", "memory")]
    assert not any(wb.state.rows[x.key].copy for x in xs if x.key in wb.state.rows)  # dropped after use
    assert set(wb.user_actors) == {counter_future.key}
    del xs, total, counter, counter_future
    gc.collect()
    await poll_for(lambda: not any(w.state.rows or w.data or w.user_actors for w in workers.values()))
    for w in workers.values():
        w.validate()
