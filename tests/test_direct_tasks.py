"""A lone task its submitter waits for at once runs on a worker the client picks, the
answer read by the waiting thread (client/direct.py, worker/direct.py); the scheduler
hears of it from the client, in order (scheduler/direct_runs.py). Everything a user can
see must be as if the task had gone through the scheduler.

Over real worker processes: the way needs a thread's own TCP connection to a worker.
A test holds a task in its run with a socket gate it opens itself; nothing sleeps.
"""
import os
import socket
import threading

import pytest

from actorrt import CancelledError, Client, get_client
from actorrt.testing import wait_until
from actorrt.core.env import env_switch

pytestmark = pytest.mark.timeout(120)


def inc(x):
    return x + 1


def fail(x):
    raise ValueError(f"bad input {x}")


def big(n):
    return b"x" * n


def held(port, value):
    """Wait until the test at ``port`` lets go; then return ``value``."""
    with socket.create_connection(("127.0.0.1", port)) as gate:
        gate.settimeout(60)
        gate.recv(1)
    return value


def submit_inside(x):
    """A task that hands its worker's loop a submission and returns its Future."""
    return get_client().submit(inc, x, pure=False)


def die_once(marker, value):
    """Kill this worker the first time (the marker file says whether it did)."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(1)
    return value


@pytest.fixture(scope="module")
def c():
    with Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        yield client


def ran_direct(client, key):
    """Whether the scheduler heard of ``key``'s last run from the client, not placed it
    (on its own, or its whole life at once: the Future was dropped before the client's
    batch went out)."""
    return any(str(e[3]).startswith(("direct-started", "direct-complete")) for e in client.story(key))


def whole_life_told(client, key):
    """Whether the client told ``key``'s start, finish and release in one message."""
    return any(str(e[3]).startswith("direct-complete") for e in client.story(key))


def until_direct(client, submit, tries=20):
    """``submit()``, waited for, until its task ran straight on a worker; that Future.
    (A thread held up for longer than the client's batch interval between submitting
    and waiting sends its submission the usual way instead: correct, and not what these
    tests look at.)"""
    for _ in range(tries):
        f = submit()
        try:
            f.result()
        except Exception:
            pass  # (the tests look at the error themselves)
        if ran_direct(client, f.key):
            return f
    raise AssertionError(f"none of {tries} round trips went straight to a worker")


def warm(client):
    """Round trips until this thread has its own connection to a worker. (It asks for
    one on its second round trip to a worker, and the loop opens it meanwhile; the
    scheduler may place the first ones on either worker.)"""
    for i in range(100):
        f = client.submit(inc, i, pure=False)
        f.result()
        if ran_direct(client, f.key):
            return
    raise AssertionError("no round trip went straight to a worker")


def test_a_round_trip_goes_straight_to_a_worker_and_looks_like_any_other(c):
    warm(c)
    f = until_direct(c, lambda: c.submit(inc, 41, pure=False))
    assert f.result() == 42
    assert (f.status, f.done(), f.type) == ("finished", True, int)
    assert [tuple(e[1:3]) for e in c.story(f.key)] == [("released", "processing"), ("processing", "memory")]
    assert c.who_has([f])[f.key] == [c.direct.worker]
    assert c.gather(f) == 42
    # The task stream has its run (start, stop, worker, thread: the worker's report, relayed).
    [record] = [r for r in c.get_task_stream() if r["key"] == f.key]
    assert record["worker"] == c.direct.worker and record["startstops"][0]["action"] == "compute"
    key = f.key
    del f
    wait_until(lambda: key not in {k for keys in c.has_what().values() for k in keys})


def test_an_error_raises_with_its_remote_traceback(c):
    warm(c)
    f = until_direct(c, lambda: c.submit(fail, 7, pure=False))
    with pytest.raises(ValueError, match="bad input 7") as info:
        f.result()
    assert f.status == "error"
    assert "fail" in "".join(str(t.name) for t in info.traceback)
    assert isinstance(f.exception(), ValueError)
    g = c.submit(inc, f)  # (a dependent of the failed key fails with it)
    with pytest.raises(ValueError):
        g.result()


def test_a_result_too_large_to_inline_is_fetched_from_its_worker(c):
    warm(c)
    f = until_direct(c, lambda: c.submit(big, 1 << 20, pure=False))
    assert f.result() == b"x" * (1 << 20)


def test_a_task_that_submits_work_returns_a_future_the_client_can_use(c):
    warm(c)
    f = until_direct(c, lambda: c.submit(submit_inside, 1, pure=False))
    assert f.result().result() == 2


def test_the_same_pure_key_again_and_again(c):
    warm(c)
    assert [c.submit(inc, 100).result() for _ in range(6)] == [101] * 6


