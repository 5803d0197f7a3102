"""A future's life: fire_and_forget, release, cancel, retry, retries=, priority=, and
erred keys freed once their futures go. In-process and process clusters."""
import gc
import os
import threading

import pytest

from actorrt import CancelledError, Client, fire_and_forget, futures_of, wait
from actorrt.testing import gen_cluster, poll_for, wait_until

_gates: dict[str, threading.Event] = {}
_log: list = []
_attempts: dict[str, int] = {}


def gate(name, value=None):
    _gates.setdefault(name, threading.Event()).wait(30)
    return value if value is not None else name


def open_gate(name):
    _gates.setdefault(name, threading.Event()).set()


def inc(x):
    return x + 1


def record(tag, *inputs):
    _log.append(tag)
    return tag


def touch(path, *inputs):
    with open(path, "a") as f:
        f.write("x")
    return path


def flaky(token, failures, path=None):
    """Fails ``failures`` times, then returns how many attempts it took."""
    if path is None:
        _attempts[token] = _attempts.get(token, 0) + 1
        n = _attempts[token]
    else:
        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            n = len(f.read())
    if n <= failures:
        raise RuntimeError(f"attempt {n} fails")
    return n


class BigError(Exception):
    """Carries a megabyte, as exceptions holding data do."""


def fails_big():
    raise BigError("big", b"x" * 1_000_000)


def wait_file(path, value):
    """Hold until ``path`` exists (a gate that works across processes)."""
    import time
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def key_state(client, key):
    return client.sync(client._ask_scheduler, "key_states", keys=[key])[key]


# --- fire_and_forget --------------------------------------------------------------------
def test_fire_and_forget_runs_after_futures_dropped(client):
    _log.clear()
    x = client.submit(gate, "ff-input", "x-value")
    y = client.submit(record, "ff-ran", x)
    ykey = y.key
    fire_and_forget(y)
    del x, y
    gc.collect()
    wait_until(lambda: ykey not in client.table)
    open_gate("ff-input")
    wait_until(lambda: "ff-ran" in _log, timeout=10)
    # Done: the scheduler lets it and its input go (no leak).
    wait_until(lambda: key_state(client, ykey) == "forgotten", timeout=10)


def test_fire_and_forget_over_processes(pclient, tmp_path):
    path = str(tmp_path / "side-effect")
    f = pclient.submit(touch, path, pure=False)
    key = f.key
    fire_and_forget([f])
    del f
    wait_until(lambda: os.path.exists(path), timeout=10)
    wait_until(lambda: key_state(pclient, key) == "forgotten", timeout=10)


# --- release --------------------------------------------------------------------------
def test_release_forgets_key_at_once(any_client):
    f = any_client.submit(inc, 41)
    assert f.result() == 42
    key = f.key
    f.release()
    f.release()  # idempotent
    wait_until(lambda: key_state(any_client, key) == "forgotten")


def test_result_after_release_says_so(client):
    f = client.submit(inc, 1)
    f.result()
    f.release()
    with pytest.raises(CancelledError, match="was released"):  # (as dask)
        f.result()


def test_release_keeps_other_futures_of_same_key(client):
    a = client.submit(inc, 1)
    b = client.submit(inc, 1)
    assert a.key == b.key
    a.release()
    assert b.result() == 2


# --- cancel ---------------------------------------------------------------------------
def test_cancel_raises_cancelled_error_naming_key(any_client, tmp_path):
    c = any_client
    path = str(tmp_path / "gate")
    f = c.submit(wait_file, path, 1, pure=False)
    c.cancel(f)
    with pytest.raises(CancelledError, match=f.key):
        f.result()
    assert f.cancelled() and f.status == "cancelled"
    wait_until(lambda: key_state(c, f.key) == "forgotten")
    open(path, "w").close()


def test_cancel_cascades_to_dependents_naming_the_cancelled_key(any_client, tmp_path):
    c = any_client
    path = str(tmp_path / "gate")
    x = c.submit(wait_file, path, 1, pure=False)
    y = c.submit(inc, x)
    z = c.submit(inc, y)
    x.cancel()
    for f in (y, z):
        with pytest.raises(CancelledError) as info:
            f.result(timeout=10)
        assert x.key in str(info.value) and f.key in str(info.value)
    open(path, "w").close()


def test_cancel_finished_future_frees_data(client):
    f = client.submit(inc, 1)
    f.result()
    client.cancel([f])
    with pytest.raises(CancelledError):
        f.result()
    wait_until(lambda: key_state(client, f.key) == "forgotten")


