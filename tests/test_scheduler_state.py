"""The scheduler's state machine, driven by stimuli alone: no sockets, no sleeps."""

from typing import get_args

from actorrt.scheduler.state import (
    TASK_STATES,
    Compute,
    Free,
    KilledWorker,
    Report,
    SchedulerState,
    TaskSpec,
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
