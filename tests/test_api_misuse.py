"""Misusing the Client API: each mistake raises at once, says what was wrong, and
leaves the cluster as it was (nothing hangs, nothing half-sent)."""
import asyncio
import socket
import time

import pytest

from actorrt import CancelledError, Client, LocalCluster
from actorrt.core import BadMessageError
from actorrt.testing import gen_cluster, wait_until


def inc(x):
    return x + 1


def scheduler_tasks(client):
    """The keys the scheduler knows (read on its loop, where the state lives)."""
    async def keys():
        return set(client.cluster.scheduler.state.tasks)
    return client.sync(keys)


def validate(client):
    async def check():
        client.cluster.scheduler.state.validate()
    client.sync(check)


# --- arguments of submit and map ---------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(priority="high"), TypeError, "priority must be a number"),
    (dict(priority=float("nan")), ValueError, "priority must be finite"),
    (dict(retries="twice"), TypeError, "retries must be an int"),
    (dict(retries=-1), ValueError, "retries must be >= 0"),
    (dict(key=["x", 1]), TypeError, "key must be a str"),
    (dict(key=("x", None)), TypeError, "key must be a str"),
    (dict(workers=5), TypeError, "workers must be a worker address"),
    (dict(workers=[5]), TypeError, r"workers must be worker addresses, names or hosts \(str\)"),
    (dict(resources=["GPU"]), TypeError, "resources must be a dict of resource name -> amount"),
    (dict(resources={"GPU": -1}), ValueError, "amount of 'GPU' must be a finite number >= 0"),
    (dict(resources={"GPU": float("inf")}), ValueError, "amount of 'GPU' must be a finite number >= 0"),
    (dict(resources={"GPU": "1"}), TypeError, "amount of 'GPU' must be a number"),
    (dict(resources={"GPU": True}), TypeError, "amount of 'GPU' must be a number"),
    (dict(resources={1: 1}), TypeError, "resource name must be a str"),
    (dict(resources={"": 1}), ValueError, "resource name '' must be non-empty"),
])
def test_bad_submit_arguments_raise_at_the_call_and_send_nothing(any_client, kwargs, error, match):
    before = scheduler_tasks(any_client) if any_client.cluster.scheduler else None
    with pytest.raises(error, match=match):
        any_client.submit(inc, 1, pure=False, **kwargs)
    if "key" not in kwargs:  # (map's keys: test_map_keys_must_match_the_calls)
        with pytest.raises(error, match=match):
            any_client.map(inc, [1, 2], pure=False, **kwargs)
    if before is not None:
        # Nothing new (a Future dropped by the case before may be released meanwhile).
        assert scheduler_tasks(any_client) <= before
    assert any_client.submit(inc, 1, pure=False).result() == 2


def test_numpy_numbers_are_fine_arguments(client):
    np = pytest.importorskip("numpy")
    f = client.submit(inc, 1, priority=np.int64(3), retries=np.int32(1), pure=False)
    assert f.result() == 2
    assert client.wait_for_workers(np.int64(1)) is not None


def test_map_keys_must_match_the_calls(client):
    with pytest.raises(ValueError, match="map got 1 keys for 2 calls"):
        client.map(inc, [1, 2], key=["a"])
    with pytest.raises(TypeError, match="key must be a str"):
        client.map(inc, [1, 2], key=["a", None])
    with pytest.raises(TypeError, match="str prefix or a list"):
        client.map(inc, [1, 2], key=7)
    assert client.gather(client.map(inc, [1, 2], key=["a", "b"])) == [2, 3]


def test_cancel_force_takes_any_truthy_value(client):
    """``force=1`` used to reach the scheduler as a refused message: the Future said
    cancelled while the task went on. Now it is cancelled there too."""
    f = client.submit(inc, 1, key="to-cancel")
    f.result()
    client.cancel(f, force=1)
    wait_until(lambda: "to-cancel" not in scheduler_tasks(client))


def test_refused_actor_options_fail_the_future_not_the_cluster(client):
    """Options given as a dict skip the client's checks; the scheduler refuses the
    graph and the Future fails with the reason instead of waiting for ever."""
    class Thing:
        pass
    f = client.submit(Thing, actor={"max_restarts": "many"})
    with pytest.raises(BadMessageError, match="max_restarts"):
        f.result(timeout=10)
    validate(client)
    assert client.submit(inc, 1).result() == 2


def test_refused_graph_from_client_get_raises_rather_than_hangs(client):
    with pytest.raises(BadMessageError, match="priority"):
        client.get({"x": (inc, 1)}, "x", priority=float("inf"))
    validate(client)
    assert client.get({"y": (inc, 1)}, "y") == 2


# --- gather ----------------------------------------------------------------------------

