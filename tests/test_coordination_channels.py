"""Coordination calls on a thread's own connection to the scheduler's host
(coordination/_proxy.py ``ask_and_wait``, client/routes.py): from a thread's second
call on, a task's ``Queue.get`` (or any sync primitive call) is read by the task's
thread itself; its tells take the same connection once it is in use, so a put and the
qsize after it keep their order; and a get withdrawn as its item comes loses nothing.

Over real worker processes, and a client connected over TCP from another thread.
Synchronised on replies, gates and the queue actor's state, never on sleeps.
"""
import ctypes
import socket
import threading

import pytest

from actorrt import Client, Queue, get_client
from actorrt.client.routes import routes_of
from actorrt.coordination import _proxy
from actorrt.testing import wait_until

from loop_gates import hold_this_workers_loop, while_held

pytestmark = pytest.mark.timeout(90)


def _channel_of(client, proxy):
    """This thread's channel to ``proxy``'s actor's host, once open."""
    routes = routes_of(client)
    wait_until(lambda: getattr(routes.known(proxy._ref.address), "channel", None) is not None, timeout=20)
    return routes.known(proxy._ref.address).channel


def gets_while_held(name, port):
    q = Queue(name)
    got = [q.get(timeout=30) for _ in range(2)]  # (the second opens this thread's channel)
    _channel_of(get_client(), q)
    got.append(q.get(timeout=30))
    hold_this_workers_loop(port)
    return got + [q.get(timeout=30) for _ in range(3)]


def test_a_tasks_gets_are_answered_while_its_workers_loop_is_held(pclient):
    name = "channel-gets-while-held"
    q = Queue(name, client=pclient)
    for i in range(6):
        q.put(i)
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        task = pclient.submit(gets_while_held, name, gate.getsockname()[1], pure=False)
        while_held(gate, lambda: task.result(timeout=5), lambda: None)
        assert task.result(timeout=30) == list(range(6))


def puts_and_sizes(name, n):
    q = Queue(name)
    sizes = []
    for i in range(n):
        q.put(i)               # a tell: on the channel once it is in use, else the shared way
        sizes.append(q.qsize())  # an ask, after it
    channel = _channel_of(get_client(), q)
    return sizes, not channel.closed


def test_a_tasks_puts_and_the_asks_after_them_keep_their_order(pclient):
    sizes, open_ = pclient.submit(puts_and_sizes, "channel-put-order", 40, pure=False).result(timeout=60)
    assert sizes == list(range(1, 41)) and open_


def producer(name, n):
    q = Queue(name)
    for i in range(n):
        q.put(i)
    return n


def consumer(name, n):
    q = Queue(name)
    return [q.get(timeout=30) for _ in range(n)]


def test_a_stream_between_two_tasks_loses_and_reorders_nothing(pclient):
    a, b = sorted(pclient.scheduler_info()["workers"])
    got = pclient.submit(consumer, "channel-stream", 500, workers=[a], pure=False)
    made = pclient.submit(producer, "channel-stream", 500, workers=[b], pure=False)
    assert made.result(timeout=60) == 500
    assert got.result(timeout=60) == list(range(500))


def _raise_in(thread, exc_type):
    """Raise ``exc_type`` in ``thread`` at its next bytecode (as Ctrl-C would in the main one)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))
    assert done == 1


def test_a_get_on_the_channel_withdrawn_as_its_item_comes_loses_no_item(pclient, monkeypatch):
    """A thread's get waits on its own connection; it is interrupted (an exception
    raised in it, as Ctrl-C raises in the main thread), then the item is put: the get
    is withdrawn, and the item comes back to the queue."""
    on_channel = []
    ask_on_channel = _proxy._ask_on_channel
    monkeypatch.setattr(_proxy, "_ask_on_channel", lambda *a: on_channel.append(a[3]) or ask_on_channel(*a))
    name = "channel-withdrawn-get"
    actor = lambda: pclient.cluster.scheduler_host.actors.get(f"queue/{name}")  # noqa: E731
    with Client(pclient.scheduler.address) as remote:
        out = {}

        def getter():
            q = Queue(name, client=remote)
            q.put("a")
            q.put("b")
            out["warm"] = [q.get(timeout=30), q.get(timeout=30)]
            out["channel"] = _channel_of(remote, q)  # (the get below takes it)
            try:
                q.get()
            except KeyboardInterrupt:
                out["interrupted"] = True

        thread = threading.Thread(target=getter)
        thread.start()
        wait_until(lambda: "channel" in out and actor() is not None and len(actor().getters) == 1, timeout=30)
        _raise_in(thread, KeyboardInterrupt)
        Queue(name, client=pclient).put("item")
        thread.join(30)
        assert out["warm"] == ["a", "b"] and out.get("interrupted")
        assert on_channel == ["get"]
        assert Queue(name, client=pclient).get(timeout=20) == "item"
