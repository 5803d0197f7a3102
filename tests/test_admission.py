"""Admission control: graphs too large for the scheduler are refused whole, and a client
that submits faster than the cluster computes is slowed down (scheduler/admission.py,
the client's FutureTable window)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from actorrt import Client, GraphTooLargeError, LocalCluster, runtime, wait
from actorrt.client.futures import FutureTable
from actorrt.scheduler.admission import Admission, default_max_tasks, default_max_unfinished
from actorrt.scheduler.state import SchedulerState, TaskSpec
from actorrt.testing import poll_for, wait_until

pytestmark = pytest.mark.timeout(60)


# --- the scheduler's limits (pure) ----------------------------------------------------

def test_check_refuses_past_max_tasks_naming_the_sizes():
    a = Admission(max_tasks=100, max_unfinished=10)
    a.check(60, 40)  # exactly at the limit: fine
    with pytest.raises(GraphTooLargeError, match=r"41 new tasks.*holds 60 tasks.*limit is 100"):
        a.check(60, 41)


def test_acknowledgements_wait_for_the_backlog_and_keep_their_order():
    a = Admission(max_tasks=100, max_unfinished=10)
    acked: list[str] = []
    a.admit(10, lambda: acked.append("a"))  # at the limit: at once
    a.admit(11, lambda: acked.append("b"))  # over: held
    a.admit(3, lambda: acked.append("c"))   # under, but behind a held one: held
    assert acked == ["a"] and a.waiting == 2
    a.progress(11)
    assert acked == ["a"]
    a.progress(10)
    assert acked == ["a", "b", "c"] and a.waiting == 0


def test_release_all_answers_everyone():
    a = Admission(max_tasks=100, max_unfinished=1)
    acked: list[int] = []
    for i in range(3):
        a.admit(5, lambda i=i: acked.append(i))
    a.release_all()
    assert acked == [0, 1, 2] and a.waiting == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match="max_tasks must be a positive integer"):
        Admission(max_tasks=bad)
    with pytest.raises(ValueError, match="max_unfinished must be a positive integer"):
        Admission(max_unfinished=bad)


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACTORRT_MAX_TASKS", "1234")
    monkeypatch.setenv("ACTORRT_MAX_UNFINISHED", "77")
    assert default_max_tasks() == 1234 and default_max_unfinished() == 77
    monkeypatch.setenv("ACTORRT_MAX_TASKS", "lots")
    with pytest.raises(ValueError, match="ACTORRT_MAX_TASKS must be a positive integer, got 'lots'"):
        default_max_tasks()
    monkeypatch.delenv("ACTORRT_MAX_TASKS")
    assert default_max_tasks() >= 100_000  # from this machine's memory


# --- the scheduler's count of work ahead ------------------------------------------------

def test_unfinished_counts_work_ahead_through_a_life_cycle():
    s = SchedulerState(saturation=1.0, validate=True)  # (validate checks the count each step)
    s.stimulus_add_client("c")
    s.stimulus_add_worker("w", 1, "add")
    s.stimulus_update_graph("c", [TaskSpec(f"t{i}", b"spec", ()) for i in range(3)], ["t0", "t1", "t2"], "s")
    assert s.unfinished == 3
    s.stimulus_long_running("w", "t0", "secede")  # still work ahead
    assert s.unfinished == 3
    s.stimulus_task_finished("w", "t0", 8, "int", "done")
    assert s.unfinished == 2
    s.stimulus_release_keys("c", ["t1", "t2"], "drop")
    assert s.unfinished == 0


def test_a_graph_in_parts_keeps_inputs_that_only_a_later_part_wants():
    s = SchedulerState(saturation=1.0, validate=True)
    s.stimulus_add_client("c")
    s.stimulus_add_worker("w", 1, "add")
    s.stimulus_update_graph("c", [TaskSpec("a", b"spec", ())], [], "part-1", more=True)
    assert "a" in s.tasks  # not forgotten: its dependent is on its way
    s.stimulus_update_graph("c", [TaskSpec("b", b"spec", ("a",))], ["b"], "part-2")
    assert s.tasks["a"].state == "processing" and s.tasks["b"].state == "waiting"
    # A part that ends a graph forgets what nothing wants, as one whole graph would.
    s.stimulus_update_graph("c", [TaskSpec("x", b"spec", ())], [], "part-3", more=True)
    s.stimulus_update_graph("c", [TaskSpec("y", b"spec", ())], [], "part-4")
    assert "x" not in s.tasks and "y" not in s.tasks


def test_a_client_gone_mid_graph_leaves_nothing_behind():
    s = SchedulerState(saturation=1.0, validate=True)
    s.stimulus_add_client("c")
    s.stimulus_update_graph("c", [TaskSpec("a", b"spec", ())], [], "part-1", more=True)
    s.stimulus_remove_client("c", "gone")
    assert not s.tasks


# --- the client's window (pure) ----------------------------------------------------------

def outbox_table(window=10, backlog=20, chunk=4):
    table = FutureTable(window=window, backlog=backlog)
    table.chunk = chunk
    sent: list = []
    table._send = sent.extend  # (attach() without a loop: flush by hand)
    return table, sent


def test_tasks_go_in_chunks_up_to_the_window_and_the_rest_waits_in_order():
    table, sent = outbox_table()
    with table.lock:
        for i in range(15):
            table.queue_locked("update_graph", (f"spec{i}", f"k{i}"))
        table.queue_locked("release_keys", "k0")  # must not overtake the submission of k0..k14
    table._flush_window()  # (what the loop runs each turn)
    assert [(op, len(items)) for op, items in sent] == [
        ("update_graph_more", 4), ("update_graph_more", 4), ("update_graph_more", 2)]
    assert table.unacknowledged == 10 and table.queued_tasks == 5
    sent.clear()
    table.acknowledged(4)
    assert [(op, len(items)) for op, items in sent] == [("update_graph_more", 4)] and table.queued_tasks == 1
    sent.clear()
    table.acknowledged(10)
    assert [(op, len(items)) for op, items in sent] == [("update_graph", 1), ("release_keys", 1)]
    assert [item[1] for item in sent[0][1]] == ["k14"]
    assert table.queued_tasks == 0


def test_an_explicit_flush_sends_everything_window_or_not():
    # (Callers flush before a message that must follow what was queued: publish_dataset,
    # who_has, restart. Held back by the window, the scheduler would not know the keys.)
    table, sent = outbox_table()
    with table.lock:
        for i in range(15):
            table.queue_locked("update_graph", (f"spec{i}", f"k{i}"))
        table.queue_locked("release_keys", "k0")
    table.flush()
    assert [(op, len(items)) for op, items in sent] == [
        ("update_graph_more", 4), ("update_graph_more", 4), ("update_graph_more", 4), ("update_graph", 3),
        ("release_keys", 1)]
    assert table.queued_tasks == 0 and table.unacknowledged == 15


def test_a_thread_waits_for_room_until_tasks_are_sent():
    table, sent = outbox_table(window=5, backlog=3, chunk=5)
    with table.lock:
        for i in range(10):
            table.queue_locked("update_graph", (f"spec{i}", f"k{i}"))
    table._loop = object()  # (a loop this thread does not run: waiting is allowed)
    returned = threading.Event()
    waiting = threading.Thread(target=lambda: (table.wait_for_room(), returned.set()))
    waiting.start()
    wait_until(lambda: table._room._waiters, timeout=10)  # (CPython's Condition: it waits)
    assert not returned.is_set()   # 10 queued > backlog 3
    table._flush_window()         # 5 go: 5 still queued, it waits on
    assert table.queued_tasks == 5
    table.acknowledged(5)          # the next 5 go: 0 queued
    assert returned.wait(10)
    waiting.join(10)


def test_closing_wakes_a_waiting_thread():
    table, _ = outbox_table(window=1, backlog=1)
    with table.lock:
        for i in range(5):
            table.queue_locked("update_graph", (f"spec{i}", f"k{i}"))
    table._loop = object()
    waiting = threading.Thread(target=table.wait_for_room)
    waiting.start()
    table.close()
    waiting.join(10)
    assert not waiting.is_alive()


def test_the_loop_is_asked_to_flush_only_once_the_lock_is_let_go():
    """Asking while the lock is held would wake the loop only for it to wait for the
    lock, and be woken again: the request waits for the outermost let-go."""
    async def main():
        loop = asyncio.get_running_loop()
        table = FutureTable()
        sent: list = []
        table.attach(loop, sent.extend)

        def submit_from_a_thread():
            before = runtime.posts_made()
            with table.lock:
                with table.lock:  # (reentrant: an inner let-go asks nothing yet)
                    table.queue_locked("update_graph", ("spec", "k"))
                held = runtime.posts_made() - before
            return held, runtime.posts_made() - before

        assert await loop.run_in_executor(None, submit_from_a_thread) == (0, 1)
        await poll_for(lambda: sent, timeout=10)
        assert sent == [["update_graph", [("spec", "k")]]]
    asyncio.run(main())


# --- on a cluster ----------------------------------------------------------------------------

def inc(x):
    return x + 1


GATE = threading.Event()


def gated(x):
    GATE.wait(30)
    return x


STARTED = threading.Event()


def started_then_gated(x):
    STARTED.set()
    return gated(x)


def test_a_submission_larger_than_the_scheduler_holds_is_refused_at_the_call():
    with Client(processes=False, n_workers=1, threads_per_worker=1, max_tasks=1_000,
                dashboard_address=None) as client:
        with pytest.raises(GraphTooLargeError, match=r"1,001 tasks.*limit of 1,000"):
            client.map(inc, range(1_001))
        assert not client.cluster.scheduler.state.tasks  # nothing of it was sent
        assert client.gather(client.map(inc, range(1_000))) == list(range(1, 1_001))  # still serving


def test_a_graph_past_what_the_scheduler_holds_for_all_clients_errs_whole():
    with LocalCluster(1, threads_per_worker=1, processes=False, max_tasks=1_000, dashboard_address=None) as cluster, \
            Client(cluster) as client, Client(cluster, set_as_default=False) as other:
        held = other.map(inc, range(800))
        wait(held)
        futures = client.map(inc, range(1_000, 1_300))  # 300 + 800 > 1,000: the scheduler refuses
        with pytest.raises(GraphTooLargeError, match="300 new tasks.*holds 800"):
            futures[0].result(timeout=10)
        assert all(f.status == "error" for f in futures)
        assert len(cluster.scheduler.state.tasks) == 800  # nothing of the refused graph stayed
        assert other.gather(held) == list(range(1, 801))
        del futures
        assert client.gather(client.map(inc, range(100))) == list(range(1, 101))


def test_a_client_faster_than_the_cluster_is_held_back(monkeypatch):
    monkeypatch.setenv("ACTORRT_SUBMIT_WINDOW", "20")
    monkeypatch.setenv("ACTORRT_SUBMIT_BACKLOG", "40")
    GATE.clear()
    with Client(processes=False, n_workers=1, threads_per_worker=1, max_unfinished=50,
                dashboard_address=None) as client:
        client.table.chunk = 10
        scheduler = client.cluster.scheduler
        result: list = []
        submitting = threading.Thread(target=lambda: result.extend(client.map(gated, range(300))))
        submitting.start()
        try:
            # The scheduler holds back its acknowledgement once 50 tasks wait; the client
            # then has its window out and its backlog full, and the map waits for room.
            wait_until(lambda: scheduler.admission.waiting >= 1 and client.table.queued_tasks > 40, timeout=20)
            assert submitting.is_alive()
            assert scheduler.state.unfinished <= 50 + 20  # the limit, plus at most one window
        finally:
            GATE.set()
        submitting.join(30)
        assert not submitting.is_alive()
        assert client.gather(result) == list(range(300))
        assert scheduler.state.unfinished == 0


def test_a_lone_tasks_acknowledgement_rides_on_its_report():
    """A small submission is told, not asked: no reply message; the scheduler's count of
    what it took comes with the task's report (the window is still paced by it)."""
    GATE.clear()
    STARTED.clear()
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        scheduler = client.cluster.scheduler
        try:
            f = client.submit(started_then_gated, 1, pure=False)
            assert STARTED.wait(10)  # (a reply, had there been one, came on the turn the task was sent)
            assert client.table.unacknowledged == 1  # taken, not yet acknowledged: no reply came
            assert not scheduler.__dict__.get("_open_replies")  # and none is left open for it
        finally:
            GATE.set()
        assert f.result(timeout=10) == 1
        wait_until(lambda: client.table.unacknowledged == 0, timeout=10)


def test_a_table_past_half_its_window_asks_for_its_acknowledgement():
    table = FutureTable(window=10)
    table.unacknowledged = 5
    assert table.may_ack_later()
    table.unacknowledged = 6
    assert not table.may_ack_later()
    table.connection_lost()
    assert table.unacknowledged == 0


def test_a_graph_sent_in_parts_computes_as_one():
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        client.table.chunk = 7  # a 200-node chain and tree arrive in ~30 parts
        dsk = {("x", 0): 1}
        for i in range(1, 100):
            dsk[("x", i)] = (inc, ("x", i - 1))
        dsk.update({("y", i): (inc, ("x", i)) for i in range(100)})
        dsk["total"] = (sum, [("y", i) for i in range(100)])
        assert client.get(dsk, "total") == sum(range(2, 102))
        assert client.cluster.scheduler.state.unfinished == 0
