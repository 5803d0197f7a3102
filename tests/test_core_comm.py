"""actorrt.core comms and hosts: one contract over both transports, then TCP only.

Every test is a plain function running its own event loop; tests synchronise on
replies, events and log records, never on sleeps.
"""
import traceback
import asyncio
import time
import contextlib
import gc
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import textwrap
import threading

import msgpack
import numpy as np
import pytest

from actorrt.core import (
    Actor, ActorDeadError, ActorNotFoundError, ActorRef, AuthenticationError, BadMessageError,
    CommClosedError, Host, Pickled, SerializationError, UnknownOpError,
)
from actorrt.core.addresses import primary_ip
from actorrt.core.comm import PROTOCOL_VERSION, ROLE_CONNECT, InprocComm, _mac
from actorrt.core.tcp import TCPComm
from actorrt.core.serialize import EXT_PICKLE, remote_traceback_text

SECRET = b"cluster-secret"
TRANSPORTS = ["tcp", "inproc"]


# --- harness -------------------------------------------------------------------


def run(coro, timeout=4.0):
    """Run one test coroutine on a fresh loop, failing (not hanging) past ``timeout``."""
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


def _open_sockets():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_leaks():
    """No threads, sockets, or asyncio complaints (unretrieved errors, destroyed tasks)."""
    threads, sockets = set(threading.enumerate()), _open_sockets()
    complaints = _Recorder()
    logging.getLogger("asyncio").addHandler(complaints)
    try:
        yield
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(complaints)
    assert set(threading.enumerate()) <= threads, "test left threads behind"
    assert _open_sockets() <= sockets, "test left sockets open"
    assert complaints.messages == []


def address_for(transport):
    return "tcp://127.0.0.1:0" if transport == "tcp" else "inproc://"


@contextlib.asynccontextmanager
async def hosts(transport, n=2, secrets=None, **kw):
    """Started hosts on ``transport`` (``n``, or one per secret); TCP ones never take the
    in-process shortcut, so real sockets are used."""
    secrets = secrets if secrets is not None else [None] * n
    n = len(secrets)
    kw.setdefault("connect_timeout", 2.0)
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            h = Host(address_for(transport), secret=secrets[i], name=f"h{i}", shortcut=False, **kw)
            out.append(await stack.enter_async_context(h))
        yield out


