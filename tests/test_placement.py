"""Worker choice and occupancy, without a state machine around them: no sockets, no sleeps."""
import pytest

from actorrt.scheduler.placement import Placement
from actorrt.scheduler.state import TaskState, grow


def task(key, *, deps=(), nbytes=0, workers=None, allow_other_workers=False, actor=False,
         priority=0):
    ts = TaskState(key, f"spec-{key}", key)
    ts.state = "queued"
    ts.priority = (priority,)
    ts.nbytes = nbytes
    ts.actor = actor
    ts.allow_other_workers = allow_other_workers
    ts.workers = set(workers) if workers is not None else None
    for dep in deps:
        ts.dependencies = grow(ts.dependencies, dep)
    return ts


def held(key, nbytes, *holders):
    """A task in memory on ``holders``."""
    ts = task(key, nbytes=nbytes)
    ts.state = "memory"
    for ws in holders:
        ts.who_has = ts.who_has | {ws}
        ws.has_what.add(ts)
    return ts


def placement(*nthreads, saturation=1.0):
    p = Placement(saturation)
    for i, n in enumerate(nthreads):
        p.add_worker(f"w{i}", n)
    return p


def start(p, ws, ts):
    """``ts`` starts on ``ws``, recorded on both sides as the state machine does."""
    p.occupy(ws, ts)
    ts.state, ts.processing_on = "processing", ws


def stop(p, ws, ts):
    p.vacate(ws, ts)
    ts.state, ts.processing_on = "memory", None


def fill(p, address, n):
    for i in range(n):
        start(p, p.workers[address], task(f"{address}-filler-{i}"))


def check(ok, message):
    if not ok:
        raise AssertionError(message)


# --- least occupied ---------------------------------------------------------------
def test_least_occupied_worker_first_and_earliest_joined_on_ties():
    p = placement(2, 2, 2, saturation=2.0)
    assert p.choose(task("t")).address == "w0"  # all empty: the first to join
    fill(p, "w0", 1)
    fill(p, "w1", 2)
    assert p.choose(task("t")).address == "w2"
    fill(p, "w2", 3)
    assert p.choose(task("t")).address == "w0"
    p.validate(check)


def test_occupancy_is_per_thread():
    p = placement(1, 4, saturation=2.0)
    fill(p, "w1", 2)  # 2 tasks on 4 threads: half as busy as 1 task on 1 thread
    fill(p, "w0", 1)
    assert p.choose(task("t")).address == "w1"


def test_a_full_worker_leaves_the_free_list_and_comes_back_when_vacated():
    p = placement(1, 1)
    w0 = p.workers["w0"]
    running = task("r")
    start(p, w0, running)
    assert list(p.idle) == [p.workers["w1"]]
    fill(p, "w1", 1)
    assert not p.idle
    stop(p, w0, running)
    assert list(p.idle) == [w0] and not w0.processing
    p.validate(check)


def test_a_worker_over_capacity_stays_full_until_it_is_under():
    # The adaptive saturation may lower capacity below what a worker already runs.
    p = placement(1, saturation=3.0)
    w0 = p.workers["w0"]
    tasks = [task(f"t{i}") for i in range(3)]
    for ts in tasks:
        start(p, w0, ts)
    p.set_saturation(1.0)
    stop(p, w0, tasks[0])
    assert not p.idle  # 2 running, capacity 1
    p.validate(check)
    stop(p, w0, tasks[1])
    assert not p.idle
    stop(p, w0, tasks[2])
    assert list(p.idle) == [w0]


def test_a_seceded_task_gives_its_slot_back_but_keeps_running():
    p = placement(1)
    w0 = p.workers["w0"]
    parent = task("parent")
    start(p, w0, parent)
    assert not p.idle
    p.hold_no_slot(w0, parent)
    assert list(p.idle) == [w0] and parent in w0.processing and w0.busy == 0
    p.validate(check)


def test_an_actor_holds_no_slot():
    p = placement(1)
    w0 = p.workers["w0"]
    start(p, w0, task("a", actor=True))
    assert w0.busy == 0 and list(p.idle) == [w0]


