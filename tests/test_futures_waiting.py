"""as_completed and wait, over in-process and process clusters."""
import asyncio
import os
import threading
import time

import pytest

from actorrt import as_completed, wait
from actorrt.client import transfer
from actorrt.testing import gen_cluster

# Tasks that hold until the test lets them go (in-process clusters share this module).
_gates: dict[str, threading.Event] = {}


def gate(name):
    _gates.setdefault(name, threading.Event()).wait(30)
    return name


def open_gate(name):
    _gates.setdefault(name, threading.Event()).set()


def inc(x):
    return x + 1


def padded(x):
    return [x] * 200


def add(a, b):
    return a + b


def bad(x):
    raise ValueError(f"bad {x}")


# --- as_completed ------------------------------------------------------------------------
def test_as_completed_yields_every_future_once(any_client):
    futures = any_client.map(inc, range(50))
    seen = list(as_completed(futures))
    assert sorted(f.key for f in seen) == sorted(f.key for f in futures)
    assert all(f.done() for f in seen)


def test_as_completed_in_completion_order(client):
    slow = client.submit(gate, "order-slow")
    fast = client.submit(inc, 1)
    seq = as_completed([slow, fast])
    assert next(seq) is fast
    assert seq.count() == 1 and not seq.has_ready()
    open_gate("order-slow")
    assert next(seq) is slow
    with pytest.raises(StopIteration):
        next(seq)
    assert seq.is_empty()


def test_dynamic_reduction_adding_while_iterating(any_client):
    c = any_client
    seq = as_completed(c.map(inc, range(64)))
    while seq.count() > 1:
        a, b = next(seq), next(seq)
        seq.add(c.submit(add, a, b))
    assert next(seq).result() == sum(range(1, 65))
    assert seq.is_empty()


def test_with_results_and_errors_yielded_not_stopping(any_client):
    c = any_client
    futures = [c.submit(inc, 1), c.submit(bad, 2), c.submit(inc, 3)]
    seen = list(as_completed(futures))  # the failure does not stop the iteration
    assert len(seen) == 3
    failed = [f for f in seen if f.status == "error"]
    assert len(failed) == 1
    with pytest.raises(ValueError, match="bad 2"):
        failed[0].result()
    pairs = list(as_completed(futures, with_results=True, raise_errors=False))
    results = {f.key: r for f, r in pairs}
    assert results[futures[0].key] == 2 and results[futures[2].key] == 4
    assert isinstance(results[futures[1].key], ValueError)


def test_with_results_raise_errors_raises_from_next(client):
    seq = as_completed([client.submit(bad, 1)], with_results=True)
    with pytest.raises(ValueError, match="bad 1"):
        next(seq)
    assert seq.is_empty()


def test_duplicates_are_yielded_per_add(client):
    f = client.submit(inc, 1)
    seq = as_completed([f, f])
    seq.add(f)
    assert list(seq) == [f, f, f]


def test_batches_and_next_batch(client):
    futures = client.map(inc, range(20))
    seq = as_completed(futures, with_results=True)
    got = [item for batch in seq.batches() for item in batch]
    assert sorted(r for _, r in got) == list(range(1, 21))
    seq.update(futures[:3])
    first = seq.next_batch(block=True)
    assert 1 <= len(first) <= 3
    rest = []
    while seq.count():
        rest += seq.next_batch()
    assert len(first) + len(rest) == 3
    assert seq.next_batch(block=False) == []


def test_clear_forgets_pending(client):
    blocked = client.submit(gate, "clear")
    seq = as_completed([blocked, client.submit(inc, 5)])
    seq.clear()
    assert seq.is_empty() and list(seq) == []
    open_gate("clear")
    blocked.result()
    assert list(seq) == []  # the late completion of a cleared future is dropped