class LogWaiter(logging.Handler):
    """Collects actorrt log records; ``await wait_for(text)`` until one contains it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self._changed = asyncio.Event()

    def emit(self, record):
        self.records.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, text):
        while not any(text in r for r in self.records):
            self._changed.clear()
            await self._changed.wait()
        return next(r for r in self.records if text in r)


@contextlib.contextmanager
def watch_logs():
    waiter = LogWaiter()
    logger = logging.getLogger("actorrt")
    level = logger.level
    logger.setLevel(logging.INFO)  # whatever the root level, warnings reach us
    logger.addHandler(waiter)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(level)


class CustomError(Exception):
    pass


class Unencodable:
    pass


class Echo(Actor):
    def __init__(self):
        self.seen = []
        self.held = None
        self.go = asyncio.Event()

    def handle_echo(self, x):
        return x

    def handle_record(self, x):
        self.seen.append(x)

    def handle_get(self):
        return list(self.seen)

    def handle_add(self, a, b=0):
        return a + b

    def handle_kw(self, a, **rest):
        return [a, sorted(rest)]

    def handle_fail(self, msg):
        raise CustomError(msg)

    def handle_wait(self, reply):  # deferred: answered by a later `release`
        self.held = reply

    def handle_release(self, value=None, error=None):
        if error is not None:
            self.held.fail(CustomError(error))
        else:
            self.held.ok(value)

    async def handle_slow(self, x):
        await self.go.wait()
        return x * 2

    def handle_open_gate(self):
        self.go.set()

    async def handle_async_fail(self):
        await asyncio.sleep(0)
        raise CustomError("async")

    async def handle_async_deferred_fail(self, reply):
        await asyncio.sleep(0)
        raise CustomError("async deferred")

    def handle_who(self, origin):
        return origin is not None

    def handle_bad_value(self):
        return Unencodable()


# --- contract: both transports -------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ask_tell_round_trip(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo(), "echo")
            assert ref == ActorRef(b.address, "echo")
            assert await a.ask(ref, "echo", x={"k": [1, "two", None]}) == {"k": [1, "two", None]}
            a.tell(ref, "record", x=1)
            assert await a.ask(ref, "get") == [1]
            assert await a.ask(ref, "add", a=2) == 2
            assert await a.ask(ref, "add", a=2, b=3) == 5
            assert await a.ask(ref, "kw", a=1, z=2, y=3) == [1, ["y", "z"]]
            p = Pickled.dumps(lambda: 41)
            back = await a.ask(ref, "echo", x=p)
            assert back == p and back.loads()() == 41
            arr = np.arange(100_000)
            back = (await a.ask(ref, "echo", x=Pickled.dumps({"arr": arr}))).loads()["arr"]
            np.testing.assert_array_equal(back, arr)
            back[0] = -1  # delivered into writable memory, like the original
            back = await a.ask(ref, "echo", x=ref)
            assert back == ref and type(back) is ActorRef
            assert await a.ask(ref, "who") is True
            comm = a._comms[b.address]
            assert isinstance(comm, TCPComm if transport == "tcp" else InprocComm)
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_local_ask_keeps_async_semantics(transport):
    async def main():
        async with hosts(transport, n=1) as (a,):
            ref = a.spawn(Echo())
            fut = a.ask(ref, "echo", x=1)
            assert not fut.done()  # delivered on a later turn, like a remote ask
            assert await fut == 1
            with pytest.raises(CustomError):
                await a.ask(ref, "fail", msg="local")
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_order_of_many_messages_from_one_sender(transport):
    async def main():
        async with hosts(transport) as (a, b):
            echo = Echo()
            ref = b.spawn(echo)
            futs = []
            for i in range(2000):
                if i % 7 == 0:
                    futs.append(a.ask(ref, "record", x=i))
                else:
                    a.tell(ref, "record", x=i)
                if i % 500 == 0:
                    await asyncio.sleep(0)  # spread over several batches (and connect)
            assert await a.ask(ref, "get") == list(range(2000))
            await asyncio.gather(*futs)
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sends_in_one_loop_turn_arrive_in_one_batch(transport):
    async def main():
        async with hosts(transport) as (a, b):
            batches = []
            on_messages = b._on_messages

            def recording(batch, comm):
                batches.append(len(batch))
                on_messages(batch, comm)
            b._on_messages = recording  # installed on comms as they are adopted
            ref = b.spawn(Echo())
            await a.ask(ref, "echo", x=0)  # connection open: measure the steady state
            batches.clear()
            for i in range(100):
                a.tell(ref, "record", x=i)
            assert len(await a.ask(ref, "get")) == 100
            assert batches == [101]
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_flush_pending_sends_what_every_peer_has_queued_now_and_once(transport):
    """``flush_pending`` puts every connection's queued messages on the wire in this turn
    (over TCP; in-process peers still hear on the next turn), not only one peer's; the
    flushes the turn had scheduled find nothing left, so nothing arrives twice."""
    async def main():
        async with hosts(transport, n=3) as (a, b, c):
            refs = [b.spawn(Echo()), c.spawn(Echo())]
            for ref in refs:
                await a.ask(ref, "echo", x=0)  # connections open
            comms = [a.comm_to(b.address), a.comm_to(c.address)]
            for i in range(5):
                for ref in refs:
                    a.tell(ref, "record", x=i)
            a.flush_pending()
            for comm in comms:
                assert not comm._outbox if transport == "tcp" else len(comm._outbox) == 5
            for ref in refs:
                a.tell(ref, "record", x=5)
            for ref in refs:
                assert await a.ask(ref, "get") == list(range(6))
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_error_reply_keeps_exception_type_and_remote_traceback(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo())
            with pytest.raises(CustomError, match="boom") as info:
                await a.ask(ref, "fail", msg="boom")
            assert "handle_fail" in remote_traceback_text(info.value)
            assert "handle_fail" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]
            assert await a.ask(ref, "echo", x=1) == 1  # the actor survives its error
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_op_wrong_fields_unknown_actor(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo())
            with pytest.raises(UnknownOpError, match="nope"):
                await a.ask(ref, "nope")
            with pytest.raises(BadMessageError, match=r"missing fields \['a'\]"):
                await a.ask(ref, "add", b=1)
            with pytest.raises(BadMessageError, match=r"unknown fields \['c'\]"):
                await a.ask(ref, "add", a=1, c=2)
            with pytest.raises(BadMessageError):
                await a.ask(ref, "wait", reply=1)  # injected parameters are not fields
            with pytest.raises(ActorNotFoundError, match="ghost"):
                await a.ask(ActorRef(b.address, "ghost"), "echo", x=1)
            # A tell with the same problems is logged, and nothing else breaks.
            with watch_logs() as logs:
                a.tell(ref, "nope")
                await logs.wait_for("has no op 'nope'")
            assert await a.ask(ref, "echo", x=2) == 2
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deferred_reply(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo())
            waiting = a.ask(ref, "wait")
            assert await a.ask(ref, "echo", x=1) == 1  # the mailbox is not blocked
            assert not waiting.done()
            a.tell(ref, "release", value=[1, 2])
            assert await waiting == [1, 2]
            waiting = a.ask(ref, "wait")
            a.tell(ref, "release", error="later")
            with pytest.raises(CustomError, match="later"):
                await waiting
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_handler(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo())
            slow = a.ask(ref, "slow", x=21)
            assert await a.ask(ref, "echo", x=1) == 1  # interleaves at the await
            assert not slow.done()
            a.tell(ref, "open_gate")
            assert await slow == 42
            with pytest.raises(CustomError, match="async"):
                await a.ask(ref, "async_fail")
            # Took `reply`, then raised: the ask still resolves.
            with pytest.raises(CustomError, match="async deferred"):
                await a.ask(ref, "async_deferred_fail")
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stopping_an_actor_fails_its_deferred_replies(transport):
    async def main():
        async with hosts(transport) as (a, b):
            ref = b.spawn(Echo(), "echo")
            waiting = a.ask(ref, "wait")
            slow = a.ask(ref, "slow", x=1)
            await a.ask(ref, "echo", x=0)  # both are now held by the actor
            b.stop_actor("echo")
            with pytest.raises(ActorDeadError):
                await waiting
            with pytest.raises(ActorDeadError):
                await slow
            with pytest.raises(ActorNotFoundError):
                await a.ask(ref, "echo", x=1)
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_peer_host_closing_fails_pending_asks_and_fires_peer_lost(transport):
    async def main():
        async with hosts(transport) as (a, b):
            lost = asyncio.Event()
            calls = []

            def on_lost(address, comm):
                calls.append(address)
                lost.set()
            a.peer_lost_callbacks.append(on_lost)
            ref = b.spawn(Echo())
            slow = a.ask(ref, "slow", x=1)  # an async handler, cancelled by the close
            waiting = a.ask(ref, "wait")     # a deferred reply, failed by the close
            await a.ask(ref, "echo", x=0)
            await b.close()
            with pytest.raises(CommClosedError):
                await slow
            with pytest.raises(ActorDeadError):
                await waiting
            await lost.wait()
            assert calls == [b.address]
            # Asking the closed peer again fails too, within the connect timeout.
            a.connect_timeout = 0.2
            with pytest.raises(CommClosedError):
                await a.ask(ref, "echo", x=1)
    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closing_a_host_fails_its_own_pending_asks(transport):
    async def main():
        async with hosts(transport) as (a, b):
            seen_by_b = []
            b_lost = asyncio.Event()

            def on_lost(address, comm):
                seen_by_b.append(address)
                b_lost.set()
            b.peer_lost_callbacks.append(on_lost)
            ref = b.spawn(Echo())
            remote = a.ask(ref, "wait")
            local = a.ask(a.spawn(Echo()), "wait")
            await a.ask(ref, "echo", x=0)
            await a.close()
            with pytest.raises(CommClosedError):
                await remote
            with pytest.raises((CommClosedError, ActorDeadError)):
                await local
            assert await b.ask(ref, "echo", x=1) == 1  # b is fine
            await b_lost.wait()  # b learns on a later turn
            assert seen_by_b == [a.address]
    run(main())


# --- TCP only --------------------------------------------------------------------


def test_unencodable_values_fail_the_ask_over_tcp():
    async def main():
        async with hosts("tcp") as (a, b):
            ref = b.spawn(Echo())
            with pytest.raises(SerializationError, match="Unencodable"):
                await a.ask(ref, "bad_value")
            with pytest.raises(SerializationError, match="Unencodable"):
                await a.ask(ref, "echo", x=Unencodable())
            assert await a.ask(ref, "echo", x=1) == 1
    run(main())


def test_hmac_same_secret_talks():
    async def main():
        async with hosts("tcp", secrets=[SECRET, SECRET]) as (a, b):
            ref = b.spawn(Echo())
            assert await a.ask(ref, "echo", x="hi") == "hi"
            assert b.secret == SECRET
    run(main())


@pytest.mark.parametrize("client_secret,server_secret", [
    (b"wrong", SECRET), (None, SECRET), (SECRET, None),
], ids=["wrong", "client-missing", "server-missing"])
def test_hmac_failure_raises_and_listener_keeps_serving(client_secret, server_secret):
    async def main():
        async with hosts("tcp", secrets=[server_secret, client_secret, server_secret]) as (b, bad, good):
            ref = b.spawn(Echo())
            with watch_logs() as logs:
                with pytest.raises(AuthenticationError):
                    await bad.connect(b.address)
                with pytest.raises(AuthenticationError):
                    await bad.ask(ref, "echo", x=1)
                if server_secret is not None:
                    await logs.wait_for("failed authentication")
            assert not bad.is_connected(b.address)
            assert await good.ask(ref, "echo", x=2) == 2
    run(main())


def test_non_loopback_listen_without_secret_is_refused():
    async def main():
        with pytest.raises(ValueError, match="secret"):
            await Host("tcp://0.0.0.0:0").start()
        async with Host("tcp://0.0.0.0:0", secret=SECRET) as h, \
                Host(None, secret=SECRET, shortcut=False) as peer:  # with a secret it is fine
            # It tells peers an address they can dial, not the wildcard it listens on.
            assert h.address.startswith(f"tcp://{primary_ip()}:") and "0.0.0.0" not in h.address
            ref = h.spawn(Echo())
            assert await peer.ask(ref, "echo", x=1) == 1
    run(main())


def test_a_contact_address_is_what_a_listener_advertises():
    async def main():
        async with Host("tcp://127.0.0.1:0", contact_address="tcp://db.example:4242") as h:
            assert h.address == "tcp://db.example:4242"
    run(main())


@pytest.mark.parametrize("address,hint", [
    ("tcp://0.0.0.0:1", "0.0.0.0 is a wildcard to listen on, not an address to dial"),
    ("tcp://127.0.0.1:1", "127.0.0.1 is loopback, reachable only on its own machine"),
])
def test_could_not_connect_names_the_address_and_the_fix(address, hint):
    async def main():
        async with Host(None) as h:
            with pytest.raises(CommClosedError, match=f"could not connect to {address}.*{hint}"):
                await h.connect(address, timeout=0.05)
    run(main())


# Raw-socket helpers speaking the documented wire format.

def frames_bytes(frames):
    return struct.pack(f"!I{len(frames)}Q", len(frames), *map(len, frames)) + b"".join(frames)


async def read_frames(reader):
    (n,) = struct.unpack("!I", await reader.readexactly(4))
    lengths = struct.unpack(f"!{n}Q", await reader.readexactly(8 * n))
    return [await reader.readexactly(length) for length in lengths]


async def raw_connect(address):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    hello = msgpack.unpackb((await read_frames(reader))[0])
    return reader, writer, hello


async def drain_to_eof(reader, writer):
    """Wait until the host closes on us, then close our end."""
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def hello_frame(nonce, address="tcp://raw-peer:1"):
    return msgpack.packb({"v": PROTOCOL_VERSION, "nonce": nonce, "address": address})


def evil_reply_frame(flag, rids):
    """A batch of error replies whose exception, if ever unpickled, creates ``flag``."""
    evil = pickle.dumps(ValueError(Touch(flag)), protocol=5)
    ext = msgpack.ExtType(EXT_PICKLE, msgpack.packb([evil, 1, 0]))
    return msgpack.packb([["", "_reply", rid, {"error": ext, "tb": "evil"}] for rid in rids])


class Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


@pytest.mark.parametrize("payload,reason", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad frame count"),
    (struct.pack("!I", 0), "bad frame count 0"),
    (frames_bytes([b"\xc1\xc1"]), "closing connection"),                      # not msgpack
    (frames_bytes([msgpack.packb([1, 2])]), "malformed handshake"),
    (frames_bytes([msgpack.packb({"v": 99, "nonce": b"x" * 16})]), "protocol 99"),
    (frames_bytes([msgpack.packb({"v": PROTOCOL_VERSION, "nonce": 1})]), "nonce"),
    (struct.pack("!IQ", 1, 10_000) + b"x" * 100, "exceeds the limit"),        # oversized
    (struct.pack("!IQ", 1, 100) + b"x" * 10, "in the middle of a frame"),     # truncated
], ids=["http", "zero-frames", "not-msgpack", "not-a-map", "version", "nonce", "oversized",
        "truncated"])
def test_bad_bytes_close_that_connection_only(payload, reason):
    async def main():
        async with hosts("tcp", secrets=[SECRET, SECRET]) as (b, good):
            ref = b.spawn(Echo())
            with watch_logs() as logs:
                reader, writer, _ = await raw_connect(b.address)
                writer.write(payload)
                if reason == "in the middle of a frame":
                    writer.write_eof()
                await drain_to_eof(reader, writer)
                await logs.wait_for(reason)
            assert await good.ask(ref, "echo", x=1) == 1
    run(main())


class Maker(Actor):
    def handle_make(self, n):
        return b"x" * n


def test_a_frame_larger_than_the_peer_accepts_fails_that_ask_at_once():
    async def main():
        async with hosts("tcp", n=2, max_frame_bytes=8192) as (b, a):
            ref = b.spawn(Echo())
            assert await a.ask(ref, "echo", x="small") == "small"
            comm = a.comm_to(b.address)
            with pytest.raises(SerializationError, match=r"frame of \d+ bytes; the peer accepts at most "
                               r"8192 \(its max_frame_bytes, set by ACTORRT_MAX_FRAME_BYTES\)"):
                await a.ask(ref, "echo", x="x" * 10_000)
            assert a.comm_to(b.address) is comm  # nothing was written: the connection stays
            assert await a.ask(ref, "echo", x="small again") == "small again"
            # A reply too large for the asker: the replier sends an error in its place.
            maker = b.spawn(Maker())
            with pytest.raises(SerializationError, match="max_frame_bytes"):
                await a.ask(maker, "make", n=10_000)
            assert await a.ask(maker, "make", n=10) == b"x" * 10
    run(main())


def test_an_authenticated_peer_sending_an_oversized_frame_is_dropped_alone():
    async def main():
        async with hosts("tcp", n=2, secrets=[SECRET, SECRET], max_frame_bytes=8192) as (b, good):
            ref = b.spawn(Echo())
            with watch_logs() as logs:
                reader, writer, hello = await raw_connect(b.address)
                nonce = os.urandom(16)
                proof = _mac(SECRET, ROLE_CONNECT, hello["nonce"], nonce)
                writer.write(frames_bytes([hello_frame(nonce)]) + frames_bytes([msgpack.packb({"mac": proof})])
                             + struct.pack("!IQ", 1, 9000) + b"x" * 100)
                await drain_to_eof(reader, writer)
                await logs.wait_for("frame of 9000 bytes exceeds the limit of 8192")
            assert await good.ask(ref, "echo", x=1) == 1
    run(main())


@pytest.mark.parametrize("how", ["instead-of-hello", "instead-of-proof", "after-wrong-proof",
                                 "reflected-proof"])
def test_unauthenticated_peer_never_gets_a_pickle_loaded(how, tmp_path):
    flag = tmp_path / "pwned"

    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (b,):
            held = b.spawn(Echo())
            pending = b.ask(held, "wait")  # a pending ask: replies for it would be unpickled
            await b.ask(held, "echo", x=0)
            rids = list(b._pending)
            evil = evil_reply_frame(flag, rids)
            with watch_logs() as logs:
                reader, writer, hello = await raw_connect(b.address)
                if how == "instead-of-hello":
                    writer.write(frames_bytes([evil]))
                elif how == "instead-of-proof":
                    writer.write(frames_bytes([hello_frame(os.urandom(16))]) + frames_bytes([evil]))
                elif how == "after-wrong-proof":
                    writer.write(frames_bytes([hello_frame(os.urandom(16))])
                                 + frames_bytes([msgpack.packb({"mac": b"\x00" * 32})])
                                 + frames_bytes([evil]))
                else:
                    # Reflection: make the listener answer its own challenge on a second
                    # connection, then replay that answer as our proof on the first.
                    r2, w2, hello2 = await raw_connect(b.address)
                    w2.write(frames_bytes([hello_frame(hello["nonce"])]))
                    their_proof = (await read_frames(r2))[0]
                    writer.write(frames_bytes([hello_frame(hello2["nonce"])])
                                 + frames_bytes([their_proof]) + frames_bytes([evil]))
                    w2.close()
                    await w2.wait_closed()
                await drain_to_eof(reader, writer)
                reason = "extension types" if how.startswith("instead") else "failed authentication"
                await logs.wait_for(reason)
            assert not flag.exists()
            assert not pending.done()
            b.tell(held, "release", value="fine")
            assert await pending == "fine"
    run(main())
    assert not flag.exists()


def test_authenticated_raw_peer_can_deliver_a_pickle_control(tmp_path):
    """Control for the test above: the same pickle after a correct handshake does load
    (here by a handler that opens it); but as a reply to an ask that did not go out on
    that connection it is dropped unopened."""
    flag = tmp_path / "pwned"

    class Loader(Actor):
        def handle_load(self, blob):
            try:
                blob.loads()
            except Exception:
                pass
            return "loaded"

    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (b,):
            held = b.spawn(Echo())
            b.spawn(Loader(), "loader")
            pending = b.ask(held, "wait")
            await b.ask(held, "echo", x=0)
            reader, writer, hello = await raw_connect(b.address)
            nonce = os.urandom(16)
            proof = _mac(SECRET, ROLE_CONNECT, hello["nonce"], nonce)
            writer.write(frames_bytes([hello_frame(nonce)]) + frames_bytes([msgpack.packb({"mac": proof})])
                         + frames_bytes([evil_reply_frame(flag, list(b._pending))]))
            await b.ask(held, "echo", x=1)  # a turn for the forged reply to be seen and dropped
            assert not flag.exists() and not pending.done()
            evil = pickle.dumps(ValueError(Touch(flag)), protocol=5)
            ext = msgpack.ExtType(EXT_PICKLE, msgpack.packb([evil, 1, 0]))
            writer.write(frames_bytes([msgpack.packb([["loader", "load", 7, {"blob": ext}]])]))
            while True:  # skip the listener's proof; wait for the reply to request 7
                msg = msgpack.unpackb((await read_frames(reader))[0], strict_map_key=False)
                if isinstance(msg, list) and msg[0][2] == 7:
                    break
            assert flag.exists()
            b.tell(held, "release", value="fine")
            assert await pending == "fine"
            writer.close()
            await writer.wait_closed()
    run(main())


def test_messages_arriving_with_the_handshake_proof_are_not_lost():
    """A peer may send right after its proof, in the same read, before connect returns."""
    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (a,):
            sink = a.spawn(Echo(), "sink")
            server_done = asyncio.Event()

            async def serve(reader, writer):
                nonce = os.urandom(16)
                writer.write(frames_bytes([hello_frame(nonce, "tcp://raw-server:1")]))
                peer = msgpack.unpackb((await read_frames(reader))[0])
                proof = _mac(SECRET, b"accept", peer["nonce"], nonce)
                batch = msgpack.packb([["sink", "record", 0, {"x": "early"}]])
                writer.write(frames_bytes([msgpack.packb({"mac": proof})]) + frames_bytes([batch]))
                await read_frames(reader)  # the client's proof
                await drain_to_eof(reader, writer)
                server_done.set()

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            comm = await a.connect(f"tcp://127.0.0.1:{port}")
            assert await a.ask(sink, "get") == ["early"]
            comm.close()
            await server_done.wait()
            server.close()
            await server.wait_closed()
    run(main())


@pytest.mark.parametrize("fields", [{"exc": "not an exception"}, {"error": "not a pickle"}, ["a", "list"]],
                         ids=["exc-not-an-exception", "error-not-a-pickle", "not-a-map"])
def test_a_malformed_reply_fails_its_ask_naming_it(fields):
    """A peer's reply whose fields are not a value or an error fails the ask with
    BadMessageError, rather than leaving it waiting; the connection stays."""
    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (a,):
            async def serve(reader, writer):
                nonce = os.urandom(16)
                writer.write(frames_bytes([hello_frame(nonce, "tcp://raw-server:1")]))
                peer = msgpack.unpackb((await read_frames(reader))[0])
                writer.write(frames_bytes([msgpack.packb({"mac": _mac(SECRET, b"accept", peer["nonce"], nonce)})]))
                await read_frames(reader)  # the client's proof
                with contextlib.suppress(asyncio.IncompleteReadError):  # (until the host closes)
                    while True:  # answer every ask: "bad" as the test says, others with their x
                        for _, op, rid, body in msgpack.unpackb((await read_frames(reader))[0],
                                                                strict_map_key=False):
                            reply = fields if op == "bad" else {"value": body["x"]}
                            writer.write(frames_bytes([msgpack.packb([["", "_reply", rid, reply]])]))
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            address = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            try:
                await a.connect(address)
                ref = ActorRef(address, "raw")
                with pytest.raises(BadMessageError, match="malformed reply"):
                    await asyncio.wait_for(a.ask(ref, "bad"), 10)
                assert await a.ask(ref, "good", x=7) == 7
            finally:
                server.close()
                await server.wait_closed()
    run(main())


def test_host_close_drops_connections_still_in_handshake():
    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (b,):
            reader, writer, _ = await raw_connect(b.address)  # never proves anything
            await b.close()
            await drain_to_eof(reader, writer)  # the host closed its end
    run(main())


def test_connect_timeout_mid_handshake_and_close_while_connecting_leak_nothing():
    async def main():
        accepted = asyncio.Queue()
        eofs = asyncio.Queue()

        async def serve(reader, writer):  # accepts, then says nothing
            await accepted.put(None)
            await drain_to_eof(reader, writer)
            await eofs.put(None)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with hosts("tcp", n=1, connect_timeout=0.2) as (a,):
                with pytest.raises(CommClosedError, match="could not connect"):
                    await a.connect(address)
                await accepted.get()
                await eofs.get()  # our half-open socket was closed
                a.connect_timeout = 30
                pending = a.ask(ActorRef(address, "x"), "echo", x=1)
                await accepted.get()
                await a.close()  # cancels the connect: the ask fails, the socket closes
                with pytest.raises(CommClosedError):
                    await pending
                await eofs.get()
        finally:
            server.close()
            await server.wait_closed()
    run(main())


# --- a real second process ---------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from actorrt.core import Actor, Host

    class Echo(Actor):
        def handle_echo(self, x):
            return x
        def handle_pid(self):
            return os.getpid()
        def handle_wait(self, reply):
            self.held = reply

    async def main():
        async with Host("tcp://127.0.0.1:0", secret=os.environb[b"SECRET"]) as h:
            h.spawn(Echo(), "echo")
            print(h.address, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
""")


