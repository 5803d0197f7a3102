"""Scheduler state behind the futures toolkit: seceded tasks, fire-and-forget, cancel,
erred keys. Driven by stimuli alone (no sockets, no sleeps)."""
from actorrt.scheduler.state import (FIRE_AND_FORGET, Compute, Free, Report, SchedulerState,
                                     TaskSpec)


def make(nworkers=1, nthreads=1, saturation=1.0):
    s = SchedulerState(saturation=saturation, validate=True)
    s.stimulus_add_client("c")
    for i in range(nworkers):
        s.stimulus_add_worker(f"w{i}", nthreads, "add")
    return s


def computes(instrs):
    return [i.key for i in instrs if isinstance(i, Compute)]


def reports(instrs):
    return sorted((i.key, i.status) for i in instrs if isinstance(i, Report))


# --- long-running (seceded) tasks ------------------------------------------------
def test_seceded_task_frees_its_slot_for_queued_work():
    s = make()
    out = s.stimulus_update_graph("c", [TaskSpec("parent", 0, ()), TaskSpec("child", 0, ())],
                                  ["parent", "child"], "s1")
    assert computes(out) == ["parent"] or computes(out) == ["child"]
    running = computes(out)[0]
    other = "child" if running == "parent" else "parent"
    assert s.tasks[other].state == "queued"
    out = s.stimulus_long_running("w0", running, "s2")
    assert computes(out) == [other]
    ws = s.workers["w0"]
    assert ws.busy == 1 and len(ws.processing) == 2


def test_long_running_is_idempotent_and_cleared_on_finish():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("a", 0, ())], ["a"], "s1")
    s.stimulus_long_running("w0", "a", "s2")
    assert s.stimulus_long_running("w0", "a", "s3") == []
    assert s.stimulus_long_running("w0", "unknown", "s4") == []
    assert s.stimulus_long_running("w9", "a", "s5") == []
    s.stimulus_task_finished("w0", "a", 1, "int", "s6")
    ws = s.workers["w0"]
    assert not ws.long_running and ws.busy == 0 and ws in s.placement.idle


def test_long_running_task_rescheduled_when_its_worker_dies():
    s = make(nworkers=2)
    s.stimulus_update_graph("c", [TaskSpec("a", 0, ())], ["a"], "s1")
    w = s.tasks["a"].processing_on.address
    s.stimulus_long_running(w, "a", "s2")
    out = s.stimulus_remove_worker(w, "s3")
    assert computes(out) == ["a"]
    assert not any(ws.long_running for ws in s.workers.values())


def test_nested_submission_on_one_slot_never_starves():
    """fib-like: each task secedes, then its children are placed on the same worker."""
    s = make(saturation=1.0)
    s.stimulus_update_graph("c", [TaskSpec("f3", 0, ())], ["f3"], "s1")
    s.stimulus_long_running("w0", "f3", "s2")
    out = s.stimulus_update_graph("worker-client", [TaskSpec("f2", 0, ()), TaskSpec("f1", 0, ())],
                                  ["f2", "f1"], "s3")
    assert len(computes(out)) == 1  # one slot free again
    first = computes(out)[0]
    out = s.stimulus_long_running("w0", first, "s4")
    assert len(computes(out)) == 1


# --- fire and forget -------------------------------------------------------------
def test_fire_and_forget_keeps_work_then_releases_when_done():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["y"], "s1")
    s.stimulus_want_keys(FIRE_AND_FORGET, ["y"], "s2")
    s.stimulus_release_keys("c", ["y"], "s3")  # every Future dropped
    assert s.tasks["x"].state == "processing" and s.tasks["y"].state == "waiting"
    s.stimulus_task_finished("w0", "x", 1, "int", "s4")
    assert s.tasks["y"].state == "processing"
    out = s.stimulus_task_finished("w0", "y", 1, "int", "s5")
    assert Free("w0", ["y"]) in out
    assert not s.tasks, s.tasks  # nothing leaks once the work is done


def test_fire_and_forget_of_failed_work_frees_the_exception():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    s.stimulus_want_keys(FIRE_AND_FORGET, ["x"], "s2")
    s.stimulus_release_keys("c", ["x"], "s3")
    s.stimulus_task_erred("w0", "x", "BIG EXCEPTION", "TB", "s4")
    assert not s.tasks


def test_fire_and_forget_while_a_client_still_holds_it():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    s.stimulus_want_keys(FIRE_AND_FORGET, ["x"], "s2")
    out = s.stimulus_task_finished("w0", "x", 1, "int", "s3")
    assert reports(out) == [("x", "memory")]
    assert s.tasks["x"].who_wants == {"c"}
    s.stimulus_release_keys("c", ["x"], "s4")
    assert not s.tasks


def test_fire_and_forget_of_finished_key_is_a_no_op():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    s.stimulus_task_finished("w0", "x", 1, "int", "s2")
    assert s.stimulus_want_keys(FIRE_AND_FORGET, ["x"], "s3") == []
    s.stimulus_release_keys("c", ["x"], "s4")
    assert not s.tasks


# --- cancel ------------------------------------------------------------------------
def test_cancel_reason_names_the_cancelled_key():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",)),
                                TaskSpec("z", 0, ("y",))], ["x", "y", "z"], "s1")
    out = s.stimulus_cancel(["x"], None, "s2")
    reasons = {i.key: i.info["reason"] for i in out if isinstance(i, Report)}
    assert reasons["x"] == "x was cancelled"
    assert "input x was cancelled" in reasons["y"] and reasons["y"].startswith("y ")
    assert "input x was cancelled" in reasons["z"]
    assert Free("w0", ["x"]) in out
    assert not s.tasks


def test_cancel_unknown_keys_is_harmless():
    s = make()
    assert s.stimulus_cancel(["nope"], None, "s1") == []


# --- erred keys are forgotten once nobody holds them (dask/distributed#8790) ------------
def test_erred_key_and_its_erred_dependents_are_forgotten_on_release():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["x", "y"], "s1")
    s.stimulus_task_erred("w0", "x", "EXC", "TB", "s2")
    assert s.tasks["y"].exception == "EXC"
    s.stimulus_release_keys("c", ["y"], "s3")
    assert "y" not in s.tasks
    s.stimulus_release_keys("c", ["x"], "s4")
    assert not s.tasks


def test_retry_after_error_runs_again():
    s = make()
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s1")
    s.stimulus_task_erred("w0", "x", "EXC", "TB", "s2")
    out = s.stimulus_retry(["x"], "s3")
    assert computes(out) == ["x"]
    assert s.tasks["x"].exception is None
    out = s.stimulus_task_finished("w0", "x", 1, "int", "s4")
    assert reports(out) == [("x", "memory")]


def test_cancel_requester_not_told_about_its_own_keys():
    s = make()
    s.stimulus_add_client("other")
    s.stimulus_update_graph("c", [TaskSpec("x", 0, ()), TaskSpec("y", 0, ("x",))], ["x", "y"], "s1")
    s.stimulus_want_keys("other", ["x"], "s2")
    out = s.stimulus_cancel(["x"], None, "s3", requester="c")
    got = sorted((i.client, i.key) for i in out if isinstance(i, Report))
    # c learns only about the dependent; the other holder learns about x.
    assert got == [("c", "y"), ("other", "x")]
