"""The scheduler's state machine, driven by stimuli alone: no sockets, no sleeps."""

import contextlib
import itertools
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorrt.scheduler.instructions import Compute, Free, Report
from actorrt.scheduler.placement import WorkerState
from actorrt.scheduler.state import (
    FIRE_AND_FORGET,
    TASK_STATES,
    KilledWorker,
    SchedulerState,
    TaskSpec,
    TaskState,
    TaskStatus,
)


def make(nworkers=2, nthreads=1, saturation=2.0):
    s = SchedulerState(saturation=saturation, validate=True)
    s.stimulus_add_client("c")
    for i in range(nworkers):
        s.stimulus_add_worker(f"w{i}", nthreads, "add")
    return s


def computes(instrs):
    return [i for i in instrs if isinstance(i, Compute)]


def reports(instrs):
    return [(i.key, i.status) for i in instrs if isinstance(i, Report)]


def test_single_task_life_cycle():
    s = make()
    out = s.stimulus_update_graph("c", [TaskSpec("a", "spec-a", ())], ["a"], "s1")
    (c,) = computes(out)
    assert c.key == "a" and c.spec == "spec-a" and c.deps == {}
    assert s.tasks["a"].state == "processing"
    out = s.stimulus_task_finished(c.worker, "a", 8, "int", "s2")
    assert reports(out) == [("a", "memory")]
    assert out[0].info["workers"] == [c.worker]
    out = s.stimulus_release_keys("c", ["a"], "s3")
    assert out == [Free(c.worker, ["a"])]
    assert "a" not in s.tasks
    assert [e[1:3] for e in s.story("a")] == [("released", "waiting"), ("waiting", "queued"),
                                              ("queued", "processing"), ("processing", "memory"),
                                              ("memory", "released"), ("released", "forgotten")]


def test_dependency_runs_after_input_and_on_holder():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", "sx", ()), TaskSpec("y", "sy", ("x",))], ["y"], "s1")
    assert s.tasks["y"].state == "waiting"
    wx = s.tasks["x"].processing_on.address
    out = s.stimulus_task_finished(wx, "x", 100, "int", "s2")
    (cy,) = computes(out)
    assert cy.key == "y" and cy.worker == wx and cy.deps == {"x": [wx]}
    out = s.stimulus_task_finished(wx, "y", 8, "int", "s3")
    # x is no longer needed by anyone once y is done: it is freed in the same step.
    assert Free(wx, ["x"]) in out and ("y", "memory") in reports(out)
    assert s.tasks["x"].state == "released"


def test_saturation_queues_excess_and_fills_on_completion():
    s = make(nworkers=1, nthreads=1, saturation=2.0)
    specs = [TaskSpec(f"t{i}", i, (), priority=0) for i in range(5)]
    out = s.stimulus_update_graph("c", specs, [t.key for t in specs], "s1")
    assert [c.key for c in computes(out)] == ["t0", "t1"]
    assert sum(ts.state == "queued" for ts in s.tasks.values()) == 3
    out = s.stimulus_task_finished("w0", "t0", 1, "int", "s2")
    assert [c.key for c in computes(out)] == ["t2"]


def test_priority_orders_queue():
    s = make(nworkers=1, nthreads=1, saturation=1.0)
    s.stimulus_update_graph("c", [TaskSpec("busy", 0, ())], ["busy"], "s0")
    s.stimulus_update_graph("c", [TaskSpec("low", 0, ())], ["low"], "s1")
    s.stimulus_update_graph("c", [TaskSpec("high", 0, (), priority=10)], ["high"], "s2")
    out = s.stimulus_task_finished("w0", "busy", 1, "int", "s3")
    assert [c.key for c in computes(out)] == ["high"]


def test_error_propagates_to_dependents_with_blame():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["x", "y"], "s1")
    w = s.tasks["x"].processing_on.address
    out = s.stimulus_task_erred(w, "x", "EXC", "TB", "s2")
    assert sorted(reports(out)) == [("x", "erred"), ("y", "erred")]
    assert s.tasks["y"].blame == "x" and s.tasks["y"].exception == "EXC"


def test_retries_rerun_then_fail():
    s = make(nworkers=1)
    s.stimulus_update_graph("c", [TaskSpec("x", 0, (), retries=1)], ["x"], "s1")
    out = s.stimulus_task_erred("w0", "x", "E", "T", "s2")
    assert [c.key for c in computes(out)] == ["x"]
    out = s.stimulus_task_erred("w0", "x", "E", "T", "s3")
    assert reports(out) == [("x", "erred")]


def test_worker_death_reruns_processing_and_recomputes_lost_data():
    s = make(nworkers=2)
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    wx = s.tasks["x"].processing_on.address
    s.stimulus_task_finished(wx, "x", 1, "int", "s2")
    s.stimulus_update_graph("c", [TaskSpec("y", 0, ("x",))], ["y"], "s3")
    wy = s.tasks["y"].processing_on.address
    assert wy == wx
    out = s.stimulus_remove_worker(wx, "s4")
    other = next(iter(s.workers))
    assert ("x", "lost") in reports(out)
    assert [c.key for c in computes(out)] == ["x"]
    assert s.tasks["y"].state == "waiting"
    out = s.stimulus_task_finished(other, "x", 1, "int", "s5")
    assert [c.key for c in computes(out)] == ["y"]


