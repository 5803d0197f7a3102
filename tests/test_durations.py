"""Durations: the one parser (actorrt/durations.py) and the public calls that take one."""
from __future__ import annotations

import datetime
import math

import pytest

import actorrt
from actorrt import (
    Client, Condition, Event, Lock, LocalCluster, MultiLock, Queue, Semaphore, Sub, Variable,
    as_completed, wait,
)
from actorrt.durations import parse_duration, parse_interval, parse_timeout
from actorrt.testing import gen_cluster


def inc(x):
    return x + 1


def wait_for_event(name):
    Event(name).wait(10)
    return name


# --- the parser ------------------------------------------------------------------------------

@pytest.mark.parametrize("given, seconds", [
    (2, 2.0), (0, 0.0), (1.5, 1.5), ("2s", 2.0), ("100ms", 0.1), ("1 minute", 60.0),
    ("1.5h", 5400.0), ("10us", 1e-05), ("3ns", 3e-09), ("2 seconds", 2.0), ("1d", 86400.0),
    ("1w", 604800.0), ("3", 3.0), (" 5 s ", 5.0), ("2 MS", 0.002), ("1e3ms", 1.0),
    (datetime.timedelta(milliseconds=250), 0.25), (datetime.timedelta(0), 0.0),
])
def test_durations_read_as_seconds(given, seconds):
    assert parse_duration(given) == pytest.approx(seconds, rel=1e-12)
    assert type(parse_duration(given)) is float


def test_none_and_infinity_mean_no_limit_where_allowed():
    assert parse_timeout(None) is None and parse_timeout(math.inf) is None
    with pytest.raises(TypeError, match="interval must be a duration"):
        parse_interval(None)
    with pytest.raises(ValueError, match="interval must be a finite duration"):
        parse_interval(math.inf)
    with pytest.raises(ValueError, match="interval must be greater than zero"):
        parse_interval("0s")


@pytest.mark.parametrize("given", ["soon", "", "ms", "1 parsec", "2 s s", "1..5s", "s2"])
def test_nonsense_is_a_value_error_naming_the_parameter(given):
    with pytest.raises(ValueError, match="^poll_every"):
        parse_duration(given, "poll_every")


@pytest.mark.parametrize("given", [-1, -0.5, "-1s", datetime.timedelta(seconds=-1), math.nan])
def test_negative_or_nan_is_a_value_error(given):
    with pytest.raises(ValueError, match="timeout must"):
        parse_timeout(given)


@pytest.mark.parametrize("given", [True, [1], b"1s", object(), {"s": 1}])
def test_wrong_types_are_a_type_error(given):
    with pytest.raises(TypeError, match="timeout must be a duration"):
        parse_timeout(given)


def test_numpy_numbers_are_durations():
    np = pytest.importorskip("numpy")
    assert parse_timeout(np.int64(3)) == 3.0 and parse_timeout(np.float32(0.5)) == 0.5


# --- futures, wait, as_completed (in-process cluster) ------------------------------------------

def test_futures_take_durations(client):
    f = client.submit(inc, 1)
    assert f.result(timeout="5s") == 2
    assert f.exception(timeout=datetime.timedelta(seconds=5)) is None
    assert f.traceback(timeout="1 minute") is None
    done, not_done = wait([f], timeout="500ms")
    assert done == {f} and not not_done
    assert [x.result() for x in as_completed([f], timeout="5s")] == [2]


def test_timeouts_expire_after_the_duration_given(client):
    ev = Event("dur-hold", client=client)
    f = client.submit(wait_for_event, "dur-hold")
    with pytest.raises(TimeoutError):
        f.result(timeout="50ms")
    with pytest.raises(TimeoutError):
        wait([f], timeout=datetime.timedelta(milliseconds=50))
    with pytest.raises(TimeoutError):
        next(as_completed([f], timeout="50ms"))
    ev.set()
    assert f.result(timeout="5s") == "dur-hold"


@pytest.mark.parametrize("bad, error", [("soon", ValueError), (-1, ValueError), ([1], TypeError)])
def test_bad_durations_fail_at_the_call_and_change_nothing(client, bad, error):
    f = client.submit(inc, 1)
    with pytest.raises(error, match="timeout"):
        f.result(timeout=bad)
    with pytest.raises(error, match="timeout"):
        f.exception(timeout=bad)
    with pytest.raises(error, match="timeout"):
        wait([f], timeout=bad)
    with pytest.raises(error, match="timeout"):
        as_completed([f], timeout=bad)
    with pytest.raises(error, match="timeout"):
        client.wait_for_workers(1, timeout=bad)
    with pytest.raises(error, match="timeout"):
        client.scatter(1, timeout=bad)
    with pytest.raises(error, match="timeout"):
        client.restart(timeout=bad)
    with pytest.raises(error, match="timeout"):
        client.close(timeout=bad)
    assert client.status == "running" and f.result() == 2  # nothing changed