def test_timeout_counts_from_construction(client):
    blocked = client.submit(gate, "timeout")
    seq = as_completed([blocked], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(seq)
    open_gate("timeout")
    assert blocked.result() == "timeout"


def test_add_rejects_non_futures(client):
    with pytest.raises(TypeError, match="needs a Future"):
        as_completed([1])


def test_iteration_from_another_thread(client):
    futures = client.map(inc, range(30))
    out = []
    t = threading.Thread(target=lambda: out.extend(as_completed(futures, with_results=True)))
    t.start()
    t.join(30)
    assert sorted(r for _, r in out) == list(range(1, 31))


@gen_cluster()
async def test_async_for(c, cluster):
    futures = c.map(inc, range(20))
    seen = []
    seq = as_completed(futures, with_results=True)
    async for future, result in seq:
        seen.append(result)
        if result == 1:
            seq.add(c.submit(inc, 100))
    assert sorted(seen) == sorted(list(range(1, 21)) + [101])


@gen_cluster()
async def test_async_timeout(c, cluster):
    blocked = c.submit(gate, "async-timeout")
    with pytest.raises(TimeoutError):
        async for _ in as_completed([blocked], timeout=0.1):
            pass
    open_gate("async-timeout")
    assert await blocked == "async-timeout"


# --- wait --------------------------------------------------------------------------------
def test_wait_all_completed(any_client):
    futures = any_client.map(inc, range(10))
    done, not_done = wait(futures)
    assert done == set(futures) and not_done == set()


def test_wait_first_completed(client):
    slow = client.submit(gate, "first-completed")
    fast = client.submit(inc, 1)
    done, not_done = wait([slow, fast], return_when="FIRST_COMPLETED")
    assert fast in done and slow in not_done
    open_gate("first-completed")
    done, not_done = wait([slow, fast])
    assert not not_done


def wait_file(path, value):
    """Hold until ``path`` exists (a gate that works across processes)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_wait_first_exception_returns_before_the_rest(any_client, tmp_path):
    c = any_client
    path = str(tmp_path / "gate")
    slow = c.submit(wait_file, path, 1)
    failing = c.submit(bad, 1)
    done, not_done = wait([slow, failing], return_when="FIRST_EXCEPTION", timeout=20)
    assert failing in done and slow in not_done
    open(path, "w").close()
    assert slow.result() == 1


def test_wait_first_exception_without_errors_waits_for_all(client):
    futures = client.map(inc, range(5))
    done, not_done = wait(futures, return_when="FIRST_EXCEPTION")
    assert len(done) == 5 and not not_done


def test_wait_timeout_raises(client):
    blocked = client.submit(gate, "wait-timeout")
    with pytest.raises(TimeoutError, match="1 of 1 futures still not done"):
        wait([blocked], timeout=0.1)
    open_gate("wait-timeout")
    assert wait(blocked).done == {blocked}


def test_wait_bad_return_when(client):
    with pytest.raises(ValueError, match="return_when must be one of"):
        wait([client.submit(inc, 1)], return_when="SOMETIMES")
    assert wait([]) == (set(), set())


@gen_cluster()
async def test_wait_async(c, cluster):
    futures = c.map(inc, range(5))
    done, not_done = await wait(futures)
    assert len(done) == 5 and not not_done
    f = c.submit(bad, 1)
    done, _ = await wait([f], return_when="FIRST_EXCEPTION")
    assert f in done
    await asyncio.sleep(0)


@gen_cluster()
async def test_gather_never_skips_a_value_whose_loss_is_reported_mid_fetch(c, lc):
    # Found under chaos: a "lost" report arriving after gather's wait (a holder died)
    # turned that Future pending again, and gather returned the list without its value.
    futures = c.map(padded, range(4), pure=False)  # (too big to come with their reports)
    await wait(futures)
    victim = futures[1]._state
    fetch = transfer.fetch
    calls = []

    async def fetch_while_a_loss_is_reported(client, keys, holders, failures=None):
        calls.append(list(keys))
        if len(calls) == 1:
            victim.lost()  # as the scheduler's report of the dead holder would
            asyncio.get_running_loop().call_soon(victim.finish, holders[victim.key], "int")
            keys = [k for k in keys if k != victim.key]
        return await fetch(client, keys, holders, failures)
    transfer.fetch = fetch_while_a_loss_is_reported
    try:
        assert await c.gather(futures) == [padded(i) for i in range(4)]
    finally:
        transfer.fetch = fetch
    assert len(calls) == 2 and calls[1] == [victim.key]
