"""More of dask.distributed's Client: ``start``, ``get_executor``, replaying a task
locally (``recreate_error_locally``, ``recreate_task_locally``),
``dump_cluster_state``, ``benchmark_hardware`` and Jupyter's ``_repr_html_``.
A mixin of :class:`~actorrt.Client`.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, cast

from .. import runtime
from ..core import ActorRef
from ..protocol import WORKER_ID
from ..spec import substitute
from . import html
from .admin import _get_versions, _pack_call, _run_on_workers, _scheduler_info
from .errors import ClosedClientError
from .executor import ClientExecutor
from . import transfer
from .future import Future, wait_all
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client

#: ``dump_cluster_state`` formats: file suffix of each.
DUMP_FORMATS = {"msgpack": ".msgpack.gz", "json": ".json", "yaml": ".yaml"}

#: Sizes ``benchmark_hardware`` measures with (bytes): small enough to run in seconds.
BENCHMARK_SIZES = {"1 MiB": 1 << 20, "16 MiB": 16 << 20}


class ExtraMethods(ClientPart):
    """Mixin of Client: the rest of dask's Client API (see docs/api.md)."""

    if TYPE_CHECKING:
        status: str

    def start(self, **kwargs: Any) -> Any:
        """Start the client (dask's name). A client starts when made (a sync one) or
        awaited (an async one): starting a running client does nothing."""
        if kwargs:
            raise TypeError(f"start got unexpected keyword arguments {sorted(kwargs)}: a client takes "
                            "its options when made")
        if self.status in ("closing", "closed"):
            raise ClosedClientError("cannot start a closed client; make a new one")
        if self.asynchronous:
            if self.status == "running":
                return runtime.Ready(self)
            return cast("Client", self)._started()
        return None

    def get_executor(self, **kwargs: Any) -> ClientExecutor:
        """A :class:`concurrent.futures.Executor` submitting to this client, each call with
        ``kwargs`` (``workers=``, ``resources=``, ``pure=``, ...).

        >>> ex = client.get_executor(pure=False)                    # doctest: +SKIP
        >>> concurrent.futures.wait([ex.submit(inc, 1)])            # doctest: +SKIP
        """
        return ClientExecutor(cast("Client", self), **kwargs)

    # --- replaying a task here ---------------------------------------------------
    def recreate_error_locally(self, future: Any) -> Any:
        """Run the failed task behind ``future`` (or the input task that failed first)
        in this process, with its inputs gathered, so its exception raises here (for
        a debugger: ``pdb.pm()`` afterwards).

        >>> client.recreate_error_locally(bad)     # doctest: +SKIP
        ZeroDivisionError: division by zero
        """
        return self._replay(future, need_error=True)

    def recreate_task_locally(self, future: Any) -> Any:
        """Run the task behind ``future`` in this process, with its inputs gathered; its
        result (or its exception, raised here)."""
        return self._replay(future, need_error=False)

    def _replay(self, future: Any, need_error: bool) -> Any:
        if not isinstance(future, Future):
            raise TypeError(f"expected a Future, got {type(future).__name__}: {future!r}")
        if self.asynchronous:
            return _replay_async(cast("Client", self), future, need_error)
        fn, args, kwargs = self.sync(_components, self, future, need_error)
        return fn(*args, **kwargs)

    # --- the cluster's state, its hardware -----------------------------------------
    def dump_cluster_state(self, filename: str = "dask-cluster-dump", write_from_scheduler: Any = None,
                           exclude: Any = (), format: str = "msgpack", **kwargs: Any) -> Any:
        """Write the scheduler's and every worker's state to ``filename`` plus a suffix:
        ``.msgpack.gz`` (gzipped msgpack, the default, as dask), ``.json`` or ``.yaml``
        (needs PyYAML). The document: ``{"scheduler": {tasks, workers, clients, story},
        "workers": {address: {rows, data, memory, ...}}, "versions": ...}`` (values as
        their ``repr``). For debugging: the layout may change between versions.
        """
        if kwargs:
            raise TypeError(f"dump_cluster_state got unexpected keyword arguments {sorted(kwargs)}")
        if write_from_scheduler:
            raise ValueError("dump_cluster_state(write_from_scheduler=True) is not supported: the "
                             "client gathers the state and writes the file")
        if exclude:
            raise ValueError(f"dump_cluster_state(exclude={exclude!r}) is not supported: the dump "
                             "holds values as their repr only, nothing is left out")
        if format not in DUMP_FORMATS:
            raise ValueError(f"format must be one of {sorted(DUMP_FORMATS)}, got {format!r}")
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"filename must be a str or path, got {type(filename).__name__}")
        return self.sync(_dump, self, os.fspath(filename), format)

    def benchmark_hardware(self) -> Any:
        """Throughput measured on the workers, in bytes per second, as dask shapes it:
        ``{"disk": {size: bps}, "memory": {size: bps}, "network": {size: bps}}``, each
        averaged over the workers (network: between pairs of workers; empty with one).
        """
        return self.sync(_benchmark, self)

    # --- Jupyter ------------------------------------------------------------------
    def _repr_html_(self) -> str:
        client = cast("Client", self)
        address = getattr(getattr(client, "scheduler", None), "address", None) or str(client._address)
        rows: list[tuple[str, Any]] = [("Scheduler", html.text(address)), ("Status", html.text(self.status))]
        info = None
        if self.status == "running" and not self.asynchronous and not runtime.on_loop(client.loop):
            try:
                info = self.sync(_info_for_html, self, timeout=5)
            except Exception:
                info = None  # a display must never raise
        link = client.__dict__.get("_dashboard_link") or getattr(self.cluster, "dashboard_link", None)
        rows += html.summary_rows(info, link)
        return html.cluster_html(f"Client {client.id}", rows, (info or {}).get("workers"))