def test_cross_process_ask_and_kill_fails_pending_asks():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "SECRET": SECRET.decode(), "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "child did not start"
        address = proc.stdout.readline().decode().strip()
        assert address.startswith("tcp://127.0.0.1:")

        async def main():
            async with Host(None, secret=SECRET) as a:
                ref = ActorRef(address, "echo")
                assert await a.ask(ref, "echo", x=[1, {"two": b"3"}]) == [1, {"two": b"3"}]
                assert await a.ask(ref, "pid") == proc.pid
                lost = asyncio.Event()
                a.peer_lost_callbacks.append(lambda addr, comm: lost.set())
                waiting = a.ask(ref, "wait")
                await a.ask(ref, "echo", x=0)  # the child now holds `waiting`
                proc.kill()
                with pytest.raises(CommClosedError):
                    await waiting
                await lost.wait()
        run(main(), timeout=8)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_silent_peer_is_closed_after_the_handshake_timeout(monkeypatch):
    """A socket that never completes the handshake does not hold a connection forever."""
    monkeypatch.setattr("actorrt.core.tcp.HANDSHAKE_TIMEOUT", 0.05)

    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (b,):
            reader, writer, hello = await raw_connect(b.address)
            assert await reader.read() == b""  # the listener hung up on us
            writer.close()
            await writer.wait_closed()
    run(main())


