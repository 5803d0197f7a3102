"""Lone tasks a client runs on a worker itself, the scheduler's side: its state machine
fed the client's ``direct_started``, relayed reports and declines, with no sockets."""

import pytest

from actorrt.scheduler.direct_runs import DIRECT_RUN, direct_declined, direct_erred, direct_finished, direct_started
from actorrt.scheduler.instructions import Compute, Free, Report
from actorrt.scheduler.state import SchedulerState, TaskSpec


def make(nworkers=2):
    s = SchedulerState(saturation=2.0, validate=True)
    for client in ("c", "d"):
        s.stimulus_add_client(client)
    for i in range(nworkers):
        s.stimulus_add_worker(f"w{i}", 1, "add")
    return s


def lone(key="a"):
    return TaskSpec(key, f"spec-{key}", ())


def of(kind, out):
    return [i for i in out if isinstance(i, kind)]


def test_a_started_run_is_processing_on_its_worker_without_a_compute():
    s = make()
    out = direct_started(s, "c", lone(), "w1", "s1")
    assert out == []  # (the client sent the task itself)
    ts = s.tasks["a"]
    assert (ts.state, ts.processing_on.address, ts.run_id) == ("processing", "w1", DIRECT_RUN)
    assert ts in s.workers["w1"].processing and ts.who_wants == {"c"}
    assert [e[1:3] for e in s.story("a")] == [("released", "processing")]


def test_the_relayed_report_puts_it_in_memory_and_tells_only_the_other_wanters():
    s = make()
    direct_started(s, "c", lone(), "w1", "s1")
    s.stimulus_want_keys("d", ["a"], "s2")
    out = direct_finished(s, "c", "w1", "a", 8, "int", "s3", 0.001)
    assert [(r.client, r.key, r.status) for r in of(Report, out)] == [("d", "a", "memory")]
    ts = s.tasks["a"]
    assert ts.state == "memory" and [w.address for w in ts.who_has] == ["w1"] and ts.nbytes == 8
    assert not s.workers["w1"].processing
    assert s.stimulus_release_keys("c", ["a"], "s4") == []  # (d still wants it)
    assert s.stimulus_release_keys("d", ["a"], "s5") == [Free("w1", ["a"])]


def test_a_relayed_error_fails_the_task_like_a_workers_own_report():
    s = make()
    direct_started(s, "c", lone(), "w0", "s1")
    out = direct_erred(s, "c", "w0", "a", "boom", "tb", "s2")
    assert of(Report, out) == []  # (the client knows)
    ts = s.tasks["a"]
    assert (ts.state, ts.exception, ts.traceback) == ("erred", "boom", "tb")


def test_a_decline_places_the_task_as_any_other():
    s = make()
    direct_started(s, "c", lone(), "w1", "s1")
    out = direct_declined(s, "w1", "a", "s2")
    (c,) = of(Compute, out)
    ts = s.tasks["a"]
    assert ts.state == "processing" and ts.run_id != DIRECT_RUN and c.worker == ts.processing_on.address
    # A late copy of the decline, or one from another worker, changes nothing now.
    assert direct_declined(s, "w1", "a", "s3") == []
    assert direct_declined(s, "w0", "a", "s4") == []
    # Nor does a late report of the direct run: the scheduler's own run stands.
    assert direct_finished(s, "c", c.worker, "a", 8, "int", "s5") == []
    assert s.tasks["a"].state == "processing"


def test_a_known_key_or_a_gone_worker_makes_it_an_ordinary_submission():
    s = make()
    s.stimulus_update_graph("d", [lone()], ["a"], "s1")  # d computes a already
    on = s.tasks["a"].processing_on.address
    other = "w0" if on == "w1" else "w1"
    out = direct_started(s, "c", lone(), other, "s2")
    assert of(Compute, out) == [] and s.tasks["a"].who_wants == {"c", "d"}
    # The run the worker made anyway is freed when its report is relayed.
    out = direct_finished(s, "c", other, "a", 8, "int", "s3")
    assert Free(other, ["a"]) in out and s.tasks["a"].processing_on.address == on
    out = direct_started(s, "c", lone("b"), "gone", "s4")
    (c,) = of(Compute, out)
    assert c.key == "b" and s.tasks["b"].run_id != DIRECT_RUN


NOT_LONE = {"deps": ("x",), "retries": 1, "workers": ("w1",), "resources": {"GPU": 1}, "actor": True}


@pytest.mark.parametrize("field", sorted(NOT_LONE))
def test_only_a_lone_task_may_run_directly(field):
    s = make()
    s.stimulus_update_graph("c", [lone("x")], ["x"], "s0")
    direct_started(s, "c", lone()._replace(**{field: NOT_LONE[field]}), "w1", "s1")
    assert s.tasks["a"].run_id != DIRECT_RUN


def test_a_released_direct_run_frees_its_value_when_the_report_comes():
    s = make()
    direct_started(s, "c", lone(), "w1", "s1")
    out = s.stimulus_release_keys("c", ["a"], "s2")
    assert Free("w1", ["a"]) in out and "a" not in s.tasks
    out = direct_finished(s, "c", "w1", "a", 8, "int", "s3")
    assert out == [Free("w1", ["a"])]


def test_the_worker_dying_reruns_a_direct_run_elsewhere():
    s = make()
    direct_started(s, "c", lone(), "w1", "s1")
    out = s.stimulus_remove_worker("w1", "s2")
    (c,) = of(Compute, out)
    assert c.worker == "w0" and s.tasks["a"].run_id != DIRECT_RUN
    assert direct_declined(s, "w1", "a", "s3") == []  # (the client's channel broke too)