# --- data locality ----------------------------------------------------------------
def test_the_holder_of_most_input_bytes_wins_over_a_less_occupied_worker():
    p = placement(1, 1, 1, saturation=4.0)
    w0, w1, w2 = (p.workers[a] for a in ("w0", "w1", "w2"))
    fill(p, "w1", 2)
    small, big = held("small", 10, w0, w2), held("big", 1000, w1)
    assert p.choose(task("t", deps=(small, big))).address == "w1"
    # Two small inputs on w0 still weigh less than one big one on w1.
    other = held("other", 10, w0)
    assert p.choose(task("t", deps=(small, other, big))).address == "w1"


def test_inputs_without_a_size_are_counted():
    p = placement(1, 1, saturation=2.0)
    w0, w1 = p.workers["w0"], p.workers["w1"]
    fill(p, "w1", 1)
    a, b = held("a", 0, w1), held("b", 0, w0, w1)
    assert p.choose(task("t", deps=(a, b))).address == "w1"  # holds both: busier, still first


def test_among_holders_of_as_many_bytes_the_less_occupied():
    p = placement(1, 1, saturation=2.0)
    w0, w1 = p.workers["w0"], p.workers["w1"]
    fill(p, "w0", 1)
    shared = held("shared", 100, w0, w1)
    assert p.choose(task("t", deps=(shared,))).address == "w1"


def test_a_full_holder_is_passed_over_for_the_least_occupied():
    p = placement(1, 1, 1)
    w0 = p.workers["w0"]
    fill(p, "w0", 1)
    fill(p, "w1", 1)
    data = held("data", 10**9, w0)
    assert p.choose(task("t", deps=(data,))).address == "w2"


# --- restrictions -----------------------------------------------------------------
def test_restricted_task_goes_to_its_workers_even_when_full():
    p = placement(1, 1, 1)
    assert p.choose(task("t", workers=["w1", "w2"])).address == "w1"
    fill(p, "w1", 1)
    assert p.choose(task("t", workers=["w1", "w2"])).address == "w2"
    fill(p, "w2", 1)
    # Every allowed worker is full: it still goes to one of them, not to w0.
    assert p.choose(task("t", workers=["w1", "w2"])).address == "w1"


def test_restricted_task_prefers_a_free_worker_to_an_equally_occupied_full_one():
    p = placement(1, 1, 3, saturation=1.5)  # capacities 1, 1, 4
    fill(p, "w1", 1)  # full, occupancy 1.0
    fill(p, "w2", 3)  # one slot left, occupancy 1.0
    assert p.choose(task("t", workers=["w1", "w2"])).address == "w2"


def test_restricted_to_absent_workers():
    p = placement(1, 1)
    fill(p, "w0", 1)
    assert p.choose(task("t", workers=["w9"])) is None
    assert p.choose(task("t", workers=["w9"], allow_other_workers=True)).address == "w1"


def test_allow_other_workers_still_prefers_the_allowed_one():
    p = placement(1, 1)
    assert p.choose(task("t", workers=["w1"], allow_other_workers=True)).address == "w1"


def test_pinned_workers_gone():
    p = placement(1)
    assert p.pinned_workers_gone(task("t", workers=["w9"]))
    assert not p.pinned_workers_gone(task("t", workers=["w9", "w0"]))
    assert not p.pinned_workers_gone(task("t", workers=["w9"], allow_other_workers=True))
    assert not p.pinned_workers_gone(task("t"))


# --- actors -------------------------------------------------------------------------
def test_actors_spread_over_workers_whatever_their_load():
    p = placement(1, 1, 1)
    fill(p, "w1", 1)  # busier, but that is no reason to avoid it for an actor
    a0, a1, a2 = (task(key, actor=True) for key in ("a0", "a1", "a2"))
    homes = []
    for a in (a0, a1, a2):
        ws = p.choose(a)
        p.actors.add(a)
        start(p, ws, a)
        homes.append(ws.address)
    assert homes == ["w0", "w2", "w1"]  # one each; among empty ones the least occupied
    stop(p, p.workers["w0"], a0)  # a0 built: held on w0 now, no longer running there
    p.add_replica(a0, p.workers["w0"])
    p.actors.discard(a2)  # forgotten: w1 hosts none
    assert p.choose(task("a3", actor=True)).address == "w1"  # w0 still hosts a0
    p.actors.discard(a0)
    assert p.choose(task("a4", actor=True)).address == "w0"  # w0, w1 host none: less occupied