def test_task_killing_workers_fails_with_killed_worker():
    s = SchedulerState(allowed_failures=1, validate=True)
    s.stimulus_add_client("c")
    s.stimulus_add_worker("w0", 1, "a")
    s.stimulus_update_graph("c", [TaskSpec("bomb", 0, ())], ["bomb"], "s1")
    for i in range(2):
        s.stimulus_add_worker(f"w{i + 1}", 1, "a")
        out = s.stimulus_remove_worker(s.tasks["bomb"].processing_on.address, f"kill{i}")
    assert reports(out) == [("bomb", "erred")]
    assert isinstance(s.tasks["bomb"].exception, KilledWorker)


def test_release_while_processing_frees_on_finish():
    s = make(nworkers=1)
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    out = s.stimulus_release_keys("c", ["x"], "s2")
    assert out == [Free("w0", ["x"])]
    assert "x" not in s.tasks
    out = s.stimulus_task_finished("w0", "x", 1, "int", "s3")
    assert out == [Free("w0", ["x"])]


def test_cancel_cascades_to_dependents():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["x", "y"], "s1")
    out = s.stimulus_cancel(["x"], "cancelled by user", "s2")
    assert sorted(reports(out)) == [("x", "cancelled"), ("y", "cancelled")]
    assert not s.tasks


def test_restrictions_and_unrunnable_until_worker_joins():
    s = make(nworkers=1)
    s.stimulus_update_graph("c", [TaskSpec("x", 0, (), workers=("w9",))], ["x"], "s1")
    assert s.tasks["x"].state == "queued"
    out = s.stimulus_add_worker("w9", 1, "s2")
    assert [(c.key, c.worker) for c in computes(out)] == [("x", "w9")]


def test_missing_dependency_errs_clearly():
    s = make()
    out = s.stimulus_update_graph("c", [TaskSpec("y", 0, ("gone",))], ["y"], "s1")
    assert reports(out) == [("y", "erred")]
    assert "gone" in str(s.tasks["y"].exception)


def test_scattered_data_and_pure_dedup():
    s = make()
    out = s.stimulus_update_data("c", {"d": ["w1"]}, {"d": 10}, {"d": "int"}, "s1")
    assert reports(out) == [("d", "memory")]
    s.stimulus_update_graph("c", [TaskSpec("y", 0, ("d",))], ["y"], "s2")
    assert s.tasks["y"].processing_on.address == "w1"
    again = s.stimulus_update_graph("c", [TaskSpec("y", 0, ("d",))], ["y"], "s3")
    assert computes(again) == []


def test_many_tasks_hypothesis_style_invariants():
    s = make(nworkers=3, nthreads=2)
    keys = [f"k{i}" for i in range(200)]
    specs = [TaskSpec(k, 0, (keys[i - 1],) if i % 3 else ()) for i, k in enumerate(keys)]
    out = s.stimulus_update_graph("c", specs, keys, "s1")
    done = 0
    pending = computes(out)
    while pending:
        c = pending.pop(0)
        out = s.stimulus_task_finished(c.worker, c.key, 1, "int", f"f{done}")
        pending.extend(computes(out))
        done += 1
    assert done == 200
    assert all(ts.state == "memory" for ts in s.tasks.values())
    s.stimulus_release_keys("c", keys, "end")
    assert not s.tasks


def test_saturation_adapts_to_task_duration():
    s = SchedulerState(validate=True, queued_seconds=0.02, max_saturation=32)
    s.stimulus_add_client("c")
    s.stimulus_add_worker("w0", 1, "a")
    keys = [f"t{i}" for i in range(200)]
    out = s.stimulus_update_graph("c", [TaskSpec(k, 0, ()) for k in keys], keys, "s1")
    assert len(computes(out)) == 2  # unknown duration: two per thread to start with
    pending = computes(out)
    for i in range(40):  # fast tasks: 100 us each
        c = pending.pop(0)
        pending += computes(s.stimulus_task_finished("w0", c.key, 1, "int", f"f{i}", duration=1e-4))
    assert s.workers["w0"].capacity == 32 and len(s.workers["w0"].processing) == 32
    for i in range(60):  # slow tasks: 50 ms each -> no more than one per thread
        c = pending.pop(0)
        pending += computes(s.stimulus_task_finished("w0", c.key, 1, "int", f"g{i}", duration=0.05))
    assert s.workers["w0"].capacity == 1


def test_fixed_saturation_does_not_adapt():
    s = SchedulerState(saturation=3.0, validate=True)
    s.stimulus_add_worker("w0", 2, "a")
    s.stimulus_add_client("c")
    s.stimulus_update_graph("c", [TaskSpec("t", 0, ())], ["t"], "s1")
    s.stimulus_task_finished("w0", "t", 1, "int", "s2", duration=1e-5)
    assert s.workers["w0"].capacity == 6