def test_a_busy_worker_declines_and_the_scheduler_places_the_task_elsewhere(c):
    warm(c)
    busy = c.direct.worker
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(60)
        blocker = c.submit(held, gate.getsockname()[1], "done", workers=[busy], pure=False)
        conn, _ = gate.accept()  # the blocker runs: the worker has no free thread
        with conn:
            for i in range(20):  # (until one tried the busy worker: see until_direct)
                c.direct.worker = busy
                f = c.submit(inc, i, pure=False)
                assert f.result() == i + 1  # (while the blocker still holds the busy worker)
                assert c.who_has([f])[f.key] != [busy]
                if any(str(e[3]).startswith("direct-declined") for e in c.story(f.key)):
                    break
            else:
                raise AssertionError("no round trip tried the busy worker")
            conn.sendall(b"x")
        assert blocker.result() == "done"


def test_a_worker_dying_in_a_direct_run_has_it_rerun_elsewhere(c, tmp_path):
    warm(c)
    marker = str(tmp_path / "died")
    f = c.submit(die_once, marker, "survived", pure=False)
    assert f.result() == "survived"
    assert os.path.exists(marker) and ran_direct(c, f.key)
    c.wait_for_workers(2, timeout=60)  # (the nanny starts a new one)


def while_running(gate, then):
    """A thread that waits for the gated task to run, calls ``then()`` and lets it go."""
    def run():
        conn, _ = gate.accept()
        with conn:
            try:
                then()
            finally:
                conn.sendall(b"x")
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_cancel_from_another_thread_ends_the_wait(c):
    warm(c)
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(60)
        running = []

        def cancel():
            c.cancel(running)
            wait_until(running[0].cancelled, timeout=30)

        canceller = while_running(gate, cancel)
        f = c.submit(held, gate.getsockname()[1], "late", pure=False)
        running.append(f)
        with pytest.raises(CancelledError):
            f.result()
        canceller.join(60)
    assert ran_direct(c, f.key)
    key = f.key
    del f, running[:]
    wait_until(lambda: key not in {k for keys in c.has_what().values() for k in keys})


def test_a_dependent_submitted_while_the_run_is_on_its_way_waits_for_it(c):
    warm(c)
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(60)
        running, dependents = [], []

        def submit_dependent():
            g = c.submit(inc, running[0])
            assert g.status == "pending"
            dependents.append(g)

        helper = while_running(gate, submit_dependent)
        f = c.submit(held, gate.getsockname()[1], 10, pure=False)
        running.append(f)
        assert f.result() == 10
        helper.join(60)
    assert ran_direct(c, f.key)
    assert dependents[0].result() == 11


def test_turned_off_every_task_goes_through_the_scheduler(c):
    warm(c)
    c.direct.enabled = False
    try:
        f = c.submit(inc, 5, pure=False)
        assert f.result() == 6
        assert not ran_direct(c, f.key)
    finally:
        c.direct.enabled = True


def test_round_trips_dropped_at_once_leave_only_their_records(c):
    """``submit(f, x).result()`` with the Future dropped at once: the client tells each
    task's whole life in one message; the scheduler need never hold the key, yet its
    story, the task stream and the workers' memory are as if it had."""
    warm(c)
    keys = []
    for i in range(2_000):  # (until a batch held a whole life: nearly every one does)
        f = c.submit(inc, i, pure=False)
        assert f.result() == i + 1
        keys.append(f.key)
        del f
        if len(keys) >= 50 and any(whole_life_told(c, k) for k in keys[-50:]):
            break
    assert any(whole_life_told(c, k) for k in keys[-50:])
    c.sync(c._ask_scheduler, "validate")
    for key in keys:
        assert [tuple(e[1:3]) for e in c.story(key)][-2:] == [("memory", "released"), ("released", "forgotten")]
    streamed = {r["key"]: r for r in c.get_task_stream() if r["key"] in set(keys)}
    assert set(streamed) == set(keys)
    assert {r["startstops"][0]["action"] for r in streamed.values()} == {"compute"}
    # The workers let go of the values (told by a scheduler that never held the keys).
    wait_until(lambda: not set(keys) & {k for held in c.run(held_keys).values() for k in held})


def held_keys(dask_worker):
    return list(dask_worker.data)


def test_the_scheduler_state_stays_consistent(c):
    warm(c)
    for i in range(50):
        assert c.submit(inc, i, pure=False).result() == i + 1
    assert c.sync(c._ask_scheduler, "validate")


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("False", False), ("1", True), ("yes", True),
                                       ("", True)])
def test_the_environment_switch(monkeypatch, value, on):
    monkeypatch.setenv("ACTORRT_DIRECT_TASKS", value)
    assert env_switch("ACTORRT_DIRECT_TASKS", True) is on


def test_a_bad_switch_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("ACTORRT_DIRECT_TASKS", "maybe")
    with pytest.raises(ValueError, match="ACTORRT_DIRECT_TASKS must be 1 or 0.*'maybe'"):
        Client(n_workers=1, processes=False)
