"""Holding a worker's event loop still from inside a task or an actor method, until the
test lets go: proof that something reached the caller without that loop.

The code that runs on the worker connects back to a gate the test listens on, and
blocks its loop in a ``recv`` until the test sends a byte. It hands the loop that work
straight (``call_soon_threadsafe``), not through the runtime: a task or a method that
hands its loop work through the runtime is answered or reported after it, from the
loop.
"""
import socket
import threading

import actorrt


def hold_this_workers_loop(port: int, wait: bool = True) -> None:
    """On a worker, from a task's or an actor's thread: hold the worker's loop until
    the gate at ``port`` sends a byte; return once it is held (or at once, if not
    ``wait``: the loop holds on its next turn, after what it was handed before)."""
    held = threading.Event()

    def hold():
        with socket.create_connection(("127.0.0.1", port)) as gate:
            gate.settimeout(60)
            held.set()
            gate.recv(1)

    actorrt.get_worker().host.loop.call_soon_threadsafe(hold)
    if wait:
        held.wait(60)


def while_held(gate: socket.socket, answer, check) -> None:
    """Test side: wait for the worker to hold its loop at ``gate``, run ``check()``
    meanwhile, then let go. If the worker never connects, ``answer()`` (the call's
    result) says why."""
    try:
        conn, _ = gate.accept()
    except TimeoutError:
        answer()  # the task or method failed before it held the loop: say why
        raise
    with conn:
        try:
            check()
        finally:
            conn.sendall(b"x")  # let go of the loop