def test_late_report_of_an_earlier_run_is_ignored():
    """Cancel, resubmit the same key to the same worker: the old run's late report must
    not stand in for the new run (its worker is freeing that data)."""
    s = make(nworkers=1)
    (first,) = computes(s.stimulus_update_graph("c", [TaskSpec("k", 0, ())], ["k"], "s1"))
    s.stimulus_cancel(["k"], None, "s2", requester="c")
    (second,) = computes(s.stimulus_update_graph("c", [TaskSpec("k", 0, ())], ["k"], "s3"))
    assert second.run_id != first.run_id
    assert s.stimulus_task_finished("w0", "k", 1, "int", "s4", run_id=first.run_id) == []
    assert s.tasks["k"].state == "processing"
    assert s.stimulus_task_erred("w0", "k", "E", "T", "s5", run_id=first.run_id) == []
    out = s.stimulus_task_finished("w0", "k", 1, "int", "s6", run_id=second.run_id)
    assert reports(out) == [("k", "memory")]


def test_graph_tasks_nobody_wants_are_forgotten():
    s = make()
    specs = [TaskSpec("a", 0, ()), TaskSpec("b", 0, ("a",)), TaskSpec("lonely", 0, ()),
             TaskSpec("c", 0, ("lonely",))]
    s.stimulus_update_graph("c", specs, ["b"], "s1")
    assert set(s.tasks) == {"a", "b"}  # 'lonely' and its dependent 'c' were never wanted


def test_retry_forgives_past_worker_deaths():
    s = SchedulerState(allowed_failures=0, validate=True)
    s.stimulus_add_client("c")
    s.stimulus_add_worker("w0", 1, "a")
    s.stimulus_add_worker("w1", 1, "a")
    s.stimulus_update_graph("c", [TaskSpec("bomb", 0, ())], ["bomb"], "s1")
    s.stimulus_remove_worker(s.tasks["bomb"].processing_on.address, "kill")
    assert s.tasks["bomb"].state == "erred"
    out = s.stimulus_retry(["bomb"], "retry")
    assert [c.key for c in computes(out)] == ["bomb"]
    assert s.tasks["bomb"].suspicious == 0


def test_scatter_over_a_computing_key_keeps_the_computation_and_frees_strays():
    s = make(nworkers=2)
    s.stimulus_update_graph("c", [TaskSpec("k", 0, ())], ["k"], "s1")
    runner = s.tasks["k"].processing_on.address
    other = next(a for a in s.workers if a != runner)
    out = s.stimulus_update_data("c2", {"k": [runner, other]}, {"k": 1}, {"k": "int"}, "s2")
    assert out == [Free(other, ["k"])]
    assert s.tasks["k"].state == "processing" and "c2" in s.tasks["k"].who_wants


def test_scattering_a_held_key_again_records_the_new_copies():
    s = make(nworkers=2)
    s.stimulus_update_data("c", {"d": ["w0"]}, {"d": 1}, {"d": "int"}, "s1")
    s.stimulus_update_data("c", {"d": ["w1"]}, {"d": 1}, {"d": "int"}, "s2")
    assert {ws.address for ws in s.tasks["d"].who_has} == {"w0", "w1"}
    out = s.stimulus_release_keys("c", ["d"], "s3")
    assert sorted(i.worker for i in out if isinstance(i, Free)) == ["w0", "w1"]



def test_the_free_of_a_scattered_copy_names_its_put():
    """A copy a client scattered is freed naming that worker's serial number of the put
    (so the worker keeps a later put of the key: WorkerState.stimulus_free_keys); a
    copy the scheduler did not learn of from a scatter is freed naming none."""
    s = make(nworkers=2)
    s.stimulus_update_data("c", {"d": ["w0", "w1"]}, {"d": 1}, {"d": "int"}, "s1",
                           puts={"d": {"w0": 7, "w1": 3}})
    out = s.stimulus_release_keys("c", ["d"], "s2")
    assert sorted(i for i in out if isinstance(i, Free)) == [Free("w0", ["d"], {"d": 7}),
                                                            Free("w1", ["d"], {"d": 3})]
    # Scattered again (the same value, the same key): the new put is the one named.
    s.stimulus_update_data("c", {"d": ["w0"]}, {"d": 1}, {"d": "int"}, "s3", puts={"d": {"w0": 9}})
    assert s.stimulus_release_keys("c", ["d"], "s4") == [Free("w0", ["d"], {"d": 9})]
    (c,) = computes(s.stimulus_update_graph("c", [TaskSpec("t", 0, ())], ["t"], "s5"))
    s.stimulus_task_finished(c.worker, "t", 8, "int", "s6", run_id=c.run_id)
    assert s.stimulus_release_keys("c", ["t"], "s7") == [Free(c.worker, ["t"])]


def test_scattered_strays_of_a_computing_key_are_freed_naming_their_put():
    s = make(nworkers=2)
    s.stimulus_update_graph("c", [TaskSpec("k", 0, ())], ["k"], "s1")
    runner = s.tasks["k"].processing_on.address
    other = next(a for a in s.workers if a != runner)
    out = s.stimulus_update_data("c2", {"k": [runner, other]}, {"k": 1}, {"k": "int"}, "s2",
                                 puts={"k": {runner: 4, other: 5}})
    assert out == [Free(other, ["k"], {"k": 5})]


def test_a_scattered_replica_dropped_by_a_move_is_freed_naming_its_put():
    from actorrt.scheduler.replicas import replicas_dropped

    s = make(nworkers=2)
    s.stimulus_update_data("c", {"d": ["w0", "w1"], "e": ["w1"]}, {"d": 1, "e": 1}, {"d": "int", "e": "int"},
                           "s1", puts={"d": {"w0": 2, "w1": 6}, "e": {"w1": 7}})
    assert replicas_dropped(s, "w1", ["d", "e"], "s2") == [Free("w1", ["d"], {"d": 6})]  # (e: its only copy)
    assert s.stimulus_release_keys("c", ["d"], "s3") == [Free("w0", ["d"], {"d": 2})]

