"""A thread's own connection to a peer (``core/thread_channel.py``): its owner reads
the replies to its asks itself while it waits for them; anyone else's interest, a
pipeline, a slow reply or the owner's end hands the reading to the loop, which hands
it back once every ask is answered.

Two TCP hosts per test, on the test's own loop; the owner is a real thread. Tests
synchronise on replies and on each side's state, never on sleeps.
"""
import asyncio
import contextlib
import queue
import threading

import pytest

from actorrt.core import CommClosedError, thread_channel
from actorrt.testing import poll_for

from test_core_comm import CustomError, Echo, hosts, no_leaks, run  # noqa: F401  (no_leaks: autouse)


class Owner:
    """A thread that runs what it is given, one function at a time: a channel's owner."""

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="channel-owner")
        self.thread.start()
        self.ident = self.thread.ident

    def _serve(self):
        while (job := self._jobs.get()) is not None:
            fn, fut, loop = job
            try:
                result, error = fn(), None
            except BaseException as e:  # (handed to the test, which raises it)
                result, error = None, e
            loop.call_soon_threadsafe(_deliver, fut, result, error)

    async def do(self, fn):
        fut = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, fut, asyncio.get_running_loop()))
        return await fut

    def stop(self):
        self._jobs.put(None)
        self.thread.join()


def _deliver(fut, result, error):
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class Outcomes:
    """``settle`` for asks: each outcome, and the thread that read it."""

    def __init__(self):
        self.got = {}

    def settle(self, name):
        def settle(ok, value):
            self.got[name] = (ok, value, threading.get_ident())
        return settle


@contextlib.asynccontextmanager
async def channel_pair(**host_kw):
    """(h0, h1, echo ref on h1, owner thread, h0's channel to h1 owned by it)."""
    owner = Owner()
    try:
        async with hosts("tcp", **host_kw) as (h0, h1):
            ref = h1.spawn(Echo(), "echo")
            await h0.ask(ref, "echo", x=0)  # (the main connection is open)
            loop = asyncio.get_running_loop()
            channel = await h0.open_thread_channel(h1.address, owner.ident,
                                                   lambda fn, *a: loop.call_soon_threadsafe(fn, *a))
            yield h0, h1, ref, owner, channel
    finally:
        owner.stop()


def test_the_owner_reads_its_reply_itself_while_the_loop_stays_asleep():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            loop_reads = []
            channel.comm.on_messages = lambda msgs, comm: loop_reads.append(msgs)

            def call():
                rid = channel.ask(ref.id, "add", {"a": 2, "b": 3}, out.settle("add"), True)
                return channel.wait(rid)

            assert await owner.do(call) is True
            assert out.got["add"] == (True, 5, owner.ident)
            assert loop_reads == []
            # The peer keeps it apart from the main connection: not its route to h0.
            assert h1.comm_to(h0.address).channel == "main"
    run(main())


def test_the_peer_writes_its_answers_as_the_read_that_brought_the_asks_ends():
    """The accepting side of a thread channel answers at the end of the read that
    brought the asks, in one write, and leaves no flush queued for a later turn of its
    loop: its peer is one thread waiting for exactly those answers."""
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            [accepted] = [c for c in h1._all_comms if c.channel == "thread"]
            left_queued = []
            read = accepted._read_ready

            def watched():
                read()
                left_queued.append((len(accepted._outbox), accepted._flush_scheduled))
            accepted._loop.add_reader(accepted._fd, watched)  # (replaces the loop's callback)
            out = Outcomes()
            for i in range(3):
                assert await owner.do(lambda: channel.wait(
                    channel.ask(ref.id, "echo", {"x": i}, out.settle(i), True)))
                assert out.got[i] == (True, i, owner.ident)
            assert left_queued and set(left_queued) == {(0, False)}
    run(main())


def test_a_method_error_comes_back_as_the_ask_outcome():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            assert await owner.do(lambda: channel.wait(
                channel.ask(ref.id, "fail", {"msg": "nope"}, out.settle("f"), True)))
            ok, exc, _ = out.got["f"]
            assert not ok and isinstance(exc, CustomError) and "nope" in str(exc)
    run(main())


def test_a_reply_nobody_waits_for_is_read_by_the_loop_once_lent_then_the_owner_reads_again():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            await owner.do(lambda: channel.ask(ref.id, "echo", {"x": 1}, out.settle("one"), True))
            channel.lend()  # (someone else looks at it: a callback, another thread)
            await poll_for(lambda: "one" in out.got)
            assert out.got["one"][:2] == (True, 1)
            assert out.got["one"][2] == threading.get_ident()  # read on the loop
            await poll_for(lambda: not channel._loop_reads)  # handed back, all answered
            assert await owner.do(lambda: channel.wait(
                channel.ask(ref.id, "echo", {"x": 2}, out.settle("two"), True)))
            assert out.got["two"] == (True, 2, owner.ident)
    run(main())


def test_a_pipeline_is_read_by_the_loop():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()

            def pipeline():
                for i in range(5):
                    channel.ask(ref.id, "echo", {"x": i}, out.settle(i), True)

            await owner.do(pipeline)
            await poll_for(lambda: len(out.got) == 5)
            assert [out.got[i][1] for i in range(5)] == list(range(5))
            assert all(out.got[i][2] == threading.get_ident() for i in range(1, 5))
    run(main())


