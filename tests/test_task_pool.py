"""The worker's thread pool (worker/pool.py) on its own: completions come back to the
loop in bursts, and the worker hears when a burst has been handled (it sends the
burst's reports then, in one message)."""
import asyncio
import gc
import threading
import weakref

import pytest

from actorrt import runtime
from actorrt.testing import poll_for
from actorrt.worker.pool import Job, TaskPool

pytestmark = pytest.mark.timeout(30)


def test_each_burst_of_completions_ends_with_one_burst_done():
    async def main():
        pool = TaskPool(3)
        events = []
        all_done = asyncio.Event()
        finished = 0

        def done(job):
            nonlocal finished
            assert pool.handing_back  # (reports made here wait for the burst's end)
            events.append(("done", job.result))
            finished += 1

        def burst_done():
            assert not pool.handing_back
            events.append(("burst",))
            if finished == 6:
                all_done.set()

        pool.on_burst_done = burst_done
        barrier = threading.Barrier(3)
        for i in range(6):
            pool.submit(Job(lambda i=i: (barrier.wait(10), i)[1], done))
        await asyncio.wait_for(all_done.wait(), 20)
        pool.close()
        # Split by the burst markers: every burst had jobs, each job is in one burst.
        bursts, current = [], []
        for event in events:
            if event[0] == "burst":
                bursts.append(current)
                current = []
            else:
                current.append(event[1])
        assert not current and all(bursts)
        assert sorted(i for burst in bursts for i in burst) == list(range(6))
    asyncio.run(main())


class Payload:
    """A result whose lifetime a weak reference can watch."""


def test_a_thread_keeps_nothing_of_a_job_it_has_handed_back():
    """Once a job is handed back and the worker has dropped it, its result (and its
    arguments) are gone: the thread that ran it, now waiting for the next job, holds
    no reference. (It used to, until it ran something else: a freed result stayed in
    memory.)"""
    async def main():
        pool = TaskPool(1)
        handed_back = asyncio.Event()
        watched = []

        def make():
            payload = Payload()
            watched.append(weakref.ref(payload))
            return payload

        def done(job):  # (keeps nothing: as the worker, once it stored and then freed the value)
            handed_back.set()

        pool.submit(Job(make, done))
        await asyncio.wait_for(handed_back.wait(), 10)
        try:  # (the thread lets go just after handing back: a little after this, not before)
            await poll_for(lambda: gc.collect() is not None and watched[0]() is None, timeout=5)
        finally:
            pool.close()
    asyncio.run(main())


def test_a_job_submitted_after_close_starts_no_thread():
    """A worker's loop may still hand its pool a job after closing it (a late
    completion's next task): it is dropped with the others not started, as close()
    says, rather than run on a new thread that nothing would ever tell to stop."""
    async def main():
        pool = TaskPool(1)
        before = set(threading.enumerate())
        pool.close()
        pool.submit(Job(lambda: 1, lambda job: None))
        assert [t for t in threading.enumerate() if t not in before] == []
        assert not pool.ready and pool.running == 0
    asyncio.run(main())


def test_a_jobs_follow_up_runs_on_its_thread_around_the_hand_back():
    """``Job.then`` runs on the job's thread before the loop hears of the job (so the
    loop sees what it decided); what it returns runs after the hand-back, and the loop
    is woken only then (woken first, it would take the interpreter lock from the
    thread, which has a socket write left to make)."""
    async def main():
        pool = TaskPool(1)
        loop_thread = threading.get_ident()
        seen = []
        handed_back = asyncio.Event()

        def then(job):
            seen.append(("then", threading.get_ident() != loop_thread, job.result))
            job.context["decided"] = True
            return lambda: seen.append(("after", threading.get_ident() != loop_thread,
                                        job in pool._completions._done))

        def done(job):
            seen.append(("done", job.context["decided"]))
            handed_back.set()

        pool.submit(Job(lambda: 7, done, context={}, then=then))
        await asyncio.wait_for(handed_back.wait(), 20)
        pool.close()
        # The follow-up ran with the job handed over and the loop not yet woken for it.
        assert seen == [("then", True, 7), ("after", True, True), ("done", True)]
    asyncio.run(main())


def test_a_failing_follow_up_is_logged_and_the_job_still_comes_back(caplog):
    async def main():
        pool = TaskPool(1)
        results = asyncio.Queue()

        def then(job):
            if job.result == 0:
                raise RuntimeError("follow-up broke")

            def after():
                raise RuntimeError("what it left for after broke")
            return after

        for i in range(3):  # (the thread survives both to run the third)
            pool.submit(Job(lambda i=i: i, lambda job: results.put_nowait(job.result), then=then))
        assert [await asyncio.wait_for(results.get(), 20) for _ in range(3)] == [0, 1, 2]
        pool.close()
    asyncio.run(main())
    assert "follow-up broke" in caplog.text and "what it left for after broke" in caplog.text


def test_finished_jobs_are_handed_back_on_demand():
    """A thread that has put its job but not yet woken the loop (it is sending the
    job's report): the loop can take the job back at once when a message about its
    key comes first (Worker.handle_get_data), and the later wake-up finds nothing."""
    async def main():
        pool = TaskPool(1)
        done = []
        put = threading.Event()
        release = threading.Event()

        def then(job):
            def after():
                put.set()
                release.wait(20)  # (the thread stalls after the hand-over)
            return after

        pool.submit(Job(lambda: "value", lambda job: done.append(job.result), then=then))
        assert await asyncio.get_running_loop().run_in_executor(None, put.wait, 20)
        assert done == []  # nothing woke the loop for it
        pool.hand_back_finished()
        assert done == ["value"]
        release.set()
        # The same thread runs the next job once it has woken the loop (for nothing).
        second = asyncio.Event()
        pool.submit(Job(lambda: "next", lambda job: (done.append(job.result), second.set())))
        await asyncio.wait_for(second.wait(), 20)
        assert done == ["value", "next"]  # the first handed back once
        pool.close()
    asyncio.run(main())