def test_a_slot_given_back_on_a_worker_over_capacity_keeps_it_full():
    # Found under chaos: the adaptive saturation lowered capacity below what a worker
    # held, then a task seceded (long_running) and the worker was put in the idle set
    # while still full; the next placement failed with "not in list".
    s = make(nworkers=1, saturation=4.0)
    out = s.stimulus_update_graph("c", [TaskSpec(f"t{i}", "spec", ()) for i in range(4)],
                                  [f"t{i}" for i in range(4)], "s1")
    assert len(computes(out)) == 4
    s.placement.set_saturation(1.0)  # capacity 1, busy 4
    s.stimulus_long_running("w0", "t0", "s2")  # busy 3: still full
    s.validate()
    assert not s.placement.idle
    for i in (1, 2):
        s.stimulus_long_running("w0", f"t{i}", f"s{i + 2}")
    s.validate()
    assert not s.placement.idle  # busy 1 = capacity 1
    s.stimulus_long_running("w0", "t3", "s5")
    s.validate()
    assert list(s.placement.idle) == [s.workers["w0"]]


def test_task_states_are_plain_strings_named_once():
    # Plain strings on purpose: stories and key states travel to clients as they are.
    assert set(get_args(TaskStatus)) == {*TASK_STATES, "forgotten"}
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("a", 0, ())], ["a"], "s1")
    assert all(type(entry[1]) is str and type(entry[2]) is str for entry in s.story("a"))


# --- tasks submitted before any worker joins ---------------------------------------------

def test_actor_submitted_before_any_worker_runs_when_one_joins():
    # Found by a random driver: an actor with no restrictions, parked because there was
    # no worker at all, stayed parked when a worker joined (only tasks restricted to the
    # newcomer, or allowed elsewhere, went back to the queue), and its story said
    # 'queued -> processing' while it stayed 'queued'.
    s = SchedulerState(validate=True)
    s.stimulus_add_client("c")
    spec = TaskSpec("a", "spec-a", (), name="Counter", actor={"max_concurrency": 1, "max_restarts": 0})
    assert computes(s.stimulus_update_graph("c", [spec], ["a"], "submit")) == []
    assert s.tasks["a"].state == "queued"
    assert [e[1:4] for e in s.story("a")] == [("released", "waiting", "submit"),
                                              ("waiting", "queued", "submit")]
    out = s.stimulus_add_worker("w0", 1, "join")
    assert [(c.key, c.worker, c.actor) for c in computes(out)] == [("a", "w0", spec.actor)]
    assert s.tasks["a"].state == "processing"
    assert [e[1:4] for e in s.story("a")][2:] == [("queued", "processing", "join")]
    out = s.stimulus_task_finished("w0", "a", 64, "Counter", "built")
    assert reports(out) == [("a", "memory")]


def test_restricted_actor_submitted_before_any_worker_waits_for_its_worker():
    s = SchedulerState(validate=True)
    s.stimulus_add_client("c")
    spec = TaskSpec("a", "spec-a", (), workers=("w1",), actor={"max_restarts": 0})
    s.stimulus_update_graph("c", [spec], ["a"], "submit")
    assert computes(s.stimulus_add_worker("w0", 1, "join0")) == []
    assert s.tasks["a"].state == "queued"
    assert [(c.key, c.worker) for c in computes(s.stimulus_add_worker("w1", 1, "join1"))] == [("a", "w1")]


def test_task_submitted_before_any_worker_runs_when_one_joins():
    s = SchedulerState(validate=True)
    s.stimulus_add_client("c")
    specs = [TaskSpec("x", "sx", ()), TaskSpec("y", "sy", ("x",))]
    assert computes(s.stimulus_update_graph("c", specs, ["y"], "submit")) == []
    out = s.stimulus_add_worker("w0", 1, "join")
    assert [c.key for c in computes(out)] == ["x"]
    assert s.tasks["x"].state == "processing"
    assert [e[1:4] for e in s.story("x")] == [("released", "waiting", "submit"),
                                              ("waiting", "queued", "submit"),
                                              ("queued", "processing", "join")]
    assert [c.key for c in computes(s.stimulus_task_finished("w0", "x", 1, "int", "done"))] == ["y"]


# --- inputs that erred, inputs nobody knows ------------------------------------------------

def test_a_task_with_an_unknown_input_never_runs():
    # 'y' was erred for its unknown input, then its dependent 'z' asked for it to wait,
    # overriding that: 'y' ran without the input.
    s = make(nworkers=1)
    out = s.stimulus_update_graph("c", [TaskSpec("y", 0, ("unknown",)), TaskSpec("z", 0, ("y",))],
                                  ["y", "z"], "s1")
    assert computes(out) == []
    assert sorted(reports(out)) == [("y", "erred"), ("z", "erred")]
    assert "unknown" in str(s.tasks["z"].exception) and s.tasks["z"].blame == "y"


