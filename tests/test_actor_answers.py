"""Where an actor's sync method is answered from (worker/user_actor.py): from the
actor's own thread when the answer is all there is to send, from the loop otherwise.

The rule is tested here on its own, on a bare ``UserActor`` whose reply records how it
was answered; over real worker processes, tests/test_actors_processes.py checks that a
held worker loop does not delay such an answer.
"""
import asyncio
import threading
import types

import pytest

from actorrt import runtime
from actorrt.core import Reply
from actorrt.worker.profiler import RunningThreads
from actorrt.worker.user_actor import SYNC, Lane, UserActor

pytestmark = pytest.mark.timeout(30)


class Subject:
    def __init__(self, loop):
        self.loop = loop

    def plain(self):
        return 42

    def hands_the_loop_something(self):
        runtime.post(self.loop, lambda: None)  # (as a put_nowait or an unawaited call does)
        return 42


def _answered(method, queued=0):
    """How ``method``'s answer went: "thread", or "loop" (left for _sync_done)."""
    async def main():
        loop = asyncio.get_running_loop()  # (a Lane is made on its loop)
        lane = Lane(1, "test-lane", "key")
        worker = types.SimpleNamespace(running_tasks=RunningThreads())
        actor = UserActor(worker, "key", Subject(loop), lane, "Subject")
        lane._outstanding = 1 + queued  # (as submit counts: this call, and those behind it)
        sent = []
        reply = Reply(lambda ok, value: sent.append(("loop", value)))
        reply.send_from_thread = lambda value: sent.append(("thread", value)) or True
        out = []
        t = threading.Thread(target=lambda: out.append(actor._run_sync(SYNC, method, None, reply, None)))
        t.start()
        t.join()
        reply.ok(out[0][0])  # what _sync_done does on the loop: a no-op if answered already
        return [(how, value.loads()) for how, value in sent]
    return asyncio.run(main())


def test_a_method_that_only_answers_is_answered_from_its_thread():
    assert _answered("plain") == [("thread", 42)]


def test_a_method_that_handed_the_loop_something_is_answered_after_it_from_the_loop():
    assert _answered("hands_the_loop_something") == [("loop", 42)]


def test_with_calls_queued_behind_the_answers_go_back_from_the_loop_in_bursts():
    assert _answered("plain", queued=2) == [("loop", 42)]


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
