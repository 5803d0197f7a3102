"""A thread writes its own asks and tells to the wire (Host.ask_from_thread): an actor
call, a coordination call or a Queue put leaves from the thread that made it, so the
loop is woken only by the reply; and an actor's lane, having answered from its
thread, leaves the call's bookkeeping to the actor's next message. Over real worker processes: each test holds the loop
that used to send the message, and sees the message arrive anyway.

Also here: the rule that keeps it safe (a thread writes only once its loop has run
everything handed to it, ``runtime.caught_up``), the order of one thread's calls
whichever way each goes, and a task whose wait lends its slot to a task placed while
it waits (worker/pool.py).
"""
import asyncio
import socket
import threading

import pytest

from actorrt import Client, Queue, runtime
from actorrt.testing import wait_until

from loop_gates import hold_this_workers_loop, while_held
from test_coordination_queues import get_interrupted_as_its_item_comes

pytestmark = pytest.mark.timeout(90)


class Knocker:
    """An actor that proves it was called: it connects to a port the test listens on."""

    def __init__(self):
        self.log = []

    def knock(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"k")
        return "knocked"

    def append(self, item):
        self.log.append(item)

    def items(self):
        return list(self.log)

    async def items_async(self):
        return list(self.log)

    def result_of(self, future):
        return future.result(timeout=20)


def inc(x):
    return x + 1


def _knocked(gate):
    conn, _ = gate.accept()
    with conn:
        conn.settimeout(20)
        return conn.recv(1)


@pytest.fixture
def gate():
    with socket.create_server(("127.0.0.1", 0)) as g:
        g.settimeout(20)
        yield g


def _holding(loop):
    """Hold ``loop`` until the returned event is set (posted straight to the loop, not
    through the runtime: the runtime would then count it as work still to run)."""
    held, release = threading.Event(), threading.Event()

    def hold():
        held.set()
        release.wait(30)

    loop.call_soon_threadsafe(hold)
    assert held.wait(20)
    return release


def test_a_clients_actor_call_reaches_the_actor_while_the_clients_loop_is_held(pclient, gate):
    knocker = pclient.submit(Knocker, actor=True, pure=False).result()
    knocker.items().result()  # (the connection to the actor's worker is open)
    release = _holding(pclient.loop)
    try:
        call = knocker.knock(gate.getsockname()[1])
        assert _knocked(gate) == b"k"
    finally:
        release.set()
    assert call.result(timeout=20) == "knocked"


def call_and_put_while_holding_the_loop(knocker, queue_name, hold_port, knock_port):
    q = Queue(queue_name)
    q.qsize()                 # (resolved: the proxy knows where the queue lives)
    knocker.items().result()  # (this worker's connection to the actor's worker is open)
    hold_this_workers_loop(hold_port)
    # Neither waits for this worker's loop to send it. (The put first: while an ask a
    # thread wrote awaits its reply, the host's other messages go through the loop.)
    q.put("item")
    knocked = knocker.knock(knock_port)
    # The answer, not the pending call: a pending ActorFuture in a task's result could
    # not be pickled if the result were fetched before the answer was read.
    return knocked.result(timeout=30)


def test_a_tasks_actor_call_and_queue_put_leave_while_its_workers_loop_is_held(pclient, gate):
    a, b = sorted(pclient.scheduler_info()["workers"])
    knocker = pclient.submit(Knocker, actor=True, workers=[b], pure=False).result()
    name = f"thread-put-{runtime.posts_made()}-{id(gate)}"
    with socket.create_server(("127.0.0.1", 0)) as hold_gate:
        hold_gate.settimeout(20)
        task = pclient.submit(call_and_put_while_holding_the_loop, knocker, name,
                              hold_gate.getsockname()[1], gate.getsockname()[1],
                              workers=[a], pure=False)

        def arrived_while_held():
            assert _knocked(gate) == b"k"
            assert Queue(name, client=pclient).get(timeout=20) == "item"
        while_held(hold_gate, lambda: task.result(timeout=5), arrived_while_held)
    assert task.result(timeout=20) == "knocked"


def test_one_threads_calls_keep_their_order_whichever_way_each_goes(pclient):
    knocker = pclient.submit(Knocker, actor=True, pure=False).result()
    expected = []
    for burst in range(5):
        # A burst of calls made faster than replies come (through the loop's batches),
        # then calls that each wait for their reply (written by this thread).
        for i in range(50):
            knocker.append((burst, "piped", i))
        for i in range(5):
            knocker.append((burst, "waited", i)).result()
        expected += [(burst, "piped", i) for i in range(50)] + [(burst, "waited", i) for i in range(5)]
    assert knocker.items().result() == expected