def test_a_task_with_an_unknown_input_errs_again_when_asked_again():
    # Its unknown input is not among its dependencies: once released, it used to run
    # without it when wanted again or retried.
    s = make(nworkers=1)
    s.stimulus_add_client("c2")
    s.stimulus_update_graph("c2", [TaskSpec("y", 0, ("unknown",))], ["y"], "s1")
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ("y",))], ["x"], "s2")
    s.stimulus_release_keys("c2", ["y"], "s3")
    assert s.tasks["y"].state == "released"  # kept: x's input
    out = s.stimulus_want_keys("c2", ["y"], "s4")
    assert computes(out) == [] and reports(out) == [("y", "erred")]
    assert "unknown" in str(s.tasks["y"].exception)
    out = s.stimulus_retry(["y"], "s5")
    assert computes(out) == [] and reports(out) == [("y", "erred")]


def test_a_task_moved_off_a_dead_worker_errs_if_its_input_died_with_it():
    # The worker held the only copy of a scattered input (no recipe: it errs) and ran
    # its dependent: the dependent, sent back to wait, waited for ever on the erred input.
    s = make(nworkers=1)
    s.stimulus_update_data("c", {"d": ["w0"]}, {"d": 1}, {"d": "int"}, "s1")
    s.stimulus_update_graph("c", [TaskSpec("k", 0, ("d",))], ["k"], "s2")
    assert s.tasks["k"].state == "processing"
    out = s.stimulus_remove_worker("w0", "s3")
    assert ("k", "erred") in reports(out)
    assert s.tasks["k"].state == "erred" and s.tasks["k"].blame == "d"
    assert "no recipe" in str(s.tasks["k"].exception)


def test_an_input_released_while_a_dependent_began_waiting_is_computed_again():
    # Found by a random driver. One worker dies: its actor a dies for good, so y = f(a, x)
    # errs and lets go of x (running there, nobody else needing it) - and m = g(x), whose
    # only copy was there, is recomputed and waits on x. x was released all the same, and
    # m waited for ever on a released input. It shows when the worker's set of values
    # yields m before a: pick names that do.
    for attempt in range(20):
        s = make(nworkers=0)
        s.stimulus_add_client("c2")
        s.stimulus_add_worker("w0", 4, "join")
        a, m = f"a{attempt}", f"m{attempt}"
        s.stimulus_update_graph("c", [TaskSpec(a, 0, (), actor={"max_restarts": 0})], [a], "s1")
        s.stimulus_task_finished("w0", a, 1, "Actor", "s2")
        s.stimulus_update_graph("c2", [TaskSpec("x", 0, ())], ["x"], "s3")
        s.stimulus_task_finished("w0", "x", 1, "int", "s4")
        s.stimulus_update_graph("c", [TaskSpec(m, 0, ("x",))], [m], "s5")
        s.stimulus_task_finished("w0", m, 1, "int", "s6")
        s.stimulus_release_keys("c2", ["x"], "s7")  # kept: m's input
        s.stimulus_want_keys("c2", ["x"], "s8")  # x runs again
        s.stimulus_update_graph("c", [TaskSpec("y", 0, (a, "x"))], ["y"], "s9")
        s.stimulus_release_keys("c2", ["x"], "s10")  # only y needs x now
        if [ts.key for ts in s.workers["w0"].has_what] == [m, a]:
            break
    else:
        raise AssertionError("no attempt had the order that shows it")
    assert s.tasks["x"].state == "processing" and s.tasks["y"].state == "waiting"
    out = s.stimulus_remove_worker("w0", "died")
    assert sorted(reports(out)) == [(a, "erred"), (m, "lost"), ("y", "erred")]
    assert s.tasks[m].state == "waiting" and s.tasks["x"].state in ("waiting", "queued")
    assert [c.key for c in computes(s.stimulus_add_worker("w1", 1, "join1"))] == ["x"]
    assert [c.key for c in computes(s.stimulus_task_finished("w1", "x", 1, "int", "s11"))] == [m]


def _erred_chain_left_by_its_holder(s):
    """``d`` scattered to a worker that does not exist (so it erred); ``c2`` submits
    a = f(d), b = f(a); ``c`` submits x = f(b); ``c2`` leaves: a and b are released,
    kept only as inputs of the erred x."""
    s.stimulus_add_client("c2")
    out = s.stimulus_update_data("c", {"d": ["tcp://gone:1"]}, {"d": 5}, {"d": "int"}, "s1")
    assert reports(out) == [("d", "erred")]
    s.stimulus_update_graph("c2", [TaskSpec("a", "f", ("d",))], ["a"], "s2")
    s.stimulus_update_graph("c2", [TaskSpec("b", "f", ("a",))], ["b"], "s3")
    s.stimulus_update_graph("c", [TaskSpec("x", "f", ("b",))], ["x"], "s4")
    s.stimulus_remove_client("c2", "s5")
    assert {k: ts.state for k, ts in s.tasks.items()} == {
        "d": "erred", "a": "released", "b": "released", "x": "erred"}


