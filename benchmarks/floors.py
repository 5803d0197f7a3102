"""The floors of a call's round trip: the thread hand-offs and socket writes a call
takes, with no work on any of them.

    python benchmarks/floors.py            # both floors, best of 3
    python benchmarks/floors.py --quick    # fewer round trips

A thread writes a small request on its own socket and sleeps; the other process
answers; the answer wakes the thread. Three answering sides:

* ``loop``: the other process's loop reads the request and writes the answer. A
  coordination call's path (a task's ``Queue.get``: the queue lives on the
  scheduler's loop).
* ``lane``: the other loop hands the request to a thread, which writes the answer
  itself. An actor call's path when its worker's loop reads it
  (``ACTORRT_LANE_READS=0``, or an actor that does not qualify).
* ``thread``: a thread of the other process reads the request off the socket itself
  and writes the answer. A sequential actor call's path, read by the actor's lane
  (worker/lane_reads.py): no loop on either side.

And three readers of the answer on this side:

* ``loop``: this process's loop reads it and wakes the thread: one wake-up more.
* ``thread``: the thread sleeps in a read of its socket, and the answer wakes it.
* ``poll``: the thread polls its socket without sleeping, for up to actorrt's budget
  (core/spin.py, ``ACTORRT_SPIN_US``), then sleeps in a read: the answer wakes no one
  when it comes meanwhile. A sequential actor call's path, and a task's ``Queue.get``'s,
  on the calling thread's own connection (core/thread_channel.py). A ``thread``
  answerer then polls for each call the same way, as an actor's lane does.

The socket is the kind actorrt uses between two processes of this machine
(``sockets.py``: a Unix one on Linux, TCP with ``ACTORRT_UNIX_SOCKETS=0``).

What a runtime does on top (decoding, dispatch, pickling, its own bookkeeping) comes
on top of these; ``bench_actors.py`` and ``bench_coordination.py`` print them beside
their own rows, with the best ratio to dask.distributed such a path leaves room for.
"""
from __future__ import annotations

import asyncio
import os
import queue
import select
import socket
import subprocess
import sys
import threading
from collections import deque
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sockets  # noqa: E402
from actorrt.core.spin import default_budget, poll_for  # noqa: E402  (the floor polls as actorrt does)
from common import fmt_seconds, format_columns, parse_args  # noqa: E402
from task_workloads import median_seconds  # noqa: E402

MESSAGE = 40  # bytes: a small call's size on the wire
KINDS = ("loop", "lane", "thread")
READERS = ("loop", "thread", "poll")


def serve(kind: str, polling: bool = False) -> None:
    """Child process: print the address, answer one connection until it closes
    (``polling``: a ``thread`` answerer polls for each request first, as an actor's
    lane does)."""
    listener, address = sockets.listener()
    print(address, flush=True)
    conn, _ = listener.accept()
    listener.close()
    sockets.nodelay(conn)
    if kind == "thread":
        answer_on_thread(conn, default_budget() if polling else 0.0)
        return
    conn.setblocking(False)
    loop = asyncio.new_event_loop()
    lane: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    if kind == "lane":
        def answer_on_lane() -> None:
            while (request := lane.get()) is not None:
                conn.send(request)  # (the lane answers from its thread)
        threading.Thread(target=answer_on_lane, daemon=True).start()
    pending = bytearray()

    def readable() -> None:
        data = conn.recv(65536)
        if not data:
            lane.put(None)
            loop.stop()
            return
        pending.extend(data)
        while len(pending) >= MESSAGE:
            request = bytes(pending[:MESSAGE])
            del pending[:MESSAGE]
            if kind == "lane":
                lane.put(request)
            else:
                conn.send(request)

    loop.add_reader(conn, readable)
    loop.run_forever()