# --- the cost of strangers and of the noisy ---------------------------------------------

def test_silent_strangers_cannot_crowd_out_a_real_peer(monkeypatch):
    monkeypatch.setattr("actorrt.core.listener.MAX_PENDING_HANDSHAKES", 8)

    async def main():
        async with hosts("tcp", secrets=[SECRET, SECRET]) as (b, good):
            ref = b.spawn(Echo())
            strangers = [await raw_connect(b.address) for _ in range(20)]  # each says nothing more
            pending = list(b._listener._pending)
            assert len(pending) <= 8
            # Before it proves itself, a connection holds a few KB, not a staging buffer.
            assert all(len(c._decoder._stage) <= 2 * 4096 for c in pending)
            assert await good.ask(ref, "echo", x="through") == "through"
            # The oldest strangers were closed: they read the end of the stream.
            reader, writer, _ = strangers[0]
            assert await asyncio.wait_for(reader.read(), 2) == b""
            for _, w, _ in strangers:
                w.close()
    run(main())


def test_a_flood_of_malformed_messages_logs_a_few_lines_and_a_summary():
    async def main():
        async with hosts("tcp", secrets=[SECRET]) as (b,):
            b.spawn(Echo(), "echo")
            with watch_logs() as logs:
                reader, writer, hello = await raw_connect(b.address)
                nonce = os.urandom(16)
                proof = _mac(SECRET, ROLE_CONNECT, hello["nonce"], nonce)
                junk = [["echo", "no_such_op", 0, {}]] * 500 + [[1, 2]] * 500
                writer.write(frames_bytes([hello_frame(nonce)]) + frames_bytes([msgpack.packb({"mac": proof})])
                             + frames_bytes([msgpack.packb(junk)]))
                await writer.drain()
                writer.close()
                await logs.wait_for("more bad messages from tcp://raw-peer:1 were dropped")
            lines = [r for r in logs.records if "raw-peer" in r]
            assert len(lines) <= 6
            assert "995 more bad messages" in lines[-1]
    run(main())


