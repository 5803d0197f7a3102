"""Bugs found in a review of the client: each test failed before its fix."""
import gc
import threading

from actorrt import Client


def inc(x):
    return x + 1


class _Cycle:
    """An object in a reference cycle: only the cyclic garbage collector frees it."""


def test_future_collected_while_client_lock_held_does_not_deadlock(client):
    # The garbage collector may run on any allocation, e.g. inside submit/map while they
    # hold the client's lock; a Future in cyclic garbage is then released right there,
    # on the same thread. That must not deadlock on the client's own lock.
    gc.disable()
    try:
        node = _Cycle()
        node.me, node.future = node, client.submit(inc, 1)
        del node
        finished = threading.Event()

        def collect_inside_client():
            with client._lock:
                gc.collect()
            finished.set()

        t = threading.Thread(target=collect_inside_client, daemon=True)
        t.start()
        assert finished.wait(10), "releasing a Future inside the client's lock deadlocked"
    finally:
        gc.enable()
    assert client.submit(inc, 2).result() == 3
