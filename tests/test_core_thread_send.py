"""Sending from a thread other than the loop's (``Comm.send_from_thread``,
``Reply.ok_from_thread``): a small message with nothing queued ahead of it is written
by the thread that made it, and never passes what the loop holds for the same peer.

Every test runs its own event loop, over real sockets (and one in-process pair, where
no thread ever writes); they synchronise on replies and on the loop being held (a
thread runs while the loop waits for it), never on sleeps.
"""
import contextlib
import socket
import threading

import pytest

from actorrt.core import Actor, ActorRef, CommClosedError
from actorrt.testing import poll_for

from test_core_comm import Echo, hosts, no_leaks, run  # noqa: F401  (no_leaks: autouse)


async def _connected():
    """Two started TCP hosts, the first connected to the second, and an Echo on the second."""
    stack = contextlib.AsyncExitStack()
    h0, h1 = await stack.enter_async_context(hosts("tcp"))
    echo = Echo()
    ref = h1.spawn(echo, "echo")
    await h0.ask(ref, "echo", x=0)  # (connects)
    return stack, h0, h1, echo, ref


def _in_thread(fn, *args):
    """Run ``fn`` on another thread while the loop waits for it (holds the loop still)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


def _comm_at(host, peer):
    return next(c for c in host._all_comms if c.peer_address == peer.address)


def test_a_thread_never_passes_what_the_loop_has_queued_for_the_peer():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            h0.tell(ref, "record", x=1)  # queued: it leaves on this turn's flush
            comm = h0.comm_to(h1.address)
            # Nothing is sent from the thread: its message would arrive first.
            assert _in_thread(comm.send_from_thread, [ref.id, "record", 0, {"x": 2}]) is False
            h0.tell(ref, "record", x=2)
            # With the queue written out, the thread may go first again.
            await h0.ask(ref, "echo", x=0)
            assert _in_thread(comm.send_from_thread, [ref.id, "record", 0, {"x": 3}]) is True
            assert await h0.ask(ref, "get") == [1, 2, 3]
    run(main())


def test_what_the_socket_does_not_take_from_a_thread_goes_on_from_the_loop_in_order():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            comm, peer = h0.comm_to(h1.address), _comm_at(h1, h0)
            comm._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            h1.loop.remove_reader(peer._fd)  # the peer stops reading
            blob = bytes(30_000)

            def send_until_one_is_left_over():
                sent = 0
                while comm._writer.buffered == 0:  # (until a send left bytes for the loop)
                    assert comm.send_from_thread([ref.id, "record", 0, {"x": [sent, blob]}])
                    sent += 1
                # Now the loop holds the rest: the thread may not send before it.
                assert not comm.send_from_thread([ref.id, "record", 0, {"x": [sent, blob]}])
                return sent

            sent = _in_thread(send_until_one_is_left_over)
            h0.tell(ref, "record", x=[sent, blob])  # (the last one the usual way, after them)
            h1.loop.add_reader(peer._fd, peer._read_ready)  # it reads again
            seen = await h0.ask(ref, "get")
            assert [i for i, b in seen] == list(range(sent + 1)) and all(b == blob for i, b in seen)
            assert comm._writer.buffered == 0
    run(main(), timeout=20)


class Answers(Actor):
    """Answers its deferred asks from a thread, as an actor's lane does."""

    answers_from_threads = True

    def __init__(self):
        self.replies = []

    def handle_later(self, reply):
        self.replies.append(reply)

    def handle_echo_count(self):
        return len(self.replies)

    def handle_answer_from_thread(self, value):
        reply = self.replies.pop(0)
        sent = _in_thread(reply.ok_from_thread, value)
        reply.ok("from the loop")  # a no-op once answered
        return sent


class AnswersOnTheLoop(Answers):
    answers_from_threads = False  # (the default for an actor)


def test_an_actor_that_does_not_answer_from_threads_is_answered_on_the_loop():
    async def main():
        async with hosts("tcp") as (h0, h1):
            ref = h1.spawn(AnswersOnTheLoop(), "answers")
            later = h0.ask(ref, "later")
            assert await h0.ask(ref, "answer_from_thread", value="from the thread") is False
            assert await later == "from the loop"
    run(main())


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_a_reply_from_a_thread_answers_once(transport):
    async def main():
        async with hosts(transport) as (h0, h1):
            ref = h1.spawn(Answers(), "answers")
            later = h0.ask(ref, "later")
            sent = await h0.ask(ref, "answer_from_thread", value="from the thread")
            # In-process there is no socket to write to: the loop answers.
            assert sent is (transport == "tcp")
            assert await later == ("from the thread" if sent else "from the loop")
    run(main())


def test_a_reply_from_a_thread_on_a_closed_connection_is_not_sent():
    async def main():
        async with hosts("tcp") as (h0, h1):
            answers = Answers()
            ref = h1.spawn(answers, "answers")
            later = h0.ask(ref, "later")
            await h0.ask(ref, "echo_count")  # (one connection keeps order: h1 holds the ask)
            _comm_at(h1, h0).close()
            reply = answers.replies.pop(0)
            assert _in_thread(reply.ok_from_thread, "late") is False
            assert not reply.done  # (the loop may still fail it; nothing was written)
            with pytest.raises(CommClosedError):
                await later  # the asker learns the connection closed
    run(main())


