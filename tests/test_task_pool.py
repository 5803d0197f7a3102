"""The worker's thread pool (worker/pool.py) on its own: completions come back to the
loop in bursts, and the worker hears when a burst has been handled (it sends the
burst's reports then, in one message)."""
import asyncio
import gc
import threading
import weakref

import pytest

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
