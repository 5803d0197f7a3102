"""Where an actor's sync method is answered from (worker/user_actor.py): from the
actor's own thread when the answer is all there is to send, from the loop otherwise.

The rule is tested here on its own, on a bare ``UserActor`` whose reply records how it
was answered; over real worker processes, tests/test_actors_processes.py checks that a
held worker loop does not delay such an answer.
"""
import asyncio
import functools
import threading
import types

import pytest

from actorrt import runtime
from actorrt.core import Reply
from actorrt.testing import poll_for
from actorrt.worker.pool import Job, run_job
from actorrt.worker.profiler import RunningThreads
from actorrt.worker.user_actor import SYNC, Lane, UserActor

from test_core_comm import hosts, run

pytestmark = pytest.mark.timeout(30)


class Subject:
    def __init__(self, loop):
        self.loop = loop

    def plain(self):
        return 42

    def hands_the_loop_something(self):
        runtime.post(self.loop, lambda: None)  # (as a put_nowait or an unawaited call does)
        return 42


def _answered(method, queued=0, blocked=0):
    """How ``method``'s answer went: "thread", or "loop" (left for _sync_done); and
    whether its job was settled (its hand-back to the loop may wait: Lane._main)."""
    async def main():
        loop = asyncio.get_running_loop()  # (a Lane is made on its loop)
        lane = Lane(1, "test-lane", "key")
        worker = types.SimpleNamespace(running_tasks=RunningThreads())
        actor = UserActor(worker, "key", Subject(loop), lane, "Subject")
        lane._outstanding = 1 + queued  # (as submit counts: this call, and those behind it)
        actor._blocked.extend([None] * blocked)  # (calls waiting for this one to be handed back)
        sent = []
        reply = Reply(lambda ok, value: sent.append(("loop", value)))
        reply.send_from_thread = lambda value: sent.append(("thread", value)) or True
        job = Job(functools.partial(actor._run_sync, SYNC, method, None, reply, None), lambda job: None)
        t = threading.Thread(target=run_job, args=(job,))  # (as the lane runs it)
        t.start()
        t.join()
        reply.ok(job.result[0])  # what _sync_done does on the loop: a no-op if answered already
        return [(how, value.loads()) for how, value in sent], job.settled
    return asyncio.run(main())


def test_a_method_that_only_answers_is_answered_from_its_thread():
    assert _answered("plain") == ([("thread", 42)], True)


def test_a_method_that_handed_the_loop_something_is_answered_after_it_from_the_loop():
    assert _answered("hands_the_loop_something") == ([("loop", 42)], False)


def test_with_calls_queued_behind_the_answers_go_back_from_the_loop_in_bursts():
    assert _answered("plain", queued=2) == ([("loop", 42)], False)


def test_an_answer_with_calls_blocked_behind_it_wakes_the_loop_for_its_hand_back():
    assert _answered("plain", blocked=1) == ([("thread", 42)], False)


def test_posts_are_counted_per_thread():
    loop = asyncio.new_event_loop()
    try:
        before = runtime.posts_made()
        runtime.post(loop, lambda: None)
        other = []
        t = threading.Thread(target=lambda: other.append(runtime.posts_made()))
        t.start()
        t.join()
        assert runtime.posts_made() == before + 1 and other == [0]
    finally:
        loop.close()


def test_a_call_answered_from_its_lane_is_handed_back_at_the_actors_next_message():
    """Over TCP the answer leaves from the lane, and the lane does not wake the loop for
    the call's bookkeeping: the actor's next message takes the call back first, so the
    actor never handles a message with a finished call still counted as running."""
    async def main():
        async with hosts("tcp") as (h0, h1):
            lane = Lane(1, "test-lane", "key")
            worker = types.SimpleNamespace(running_tasks=RunningThreads(), user_actors={})
            actor = UserActor(worker, "key", Subject(asyncio.get_running_loop()), lane, "Subject")
            ref = h1.spawn(actor, "subject")
            assert await h0.ask(ref, "call", method="plain") is not None
            await poll_for(lambda: lane._completions._done)  # (the lane put the call back...)
            assert not lane._completions._wakeup_pending    # (...without waking the loop)
            assert actor._sync_running == 1
            info = await h0.ask(ref, "info")
            assert info["running"] == 0 and actor._sync_running == 0 and not lane._completions._done
            lane.close()
    run(main())