def test_actor_restricted_to_absent_workers_has_nowhere_to_go():
    p = placement(1)
    assert p.choose(task("a", actor=True, workers=["w9"])) is None
    assert p.choose(task("a", actor=True, workers=["w9"], allow_other_workers=True)).address == "w0"
    assert Placement().choose(task("a", actor=True)) is None  # no worker at all


# --- the queue ------------------------------------------------------------------------
def test_next_placement_by_priority_while_slots_are_free():
    p = placement(1, 1)
    low, high, mid = task("low", priority=3), task("high", priority=1), task("mid", priority=2)
    for ts in (low, high, mid):
        p.enqueue(ts)
    placed = []
    while (nxt := p.next_placement()) is not None:
        ts, ws = nxt
        start(p, ws, ts)
        placed.append((ts.key, ws.address))
    assert placed == [("high", "w0"), ("mid", "w1")]  # two slots: 'low' waits
    assert p.queued and p.queued[0][2] is low


def test_entries_of_tasks_no_longer_queued_are_skipped():
    p = placement(1)
    gone, ready = task("gone", priority=0), task("ready", priority=1)
    p.enqueue(gone)
    p.enqueue(ready)
    gone.state = "released"
    assert p.next_placement() == (ready, p.workers["w0"])


def test_unrunnable_task_waits_for_a_worker_it_may_run_on():
    p = placement(1)
    pinned = task("pinned", workers=["w1"])
    p.enqueue(pinned)
    assert p.next_placement() is None
    assert pinned in p.unrunnable and not p.queued
    p.add_worker("w2", 1)  # not one it may run on
    assert pinned in p.unrunnable
    p.add_worker("w1", 1)
    assert pinned not in p.unrunnable
    assert p.next_placement() == (pinned, p.workers["w1"])


def test_parked_actor_without_restrictions_goes_back_when_any_worker_joins():
    # An actor submitted before any worker joined is parked with no restriction at all;
    # only restricted tasks (or those allowed elsewhere) used to go back to the queue.
    p = Placement(1.0)
    actor = task("a", actor={"max_restarts": 0})
    assert p.choose(actor) is None
    p.park(actor)
    p.add_worker("w0", 1)
    assert actor not in p.unrunnable
    assert p.next_placement() == (actor, p.workers["w0"])


def test_validate_flags_a_parked_task_that_could_run_or_is_not_queued():
    p = placement(1)
    ts = task("t")
    p.park(ts)  # w0 is here and ts has no restriction: it would never be placed
    with pytest.raises(AssertionError, match="parked while a worker it may run on is here"):
        p.validate(check)
    pinned = task("pinned", workers=["w9"])
    pinned.state = "erred"  # left the queue but still parked: queued again, it would be skipped
    p.unrunnable = {pinned}
    with pytest.raises(AssertionError, match="parked but not queued"):
        p.validate(check)


def test_unparked_task_is_not_requeued():
    p = placement()
    ts = task("t", workers=["w1"])
    p.park(ts)
    p.unpark(ts)
    p.add_worker("w1", 1)
    assert p.next_placement() is None


# --- replicas ---------------------------------------------------------------------------
def test_replicas_are_kept_both_ways():
    p = placement(1, 1)
    w0, w1 = p.workers["w0"], p.workers["w1"]
    x, y = task("x"), task("y")
    p.add_replica(x, w0)
    p.add_replica(x, w1)
    p.add_replica(y, w0)
    assert x.who_has == {w0, w1} and w0.has_what == {x, y}
    p.drop_replica(x, w1)
    assert x.who_has == {w0} and not w1.has_what
    assert sorted(ws.address for ws in p.drop_replicas(x)) == ["w0"]
    assert not x.who_has and w0.has_what == {y}
    p.validate(check)