def test_cancel_without_force_spares_other_clients(pclient, tmp_path):
    path = str(tmp_path / "gate")
    with Client(pclient.cluster, set_as_default=False) as other:
        mine = pclient.submit(wait_file, path, 7)
        theirs = other.submit(wait_file, path, 7)
        assert mine.key == theirs.key
        pclient.cancel(mine)
        with pytest.raises(CancelledError):
            mine.result()
        open(path, "w").close()
        assert theirs.result() == 7


def test_cancel_with_force_cancels_for_every_client(pclient, tmp_path):
    path = str(tmp_path / "gate")
    with Client(pclient.cluster, set_as_default=False) as other:
        mine = pclient.submit(wait_file, path, 8)
        theirs = other.submit(wait_file, path, 8)
        wait_until(lambda: key_state(pclient, mine.key) == "processing")
        pclient.cancel(mine, force=True)
        with pytest.raises(CancelledError, match="was cancelled"):
            theirs.result(timeout=10)
        open(path, "w").close()


def test_resubmitting_cancelled_pure_key_runs_again(client):
    f = client.submit(gate, "resubmit", 3)
    f.cancel()
    open_gate("resubmit")
    g = client.submit(gate, "resubmit", 3)
    assert g.result() == 3


@gen_cluster()
async def test_cancel_async(c, cluster):
    f = c.submit(gate, "async-cancel", pure=False)
    await c.cancel([f])
    with pytest.raises(CancelledError):
        await f
    open_gate("async-cancel")


# --- futures_of ----------------------------------------------------------------------
def test_futures_of_nested(client):
    a, b, c = client.map(inc, range(3))
    assert futures_of([a, {"k": (b, [c, 1])}, "x"]) == [a, b, c]
    assert futures_of(a) == [a]
    assert futures_of([a, a]) == [a]
    assert futures_of(42) == []


# --- retry and retries= --------------------------------------------------------------
def test_client_retry_reruns_failed_task(client):
    token = "retry-me"
    _attempts.pop(token, None)
    f = client.submit(flaky, token, 1)
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        f.result()
    client.retry([f])
    assert f.result() == 2
    g = client.submit(flaky, "retry-method", 1)
    wait([g])
    g.retry()
    assert g.result() == 2


def test_retry_reruns_failed_dependencies(client):
    _attempts.pop("dep", None)
    x = client.submit(flaky, "dep", 1)
    y = client.submit(inc, x)
    with pytest.raises(RuntimeError):
        y.result()
    client.retry(y)
    assert y.result() == 3


def test_retries_rerun_in_process(client):
    _attempts.pop("retries", None)
    assert client.submit(flaky, "retries", 2, retries=2).result() == 3
    _attempts.pop("too-few", None)
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        client.submit(flaky, "too-few", 3, retries=1).result()


def test_retries_over_processes(pclient, tmp_path):
    path = str(tmp_path / "attempts")
    assert pclient.submit(flaky, "p", 2, path, retries=3).result() == 3
    futures = pclient.map(flaky, ["a", "b"], [1, 1], [str(tmp_path / "a"), str(tmp_path / "b")],
                          retries=1)
    assert pclient.gather(futures) == [2, 2]


# --- priority= -----------------------------------------------------------------------
@gen_cluster(n_workers=1, saturation=1.0)
async def test_priority_orders_queued_work(c, cluster):
    _log.clear()
    state = cluster.scheduler.state
    blocker = c.submit(gate, "priority")
    await poll_for(lambda: blocker.key in state.tasks and state.tasks[blocker.key].state == "processing")
    low = [c.submit(record, f"low{i}", priority=0, pure=False) for i in range(3)]
    high = c.submit(record, "high", priority=10, pure=False)
    await poll_for(lambda: len(state.queued) >= 4)
    open_gate("priority")
    await wait(low + [high])
    assert _log == ["high", "low0", "low1", "low2"]


# --- erred keys are freed with their futures (dask/distributed#8790) -----------------------
def test_erred_task_forgotten_when_future_dropped(any_client):
    c = any_client
    f = c.submit(fails_big, pure=False)
    with pytest.raises(BigError):
        f.result()
    key = f.key
    assert key_state(c, key) == "erred"
    del f
    gc.collect()
    wait_until(lambda: key_state(c, key) == "forgotten")
    assert key not in c.table


def test_erred_dependency_chain_forgotten(client):
    x = client.submit(fails_big, pure=False)
    y = client.submit(inc, x)
    z = client.submit(inc, y)
    keys = [x.key, y.key, z.key]
    with pytest.raises(BigError):
        z.result()
    del x, y, z
    gc.collect()
    wait_until(lambda: all(key_state(client, k) == "forgotten" for k in keys))
    state = client.cluster.scheduler.state
    assert not any(ts.exception is not None for ts in list(state.tasks.values()))
