"""User actors in the scheduler's state machine: placement, death, restart. No I/O."""
from actorrt.core.errors import ActorDeadError
from actorrt.scheduler.state import Compute, Free, Report, SchedulerState, TaskSpec
from actorrt.testing import poll_for


def make(nworkers=2, nthreads=1):
    s = SchedulerState(validate=True)
    s.stimulus_add_client("c")
    for i in range(nworkers):
        s.stimulus_add_worker(f"w{i}", nthreads, "add")
    return s


def computes(instrs):
    return [i for i in instrs if isinstance(i, Compute)]


def reports(instrs):
    return [(i.key, i.status) for i in instrs if isinstance(i, Report)]


def actor(key, max_restarts=0, **kw):
    return TaskSpec(key, f"spec-{key}", (), name="Counter",
                    actor={"max_concurrency": 1, "max_restarts": max_restarts}, **kw)


def create(s, spec, client="c"):
    """Submit an actor and let its worker report it built; returns its worker."""
    (c,) = computes(s.stimulus_update_graph(client, [spec], [spec.key], "create"))
    assert c.actor == spec.actor
    s.stimulus_task_finished(c.worker, spec.key, 256, "Actor", "built")
    assert s.tasks[spec.key].state == "memory"
    return c.worker


def test_actors_spread_across_workers():
    s = make(nworkers=3)
    homes = [create(s, actor(f"a{i}")) for i in range(6)]
    assert sorted(homes) == ["w0", "w0", "w1", "w1", "w2", "w2"]


def test_actor_placement_ignores_busy_task_slots():
    # w0 is saturated with tasks; the actor still goes to the worker with fewest actors.
    s = make(nworkers=2)
    create(s, actor("a0"))  # -> w0 (both empty; lowest seq)
    assert s.tasks["a0"].who_has == {s.workers["w0"]}
    out = s.stimulus_update_graph("c", [TaskSpec(f"t{i}", 0, ()) for i in range(4)],
                                  [f"t{i}" for i in range(4)], "tasks")
    assert len(computes(out)) == 4
    assert create(s, actor("a1")) == "w1"
    assert create(s, actor("a2")) in ("w0", "w1")


def test_actor_placement_counts_actors_being_created():
    s = make(nworkers=2)
    out = s.stimulus_update_graph("c", [actor("a"), actor("b")], ["a", "b"], "both")
    assert sorted(c.worker for c in computes(out)) == ["w0", "w1"]


def test_actor_restricted_to_workers():
    s = make(nworkers=3)
    for i in range(3):
        assert create(s, actor(f"a{i}", workers=("w2",))) == "w2"


def test_actor_restricted_to_absent_worker_waits_for_it():
    s = make(nworkers=1)
    out = s.stimulus_update_graph("c", [actor("a", workers=("w9",))], ["a"], "s")
    assert computes(out) == []
    out = s.stimulus_add_worker("w9", 1, "add")
    assert [(c.key, c.worker) for c in computes(out)] == [("a", "w9")]


def test_dead_actor_is_not_recomputed_without_restarts():
    s = make()
    w = create(s, actor("a"))
    out = s.stimulus_remove_worker(w, "died")
    assert computes(out) == []
    assert reports(out) == [("a", "erred")]
    ts = s.tasks["a"]
    assert ts.state == "erred"
    assert isinstance(ts.exception, ActorDeadError)
    assert "Counter" in str(ts.exception) and w in str(ts.exception)


def test_dead_actor_fails_waiting_dependents():
    s = make()
    w = create(s, actor("a"))
    # A task using the actor's handle, held up by another input still running.
    s.stimulus_update_graph("c", [TaskSpec("slow", 0, (), workers=("w1",) if w == "w0" else ("w0",))],
                            ["slow"], "s")
    s.stimulus_update_graph("c", [TaskSpec("use", 0, ("a", "slow"))], ["use"], "s2")
    assert s.tasks["use"].state == "waiting"
    out = s.stimulus_remove_worker(w, "died")
    assert ("use", "erred") in reports(out)
    assert isinstance(s.tasks["use"].exception, ActorDeadError)


def test_actor_restarts_on_another_worker_up_to_max_restarts():
    s = make(nworkers=3)
    w = create(s, actor("a", max_restarts=2))
    for attempt in (1, 2):
        out = s.stimulus_remove_worker(w, f"died-{attempt}")
        assert ("a", "lost") in reports(out)
        (c,) = computes(out)
        assert c.key == "a" and c.worker != w and c.actor["max_restarts"] == 2
        s.stimulus_add_worker(w, 1, "back")  # keep enough workers around
        s.stimulus_task_finished(c.worker, "a", 256, "Actor", "rebuilt")
        assert s.tasks["a"].restarts == attempt
        w = c.worker
    out = s.stimulus_remove_worker(w, "died-3")
    assert computes(out) == [] and reports(out) == [("a", "erred")]
    assert "max_restarts=2" in str(s.tasks["a"].exception)