def test_a_call_carrying_a_future_just_submitted_leaves_after_the_submission(pclient):
    """The submit is handed to the loop, which writes it out as it runs it
    (Client._deliver); the call, written by this thread, goes only once the loop has
    run it (runtime.caught_up). The actor's worker claims the key and gets the value,
    every time."""
    knocker = pclient.submit(Knocker, actor=True, pure=False).result()
    knocker.items().result()
    for i in range(20):
        future = pclient.submit(inc, i, pure=False)
        assert knocker.result_of(future).result(timeout=30) == i + 1
        del future


def test_an_async_call_sees_every_sync_call_answered_from_its_lane_before_it(pclient):
    """A sync call answered from its lane is handed back to the worker's loop only at
    the actor's next message: an async call (which starts once every earlier sync call
    is done) must find it done, whether it waited for its answer or not."""
    knocker = pclient.submit(Knocker, actor=True, pure=False).result()
    for i in range(30):
        knocker.append(("waited", i)).result()
        assert knocker.items_async().result()[-1] == ("waited", i)
        knocker.append(("not waited", i))
        assert knocker.items_async().result()[-1] == ("not waited", i)


def test_an_interrupted_get_its_thread_sent_loses_no_item(pclient):
    """Ctrl-C lands as the item of a get this thread wrote itself is on its way (a
    client connected over TCP, on a loop of its own): the get raises KeyboardInterrupt
    and the item goes back to the queue, as when the loop sent the get."""
    address = pclient.scheduler.address
    with Client(address) as remote:
        assert remote.host.comm_to(address).threads_may_send  # (TCP: the thread writes)
        get_interrupted_as_its_item_comes(remote, pclient, "interrupted-from-thread")


# --- the rule: a thread writes only once its loop has caught up ----------------------------


def test_a_loop_has_caught_up_once_it_has_run_every_call_handed_to_it():
    async def main():
        loop = asyncio.get_running_loop()
        ran = asyncio.Event()
        failed = []
        loop.set_exception_handler(lambda loop, context: failed.append(context["exception"]))

        def from_a_thread():
            runtime.post(loop, ran.set)
            runtime.post(loop, _fails)
            return runtime.caught_up(loop)

        out = []
        t = threading.Thread(target=lambda: out.append(from_a_thread()))
        t.start()
        t.join()  # (this loop is held meanwhile: nothing posted has run)
        assert out == [False] and not runtime.caught_up(loop)
        await ran.wait()  # (both ran in one turn: they were handed over before it began)
        assert runtime.caught_up(loop)  # a call that raised has run too
        assert [type(e) for e in failed] == [ZeroDivisionError]

    asyncio.run(main())


def _fails():
    return 1 / 0


def test_a_call_handed_to_a_closed_loop_is_not_waited_for():
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        runtime.post(loop, print)
    assert runtime.caught_up(loop)


# --- a wait that lends its slot, inside a real cluster --------------------------------------


def take_two(name):
    q = Queue(name)
    first = q.get(timeout=60)   # gives the slot back: the scheduler hears the task waits
    second = q.get(timeout=60)  # lends it: only this worker's pool counts it
    return first, second


def put_one(name, item):
    Queue(name).put(item)
    return item


def test_a_task_placed_while_another_waits_lends_its_slot_runs_in_that_slot():
    """One worker, one thread. The consumer's second wait lends its slot; the producer,
    which the scheduler places only because the consumer waits, must run in that slot,
    or the consumer never gets its item."""
    with Client(n_workers=1, threads_per_worker=1, processes=False) as c:
        name = "lent-slot"
        queue_actor = lambda: c.cluster.scheduler_host.actors.get(f"queue/{name}")  # noqa: E731
        consumer = c.submit(take_two, name, pure=False)
        wait_until(lambda: queue_actor() is not None and len(queue_actor().getters) == 1, timeout=20)
        first_get = queue_actor().getters[0]
        Queue(name, client=c).put("first")
        # The second get waits (a new getter): the consumer's slot is lent now.
        wait_until(lambda: [w for w in queue_actor().getters if w is not first_get], timeout=20)
        producer = c.submit(put_one, name, "second", pure=False)
        assert producer.result(timeout=30) == "second"
        assert consumer.result(timeout=30) == ("first", "second")
