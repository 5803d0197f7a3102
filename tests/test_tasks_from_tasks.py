"""Tasks that launch tasks: get_client, get_worker, secede, rejoin, worker_client, and the
nested-gather deadlock cases on one worker with one thread (they must finish)."""
import pytest

from actorrt import (Client, as_completed, get_client, get_worker, rejoin, secede, wait,
                     worker_client)
from actorrt.testing import gen_cluster


def fib(n):
    """Waits on its children with a plain gather: the slot is given back automatically."""
    if n < 2:
        return n
    c = get_client()
    a, b = c.submit(fib, n - 1), c.submit(fib, n - 2)
    return sum(c.gather([a, b]))


def fib_secede(n):
    """The dask way: secede and rejoin by hand around the wait."""
    if n < 2:
        return n
    c = get_client()
    a, b = c.submit(fib_secede, n - 1), c.submit(fib_secede, n - 2)
    secede()
    total = a.result() + b.result()
    rejoin()
    return total


def fib_worker_client(n):
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.submit(fib_worker_client, n - 1), c.submit(fib_worker_client, n - 2)
        return a.result() + b.result()


def fib_impure(n):
    """No key dedup: every call is its own task (many tasks wait at once)."""
    if n < 2:
        return n
    c = get_client()
    return sum(c.gather([c.submit(fib_impure, n - 1, pure=False),
                         c.submit(fib_impure, n - 2, pure=False)]))


def sum_as_completed(n):
    c = get_client()
    return sum(f.result() for f in as_completed(c.map(lambda x: x * 2, range(n))))


def first_exception(n):
    c = get_client()
    futures = c.map(lambda x: 1 / (x - 3), range(n))
    done, _ = wait(futures, return_when="FIRST_EXCEPTION")
    return sorted(f.status for f in done)[0]


def client_identity(_):
    c = get_client()
    w = get_worker()
    return c.id, w.host.address, len(w.host._all_comms), c is w.client()


def use_future_in_box(box):
    return box["inner"][0].result() + 1


class Box:
    def __init__(self, future):
        self.future = future


def use_hidden_future(box):
    return box.future.result() * 10


FIBS = [fib, fib_secede, fib_worker_client]


@pytest.mark.parametrize("func", FIBS, ids=lambda f: f.__name__)
def test_fib15_one_worker_one_thread_inprocess(func):
    with Client(n_workers=1, threads_per_worker=1, processes=False) as c:
        assert c.submit(func, 15).result(timeout=30) == 610


@pytest.fixture(scope="module")
def one_thread_pclient():
    with Client(n_workers=1, threads_per_worker=1, processes=True) as c:
        yield c


@pytest.mark.parametrize("func", FIBS, ids=lambda f: f.__name__)
def test_fib15_one_worker_one_thread_processes(one_thread_pclient, func):
    assert one_thread_pclient.submit(func, 15).result(timeout=30) == 610


def test_many_waiting_tasks_without_dedup(one_thread_pclient):
    assert one_thread_pclient.submit(fib_impure, 9, pure=False).result(timeout=30) == 34


def test_as_completed_and_wait_inside_a_task(one_thread_pclient):
    c = one_thread_pclient
    assert c.submit(sum_as_completed, 20).result(timeout=30) == 2 * sum(range(20))
    assert c.submit(first_exception, 6).result(timeout=30) == "error"


def test_task_client_is_the_workers_shared_client(one_thread_pclient):
    c = one_thread_pclient
    c.submit(fib, 6).result()  # warm: the worker's client and its connections exist
    results = c.gather(c.map(client_identity, range(20)))
    ids = {r[0] for r in results}
    assert len(ids) == 1 and c.id not in ids
    assert all(r[3] for r in results)
    # No new connection per task: the count of the worker host's connections is stable.
    assert len({r[2] for r in results}) == 1


def test_futures_passed_into_tasks_bind_to_the_worker_client(one_thread_pclient):
    c = one_thread_pclient
    x = c.submit(lambda: 41)
    # A Future inside a plain container is a dependency (its value is substituted) ...
    assert c.submit(lambda v: v["inner"][0] + 1, {"inner": [x]}).result() == 42
    # ... one hidden inside an object travels as a Future, usable by the task.
    assert c.submit(use_hidden_future, Box(x)).result() == 410


@gen_cluster(n_workers=1, threads_per_worker=1)
async def test_fib_async_client_inprocess(c, cluster):
    assert await c.submit(fib, 12) == 144


def test_get_client_outside_task_without_client_raises(monkeypatch):
    import actorrt.runtime
    monkeypatch.setattr(actorrt.runtime, "_default", None)
    with pytest.raises(ValueError, match="outside a task and no Client"):
        get_client()


def test_get_client_outside_task_returns_default(client):
    assert get_client() is client


def test_get_worker_secede_rejoin_outside_task_raise():
    with pytest.raises(ValueError, match="outside a task"):
        get_worker()
    with pytest.raises(ValueError, match="inside a task"):
        secede()
    with pytest.raises(ValueError, match="inside a task"):
        rejoin()


def double_secede_then_rejoin(x):
    secede()
    secede()  # a no-op the second time
    rejoin()
    rejoin()  # a no-op: the slot is held again
    return x + 1


def test_secede_rejoin_are_idempotent(client):
    assert client.gather(client.map(double_secede_then_rejoin, range(4))) == [1, 2, 3, 4]


def test_get_worker_inside_task(client):
    addresses = set(client.gather(client.map(lambda i: get_worker().host.address, range(10),
                                             pure=False)))
    assert addresses <= set(client.cluster.worker_addresses())


def test_blocking_call_in_task_gives_slot_back_and_tells_scheduler_once(client):
    """Many blocking calls from one task: one long-running message, the slot returned each time."""
    from actorrt import get_client

    def many_waits(n):
        c = get_client()
        return sum(c.submit(lambda i: i, i, pure=False).result() for i in range(n))

    scheduler = client.cluster.scheduler
    seen = []
    original = scheduler.handle_long_running

    def spy(**fields):
        seen.extend(fields["keys"])
        return original(**fields)

    scheduler.handle_long_running = spy
    try:
        assert client.submit(many_waits, 20).result() == sum(range(20))
    finally:
        scheduler.handle_long_running = original
    assert len(seen) == 1


def _current_without_global():
    from actorrt import Client
    return Client.current(allow_global=False).id


def test_client_current_without_global_is_the_tasks_client_only(client):
    from actorrt import Client
    with pytest.raises(ValueError, match="allow_global=False"):
        Client.current(allow_global=False)  # outside a task: the default client is not offered
    assert Client.current() is client
    assert client.submit(_current_without_global, pure=False).result() != client.id


def test_a_worker_port_without_a_host_is_kept():
    from actorrt.worker import default_listen_address
    assert default_listen_address("tcp://127.0.0.1:8786", 9000) == "tcp://127.0.0.1:9000"
    assert default_listen_address("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:0"
