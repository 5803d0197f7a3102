"""The floor: message round trips between two processes on this machine.

    python benchmarks/pingpong.py            # full sizes, best of 3
    python benchmarks/pingpong.py --quick    # tiny sizes, seconds

Three stacks, each with an echo server in a child process and the timing loop here:

* raw: a bare asyncio ``Protocol`` with 4-byte length-prefixed frames, nothing else
  (the floor any framework on this loop pays);
* actorrt: the core ``Host`` — ``host.ask(ref, "ping", x=...)`` to an echo actor;
* dask: ``distributed.comm`` (tornado streams) to a ``distributed.core.Server`` with
  a ``ping`` handler — the layer under dask's rpc.

Two measures per stack: the latency of one round trip at a time, and the rate with
many requests in flight on one connection (pipelined; each stack batches as it does).
The first table compares actorrt with dask; the second shows actorrt over the floor.

:func:`handoff_round_trip` is the floor of a task's round trip (bench_core.py's
``submit(inc).result()``): the raw round trip plus the thread hand-offs a task takes.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sockets  # noqa: E402
from common import (Row, Workload, compare, fmt_seconds, format_columns, parse_args, print_table, timeit)

_LEN = struct.Struct("!I")
PAYLOAD = b"x" * 32


# --- raw asyncio Protocol ---------------------------------------------------------
def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sockets.nodelay(sock)


def _split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return the complete length-prefixed frames at the start of ``buf``."""
    out, pos = [], 0
    while len(buf) - pos >= 4:
        (n,) = _LEN.unpack_from(buf, pos)
        if len(buf) - pos - 4 < n:
            break
        out.append(bytes(buf[pos + 4:pos + 4 + n]))
        pos += 4 + n
    if pos:
        del buf[:pos]
    return out


class EchoProtocol(asyncio.Protocol):
    """Server side: every complete frame goes back; one write per read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = bytearray()
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        frames = _split_frames(self.buf)
        if frames:
            self.transport.write(b"".join(_LEN.pack(len(f)) + f for f in frames))


class PingProtocol(asyncio.Protocol):
    """Client side: ``send`` returns a future resolved by the matching (FIFO) reply."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = bytearray()
        self.waiting: deque[asyncio.Future] = deque()
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for frame in _split_frames(self.buf):
            self.waiting.popleft().set_result(frame)

    def send_many(self, n: int) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(n)]
        self.waiting.extend(futs)
        self.transport.write((_LEN.pack(len(PAYLOAD)) + PAYLOAD) * n)
        return futs


class RelayProtocol(EchoProtocol):
    """Server side of the hand-off floor: each frame goes to a thread, which hands it
    back to the loop to write (a worker's loop -> pool thread -> loop, with no work)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

        def pool_thread() -> None:
            while (frame := self.jobs.get()) is not None:
                loop.call_soon_threadsafe(self.transport.write, _LEN.pack(len(frame)) + frame)
        threading.Thread(target=pool_thread, daemon=True).start()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for frame in _split_frames(self.buf):
            self.jobs.put(frame)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.jobs.put(None)


# --- servers (run in the child process) ----------------------------------------------
# The floors listen on the kind of socket actorrt uses between two processes here
# (sockets.py: a Unix one, unless that is off), as its own Host does.
async def serve_raw() -> str:
    return (await sockets.serve(EchoProtocol))[1]


async def serve_relay() -> str:
    return (await sockets.serve(RelayProtocol))[1]


async def serve_actorrt() -> str:
    from actorrt.core import Actor, Host

    class Echo(Actor):
        def handle_ping(self, x: Any = None) -> Any:
            return x

    host = Host("tcp://127.0.0.1:0", name="echo")
    await host.start()
    host.spawn(Echo(), "echo")
    return host.address


async def serve_dask() -> str:
    from distributed.core import Server

    def ping(x: Any = None) -> Any:
        return x

    server = Server({"ping": ping})
    await server.listen("tcp://127.0.0.1:0")
    return server.address


SERVERS = {"raw": serve_raw, "relay": serve_relay, "actorrt": serve_actorrt, "dask": serve_dask}


def serve(kind: str) -> None:
    """Child process: print the address, serve until the parent closes our stdin."""
    async def main() -> None:
        address = await SERVERS[kind]()
        print(address, flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)),
                         daemon=True).start()
        await done.wait()
    asyncio.run(main())


@contextlib.contextmanager
def echo_server(kind: str) -> Iterator[str]:
    """Start the ``kind`` echo server in a child process; yield its address."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"{kind} echo server did not start (exit code {proc.wait()})")
        yield address
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- clients (run here) --------------------------------------------------------------
class Pinger:
    """One open connection to an echo server, driven from a private event loop."""

    def __init__(self, kind: str, address: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._open(address))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self, address: str) -> None:
        if self.kind == "raw":
            _, self.proto = await sockets.open_connection(PingProtocol, address)
        elif self.kind == "actorrt":
            from actorrt.core import ActorRef, Host
            self.host = Host(None, name="pinger")
            await self.host.start()
            self.ref = ActorRef(address, "echo")
            await self.host.ask(self.ref, "ping", x=0)  # connect and handshake now
        else:
            from distributed.comm import connect
            self.comm = await connect(address)

    async def one_at_a_time(self, n: int) -> None:
        for i in range(n):
            await self._burst(1)

    async def in_flight(self, n: int) -> None:
        await self._burst(n)

    async def _burst(self, n: int) -> None:
        if self.kind == "raw":
            await asyncio.gather(*self.proto.send_many(n))
        elif self.kind == "actorrt":
            ask, ref = self.host.ask, self.ref
            await asyncio.gather(*[ask(ref, "ping", x=i) for i in range(n)])
        else:
            # dask's Server handles one message per comm at a time; pipeline on the comm.
            for i in range(n):
                await self.comm.write({"op": "ping", "x": i, "reply": True})
            for i in range(n):
                await self.comm.read()

    def close(self) -> None:
        if self.kind == "raw":
            self.proto.transport.close()
        elif self.kind == "actorrt":
            self.run(self.host.close())
        else:
            self.comm.abort()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


