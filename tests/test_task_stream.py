"""The task stream: the scheduler's ring (pure), the worker's records, the Client API
(get_task_stream, its context manager), over in-process and real TCP workers."""
import datetime

import pytest

import actorrt
from actorrt import Client, LocalCluster, get_task_stream
from actorrt.client.task_stream import parse_time
from actorrt.core.tcp import traffic
from actorrt.protocol import Activity, Erred, Finished
from actorrt.scheduler.task_stream import TaskStream, key_name, record
from actorrt.testing import gen_cluster, poll_for, wait_until
from actorrt.worker.activity import ActivityLog, ProcessUsage


def inc(x):
    return x + 1


def boom(x):
    raise ValueError("boom")


def fin(key, start, stop=None, thread=7, nbytes=28):
    return Finished(key, nbytes, "int", 0.1, 1, None, start, start + 0.5 if stop is None else stop, thread)


# --- the ring: pure ----------------------------------------------------------------------
def test_records_have_dasks_shape():
    s = TaskStream()
    s.add_reports("w1", [fin("inc-0123456789abcdef", 10.0)], [Erred("boom-1", None, "tb", 2, 11.0, 11.25, 8)])
    s.add_activity("w2", [Activity("transfer", "inc-0123456789abcdef", 12.0, 12.5, 100, "w1")])
    ok, bad, moved = s.window()
    assert ok == {"key": "inc-0123456789abcdef", "name": "inc", "worker": "w1", "thread": 7, "status": "OK",
                  "nbytes": 28, "type": "int", "startstops": [{"action": "compute", "start": 10.0, "stop": 10.5}]}
    assert bad["status"] == "error" and bad["startstops"] == [{"action": "compute", "start": 11.0, "stop": 11.25}]
    assert moved["worker"] == "w2" and moved["thread"] is None and moved["nbytes"] == 100
    assert moved["startstops"] == [{"action": "transfer", "start": 12.0, "stop": 12.5, "source": "w1"}]
    assert s.totals["transfer"] == [1, 100] and s.totals["disk-write"] == [0, 0]


def test_a_key_found_without_a_run_is_left_out():
    s = TaskStream()
    s.add_reports("w", [Finished("k", 1, "int", None, 1, None, None, None, None)],
                  [Erred("e", None, None, 1, None, None, None)])
    assert len(s) == 0 and s.count == 0


def test_rows_share_the_schedulers_keys_and_one_copy_of_workers_threads_and_types():
    s = TaskStream()
    held = {"k-1": "".join(["k-", "1"])}  # the scheduler's copy: equal, not the same object
    for report in range(2):  # each report decodes strings and ids of its own
        worker, kind = "".join(["tcp://w", ":1"]), "".join(["in", "t"])
        thread = int("123456789012")
        s.add_reports(worker, [Finished("".join(["k-", "1"]), 28, kind, 0.1, 1, None, 1.0, 2.0, thread)], [],
                      task=lambda k: (held.get(k, k), "my-task"))
    first, second = s.rows()
    assert first[1] is second[1] is held["k-1"]
    assert first[0] is second[0] and first[4] is second[4] and first[6] is second[6]
    assert s.window()[1] == {**s.window()[0], "key": "k-1"}
    assert s.window()[0]["name"] == "my-task"  # the task's own name, not one guessed from its key


def test_the_ring_is_bounded_and_indexes_stay_valid():
    s = TaskStream(limit=3)
    for i in range(5):
        s.add_reports("w", [fin(f"t-{i}", float(i))], [])
    assert (len(s), s.count, s.first_index) == (3, 5, 2)
    records, nxt = s.since(0)  # the first two are gone: it starts at the oldest kept
    assert [r["key"] for r in records] == ["t-2", "t-3", "t-4"] and nxt == 5
    assert s.since(5) == ([], 5)
    records, nxt = s.since(3, limit=1)
    assert [r["key"] for r in records] == ["t-3"] and nxt == 4
    assert s.since(99) == ([], 99)
    with pytest.raises(ValueError, match="at least 1"):
        TaskStream(limit=0)


def test_window_by_time_and_count():
    s = TaskStream()
    s.add_reports("w", [fin(f"t-{i}", float(i), float(i) + 0.5) for i in range(10)], [])
    assert [r["key"] for r in s.window(start=7.2)] == ["t-7", "t-8", "t-9"]  # runs that end after start
    assert [r["key"] for r in s.window(stop=1.0)] == ["t-0", "t-1"]          # ... and begin before stop
    assert [r["key"] for r in s.window(start=2.0, stop=4.0)] == ["t-2", "t-3", "t-4"]
    assert [r["key"] for r in s.window(count=2)] == ["t-8", "t-9"]
    assert s.window(count=0) == []


@pytest.mark.parametrize("key, name", [
    ("inc-0123456789abcdef0123456789abcdef", "inc"), ("('sum-abc123456', 3)", "sum"), ("my-key", "my-key"),
    ("x-12", "x"), ("plain", "plain"), ("a-b-deadbeef01", "a-b")])
def test_key_name(key, name):
    assert key_name(key) == name


def test_record_of_a_disk_write_has_no_source():
    r = record(("w", "k", 1.0, 2.0, None, 10, None, "disk-write", None, None))
    assert r["startstops"] == [{"action": "disk-write", "start": 1.0, "stop": 2.0}]


# --- the worker's bookkeeping: pure ------------------------------------------------------
def test_activity_log_is_bounded_and_drains():
    log = ActivityLog(limit=2)
    for i in range(3):
        log.add("transfer", f"k{i}", 1.0, 0.5, 10, "peer")  # a clock that stepped back: stop = start
    drained = log.drain()
    assert [a.key for a in drained] == ["k1", "k2"] and drained[0].stop == 1.0
    assert len(log) == 0 and log.drain() == []


