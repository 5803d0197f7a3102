"""A peer that stops reading cannot make a process hold its messages without bound:
past OUTBOX_LIMIT bytes of messages made for it, the connection is dropped. A large
value being sent does not count: its buffer is the sender's own, not a copy."""
from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from actorrt.core import Actor, Host, Pickled
from actorrt.core import tcp
from actorrt.testing import poll_for

pytestmark = pytest.mark.timeout(60)


class Sink(Actor):
    def __init__(self):
        self.got = 0

    def handle_put(self, blob):
        self.got += 1


@contextlib.asynccontextmanager
async def sender_and_sink():
    """Two hosts over real TCP (no in-process shortcut) and a Sink on the second:
    ``(a, b, sink, ref)``."""
    async with Host("tcp://127.0.0.1:0", shortcut=False) as a, Host("tcp://127.0.0.1:0", shortcut=False) as b:
        sink = Sink()
        yield a, b, sink, b.spawn(sink)


def stop_reading(host: Host, peer_address: str):
    """``host`` reads nothing more from ``peer_address`` (a frozen peer, not a closed one)."""
    comm = host.comm_to(peer_address)
    host.loop.remove_reader(comm._fd)
    return comm


def test_a_peer_that_reads_nothing_is_dropped_past_the_outbox_limit(monkeypatch, caplog):
    monkeypatch.setattr(tcp, "OUTBOX_LIMIT", 1 << 20)

    async def main():
        async with sender_and_sink() as (a, b, _, ref):
            a.tell(ref, "put", blob=b"warm")
            await asyncio.wait_for(a.ask(ref, "put", blob=b"x"), 5)  # connected both ways
            stop_reading(b, a.address)
            lost = asyncio.Event()
            a.peer_lost_callbacks.append(lambda address, comm: lost.set())
            with caplog.at_level(logging.WARNING, logger="actorrt.comm"):
                for _ in range(64 * 1024):  # 64 MiB of 1 KiB messages, far past socket buffers
                    if lost.is_set():
                        break
                    a.tell(ref, "put", blob=b"m" * 1024)
                    await asyncio.sleep(0)
                await asyncio.wait_for(lost.wait(), 10)
            assert "peer is not reading" in caplog.text
            writer = a.comm_to(b.address)
            assert writer is None or writer.closed
    asyncio.run(main())


def test_a_large_value_on_its_way_does_not_count_against_the_limit(monkeypatch):
    monkeypatch.setattr(tcp, "OUTBOX_LIMIT", 1 << 20)

    async def main():
        async with sender_and_sink() as (a, b, sink, ref):
            await asyncio.wait_for(a.ask(ref, "put", blob=b"x"), 5)
            comm = stop_reading(b, a.address)
            big = Pickled.dumps(bytes(64 << 20))  # out of band: the value's own buffer
            a.tell(ref, "put", blob=big)
            writer = a.comm_to(b.address)._writer
            await poll_for(lambda: writer.buffered > 16 << 20)  # queued: b takes no more
            assert writer.owned < 1 << 20 and not a.comm_to(b.address).closed
            b.loop.add_reader(comm._fd, comm._read_ready)  # b reads again: all of it arrives
            await asyncio.wait_for(a.ask(ref, "put", blob=b"y"), 20)
            assert sink.got == 3
    asyncio.run(main())


def test_one_large_message_to_a_reading_peer_is_not_a_reason_to_drop_it(monkeypatch):
    monkeypatch.setattr(tcp, "OUTBOX_LIMIT", 1 << 20)

    async def main():
        async with sender_and_sink() as (a, b, sink, ref):
            # in band: a list pickles into the envelope itself, 8 MiB of bytes made for b
            await asyncio.wait_for(a.ask(ref, "put", blob=Pickled.dumps(list(range(1 << 20)))), 20)
            await asyncio.wait_for(a.ask(ref, "put", blob=b"after"), 5)
            assert sink.got == 2 and not a.comm_to(b.address).closed
    asyncio.run(main())