def test_a_gone_worker_takes_its_replicas_with_it():
    p = placement(1, 2)
    w0, w1 = p.workers["w0"], p.workers["w1"]
    only, shared = task("only"), task("shared")
    for ts, holders in ((only, [w0]), (shared, [w0, w1])):
        for ws in holders:
            p.add_replica(ts, ws)
    p.remove_worker("w0")
    assert sorted(ts.key for ts in p.drop_replicas_on(w0)) == ["only", "shared"]
    assert not only.who_has and shared.who_has == {w1} and not w0.has_what
    p.add_worker("w2", 1)
    fill(p, "w1", 1)  # half busy; the new w2 is idle
    # The copy that is left draws the task; the gone (and empty) w0 is not a candidate.
    assert p.choose(task("t", deps=(shared,))).address == "w1"
    p.validate(check)


# --- membership --------------------------------------------------------------------------
def test_removed_worker_is_never_chosen():
    p = placement(1, 1)
    fill(p, "w1", 1)
    ws = p.remove_worker("w0")
    assert ws is not None and ws.address == "w0"
    assert "w0" not in p.workers and ws not in p.idle
    assert p.choose(task("t", workers=["w0"])) is None
    assert p.next_placement() is None  # w1 is full, and w0 is gone
    assert p.remove_worker("w0") is None
    p.validate(check)


def test_adding_a_known_worker_changes_nothing():
    p = placement(1)
    fill(p, "w0", 1)
    assert p.add_worker("w0", 8) is None
    assert p.workers["w0"].nthreads == 1 and not p.idle


# --- capacity ----------------------------------------------------------------------------
def test_set_saturation_resizes_every_worker_and_keeps_the_order():
    p = placement(2, 1, saturation=1.0)
    fill(p, "w0", 2)
    assert list(p.idle) == [p.workers["w1"]]
    p.set_saturation(2.0)
    assert p.workers["w0"].capacity == 4 and p.workers["w1"].capacity == 2
    assert list(p.idle) == [p.workers["w1"], p.workers["w0"]]  # w0 is 100% occupied
    p.set_saturation(0.1)  # never below one task per worker
    assert p.workers["w0"].capacity == 1 and list(p.idle) == [p.workers["w1"]]
    p.validate(check)


def test_saturation_adapts_to_task_duration_only_when_not_given():
    fixed = Placement(3.0)
    fixed.observe_duration(1e-6)
    assert fixed.saturation == 3.0 and fixed.mean_duration is None
    p = Placement(None, queued_seconds=0.02, max_saturation=32)
    p.add_worker("w0", 1)
    p.observe_duration(1e-4)  # first sample: 0.02 / 1e-4 = 200, capped
    assert p.saturation == 32 and p.workers["w0"].capacity == 32
    for _ in range(100):
        p.observe_duration(0.05)
    assert p.saturation == 1.0 and p.workers["w0"].capacity == 1


# --- invariants -------------------------------------------------------------------------
def test_validate_catches_occupancy_changed_behind_the_ordering():
    p = placement(1)
    sneaky = task("sneaky")
    sneaky.state, sneaky.processing_on = "processing", p.workers["w0"]
    p.workers["w0"].processing.add(sneaky)  # full now, yet still listed as free
    with pytest.raises(AssertionError, match="not settled"):
        p.validate(check)


def test_tasks_share_one_empty_link_set_until_they_get_links():
    from actorrt.scheduler.task_state import NO_TASKS, shrink
    a, b = TaskState("a", None, "a"), TaskState("b", None, "b")
    assert a.dependencies is NO_TASKS and b.waiters is NO_TASKS   # no memory per task for none
    shrink(a.dependents, b)                                         # nothing to drop: no error
    a.dependents = grow(a.dependents, b)
    b.dependencies = grow(b.dependencies, a)
    assert a.dependents == {b} and b.dependencies == {a} and NO_TASKS == frozenset()
    shrink(a.dependents, b)
    assert a.dependents == set() and a.dependents is not NO_TASKS and not NO_TASKS