def test_client_level_durations(client):
    assert len(client.wait_for_workers(2, timeout="10s")) == 2
    [x] = client.scatter([41], timeout="5s")
    assert client.submit(inc, x).result(timeout="5s") == 42


def test_client_and_cluster_take_durations():
    with LocalCluster(1, processes=False, worker_start_timeout="1 minute") as cluster:
        assert cluster.worker_start_timeout == 60.0
        with Client(cluster, timeout="20s") as c:
            assert c.timeout == 20.0
            assert c.submit(inc, 1).result() == 2
        cluster.close(timeout="30s")
    with pytest.raises(ValueError, match="worker_start_timeout"):
        LocalCluster(1, processes=False, worker_start_timeout="soon")
    with pytest.raises(ValueError, match="timeout"):
        Client(timeout="whenever")


def test_progress_interval_is_a_duration(client, capsys):
    actorrt.progress(client.submit(inc, 1), interval="10ms")
    with pytest.raises(ValueError, match="interval"):
        actorrt.progress(client.submit(inc, 2), interval="often")


def test_actor_calls_take_durations(client):
    class Adder:
        n = 0

        def add(self, k):
            self.n += k
            return self.n

    counter = client.submit(Adder, actor=True).result()
    call = counter.add(2)
    assert call.result(timeout="5s") == 2
    assert call.exception(timeout=datetime.timedelta(seconds=1)) is None
    with pytest.raises(ValueError, match="timeout"):
        counter.add(1).result(timeout="later")


# --- coordination ----------------------------------------------------------------------------

def test_coordination_primitives_take_durations(client):
    ev = Event("dur-ev", client=client)
    assert ev.wait(timeout="20ms") is False
    ev.set()
    assert ev.wait(timeout="1s") is True

    lock = Lock("dur-lock", client=client)
    assert lock.acquire(timeout="1s")
    other = Lock("dur-lock", client=client)
    assert other.acquire(timeout="20ms") is False
    lock.release()

    multi = MultiLock(["dur-a", "dur-b"], client=client)
    assert multi.acquire(timeout=datetime.timedelta(seconds=1))
    multi.release()

    sem = Semaphore(1, "dur-sem", client=client)
    assert sem.acquire(timeout="1s")
    assert Semaphore(1, "dur-sem", client=client).acquire(timeout="20ms") is False
    assert sem.release() is True

    q = Queue("dur-q", maxsize=1, client=client)
    q.put(1, timeout="1s")
    with pytest.raises(TimeoutError):
        q.put(2, timeout="20ms")
    assert q.get(timeout="1s") == 1
    with pytest.raises(TimeoutError):
        q.get(timeout="20ms")

    var = Variable("dur-var", client=client)
    with pytest.raises(TimeoutError):
        var.get(timeout="20ms")
    var.set(5)
    assert var.get(timeout="1s") == 5

    cond = Condition("dur-cond", client=client)
    with cond:
        assert cond.wait(timeout="20ms") is False
        assert cond.wait_for(lambda: True, timeout="1s") is True

    sub = Sub("dur-topic", client=client)
    with pytest.raises(TimeoutError):
        sub.get(timeout="20ms")


def test_coordination_refuses_bad_durations_naming_the_parameter(client):
    calls = [
        lambda: Event("dur-bad", client=client).wait(timeout="soon"),
        lambda: Lock("dur-bad", client=client).acquire(timeout="soon"),
        lambda: Semaphore(1, "dur-bad", client=client).acquire(timeout="soon"),
        lambda: Queue("dur-bad", client=client).get(timeout="soon"),
        lambda: Queue("dur-bad", client=client).put(1, timeout="soon"),
        lambda: Variable("dur-bad", client=client).get(timeout="soon"),
        lambda: Sub("dur-bad", client=client).get(timeout="soon"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timeout"):
            call()
    with pytest.raises(ValueError, match="timeout"):
        Lock("dur-bad", client=client).acquire(timeout=-1)
    assert Queue("dur-bad", client=client).qsize() == 0  # nothing was put


# --- the asynchronous face --------------------------------------------------------------------

@gen_cluster()
async def test_asynchronous_client_takes_durations(c, cluster):
    f = c.submit(inc, 1)
    assert await f.result(timeout="5s") == 2
    done, _ = await wait([f], timeout="1s")
    assert done == {f}
    assert await c.wait_for_workers(2, timeout="5s")
    ev = Event("dur-async", client=c)
    assert await ev.wait(timeout="10ms") is False
    with pytest.raises(ValueError, match="timeout"):
        wait([f], timeout="soon")
    with pytest.raises(ValueError, match="timeout"):
        ev.wait(timeout="soon")
    with pytest.raises(ValueError, match="timeout"):
        c.wait_for_workers(1, timeout="soon")