def test_gather_passes_values_that_are_not_futures_through(client):
    f = client.submit(inc, 1)
    assert client.gather([1, f, "x", {"k": f}]) == [1, 2, "x", {"k": 2}]
    assert client.gather(5) == 5


@gen_cluster(n_workers=1)
async def test_gather_of_another_clients_futures_is_refused(c, cluster):
    f = c.submit(inc, 1)
    assert await f == 2
    async with Client(cluster, asynchronous=True, set_as_default=False) as other:
        with pytest.raises(ValueError, match="another client"):
            await other.gather(f)
        with pytest.raises(ValueError, match=f.key):
            await other.gather([f, 1])
        g = other.submit(inc, 5)
        assert await other.gather(g) == 6
    assert await f == 2


def test_result_of_a_released_future_says_so(client):
    f = client.submit(inc, 1)
    assert f.result() == 2
    f.release()
    with pytest.raises(CancelledError, match="was released"):  # (dask: CancelledError too)
        f.result()


# --- a closed client ---------------------------------------------------------------------

def test_a_closed_client_refuses_at_once_and_never_hangs():
    client = Client(n_workers=1, threads_per_worker=1, processes=False)
    f = client.submit(inc, 1)
    assert f.result() == 2
    client.close()  # its loop stops: any wait on it would be for ever
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="closed; cannot submit"):
        client.submit(inc, 2)
    with pytest.raises(RuntimeError, match="closed; cannot submit"):
        client.map(inc, [1])
    with pytest.raises(RuntimeError, match=r"closed; cannot call result\(\)"):
        f.result()
    with pytest.raises(RuntimeError, match=r"closed; cannot call gather\(\)"):
        client.gather([f])
    with pytest.raises(RuntimeError, match=r"closed; cannot call scatter\(\)"):
        client.scatter([1])
    with pytest.raises(RuntimeError, match="closed"):
        client.wait_for_workers(1)
    assert time.monotonic() - start < 2


@gen_cluster(n_workers=1)
async def test_an_asynchronous_closed_client_refuses_too(c, cluster):
    other = await Client(cluster, asynchronous=True, set_as_default=False)
    f = other.submit(inc, 1)
    assert await f == 2
    await other.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        await f
    with pytest.raises(RuntimeError, match=r"closed; cannot call gather\(\)"):
        await other.gather([f])
    assert await c.submit(inc, 1) == 2


# --- scatter and workers ---------------------------------------------------------------------

def test_scatter_to_workers_that_are_not_there(client):
    # (as dask, scatter waits for a worker to join, up to timeout)
    with pytest.raises(TimeoutError, match=r"none of \['tcp://10.9.9.9:1'\] is a worker"):
        client.scatter([1, 2], workers=["tcp://10.9.9.9:1"], timeout="100ms")
    with pytest.raises(TypeError, match="workers must be"):
        client.scatter([1, 2], workers=3)
    assert client.gather(client.scatter([1, 2])) == [1, 2]


def test_scatter_and_wait_for_workers_on_a_cluster_without_workers():
    with LocalCluster(0, processes=False) as cluster, Client(cluster) as client:
        with pytest.raises(TimeoutError, match="the cluster has none"):
            client.scatter(1, timeout=0.1)
        with pytest.raises(TimeoutError, match="0 of 1 workers after 0.1 s"):
            client.wait_for_workers(1, timeout=0.1)
        cluster.scale(1)
        assert client.wait_for_workers(1, timeout=10)
        assert client.submit(inc, 1).result() == 2


def test_wait_for_workers_arguments(client):
    with pytest.raises(TypeError, match="n_workers must be an int"):
        client.wait_for_workers("2")
    for n in (-1, 0, None):  # (dask: a positive integer, ValueError else)
        with pytest.raises(ValueError, match="n_workers must be a positive integer"):
            client.wait_for_workers(n)
    with pytest.raises(TimeoutError, match="2 of 3 workers"):
        client.wait_for_workers(3, timeout=0.05)
    assert len(client.wait_for_workers(2, timeout=5)) == 2


# --- connecting -----------------------------------------------------------------------------

def test_client_of_a_malformed_address_says_so():
    start = time.monotonic()
    with pytest.raises(ValueError, match="not an actorrt address: 'not-an-address'"):
        Client("not-an-address", timeout=5)
    assert time.monotonic() - start < 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_of_an_address_where_nothing_listens_fails_within_its_timeout():
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(OSError, match=f"could not connect to {address}"):
        Client(address, timeout=1)
    assert time.monotonic() - start < 3


def test_async_client_of_an_address_where_nothing_listens():
    address = f"tcp://127.0.0.1:{_free_port()}"

    async def main():
        with pytest.raises(OSError, match=f"could not connect to {address}"):
            await Client(address, asynchronous=True, timeout=0.5)
    asyncio.run(asyncio.wait_for(main(), 5))