def test_resubmitting_onto_an_erred_chain_errs_with_its_exception():
    # Found by a random driver: z = f(y, b) with y erred and b released (its input a
    # erred). z erred at once for y and let go of b in the same step as it had asked b
    # to wait: b then waited, nobody needing it, and when a erred b was left 'waiting'
    # on nothing. It shows only when z's loop over its inputs meets b before y, which
    # the order of a set decides: pick, among erred candidates, one that comes after b
    # in a set built as z's inputs will be.
    for attempt in range(20):
        s = make(nworkers=1)
        _erred_chain_left_by_its_holder(s)
        bad = [f"y{i}" for i in range(8)]
        for key in bad:
            s.stimulus_update_graph("c", [TaskSpec(key, "f", ("unknown",))], [key], f"s6-{key}")
        late = [k for k in bad if [ts.key for ts in {s.tasks[k], s.tasks["b"]}] == ["b", k]]
        if late:
            break
    assert late, "no erred input came after b in any attempt"
    out = s.stimulus_update_graph("c", [TaskSpec("z", "f", (late[0], "b"))], ["z"], "s7")
    s.validate()
    assert reports(out) == [("z", "erred")] and computes(out) == []
    assert "unknown" in str(s.tasks["z"].exception)
    assert all(ts.state not in ("waiting", "queued", "processing") for ts in s.tasks.values())


def test_resubmitted_dependent_of_an_erred_input_errs_with_that_exception():
    s = make(nworkers=1)
    _erred_chain_left_by_its_holder(s)
    out = s.stimulus_update_graph("c", [TaskSpec("z", "f", ("b",))], ["z"], "s6")
    assert reports(out) == [("z", "erred")]
    assert "no live worker holds scattered key 'd'" in str(s.tasks["z"].exception)
    assert s.tasks["z"].blame == "d"


# --- random stimulus sequences -------------------------------------------------------------

CLIENTS = ["c", "c2"]
WORKERS = ["w0", "w1", "w2"]
# Which task, worker or key a step is about is drawn as a number and taken modulo what is
# there when the step runs: what is drawn does not depend on the state.
PICK = st.integers(0, 1000)
KEYS = st.lists(PICK, min_size=1, max_size=3)
SPEC = st.fixed_dictionaries({
    "inputs": st.lists(PICK, max_size=3),
    "actor": st.sampled_from([False] * 5 + [{"max_restarts": 0}, {"max_restarts": 1}]),
    "workers": st.sampled_from([None, None, None, ("w0",), ("w1", "w9"), ("w9",)]),
    "allow_other_workers": st.booleans(),
    "retries": st.integers(0, 1),
    "wanted": st.booleans(),
})
ARGS = {
    "add worker": st.tuples(st.sampled_from(WORKERS), st.integers(1, 2)),
    "remove worker": PICK,
    "submit": st.tuples(st.sampled_from(CLIENTS), st.lists(SPEC, min_size=1, max_size=4)),
    "finish": st.tuples(PICK, st.sampled_from(["current", "earlier", None])),
    "err": PICK,
    "long running": PICK,
    "missing data": st.tuples(PICK, PICK),
    "release": st.tuples(st.sampled_from(CLIENTS), KEYS),
    "want": st.tuples(st.sampled_from(CLIENTS + [FIRE_AND_FORGET]), KEYS),
    "cancel": st.tuples(st.sampled_from(CLIENTS), KEYS),
    "retry": KEYS,
    # Onto a key in use or a new one; to a worker that is not here, the key errs.
    "scatter": st.tuples(st.sampled_from(CLIENTS), PICK, st.sampled_from(WORKERS + ["w9"])),
    "remove client": st.just(None),
}
WEIGHTS = {"submit": 5, "finish": 5, "add worker": 2, "release": 2}
STEP = st.sampled_from([kind for kind in ARGS for _ in range(WEIGHTS.get(kind, 1))]).flatmap(
    lambda kind: st.tuples(st.just(kind), ARGS[kind]))


def _nth(items, i):
    items = sorted(items)
    return items[i % len(items)] if items else None


def _graph(specs_drawn, known, fresh):
    """New tasks whose inputs are earlier tasks of the graph (chains, the nearest first),
    known keys, or a key the scheduler does not know; some restricted to workers (maybe
    absent), some actors. The last is wanted, others maybe (intermediate results)."""
    specs = []
    for spec in specs_drawn:
        key = f"k{next(fresh)}"
        pool = [sp.key for sp in reversed(specs)] + sorted(known) + ["unknown"]
        deps = () if spec["actor"] else tuple(dict.fromkeys(_nth(pool, i) for i in spec["inputs"]))
        specs.append(TaskSpec(key, f"spec-{key}", deps, name=key, retries=spec["retries"],
                              workers=spec["workers"], actor=spec["actor"],
                              allow_other_workers=spec["allow_other_workers"] and spec["workers"] is not None))
    wanted = [sp.key for sp, spec in zip(specs, specs_drawn) if spec["wanted"]] + [specs[-1].key]
    return specs, wanted