def answer_on_thread(conn: socket.socket, budget: float = 0.0) -> None:
    """Read each request on this thread and answer it from here, until the peer closes;
    polling for up to ``budget`` seconds before each read sleeps (as actorrt's lanes do,
    with its own ``poll_for``)."""
    pending = bytearray()
    poll = select.poll()
    poll.register(conn, select.POLLIN)
    while True:
        if budget:
            poll_for(poll.poll, budget)
        if not (data := conn.recv(65536)):
            break
        pending.extend(data)
        while len(pending) >= MESSAGE:
            conn.send(bytes(pending[:MESSAGE]))
            del pending[:MESSAGE]


def call_round_trip(kind: str, n: int, repeat: int = 3, reader: str = "loop") -> float:
    """Seconds per round trip of a thread's call answered as ``kind`` says and read by
    ``reader`` (see the module docstring), one at a time: the median of ``n``, the least
    of ``repeat`` runs."""
    assert kind in KINDS and reader in READERS
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind,
                              *(["polling"] if reader == "poll" else [])],
                             stdout=subprocess.PIPE, text=True)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    sock: socket.socket | None = None
    try:
        assert child.stdout is not None
        sock = sockets.connect(child.stdout.readline().strip())
        sock.setblocking(False)
        waiting: deque[threading.Lock] = deque()
        pending = bytearray()

        def readable(sock: socket.socket = sock) -> None:  # (this loop: the answer wakes its thread)
            pending.extend(sock.recv(65536))
            while len(pending) >= MESSAGE:
                del pending[:MESSAGE]
                waiting.popleft().release()

        request = b"x" * MESSAGE
        trip: Callable[[], None]
        if reader in ("thread", "poll"):
            sock.setblocking(True)
            poll = select.poll()
            poll.register(sock, select.POLLIN)
            budget = default_budget() if reader == "poll" else 0.0

            def trip() -> None:  # (the calling thread writes its call and reads the answer)
                sock.send(request)
                if budget:
                    poll_for(poll.poll, budget)
                got = 0
                while got < MESSAGE:
                    chunk = sock.recv(MESSAGE - got)
                    if not chunk:
                        raise ConnectionError(f"the {kind} server closed the connection mid-answer")
                    got += len(chunk)
        else:
            loop.call_soon(loop.add_reader, sock, readable)
            runner.start()

            def trip() -> None:  # (the calling thread writes its call; this loop wakes it)
                waiter = threading.Lock()
                waiter.acquire()
                waiting.append(waiter)
                sock.send(request)
                waiter.acquire()
        return min(median_seconds(trip, n) for _ in range(max(1, repeat)))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        if runner.is_alive():
            runner.join(10)
        loop.close()
        if sock is not None:
            sock.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def floor_row(label: str, floor: float, ours: float | None, dask: float | None) -> tuple[str, ...]:
    """One line of a floor table (seconds per round trip): the floor, both runtimes, and
    how far each is from it. ``dask / floor`` is the most any runtime taking these
    hand-offs could be faster than dask.distributed here."""
    def cell(v: float | None) -> str:
        return "-" if v is None else fmt_seconds(v)

    def over(v: float | None) -> str:
        return "n/a" if v is None else f"{v / floor:.1f}x"
    return (label, fmt_seconds(floor), cell(ours), cell(dask), over(ours), over(dask))


FLOOR_COLUMNS = ("floor (no work on the hand-offs)", "floor", "actorrt", "dask", "actorrt / floor",
                 "dask / floor")


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) in (3, 4) and sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3:] == ["polling"])
    args = parse_args(__doc__, argv)
    n, repeat = (300, 1) if args.quick else (3_000, args.repeat)
    lines = [(f"thread -> {kind} -> {'loop -> ' if reader == 'loop' else ''}thread"
              + (" (polling)" if reader == "poll" else ""),
              fmt_seconds(call_round_trip(kind, n, repeat, reader)))
             for kind in KINDS for reader in READERS]
    print(format_columns(("floor: a thread's call, answered by the other process's", "round trip"), lines))
    print(f"over a {sockets.same_machine_kind()} socket (the kind actorrt uses between two processes here)")


if __name__ == "__main__":
    main()
