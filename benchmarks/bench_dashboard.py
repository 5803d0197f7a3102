"""What the dashboard costs: client start-up, task throughput with a page open, a snapshot.

Rows:

* client start-up (two worker processes) without and with a dashboard. dask's column
  with a dashboard needs bokeh; without it, dask starts none and the cell is empty.
* submit+gather throughput with nobody looking, and with a page open (a websocket
  reading the pushes, here every 50 ms: ten times the page's rate).
* one status snapshot of a scheduler holding many tasks (actorrt only: what a push
  costs the scheduler's loop).

Run from the repository root: ``python benchmarks/bench_dashboard.py [--quick] [--no-dask]``.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import actorrt_client, dask_client, parse_args, print_table, runtimes, timeit  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def start_and_close(make: Callable[..., Any], **kwargs: Any) -> None:
    with make(**kwargs) as client:
        client.submit(inc, 1).result()


def submit_gather(client: Any, n: int) -> None:
    assert sum(client.gather(client.map(inc, range(n), pure=False))) == n * (n + 1) // 2


@contextlib.contextmanager
def page_open(client: Any, interval: float) -> Iterator[list]:
    """A browser tab on the dashboard: a websocket on its own loop, reading every push."""
    from tornado.websocket import websocket_connect

    from actorrt.dashboard import DASHBOARD_ID
    from actorrt.utils import LoopRunner

    client.cluster.scheduler_host.actors[DASHBOARD_ID].interval = interval
    url = client.dashboard_link.replace("http://", "ws://").replace("/status", "/ws")
    received: list = []
    runner = LoopRunner("bench-page")

    async def open_and_read() -> Any:
        ws = await websocket_connect(url)

        async def read() -> None:
            while (msg := await ws.read_message()) is not None:
                received.append(len(msg))
        return ws, asyncio.ensure_future(read())

    ws, reader = runner.run(open_and_read)
    try:
        yield received
    finally:
        async def close() -> None:
            ws.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(reader, 5)
        runner.run(close)
        runner.stop()


def snapshot_seconds(n_tasks: int, repeat: int) -> float:
    """One status() over a scheduler state holding ``n_tasks`` (no sockets involved)."""
    from actorrt.dashboard.status import status
    from actorrt.scheduler import Scheduler as SchedulerActor
    from actorrt.scheduler.state import SchedulerState, TaskSpec

    state = SchedulerState()
    for i in range(4):
        state.stimulus_add_worker(f"tcp://10.0.0.{i}:1", 4, "w")
    specs = [TaskSpec(f"f{i % 20}-{i}", "spec", (), name=f"f{i % 20}") for i in range(n_tasks)]
    state.stimulus_update_graph("client", specs, [s.key for s in specs], "graph")

    class Scheduler:  # what status() reads
        worker_info: dict = {}
        client_refs: dict = {}
        host = type("Host", (), {"address": "tcp://10.0.0.9:8786"})()
        memory_of = SchedulerActor.memory_of
    Scheduler.state = state  # type: ignore[attr-defined]
    return timeit(lambda: status(Scheduler(), 0.0), repeat=repeat)  # type: ignore[arg-type]


def main() -> None:
    args = parse_args(__doc__)
    n = 500 if args.quick else 10_000
    n_snapshot = 5_000 if args.quick else 100_000
    with_dask = "dask" in runtimes(args)
    dask_dashboard = with_dask and importlib.util.find_spec("bokeh") is not None
    rows: list[tuple] = []

    a = timeit(lambda: start_and_close(actorrt_client, dashboard_address=None), args.repeat)
    d = timeit(lambda: start_and_close(dask_client, dashboard_address=None), args.repeat) if with_dask else None
    rows.append(("client start-up, no dashboard", a, d))
    a = timeit(lambda: start_and_close(actorrt_client), args.repeat)
    d = timeit(lambda: start_and_close(dask_client, dashboard_address=":0"), args.repeat) \
        if dask_dashboard else None
    rows.append(("client start-up, dashboard on", a, d))

    with actorrt_client() as client:
        submit_gather(client, n)  # warm up
        quiet = timeit(lambda: submit_gather(client, n), args.repeat)
        with page_open(client, interval=0.05) as received:
            watched = timeit(lambda: submit_gather(client, n), args.repeat)
        assert received, "the page received no status"
    d_quiet = None
    if with_dask:
        with dask_client() as dclient:
            submit_gather(dclient, n)
            d_quiet = timeit(lambda: submit_gather(dclient, n), args.repeat)
    rows.append((f"submit+gather {n}, nobody looking", quiet, d_quiet, n))
    rows.append((f"submit+gather {n}, a page open (50 ms pushes)", watched, None, n))
    rows.append((f"status snapshot, {n_snapshot:,} tasks", snapshot_seconds(n_snapshot, args.repeat), None))
    print_table(rows, title="the dashboard's cost")


if __name__ == "__main__":
    main()