def test_process_usage_measures_cpu_and_bytes():
    usage = ProcessUsage()
    assert usage.cpu is None
    traffic.sent += 10_000  # as if the connections had sent this much
    usage._at -= 1.0  # as if a second had passed since it began
    usage.sample()
    assert usage.cpu is not None and usage.cpu >= 0
    assert usage.sent_per_s > 0 and usage.received_per_s >= 0


def test_parse_time_accepts_what_dask_does():
    assert parse_time(None, "start") is None
    assert parse_time(123.5, "start") == 123.5
    assert parse_time("10s", "start", now=100.0) == 90.0
    assert parse_time(datetime.timedelta(minutes=1), "start", now=100.0) == 40.0
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert parse_time(moment, "stop") == moment.timestamp()
    with pytest.raises(TypeError, match="start must be a time"):
        parse_time([1], "start")
    with pytest.raises(ValueError, match="start"):
        parse_time(-1, "start")
    with pytest.raises(ValueError):
        parse_time("soon", "start")


# --- the Client API ----------------------------------------------------------------------
@gen_cluster(n_workers=2, threads_per_worker=2)
async def test_get_task_stream_async(c, lc):
    await c.gather(c.map(inc, range(10)))
    bad = c.submit(boom, 1, key="boom-<b>")
    await actorrt.wait([bad])
    records = await c.get_task_stream()
    computed = [r for r in records if r["startstops"][0]["action"] == "compute"]
    assert len(computed) == 11
    assert {r["worker"] for r in computed} <= set(lc.scheduler.state.workers)
    # (a task's name is the one it was submitted with, as the status page counts it)
    assert all(isinstance(r["thread"], int) and r["name"] in ("inc", "boom") for r in computed)
    assert all(r["startstops"][0]["start"] <= r["startstops"][0]["stop"] for r in computed)
    (erred,) = [r for r in computed if r["status"] == "error"]
    assert erred["key"] == "boom-<b>"
    assert len(await c.get_task_stream(count=3)) == 3
    assert await c.get_task_stream(start=records[-1]["startstops"][0]["stop"] + 3600) == []
    records2, page = await c.get_task_stream(plot=True)
    assert "<svg" in page and "boom-&lt;b&gt;" in page and "<script" not in page
    with pytest.raises(ValueError, match="count"):
        c.get_task_stream(count=-1)
    with pytest.raises(ValueError, match="plot"):
        c.get_task_stream(plot="show")


@gen_cluster(n_workers=1, threads_per_worker=1)
async def test_get_task_stream_context_manager_async(c, lc):
    await c.submit(inc, 0)  # before the block: not in it
    async with get_task_stream(client=c) as ts:
        await c.gather(c.map(inc, range(1, 6)))
    assert sorted(r["key"] for r in ts.data) == sorted(f.key for f in c.map(inc, range(1, 6)))
    with pytest.raises(TypeError, match="async with get_task_stream"):
        with get_task_stream(client=c):
            pass


def test_get_task_stream_context_manager_sync(tmp_path):
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        with get_task_stream(plot="save", filename=str(tmp_path / "ts.html")) as ts:
            c.gather(c.map(inc, range(4)))
        assert len(ts.data) == 4 and ts.figure is not None
        assert (tmp_path / "ts.html").read_text().count('<rect class="run"') == 4
    with pytest.raises(ValueError, match="no running Client"):
        with get_task_stream():
            pass


def slow_big(i):
    return bytes(200_000)


def total(*parts):
    return sum(len(p) for p in parts)


@pytest.mark.timeout(60)
def test_transfers_and_worker_figures_over_tcp():
    """Real worker processes: a task whose inputs live on the other worker records the
    transfer with its source; the workers report CPU and bytes per second."""
    with LocalCluster(2, 1, processes=True, dashboard_address=None) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])
        x = c.submit(slow_big, 1, workers=[a])
        y = c.submit(total, x, workers=[b])
        assert y.result() == 200_000

        def transfer_seen():
            return [r for r in c.get_task_stream() if r["startstops"][0]["action"] == "transfer"]
        wait_until(transfer_seen, timeout=10, interval=0.05)
        (moved,) = transfer_seen()
        assert moved["worker"] == b and moved["key"] == x.key and moved["nbytes"] >= 200_000
        assert moved["startstops"][0]["source"] == a

        def measured():
            figures = c.get_worker_figures()
            return all(f["cpu"] is not None for f in figures.values()) and figures
        wait_until(measured, timeout=10, interval=0.05)
        figures = measured()
        assert set(figures) == {a, b}
        assert all(f["sent_per_s"] >= 0 and f["received_per_s"] >= 0 and f["rss"] for f in figures.values())


@gen_cluster(n_workers=1, threads_per_worker=1, memory_limit="2MiB", memory_target_fraction=0.5,
             memory_spill_fraction=False, memory_pause_fraction=False, memory_terminate_fraction=False)
async def test_spills_are_recorded(c, lc):
    futures = c.map(slow_big, range(8))
    await actorrt.wait(futures)
    await c.gather(futures)  # those spilled are read back from disk
    stream = lc.scheduler.task_stream
    # They ride on the worker's next report (tasks_done or its memory report).
    await poll_for(lambda: {"disk-write", "disk-read"} <= {row[7] for row in stream.rows()}, timeout=10)
    writes = [r for r in await c.get_task_stream() if r["startstops"][0]["action"] == "disk-write"]
    assert writes and all(r["nbytes"] >= 200_000 and r["thread"] is None for r in writes)