def test_unlimited_restarts():
    s = make(nworkers=2)
    w = create(s, actor("a", max_restarts=-1))
    for i in range(5):
        out = s.stimulus_remove_worker(w, f"died-{i}")
        (c,) = computes(out)
        s.stimulus_add_worker(w, 1, "back")
        s.stimulus_task_finished(c.worker, "a", 256, "Actor", "rebuilt")
        w = c.worker
    assert s.tasks["a"].state == "memory"


def test_released_actor_is_freed_on_its_worker():
    s = make()
    w = create(s, actor("a"))
    out = s.stimulus_release_keys("c", ["a"], "drop")
    assert out == [Free(w, ["a"])]
    assert "a" not in s.tasks and not s.placement.actors


def test_plain_tasks_still_recomputed_when_worker_dies():
    s = make()
    (c,) = computes(s.stimulus_update_graph("c", [TaskSpec("x", 0, ())], ["x"], "s"))
    s.stimulus_task_finished(c.worker, "x", 8, "int", "done")
    out = s.stimulus_remove_worker(c.worker, "died")
    assert [k.key for k in computes(out)] == ["x"]


# --- the scheduler's actor directory: deferred "where is it now?" answers -----------------

import asyncio  # noqa: E402

from actorrt.core import Reply  # noqa: E402
from actorrt.scheduler.user_actors import ActorDirectory  # noqa: E402


def answer():
    got = []
    return Reply(lambda ok, value: got.append(value)), got


def test_directory_answers_at_once_when_known():
    s = make()
    d = ActorDirectory(s)
    w = create(s, actor("a"))
    reply, got = answer()
    d.status("a", "tcp://elsewhere", reply)
    assert got == [{"status": "ok", "address": w}]
    reply, got = answer()
    d.status("nope", w, reply)
    assert got[0]["status"] == "released"


def test_directory_waits_through_a_restart():
    async def main():
        s = make(nworkers=2)
        d = ActorDirectory(s, stale_timeout=0.01)
        w = create(s, actor("a", max_restarts=1))
        reply, got = answer()
        d.status("a", w, reply)  # the caller cannot reach w; the scheduler still believes in it
        assert got == [] and d.waiters["a"][0][2] is not None
        (c,) = computes(s.stimulus_remove_worker(w, "died"))
        d.wake()
        # Restarting: no give-up timer is armed, so nothing can declare it dead meanwhile.
        assert got == [] and d.waiters["a"][0][2] is None
        s.stimulus_task_finished(c.worker, "a", 256, "Actor", "rebuilt")
        d.wake()
        assert got == [{"status": "ok", "address": c.worker}] and not d.waiters
    asyncio.run(main())


def test_directory_reports_death_and_gives_up_on_silent_worker():
    async def main():
        s = make(nworkers=2)
        d = ActorDirectory(s, stale_timeout=0.01)
        w = create(s, actor("a"))
        reply, got = answer()
        d.status("a", w, reply)
        s.stimulus_remove_worker(w, "died")
        d.wake()
        assert got[0]["status"] == "dead" and "died with its worker" in got[0]["reason"]
        w2 = create(s, actor("b"))
        reply, got = answer()
        d.status("b", w2, reply)
        await poll_for(lambda: got)  # (the stale timer fires on this loop)
        assert got[0]["status"] == "dead" and "not answered" in got[0]["reason"]
        assert not d.waiters
    asyncio.run(main())


def test_directory_refuses_taken_names():
    s = make()
    d = ActorDirectory(s)
    named = TaskSpec("named-actor-x", "spec", (), name="C",
                     actor={"max_concurrency": 1, "max_restarts": 0, "name": "x"})
    specs, wanted, refused = d.refuse_taken_names("c", [named], ["named-actor-x"])
    assert specs == [named] and refused == []
    create(s, named)
    specs, wanted, refused = d.refuse_taken_names("c2", [named], ["named-actor-x"])
    assert specs == [] and wanted == []
    assert refused[0].client == "c2" and refused[0].status == "erred"
    assert "already exists" in str(refused[0].info["exception"])
    again = named._replace(actor={**named.actor, "get_if_exists": True})
    assert d.refuse_taken_names("c2", [again], ["named-actor-x"])[0] == [again]
