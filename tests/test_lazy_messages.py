"""Messages that are not urgent wait for company: the client's lazily queued ones
(a release, a relayed report) go once per ``BATCH_INTERVAL`` while they keep coming,
and the scheduler holds a worker's lone ``free_keys`` for ``FREE_LINGER``; neither
changes the order in which anything arrives. And a Future's state settled by another
thread than the loop's (a direct run's answer) still runs its callbacks on the loop."""
from __future__ import annotations

import asyncio
import threading

import pytest

from actorrt.client import futures as client_futures
from actorrt.client.future import FutureState
from actorrt.client.futures import FutureTable
from actorrt.core import ActorRef
from actorrt.protocol import WORKER_ID
from actorrt.scheduler import outbox as scheduler_outbox
from actorrt.scheduler.outbox import Outbox
from actorrt.testing import poll_for

pytestmark = pytest.mark.timeout(30)


# --- the client's outbox ------------------------------------------------------------------

class Recorder:
    """A loop-attached FutureTable's deliveries, and how often the loop was woken."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.batches: list = []
        self.delivered = asyncio.Event()
        self.table = FutureTable()
        self.table.attach(loop, self.deliver)

    def deliver(self, box: list) -> None:
        self.batches.append([(op, list(items)) for op, items in box])
        self.delivered.set()

    async def next_batch(self) -> list:
        await asyncio.wait_for(self.delivered.wait(), 5)
        self.delivered.clear()
        return self.batches[-1]


def from_thread(fn, *args):
    """Run ``fn`` on another thread (as a user's thread queues), and wait for it."""
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join(5)


def test_the_first_lazy_message_goes_at_once_and_the_next_ones_together(monkeypatch):
    # (The interval's timer is fired by hand: no test waits on a clock.)
    monkeypatch.setattr(client_futures, "BATCH_INTERVAL", 3600.0)

    def tick(table):
        table._batch_timer.cancel()
        table._batch_tick()

    async def main():
        rec = Recorder(asyncio.get_running_loop())
        table = rec.table
        from_thread(table.queue, "release_keys", "a", True)
        assert await rec.next_batch() == [("release_keys", ["a"])]
        for key in ("b", "c", "d"):
            from_thread(table.queue, "release_keys", key, True)
        assert not table._flush_scheduled and table.lazy  # (queued; the loop was not asked)
        tick(table)
        assert await rec.next_batch() == [("release_keys", ["b", "c", "d"])]
        # An interval with nothing lazy: batching stops, and the next goes at once.
        tick(table)
        assert not table._batching and table._batch_timer is None
        from_thread(table.queue, "release_keys", "e", True)
        assert await rec.next_batch() == [("release_keys", ["e"])]
        assert len(rec.batches) == 3

    asyncio.run(main())


def test_a_lazy_submission_is_left_for_its_thread_until_the_tick(monkeypatch):
    """Its thread is about to take it for a direct run: the loop, woken, only starts the
    interval's timer, so it cannot send the submission first; nobody took it, it goes
    at the tick."""
    monkeypatch.setattr(client_futures, "BATCH_INTERVAL", 3600.0)

    async def main():
        rec = Recorder(asyncio.get_running_loop())
        table = rec.table
        from_thread(table.queue, "update_graph", ("spec", "k"), True)
        await poll_for(lambda: table._batch_timer is not None, timeout=5)  # (the loop ran)
        assert rec.batches == [] and not table._flush_scheduled
        with table.lock:  # (still there to be taken)
            assert table._outbox == [["update_graph", [("spec", "k")]]]
        table._batch_timer.cancel()
        table._batch_tick()
        assert await rec.next_batch() == [("update_graph", [("spec", "k")])]

    asyncio.run(main())


async def batching_with_b_queued() -> Recorder:
    """A table batching its lazy messages (the first, release "a", went at once), with
    release "b" queued lazily since, waiting for the interval's tick."""
    rec = Recorder(asyncio.get_running_loop())
    from_thread(rec.table.queue, "release_keys", "a", True)
    assert await rec.next_batch() == [("release_keys", ["a"])]
    from_thread(rec.table.queue, "release_keys", "b", True)
    return rec


def test_an_urgent_message_takes_the_lazy_ones_before_it_along(monkeypatch):
    monkeypatch.setattr(client_futures, "BATCH_INTERVAL", 10.0)

    async def main():
        rec = await batching_with_b_queued()
        from_thread(rec.table.queue, "update_graph", ("spec", "b"))
        assert await rec.next_batch() == [("release_keys", ["b"]), ("update_graph", [("spec", "b")])]

    asyncio.run(main())


def test_flush_soon_sends_what_waits_before_a_question(monkeypatch):
    monkeypatch.setattr(client_futures, "BATCH_INTERVAL", 10.0)

    async def main():
        rec = await batching_with_b_queued()
        from_thread(rec.table.flush_soon, True)  # (only a lazily queued task would go)
        assert not rec.table._flush_scheduled
        from_thread(rec.table.flush_soon)
        assert await rec.next_batch() == [("release_keys", ["b"])]

    asyncio.run(main())


def test_a_lone_unsent_submission_can_be_taken_for_a_direct_run():
    table = FutureTable()
    sent: list = []
    table._send = sent.extend
    spec = ["k", ["fn", None], [], "inc", 0, 0, None, False, False, None]
    with table.lock:
        table.queue_locked("release_keys", "old")
        table.queue_locked("update_graph", (spec, "k"))
        assert table.take_lone("k", "tcp://w:1") is spec
        table.queue_locked("release_keys", "k")
    table._flush_window()
    assert sent == [["release_keys", ["old"]], ["direct_started", [(spec, "k", "tcp://w:1")]],
                    ["release_keys", ["k"]]]
    assert table.queued_tasks == 0
    with table.lock:
        table.queue_locked("update_graph", (spec, "k"))
        table.queue_locked("update_graph", (["j", *spec[1:]], "j"))
        assert table.take_lone("k", "tcp://w:1") is None  # (not alone in its message)
        assert table.take_lone("gone", "tcp://w:1") is None


@pytest.mark.parametrize("index, value", [(2, ["dep"]), (5, 1), (6, ["tcp://w:2"]), (8, True), (9, {"GPU": 1})])
def test_only_a_task_that_needs_nothing_from_the_scheduler_is_taken(index, value):
    table = FutureTable()
    spec = ["k", ["fn", None], [], "inc", 0, 0, None, False, False, None]
    spec[index] = value
    with table.lock:
        table.queue_locked("update_graph", (spec, "k"))
        assert table.take_lone("k", "tcp://w:1") is None
    assert table._outbox == [["update_graph", [(spec, "k")]]]


# --- the scheduler's outbox ------------------------------------------------------------------

class FakeHost:
    def __init__(self) -> None:
        self.told: list = []
        self.flushes = 0

    def tell(self, ref, op, **fields):
        self.told.append((ref.address, op, fields))

    def flush_pending(self):
        self.flushes += 1


def fields(ref, op, items):
    return {scheduler_outbox.FIELD[op]: items}


def worker(address):
    return ActorRef(address, WORKER_ID)


def test_a_workers_lone_frees_linger_then_go_together(monkeypatch):
    monkeypatch.setattr(scheduler_outbox, "FREE_LINGER", 0.05)

    async def main():
        out = Outbox(fields)
        out.host = host = FakeHost()
        out.send(worker("w1"), "free_keys", "a")
        out.send(ActorRef("c", "client"), "report", "r1")
        await asyncio.sleep(0)
        assert host.told == [("c", "report", {"msgs": ["r1"]})] and not out.idle
        out.send(worker("w1"), "free_keys", "b")
        await asyncio.sleep(0)
        assert len(host.told) == 1
        await poll_for(lambda: len(host.told) == 2, timeout=5)  # (FREE_LINGER on)
        assert host.told[1:] == [("w1", "free_keys", {"keys": ["a", "b"]})] and out.idle

    asyncio.run(main())


def test_held_frees_go_before_the_next_message_to_that_worker(monkeypatch):
    monkeypatch.setattr(scheduler_outbox, "FREE_LINGER", 10.0)

    async def main():
        out = Outbox(fields)
        out.host = host = FakeHost()
        out.send(worker("w1"), "free_keys", "a")  # freed ...
        await asyncio.sleep(0)
        out.send(worker("w1"), "compute", "a")    # ... and placed there again: the free first
        await asyncio.sleep(0)
        assert host.told == [("w1", "free_keys", {"keys": ["a"]}), ("w1", "compute", {"tasks": ["a"]})]
        out.send(worker("w2"), "free_keys", "b")
        await asyncio.sleep(0)
        out.send_held("w2")  # (before a data move asks w2 for copies)
        assert host.told[-1] == ("w2", "free_keys", {"keys": ["b"]})
        out.send(worker("w3"), "free_keys", "c")
        await asyncio.sleep(0)
        out.forget("w3")  # (w3 is gone)
        out.close()
        assert out.idle and all(t[0] != "w3" for t in host.told)

    asyncio.run(main())


def test_many_held_frees_go_without_waiting(monkeypatch):
    monkeypatch.setattr(scheduler_outbox, "FREE_LINGER", 10.0)
    monkeypatch.setattr(scheduler_outbox, "FREE_LINGER_KEYS", 3)

    async def main():
        out = Outbox(fields)
        out.host = host = FakeHost()
        for key in "abc":
            out.send(worker("w1"), "free_keys", key)
            await asyncio.sleep(0)
        assert host.told == [("w1", "free_keys", {"keys": ["a", "b", "c"]})]
        out.close()

    asyncio.run(main())


# --- a Future's state settled off the loop ----------------------------------------------------

def test_a_state_settled_by_another_thread_runs_its_callbacks_on_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        st = FutureState("k")
        ran_on: list = []
        st.add_callback(lambda s: ran_on.append((threading.get_ident(), s.status)))
        settled: list = []
        from_thread(lambda: settled.append(st.finish_off_loop(loop, ["tcp://w:1"], "int", b"v")))
        assert settled == [True] and st.status == "finished" and st.inline == b"v"
        assert ran_on == []  # (not on the settling thread)
        await asyncio.sleep(0)
        assert ran_on == [(threading.get_ident(), "finished")]
        # Settled already: a second outcome changes nothing, and a late callback runs at once.
        from_thread(lambda: settled.append(st.err_off_loop(loop, "boom", None)))
        assert settled == [True, False] and st.status == "finished"
        st.add_callback(lambda s: ran_on.append("late"))
        assert ran_on[-1] == "late"

    asyncio.run(main())


def test_a_cancel_on_the_loop_wins_over_a_later_answer():
    async def main():
        loop = asyncio.get_running_loop()
        st = FutureState("k")
        st.cancel("stop")
        got: list = []
        from_thread(lambda: got.append(st.finish_off_loop(loop, ["tcp://w:1"], "int", b"v")))
        assert got == [False] and st.status == "cancelled"

    asyncio.run(main())