class Slow(Actor):
    """Each message takes ~5 ms of this host's loop."""

    def __init__(self):
        self.seen = []

    def handle_record(self, x):
        deadline = time.perf_counter() + 0.005
        while time.perf_counter() < deadline:
            pass
        self.seen.append(x)

    def handle_get(self):
        return list(self.seen)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_flood_from_one_peer_leaves_the_loop_turns_between_its_slices(transport):
    """40 messages of 5 ms from one peer, in one batch: handled in order, in slices of
    about DISPATCH_SLICE, with the loop's other work (heartbeats, other peers) between."""
    async def main():
        async with hosts(transport) as (a, b):
            slow = Slow()
            ref = b.spawn(slow)
            await a.ask(ref, "get")  # connected
            loop = asyncio.get_running_loop()
            between: list[int] = []

            def tick():
                between.append(len(slow.seen))
                if len(slow.seen) < 40:
                    loop.call_soon(tick)
            for i in range(40):
                a.tell(ref, "record", x=i)
            loop.call_soon(tick)
            assert await a.ask(ref, "get") == list(range(40))  # (asked after: answered after all)
            assert any(0 < n < 40 for n in between), between  # other work ran mid-flood
    run(main())


@pytest.mark.parametrize("size", [10, 1 << 20])
def test_the_process_counts_every_byte_it_sends_and_receives(size):
    # (A worker reports these figures: worker/activity.py.) Small batches take a
    # shorter path out than large ones; both are counted.
    from actorrt.core.tcp import traffic

    async def main():
        async with hosts("tcp") as (h0, h1):
            ref = h1.spawn(Echo())
            await h0.ask(ref, "echo", x=0)  # (connects)
            sent, received = traffic.sent, traffic.received
            await h0.ask(ref, "echo", x=b"x" * size)
            # Both hosts live in this process: the value went out and came back, twice.
            assert traffic.sent - sent >= 2 * size
            assert traffic.received - received >= 2 * size
    run(main())


def test_a_write_to_a_peer_that_closed_its_end_is_a_lost_connection_said_quietly(caplog):
    """A process writing to a peer that just exited (a scheduler's last frees as a
    cluster closes) finds the connection broken on write, not on read: it is lost all
    the same, and not worth a warning, as a read finding the end is not."""
    async def main():
        async with hosts("tcp") as (h0, h1):
            ref = h1.spawn(Echo(), "echo")
            await h0.ask(ref, "echo", x=0)
            comm = h0.comm_to(h1.address)
            h1.comm_to(h0.address).close()  # (its socket is closed now: nothing queued on it)
            # In this same turn, before h0's loop can read the end: writes until one fails.
            for i in range(3):
                h0.tell(ref, "record", x=i)
                comm.flush_now()
                if comm.closed:
                    break
            assert comm.closed
            assert h0.comm_to(h1.address) is None
    with caplog.at_level(logging.DEBUG, logger="actorrt"):
        run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "actorrt.comm"], \
        [r.getMessage() for r in caplog.records]