def _apply(s, kind, args, sid, fresh):
    keys = sorted(s.tasks)
    running = {k: ts for k, ts in s.tasks.items() if ts.state == "processing"}
    if kind in ("finish", "err", "long running", "missing data"):
        pick = args[0] if isinstance(args, tuple) else args
        ts = running.get(_nth(running, pick))
        if ts is None:
            return
        worker = ts.processing_on.address
    if kind == "add worker":
        s.stimulus_add_worker(args[0], args[1], sid)
    elif kind == "remove worker" and s.workers:
        s.stimulus_remove_worker(_nth(s.workers, args), sid)
    elif kind == "submit":
        specs, wanted = _graph(args[1], keys, fresh)
        s.stimulus_update_graph(args[0], specs, wanted, sid)
    elif kind == "finish":
        run_id = {"current": ts.run_id, "earlier": ts.run_id - 1, None: None}[args[1]]
        s.stimulus_task_finished(worker, ts.key, 1, "int", sid, run_id=run_id)
    elif kind == "err":
        s.stimulus_task_erred(worker, ts.key, ValueError(ts.key), "tb", sid, run_id=ts.run_id)
    elif kind == "long running":
        s.stimulus_long_running(worker, ts.key, sid)
    elif kind == "missing data":
        dep = s.tasks.get(_nth([d.key for d in ts.dependencies if d.who_has], args[1]) or "")
        if dep is not None:
            s.stimulus_missing_data(worker, ts.key, {dep.key: [w.address for w in dep.who_has]}, sid)
    elif kind in ("release", "want", "cancel", "retry") and keys:
        chosen = sorted({_nth(keys, i) for i in (args if kind == "retry" else args[1])})
        if kind == "release":
            s.stimulus_release_keys(args[0], chosen, sid)
        elif kind == "want":
            s.stimulus_want_keys(args[0], chosen, sid)
        elif kind == "cancel":
            s.stimulus_cancel(chosen, None, sid, requester=args[0])
        else:
            s.stimulus_retry(chosen, sid)
    elif kind == "scatter":
        key = _nth(keys + [f"d{next(fresh)}"], args[1])
        s.stimulus_update_data(args[0], {key: [args[2]]}, {key: 1}, {key: "int"}, sid)
    elif kind == "remove client":
        s.stimulus_remove_client("c2", sid)
        s.stimulus_add_client("c2")


def _drain(s):
    """Add a worker and let every task that can run finish: afterwards each key a client
    wants is done (memory or erred), unless it waits on a task restricted to workers
    that are not here. Anything else would wait for ever."""
    s.stimulus_add_worker("w-drain", 2, "drain")
    for step in itertools.count():
        running = sorted(k for k, ts in s.tasks.items() if ts.state == "processing")
        if not running:
            break
        assert step < 10 * len(s.tasks) + 10, "tasks keep running"
        for key in running:
            ts = s.tasks.get(key)
            if ts is not None and ts.state == "processing":
                s.stimulus_task_finished(ts.processing_on.address, key, 1, "int", f"drain{step}",
                                         run_id=ts.run_id)
    s.validate()

    def blocked(ts, seen):
        if ts in seen:
            return False
        seen.add(ts)
        if ts.state == "queued":
            return s.placement.pinned_workers_gone(ts)
        return ts.state == "waiting" and any(blocked(dep, seen) for dep in ts.waiting_on)

    for ts in s.tasks.values():
        if ts.who_wants & set(s.clients) and ts.state not in ("memory", "erred"):
            assert blocked(ts, set()), f"{ts} will never finish: {s.story(ts.key)}"


@contextlib.contextmanager
def _sets_ordered_by_key():
    """Sets of tasks and workers iterate in an order their keys fix, not their addresses:
    an example then runs the same way each time, and hypothesis can replay and shrink a
    failure (some of those found showed only for one order of a task's inputs)."""
    TaskState.__hash__ = lambda self: hash(self.key)
    WorkerState.__hash__ = lambda self: hash(self.address)
    try:
        yield
    finally:
        del TaskState.__hash__, WorkerState.__hash__


@settings(max_examples=250, deadline=None)
@given(st.integers(0, 1), st.sampled_from([None, 1.0]),
       st.integers(1, 60).flatmap(lambda n: st.lists(STEP, min_size=n, max_size=n)))
def test_random_stimuli_keep_the_invariants(allowed_failures, saturation, steps):
    """Clients submitting small graphs (chains, unknown inputs, restrictions, actors),
    scattering (also to workers that are not there), releasing, cancelling, retrying and
    leaving; workers joining and leaving; tasks finishing, failing, seceding, missing
    inputs: the invariants hold after every step, and once a worker is there and every
    task that can run has finished, nothing a client wants waits for ever."""
    with _sets_ordered_by_key():
        s = SchedulerState(validate=True, allowed_failures=allowed_failures, saturation=saturation)
        for client in CLIENTS:
            s.stimulus_add_client(client)
        fresh = itertools.count()
        for i, (kind, args) in enumerate(steps):
            _apply(s, kind, args, f"s{i}", fresh)
            s.validate()
        _drain(s)


def test_a_paused_worker_gets_no_new_task_and_resuming_fills_it():
    s = make(nworkers=2, nthreads=1, saturation=1.0)
    assert s.stimulus_worker_paused("w0", True, "p") == []
    specs = [TaskSpec(f"t{i}", i, (), priority=0) for i in range(3)]
    out = s.stimulus_update_graph("c", specs, [t.key for t in specs], "s1")
    assert [(c.key, c.worker) for c in computes(out)] == [("t0", "w1")]  # w0 is paused
    out = s.stimulus_task_finished("w1", "t0", 1, "int", "s2")
    assert [(c.key, c.worker) for c in computes(out)] == [("t1", "w1")]
    out = s.stimulus_worker_paused("w0", False, "r")
    assert [(c.key, c.worker) for c in computes(out)] == [("t2", "w0")]  # resumed: filled at once
    assert s.stimulus_worker_paused("w0", False, "r2") == [] and s.stimulus_worker_paused("gone", True, "x") == []


