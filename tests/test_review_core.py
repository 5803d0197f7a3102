"""Bugs found in a review of core/scheduler/worker/deploy, each pinned by a test."""
import asyncio
import gc

import pytest

from actorrt.testing import gen_cluster, poll_for


def inc(x):
    return x + 1


def _worker(lc, address):
    return next(w for h, w in lc.workers.values() if h.address == address)


@gen_cluster(n_workers=2)
async def test_fetched_input_copy_is_dropped_when_no_local_task_needs_it(c, lc):
    # The scheduler never learns of a copy a worker fetched as some task's input, so
    # it never frees it: the worker must drop it itself, or it stays for ever.
    a, b = lc.worker_addresses()
    x = c.submit(inc, 1, workers=[a], key="x")
    y = c.submit(inc, x, workers=[b], key="y")
    assert await y == 3
    wb = _worker(lc, b)
    assert "x" not in wb.data and "y" in wb.data
    del x, y
    gc.collect()
    await poll_for(lambda: not lc.scheduler.state.tasks and not wb.data and not _worker(lc, a).data)


@gen_cluster(n_workers=2, threads_per_worker=2)
async def test_fetched_copy_shared_by_many_local_tasks(c, lc):
    a, b = lc.worker_addresses()
    x = c.submit(inc, 1, workers=[a], key="x")
    ys = [c.submit(inc, x, workers=[b], key=f"y-{i}", pure=False) for i in range(20)]
    ys += [c.submit(lambda v, i: v + i, x, i, workers=[b], pure=False) for i in range(20)]
    assert len(await c.gather(ys)) == 40
    wb = _worker(lc, b)
    assert "x" not in wb.data
    # a task placed where a copy used to be still gets its input
    z = c.submit(inc, x, workers=[b], pure=False)
    assert await z == 3
    assert "x" not in wb.data


def test_fetched_copy_dropped_on_worker_process(pclient):
    a, b = sorted(pclient.scheduler_info()["workers"]) if hasattr(pclient, "scheduler_info") else (None, None)
    x = pclient.submit(inc, 10, workers=[a])
    y = pclient.submit(inc, x, workers=[b])
    assert y.result() == 12
    held = pclient.run(lambda dask_worker: sorted(dask_worker.data), workers=[b])
    assert held[b] == [y.key]


def test_local_cluster_that_fails_to_start_leaves_nothing_behind():
    # A worker process that dies at start (here: Python cannot find its standard library) fails the
    # cluster's start; its loop thread, scheduler host and other workers must go too.
    import threading

    from actorrt import LocalCluster
    from actorrt.testing import _check_threads
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="exited with code"):
        LocalCluster(1, 1, processes=True, dashboard_address=None,
                     worker_env={"PYTHONHOME": "/nonexistent-python-home"})
    _check_threads(before)


def test_async_local_cluster_that_fails_to_start_closes_its_scheduler():
    from actorrt import LocalCluster

    async def main():
        lc = LocalCluster(1, 1, processes=True, asynchronous=True, dashboard_address=None,
                          worker_env={"PYTHONHOME": "/nonexistent-python-home"})
        with pytest.raises(RuntimeError, match="exited with code"):
            await lc
        assert lc.scheduler_host is not None and lc.scheduler_host.status == "closed"
        assert lc.status == "closed"
    asyncio.run(main())


@gen_cluster(n_workers=2)
async def test_fetch_reports_only_the_holder_it_tried(c, lc):
    # A failed fetch blames the peer it asked, not every holder: the scheduler drops
    # the blamed ones from who_has (and would recompute data a live holder still has,
    # and never free that holder's copy).
    from actorrt.core import Pickled
    a, b = lc.worker_addresses()
    wb = _worker(lc, b)
    told = []
    tell = wb.host.tell

    def spy(ref, op, **fields):
        if op in ("missing_data", "tasks_done"):
            told.append((op, fields))
        else:
            tell(ref, op, **fields)
    wb.host.tell = spy
    try:
        spec = [Pickled.dumps(inc), Pickled.dumps(((0,), {}))]
        wb.handle_compute([["t", spec, {"k": ["inproc://nobody-1", "inproc://nobody-2"]}, "t", None, 1, {}]],
                          None)
        await poll_for(lambda: told)
    finally:
        del wb.host.tell
    # Unreachable holders lose the data; they do not make it unmovable (no tasks_done).
    [(op, fields)] = told
    assert op == "missing_data" and fields["key"] == "t" and list(fields["missing"]) == ["k"]
    assert len(fields["missing"]["k"]) == 1
    assert fields["missing"]["k"][0] in ("inproc://nobody-1", "inproc://nobody-2")
    assert not wb.state.rows  # the task and its input are forgotten
    wb.state.validate()