def test_asks_the_loop_writes_and_asks_the_thread_writes_arrive_in_order():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()

            def asks():
                channel.ask(ref.id, "record", {"x": 1}, out.settle(1), False)  # the loop writes it
                channel.ask(ref.id, "record", {"x": 2}, out.settle(2), True)   # so it, too
                return channel.wait(channel.ask(ref.id, "get", {}, out.settle("get"), True))

            await owner.do(asks)
            await poll_for(lambda: len(out.got) == 3)
            assert out.got["get"][1] == [1, 2]
            assert not channel._outbox and not channel._flush_posted
    run(main())


def test_a_slow_reply_is_left_to_the_loop_after_patience(monkeypatch):
    monkeypatch.setattr(thread_channel, "PATIENCE", 0.05)

    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            rid = await owner.do(lambda: channel.ask(ref.id, "wait", {}, out.settle("w"), True))
            assert await owner.do(lambda: channel.wait(rid)) is False
            await poll_for(lambda: channel._loop_reads)
            await h0.ask(ref, "release", value="late")
            await poll_for(lambda: "w" in out.got)
            assert out.got["w"] == (True, "late", threading.get_ident())
    run(main())


def test_the_connection_lost_under_a_wait_fails_that_ask_and_later_ones():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            rid = await owner.do(lambda: channel.ask(ref.id, "wait", {}, out.settle("w"), True))
            waited = asyncio.ensure_future(owner.do(lambda: channel.wait(rid)))
            await poll_for(lambda: channel._owner_reading)
            next(c for c in h1._all_comms if c.channel == "thread").close()  # (the peer's end)
            assert await waited is True
            ok, exc, _ = out.got["w"]
            assert not ok and isinstance(exc, CommClosedError)
            await poll_for(lambda: channel.closed)
            # Later asks fail too: every ask resolves.
            await owner.do(lambda: channel.ask(ref.id, "echo", {"x": 1}, out.settle("late"), True))
            await poll_for(lambda: "late" in out.got)
            assert isinstance(out.got["late"][1], CommClosedError)
    run(main())


def test_the_channel_closes_with_the_main_connection_and_fails_its_asks():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            await owner.do(lambda: channel.ask(ref.id, "wait", {}, out.settle("w"), True))
            h0.comm_to(h1.address).close()
            await poll_for(lambda: channel.closed and "w" in out.got)
            assert isinstance(out.got["w"][1], CommClosedError)
    run(main())


def test_the_heartbeat_neither_pings_nor_closes_a_thread_channel():
    async def main():
        async with channel_pair(heartbeat_interval=0.5, heartbeat_timeout=2.0) as (h0, h1, ref, owner, channel):
            comm = channel.comm
            long_ago = h0.loop.time() - 60
            comm.last_received = comm.last_sent = long_ago
            main_comm = h0.comm_to(h1.address)
            main_comm.last_sent = long_ago
            h0._heartbeat._tick()
            assert not comm.closed and not comm._outbox
            assert [m[1] for m in main_comm._outbox] == ["_ping"]  # (the main one is pinged)
    run(main())


def test_an_owner_that_ends_with_an_ask_out_leaves_it_to_the_loop_and_the_channel_closes():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()

            def ask_and_go():
                channel.ask(ref.id, "wait", {}, out.settle("w"), True)
                channel.release()

            await owner.do(ask_and_go)
            await poll_for(lambda: channel._loop_reads)
            await h0.ask(ref, "release", value="after")
            await poll_for(lambda: channel.closed)
            assert out.got["w"][:2] == (True, "after")
    run(main())


def test_another_thread_waiting_hands_the_reading_to_the_loop():
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()
            rid = await owner.do(lambda: channel.ask(ref.id, "echo", {"x": 7}, out.settle("x"), True))
            assert await asyncio.to_thread(channel.wait, rid) is False  # not the owner
            await poll_for(lambda: "x" in out.got)
            assert out.got["x"] == (True, 7, threading.get_ident())
    run(main())


def test_no_thread_channel_from_a_host_that_is_closing():
    async def main():
        async with hosts("tcp") as (h0, h1):
            await h0.close()
            with pytest.raises(CommClosedError, match="closing"):
                await h0.open_thread_channel(h1.address, threading.get_ident(), lambda *a: None)
    run(main())


def test_a_read_interrupted_before_its_replies_are_settled_closes_the_channel():
    """Ctrl-C lands on the main thread wherever it is: between reading a reply's bytes
    and settling its ask, they would be lost and the stream's place with them. The
    channel is closed and its asks fail, as on a lost connection; the interrupt goes on."""
    async def main():
        async with channel_pair() as (h0, h1, ref, owner, channel):
            out = Outcomes()

            def interrupted(msg):
                raise KeyboardInterrupt

            channel._on_message = interrupted

            def call():
                rid = channel.ask(ref.id, "echo", {"x": 1}, out.settle("x"), True)
                try:
                    channel.wait(rid)
                except KeyboardInterrupt:
                    return "interrupted"

            assert await owner.do(call) == "interrupted"
            await poll_for(lambda: channel.closed)
            ok, exc, _ = out.got["x"]
            assert not ok and isinstance(exc, CommClosedError) and "interrupted" in str(exc)
    run(main())