class SpokenFor(Actor):
    """An actor whose threads speak for it: each message first takes back their work."""

    def __init__(self):
        self.taken_back = []   # what before_dispatch found, message by message
        self.pending = []      # what a thread has done and the loop not yet taken in
        self.before_dispatch = self._take_back

    def _take_back(self):
        self.taken_back.append(list(self.pending))
        self.pending.clear()

    def handle_note(self, x):
        self.pending.append(x)

    def handle_seen(self):
        return self.taken_back[-1]


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_an_actor_takes_back_its_threads_work_before_each_message(transport):
    async def main():
        async with hosts(transport) as (h0, h1):
            actor = SpokenFor()
            ref = h1.spawn(actor, "spoken-for")
            await h0.ask(ref, "note", x=1)
            actor.pending.append("from a thread")  # (as a task's thread would leave it)
            assert await h0.ask(ref, "seen") == [1, "from a thread"]
            assert await h0.ask(ref, "seen") == []
    run(main())


# --- a thread's own asks and tells (Host.ask_from_thread, Host.tell_from_thread) -------------


def test_a_threads_ask_is_written_by_the_thread_and_answered_on_the_loop():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            done = []
            comm = h0.comm_to(h1.address)
            fut = _in_thread(h0.ask_from_thread, ref, "echo", {"x": 5}, done.append)
            # Written while this loop waited for the thread: the loop queued nothing.
            assert fut is not None and not comm._outbox
            assert await fut == 5
            assert done == [fut]  # (called as the reply resolved it)
            assert not h0._pending and not h0._then
            assert not any(h0._pending_by_comm.values())
    run(main())


def test_a_threads_ask_that_cannot_go_itself_leaves_nothing_behind():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            h0.tell(ref, "record", x=1)  # queued by the loop: a thread's ask would pass it
            assert _in_thread(h0.ask_from_thread, ref, "echo", {"x": 2}) is None
            assert _in_thread(h0.tell_from_thread, ref, "record", {"x": 2}) is False
            await h0.ask(ref, "echo", x=0)  # (the queue is written out)
            # Too large for one write from a thread (it goes in slices, from the loop).
            big = bytes(1 << 20)
            assert _in_thread(h0.ask_from_thread, ref, "echo", {"x": big}) is None
            # No connection to that host yet (opening one is the loop's work).
            elsewhere = ActorRef("tcp://127.0.0.1:9", "echo")
            assert _in_thread(h0.ask_from_thread, elsewhere, "echo", {"x": 3}) is None
            assert not h0._pending and not any(h0._pending_by_comm.values())
            assert await h0.ask(ref, "get") == [1]
    run(main())


def test_a_threads_tell_keeps_its_place_after_what_the_loop_queued_before():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            assert _in_thread(h0.tell_from_thread, ref, "record", {"x": 1}) is True
            h0.tell(ref, "record", x=2)
            assert await h0.ask(ref, "get") == [1, 2]
    run(main())


def test_a_threads_ask_on_a_closed_connection_does_not_go_and_the_loop_asks_instead():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            comm = h0.comm_to(h1.address)
            comm.close()
            h0._comms[h1.address] = comm  # (as if the thread looked before the loop forgot it)
            assert _in_thread(h0.ask_from_thread, ref, "echo", {"x": 1}) is None
            del h0._comms[h1.address]
            assert not h0._pending
            assert await h0.ask(ref, "echo", x=2) == 2  # (the loop opens a new one)
    run(main())


def test_an_ask_in_flight_from_a_thread_fails_when_its_connection_closes():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            done = []
            fut = _in_thread(h0.ask_from_thread, ref, "wait", {}, done.append)
            assert fut is not None
            await poll_for(lambda: echo.held is not None)
            h0.comm_to(h1.address).close()
            assert done == [fut]  # (called as the loop failed it)
            with pytest.raises(CommClosedError):
                await fut
            assert not h0._pending and not h0._then
    run(main())


def test_no_thread_ask_on_an_in_process_connection():
    async def main():
        async with hosts("inproc") as (h0, h1):
            ref = h1.spawn(Echo(), "echo")
            await h0.ask(ref, "echo", x=0)
            assert _in_thread(h0.ask_from_thread, ref, "echo", {"x": 1}) is None
            assert _in_thread(h0.tell_from_thread, ref, "record", {"x": 1}) is False
    run(main())


def test_a_threads_ask_cancelled_by_its_waiter_calls_nothing_when_answered():
    async def main():
        stack, h0, h1, echo, ref = await _connected()
        async with stack:
            done = []
            fut = _in_thread(h0.ask_from_thread, ref, "wait", {}, done.append)
            await poll_for(lambda: echo.held is not None)
            fut.cancel()  # (an interrupted wait)
            echo.held.ok("late")
            assert await h0.ask(ref, "echo", x=1) == 1  # (the late answer came before this)
            assert done == [] and not h0._pending and not h0._then
    run(main())
