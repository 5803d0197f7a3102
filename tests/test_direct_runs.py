"""Lone tasks a client runs on a worker itself, with no sockets: the scheduler's state
machine fed the client's ``direct_started``, relayed reports, declines and whole lives;
and the client folding a whole life's three messages into one."""

import pytest

from actorrt.client.direct import fold_lives
from actorrt.protocol import Finished
from actorrt.scheduler.direct_runs import (DIRECT_RUN, WHOLE_LIFE, direct_complete, direct_declined, direct_erred,
                                           direct_finished, direct_started)
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


# --- a whole life at once (direct_complete) ---------------------------------------------

def finished(key="a", nbytes=8, duration=0.001):
    return Finished(key, nbytes, "int", duration, DIRECT_RUN, None, 1.0, 2.0, 7)


def three_steps(s, client, spec, worker, sid):
    """What the client's three messages did before they were folded."""
    out = direct_started(s, client, spec, worker, sid)
    out += direct_finished(s, client, worker, spec.key, 8, "int", sid, 0.001)
    out += s.stimulus_release_keys(client, [spec.key], sid)
    return out


def per_key(out):
    """Instructions, one per key (however they were grouped), in a comparable order."""
    return sorted((type(i).__name__, i.worker, key) for i in out for key in getattr(i, "keys", [getattr(i, "key", None)]))


def outcome(s, out, keys):
    return (per_key(out), [e[:4] for e in s.story(*keys)], s.finished_total, s.unfinished,
            {k: (ts.state, sorted(w.address for w in ts.who_has)) for k, ts in s.tasks.items()},
            {a: len(w.processing) for a, w in s.workers.items()}, s.placement.mean_duration)


def test_a_whole_life_of_a_new_key_leaves_what_its_three_messages_leave():
    folded, stepped = make(), make()
    lives = [(lone("a"), "w1", finished("a")), (lone("b"), "w0", finished("b")), (lone("c"), "w1", finished("c"))]
    out = direct_complete(folded, "c", lives, "s1")
    ref = [i for spec, worker, _ in lives for i in three_steps(stepped, "c", spec, worker, "s1")]
    assert outcome(folded, out, "abc") == outcome(stepped, ref, "abc")
    assert sorted(out) == [Free("w0", ["b"]), Free("w1", ["a", "c"])] and folded.tasks == {}
    assert [e[1:3] for e in folded.story("a")] == list(WHOLE_LIFE)


def test_a_key_someone_else_computes_is_taken_as_the_three_messages():
    s = make()
    s.stimulus_update_graph("d", [lone()], ["a"], "s1")
    on = s.tasks["a"].processing_on.address
    other = "w0" if on == "w1" else "w1"
    out = direct_complete(s, "c", [(lone(), other, finished())], "s2")
    # d's run stands; the copy c's run left on the other worker goes.
    assert of(Free, out) == [Free(other, ["a"])] and of(Compute, out) == []
    ts = s.tasks["a"]
    assert (ts.state, ts.processing_on.address, ts.who_wants) == ("processing", on, {"d"})


def test_a_gone_worker_or_a_task_that_is_not_lone_is_taken_as_the_three_messages():
    folded, stepped = make(), make()
    for s in folded, stepped:
        s.stimulus_update_graph("c", [lone("x")], ["x"], "s0")
    lives = [(lone("a"), "gone", finished("a")), (lone("b")._replace(deps=("x",)), "w1", finished("b"))]
    out = direct_complete(folded, "c", lives, "s1")
    ref = [i for spec, worker, _ in lives for i in three_steps(stepped, "c", spec, worker, "s1")]
    assert outcome(folded, out, "ab") == outcome(stepped, ref, "ab")
    # Both became ordinary submissions (placed, then released): neither is left.
    assert of(Compute, out) and "a" not in folded.tasks and "b" not in folded.tasks


# --- the client folds a whole life -----------------------------------------------------------

def started(key, worker="w1"):
    return ["direct_started", [(f"spec-{key}", key, worker)]]


def done(key, worker="w1", erred=False):
    record = [key, 8, "int", 0.001, -1, None, 1.0, 2.0, 7]
    return ["direct_done", [(worker, [], [record]) if erred else (worker, [record], [])]]


def released(*keys):
    return ["release_keys", list(keys)]


def test_a_whole_life_folds_into_one_item():
    box = [started("a"), done("a"), released("a")]
    assert fold_lives(box) == [["direct_complete", [("spec-a", "w1", done("a")[1][0][1][0])]]]


def test_lives_interleaved_fold_and_what_is_not_whole_stays_in_order():
    box = [released("x"), started("a"), done("a"), started("b", "w0"), released("a", "y"), done("b", "w0")]
    out = fold_lives(box)
    assert out[0] == ["direct_complete", [("spec-a", "w1", done("a")[1][0][1][0])]]
    assert out[1:] == [released("x"), started("b", "w0"), released("y"), done("b", "w0")]


def test_a_message_naming_nothing_of_it_still_splits_the_stretch():
    # (A dependent's submission may name the key: the fold never reaches across one.)
    graph = ["update_graph", [("spec-d", "d")]]
    box = [started("a"), done("a"), graph, released("a")]
    assert fold_lives(box) == box
    box = [started("a"), done("a"), released("a"), graph, started("b"), done("b"), released("b")]
    assert [op for op, _ in fold_lives(box)] == ["direct_complete", "update_graph", "direct_complete"]


@pytest.mark.parametrize("box", [
    [started("a"), done("a")],                                  # not released yet
    [started("a"), done("a", erred=True), released("a")],       # an error goes the usual way
    [started("a"), done("a", worker="w0"), released("a")],      # a report from another worker
    [done("a"), released("a")],                                 # started in an earlier batch
    [started("a"), released("a"), done("a")],                   # released before its report
    [started("a"), done("a"), released("a"), started("a"), done("a"), released("a")],  # one key twice
    [],
])
def test_anything_but_one_whole_life_in_order_stays_as_it_is(box):
    assert fold_lives(box) == box