# --- a wait that lends its slot (TaskPool._wait_lending) ------------------------------------


class Waits:
    """A job that waits twice through the pool: first on a loop future the test resolves
    (the slot is given back, and on_secede told), then on an armed outcome (lent)."""

    def __init__(self, pool, loop):
        self.pool, self.loop = pool, loop
        self.first = loop.create_future()
        self.armed = []         # the second wait's waiter, once it waits
        self.posts = None       # posts the thread made during the second wait

    def run(self):
        self.pool.block_on(lambda: self.first)
        before = runtime.posts_made()
        value = self.pool.block_on(self._never_started, arm=self._arm)
        self.posts = runtime.posts_made() - before
        return value

    def _arm(self, waiter):
        self.armed.append(waiter)
        return True

    def _never_started(self):  # (the armed outcome comes without the loop starting anything)
        raise AssertionError("a lent wait does not start anything on the loop")


def _submit(pool, fn):
    done = asyncio.get_running_loop().create_future()
    pool.submit(Job(fn, lambda job: done.set_result(job)))
    return done


def test_a_later_wait_lends_its_slot_and_takes_it_back_without_the_loop():
    async def main():
        pool = TaskPool(1)
        seceded = []
        pool.on_secede = seceded.append
        waits = Waits(pool, asyncio.get_running_loop())
        done = _submit(pool, waits.run)
        await poll_for(lambda: seceded)  # the first wait gave the slot back, and said so
        waits.first.set_result(None)
        await poll_for(lambda: waits.armed)
        assert pool.running == 1  # (lent, not taken: nothing wanted it)
        waits.armed[0].set("second")
        job = await done
        assert job.result == "second" and job.error is None
        assert waits.posts == 0  # the loop was never asked for anything
        assert len(seceded) == 1 and pool.running == 0 and not pool._lent
        pool.close()
    asyncio.run(main())


def test_a_job_started_while_a_slot_is_lent_runs_and_the_lender_waits_its_turn():
    async def main():
        pool = TaskPool(1)
        pool.on_secede = lambda job: None
        waits = Waits(pool, asyncio.get_running_loop())
        done = _submit(pool, waits.run)
        await poll_for(lambda: pool.running == 0)  # (the first wait gave the slot back)
        waits.first.set_result(None)
        await poll_for(lambda: waits.armed)
        # Only the lent slot is free: the pool takes it for the new job.
        release = threading.Event()
        other = _submit(pool, lambda: release.wait(10) and "other")
        await poll_for(lambda: not pool._lent)
        waits.armed[0].set("second")  # the lender's outcome: it must wait for a slot
        await poll_for(lambda: pool._rejoiners)
        assert not done.done() and pool.running == 1
        release.set()
        assert (await other).result == "other"
        job = await done
        # The loop queued it for a slot as the outcome came: the thread asked nothing.
        assert job.result == "second" and waits.posts == 0
        assert pool.running == 0
        pool.close()
    asyncio.run(main())


def test_a_slot_lent_while_a_job_waits_for_one_goes_to_that_job_at_once():
    """The pool is full and a job waits in its queue when a running job lends its slot:
    the loop is woken to pass the slot on (nothing else would wake it)."""
    async def main():
        pool = TaskPool(1)
        pool.on_secede = lambda job: None
        waits = Waits(pool, asyncio.get_running_loop())
        go_on = threading.Event()

        def wait_twice():
            pool.block_on(lambda: waits.first)  # gives the slot back, then takes it again
            go_on.wait(10)                      # holds it while the next job queues
            before = runtime.posts_made()
            value = pool.block_on(waits._never_started, arm=waits._arm)
            waits.posts = runtime.posts_made() - before
            return value

        done = _submit(pool, wait_twice)
        await poll_for(lambda: pool.running == 0)
        waits.first.set_result(None)
        await poll_for(lambda: pool.running == 1 and not pool._rejoiners)
        queued = _submit(pool, lambda: "queued")
        assert pool.ready  # (no slot for it)
        go_on.set()
        assert (await queued).result == "queued"  # it ran in the lent slot
        assert not done.done()
        waits.armed[0].set("second")
        assert (await done).result == "second"
        assert waits.posts == 1  # to pass the slot on (taking one again is the loop's)
        pool.close()
    asyncio.run(main())


def test_a_settled_job_is_not_woken_for_but_gives_its_slot_to_work_queued_after_it():
    """A job whose outcome reached its asker from its thread (Job.settled: a direct run's
    answer) is left for the next message to take back; the loop is not woken for it.
    Work queued meanwhile with no slot free takes it back itself and runs at once."""
    async def main():
        pool = TaskPool(1)
        loop = asyncio.get_running_loop()
        wakes = []
        wake = pool._completions._wake
        pool._completions._wake = lambda: (wakes.append(1), wake())[1]
        handed_back = []
        sent = threading.Event()

        def settle(job):
            def after():
                job.settled = True
                sent.set()
            return after

        pool.submit(Job(lambda: "first", lambda job: handed_back.append(job.result), then=settle))
        await loop.run_in_executor(None, sent.wait, 10)
        second = asyncio.Event()
        pool.submit(Job(lambda: "second", lambda job: (handed_back.append(job.result), second.set())))
        await asyncio.wait_for(second.wait(), 10)
        # (One thread: it ran the second job only once done with the first, wake or not.)
        assert handed_back == ["first", "second"] and len(wakes) == 1
        pool.close()
    asyncio.run(main())