@contextlib.contextmanager
def pinger(kind: str) -> Iterator[Pinger]:
    with echo_server(kind) as address:
        p = Pinger(kind, address)
        try:
            yield p
        finally:
            p.close()


# --- the floor of a task's round trip ---------------------------------------------------
def handoff_round_trip(n: int, repeat: int = 3) -> float:
    """Seconds per round trip along the path a task's takes, with no work on it: the
    caller's thread -> a loop thread -> socket -> a loop in another process -> a thread
    there -> that loop -> socket -> the first loop -> the caller's thread. Each thread
    hand-off is a wake-up of a sleeping thread, as in ``submit(f).result()`` (whose
    scheduler shares the client's loop, in process)."""
    with echo_server("relay") as address:
        loop = asyncio.new_event_loop()
        runner = threading.Thread(target=loop.run_forever, daemon=True)
        runner.start()
        proto = None
        try:
            _, proto = asyncio.run_coroutine_threadsafe(
                sockets.open_connection(PingProtocol, address), loop).result(10)
            frame = _LEN.pack(len(PAYLOAD)) + PAYLOAD

            def send(waiter: threading.Lock) -> None:  # (on the loop)
                proto.waiting.append(_Release(waiter))
                proto.transport.write(frame)

            def trips() -> None:
                for _ in range(n):
                    waiter = threading.Lock()
                    waiter.acquire()
                    loop.call_soon_threadsafe(send, waiter)
                    waiter.acquire()  # (released on the loop when the reply is in)
            return timeit(trips, repeat=repeat) / n
        finally:
            if proto is not None:
                loop.call_soon_threadsafe(proto.transport.close)
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
            loop.close()


class _Release:
    """Stands in PingProtocol's queue for a future: the reply releases the caller."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def set_result(self, frame: bytes) -> None:
        self.lock.release()


def workloads(quick: bool) -> list[Workload]:
    n_rtt, n_flight = (200, 1_000) if quick else (5_000, 20_000)
    return [
        Workload(f"round trip, one at a time (x{n_rtt:,})",
                 lambda p: p.run(p.one_at_a_time(n_rtt)), tasks=n_rtt, per_task=True),
        Workload(f"{n_flight:,} requests in flight on one connection",
                 lambda p: p.run(p.in_flight(n_flight)), tasks=n_flight, unit="msgs"),
    ]


def floor_table(rows: list[Row], args: Any) -> str:
    """actorrt's Host against a bare Protocol, workload by workload."""
    by_name = {w.name: w for w in workloads(args.quick)}
    lines = []
    with pinger("raw") as p:
        for row in rows:
            w = by_name[row.workload]
            assert w.tasks is not None
            raw = timeit(lambda: w.run(p), repeat=1 if args.quick else args.repeat)
            ours = row.seconds.get("actorrt")
            cells = ["-" if s is None else fmt_seconds(s / w.tasks) if w.per_task
                     else f"{w.tasks / s:,.0f} msgs/s" for s in (raw, ours)]
            overhead = "n/a" if ours is None else f"{ours / raw:.1f}x"
            lines.append((w.name, *cells, overhead))
    return format_columns(("floor", "raw asyncio Protocol", "actorrt Host.ask", "actorrt / raw (time)"),
                          lines)


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(sys.argv[2])
    args = parse_args(__doc__, argv)
    factories = {"actorrt": lambda: pinger("actorrt"), "dask": lambda: pinger("dask")}
    rows = compare(workloads(args.quick), args, factories=factories)
    print_table(rows, title="message round trips between two processes")
    print()
    print(floor_table(rows, args))


if __name__ == "__main__":
    main()