def test_an_actor_avoids_a_paused_worker_but_takes_one_if_none_other():
    s = make(nworkers=2)
    s.stimulus_worker_paused("w0", True, "p")
    out = s.stimulus_update_graph("c", [TaskSpec("a", 0, (), actor=True)], ["a"], "s1")
    assert [c.worker for c in computes(out)] == ["w1"]
    s.stimulus_worker_paused("w1", True, "p2")
    out = s.stimulus_update_graph("c", [TaskSpec("b", 0, (), actor=True)], ["b"], "s2")
    assert len(computes(out)) == 1  # an actor is a long-lived service: it still finds a home


# --- shared member sets (who_wants / who_has) ----------------------------------------

def test_member_sets_share_their_singletons_and_copy_on_change():
    from actorrt.scheduler.task_state import NOBODY, Members
    members = Members()
    one = members.plus(NOBODY, "c")
    assert one == {"c"} and members.plus(NOBODY, "c") is one   # the shared frozenset({"c"})
    two = members.plus(one, "d")
    assert two == {"c", "d"} and one == {"c"}                  # a copy: the shared one is untouched
    assert members.plus(two, "c") is two
    assert members.minus(two, "d") == {"c"} and members.minus(one, "c") is NOBODY
    assert members.minus(one, "x") is one


def _has_own_dict(ts) -> bool:
    import gc
    return any(type(r) is dict for r in gc.get_referents(ts))  # (vars(ts) would create it)


def test_rarely_set_fields_cost_a_held_task_nothing_until_set():
    from actorrt.scheduler.task_state import ERROR_FIELDS, TaskState, reset_rare
    ts = TaskState("k", None, "f")
    assert (ts.exception, ts.workers, ts.actor, ts.retries) == (None, None, False, 0)
    assert not _has_own_dict(ts)
    ts.exception, ts.retries, ts.actor = ValueError("x"), 2, {"name": "a"}
    assert (type(ts.exception), ts.retries, ts.actor) == (ValueError, 2, {"name": "a"})
    assert _has_own_dict(ts) and set(vars(ts)) == {"exception", "retries", "actor"}
    reset_rare(ts, *ERROR_FIELDS, "retries", "actor")
    assert vars(ts) == {} and (ts.exception, ts.retries, ts.actor) == (None, 0, False)
    assert TaskState.retries == 0 and TaskState.exception is None  # the defaults stay shared
    with pytest.raises(AttributeError):
        ts.no_such_field  # an unknown name is still an error


def test_a_plain_task_sets_no_rare_field_on_its_way_through():
    s = make()
    (c,) = computes(s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["y"], "s1"))
    (c,) = computes(s.stimulus_task_finished(c.worker, "x", 8, "int", "s2"))
    s.stimulus_task_finished(c.worker, "y", 8, "int", "s3")
    assert s.tasks["y"].state == "memory"
    assert not any(_has_own_dict(ts) for ts in s.tasks.values())


def test_resetting_a_rare_field_never_set_costs_nothing():
    # Scattered data resets a task's error fields: a key scattered fresh has none set,
    # and the reset must not make the dict they would live in.
    from actorrt.scheduler.task_state import ERROR_FIELDS, TaskState, reset_rare
    ts = TaskState("k", None, "f")
    reset_rare(ts, *ERROR_FIELDS, "suspicious")
    assert not _has_own_dict(ts)
    s = make()
    s.stimulus_update_data("c", {"x": [next(iter(s.workers))]}, {"x": 8}, {"x": "int"}, "s1")
    assert s.tasks["x"].state == "memory" and not _has_own_dict(s.tasks["x"])


def test_member_cache_is_bounded_and_forgets():
    from actorrt.scheduler.task_state import Members
    members = Members(limit=3)
    kept = [members.alone(i) for i in range(10)]
    assert [set(k) for k in kept] == [{i} for i in range(10)]
    assert len(members._alone) <= 3
    members.forget(9)
    assert 9 not in members._alone


def test_held_tasks_of_one_client_on_one_worker_share_who_wants_and_who_has():
    s = make(nworkers=1)
    s.stimulus_update_graph("c", [TaskSpec(f"t{i}", b"spec", ()) for i in range(3)],
                            [f"t{i}" for i in range(3)], "submit")
    for i in range(3):
        s.stimulus_task_finished("w0", f"t{i}", 8, "int", "done")
    held = [s.tasks[f"t{i}"] for i in range(3)]
    assert all(ts.state == "memory" for ts in held)
    assert held[0].who_wants is held[1].who_wants is held[2].who_wants
    assert held[0].who_has is held[1].who_has is held[2].who_has
    s.stimulus_release_keys("c", ["t0"], "drop")
    assert held[1].who_wants == {"c"} and "t0" not in s.tasks


_user = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x * 2**20) / 2**20))
_place = st.tuples(_user, st.integers(0, 2**40 - 1), st.integers(0, 2**40 - 1))


@given(_place, _place)
@settings(max_examples=300, deadline=None)
def test_a_queue_priority_orders_as_its_three_parts_and_unpacks(a, b):
    from actorrt.scheduler.task_state import queue_priority, unpack_priority
    assert (queue_priority(*a) < queue_priority(*b)) == ((-a[0], a[1], a[2]) < (-b[0], b[1], b[2]))
    assert unpack_priority(queue_priority(*a)) == a