async def _info_for_html(client: "Client", timeout: float | None = None) -> dict:
    return await _scheduler_info(client, -1, timeout)


# --- replay --------------------------------------------------------------------
async def _components(client: "Client", future: Future, need_error: bool,
                      timeout: float | None = None) -> tuple[Callable[..., Any], tuple, dict]:
    """The function, arguments and keyword arguments of ``future``'s task, inputs in place."""
    client.table.flush()
    await wait_all([future._state], timeout)
    if need_error and future.status != "error":
        raise ValueError(f"recreate_error_locally: {future.key!r} did not fail (its status is "
                         f"{future.status!r})")
    info = await client.host.ask(client.scheduler, "task_spec", key=future.key)
    blame = info.get("blame") if need_error else None
    if blame and blame != future.key:  # it erred because an input did: replay that one
        info = await client.host.ask(client.scheduler, "task_spec", key=blame)
    fn_blob, args_blob = info["spec"]
    deps = list(info["deps"])
    inputs = [Future(k, client) for k in deps]
    values = await client._gather(inputs) if inputs else []
    fn = fn_blob.loads()
    args, kwargs = args_blob.loads() if args_blob is not None else ((), {})
    data = dict(zip(deps, values))
    return fn, tuple(substitute(args, data)), dict(substitute(kwargs, data))


async def _replay_async(client: "Client", future: Future, need_error: bool) -> Any:
    fn, args, kwargs = await _components(client, future, need_error)
    return fn(*args, **kwargs)


async def _run(client: "Client", fn: Callable[..., Any], *args: Any, workers: Any = None,
               on_error: str = "raise") -> dict:
    """``client.run``'s coroutine (on the loop, where the sync face cannot wait)."""
    fn_blob, args_blob = _pack_call(fn, args, {})
    return await _run_on_workers(client, fn_blob, args_blob, workers, True, on_error)


# --- dump -------------------------------------------------------------------------
def _worker_snapshot(dask_worker: Any) -> dict:
    """Runs on each worker: its state machine's rows, its data's keys, its memory."""
    state = dask_worker.state
    return {"address": dask_worker.address, "name": dask_worker.name, "nthreads": dask_worker.nthreads,
            "rows": {k: {"state": r.state, "nbytes": r.nbytes, "type": r.type, "copy": r.copy}
                     for k, r in state.rows.items()},
            "data": sorted(dask_worker.data), "memory": dask_worker.memory_report()._asdict(),
            "transfer_incoming_bytes": state.transfer_incoming_bytes,
            "story": [list(map(str, e)) for e in list(state.log)[-1000:]]}


async def _dump(client: "Client", filename: str, format: str) -> str:
    scheduler = await client.host.ask(client.scheduler, "dump_state")
    workers = await _run(client, _worker_snapshot, on_error="return")
    doc = {"scheduler": scheduler,
           "workers": {a: w if isinstance(w, dict) else {"error": repr(w)} for a, w in workers.items()},
           "versions": await _get_versions(client, False, [])}
    doc = json.loads(json.dumps(doc, default=repr))  # plain data throughout
    path = filename if filename.endswith(DUMP_FORMATS[format]) else filename + DUMP_FORMATS[format]
    if format == "msgpack":
        import msgpack
        with gzip.open(path, "wb") as f:
            f.write(msgpack.packb(doc))
    elif format == "json":
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    else:
        import yaml
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
    return path


# --- benchmark ---------------------------------------------------------------------
def _bench_memory_disk() -> dict:
    """Runs on a worker: bytes per second copying memory and writing+reading a file."""
    out: dict[str, dict[str, float]] = {"memory": {}, "disk": {}}
    for label, size in BENCHMARK_SIZES.items():
        blob = os.urandom(size)
        start = time.perf_counter()
        for _ in range(4):
            bytearray(blob)
        out["memory"][label] = 4 * size / max(time.perf_counter() - start, 1e-9)
        with tempfile.TemporaryDirectory(prefix="actorrt-bench-") as d:
            path = os.path.join(d, "blob")
            start = time.perf_counter()
            with open(path, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            with open(path, "rb") as f:
                f.read()
            out["disk"][label] = 2 * size / max(time.perf_counter() - start, 1e-9)
    return out


async def _bench_fetch(peer: str, key: str, size: int, dask_worker: Any = None) -> float:
    """Runs on a worker: bytes per second fetching ``key`` from ``peer``."""
    start = time.perf_counter()
    await dask_worker.host.ask_bulk(ActorRef(peer, WORKER_ID), "get_data", keys=[key])
    return size / max(time.perf_counter() - start, 1e-9)


async def _benchmark(client: "Client") -> dict:
    local = await _run(client, _bench_memory_disk)
    result: dict[str, dict[str, float]] = {"disk": {}, "memory": {}, "network": {}}
    for kind in ("disk", "memory"):
        for label in BENCHMARK_SIZES:
            values = [r[kind][label] for r in local.values()]
            result[kind][label] = sum(values) / len(values) if values else 0.0
    addresses = sorted(local)
    if len(addresses) >= 2:
        for label, size in BENCHMARK_SIZES.items():
            rates = []
            for i, peer in enumerate(addresses):
                fetcher = addresses[(i + 1) % len(addresses)]
                [blob] = await transfer.scatter(client, [os.urandom(size)], [peer], False, False)
                got = await _run(client, _bench_fetch, peer, blob.key, size, workers=[fetcher])
                rates.append(got[fetcher])
                blob.release()
            result["network"][label] = sum(rates) / len(rates)
    return result


__all__ = ["BENCHMARK_SIZES", "DUMP_FORMATS", "ExtraMethods"]
