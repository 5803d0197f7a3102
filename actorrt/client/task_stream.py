"""The task stream and performance reports on the Client (dask.distributed's names):
``client.get_task_stream``, the ``get_task_stream`` context manager and
``performance_report``.

The scheduler keeps the latest runs, transfers and disk reads/writes that workers
reported (scheduler/task_stream.py); these ask it for a window of them, in dask's
record shape. ``performance_report`` renders them, with the workers' figures and a
profile where the client can give one, into one HTML file that opens offline
(diagnostics/report.py).
"""
from __future__ import annotations

import datetime
import numbers
import os
import time
from typing import TYPE_CHECKING, Any

from ..core import ActorRef
from ..diagnostics import report as html_report
from ..durations import parse_duration
from .compat import default_client
from .part import ClientPart

from ..diagnostics.flamegraph import flame_svg

if TYPE_CHECKING:
    from ..core import Host
    from .client import Client


def parse_time(value: Any, name: str, now: float | None = None) -> float | None:
    """A moment as seconds since the epoch, from what dask's ``get_task_stream`` takes: a
    number (``time.time()``), a ``datetime`` (naive: local time), or a duration before
    now (``"60s"``, ``"500 ms"``, a ``timedelta``).

    >>> parse_time("10s", "start", now=100.0)
    90.0
    """
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value != value or value < 0:
            raise ValueError(f"{name} must be a time (seconds since the epoch), got {value!r}")
        return float(value)
    if isinstance(value, (str, datetime.timedelta)):
        ago = parse_duration(value, name, allow_none=False)
        assert ago is not None
        return (time.time() if now is None else now) - ago
    raise TypeError(f"{name} must be a time: seconds since the epoch, a datetime, or a duration before "
                    f"now such as '60s'; got {type(value).__name__}: {value!r}")


def _check_count(count: Any) -> int | None:
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0 or None, got {count!r}")
    return count


class TaskStreamMethods(ClientPart):
    """Mixin of Client: the task stream and performance reports."""

    if TYPE_CHECKING:  # provided by Client
        host: Host
        scheduler: ActorRef

    def get_task_stream(self, start: Any = None, stop: Any = None, count: int | None = None,
                        plot: bool | str = False, filename: str = "task-stream.html",
                        bokeh_resources: Any = None) -> Any:
        """The task stream's records between ``start`` and ``stop``, oldest first, as
        dask's: ``{"key", "name", "worker", "thread", "status", "nbytes", "type",
        "startstops": [{"action", "start", "stop"}]}`` ("compute", "transfer" with its
        "source", "disk-write", "disk-read").

        ``start``/``stop``: seconds since the epoch, a ``datetime``, or a duration
        before now (``"60s"``); ``count``: only the latest so many (ignored when both
        ``start`` and ``stop`` are given, as in dask). ``plot=True`` returns
        ``(records, html)`` with the stream drawn as a self-contained HTML page (there
        is no Bokeh here); ``plot="save"`` also writes it to ``filename``.

        >>> client.get_task_stream(start="10s")[0]["startstops"]   # doctest: +SKIP
        [{'action': 'compute', 'start': 1718000000.1, 'stop': 1718000000.2}]
        """
        del bokeh_resources  # (dask's Bokeh option: nothing to load here)
        now = time.time()
        begin, end = parse_time(start, "start", now), parse_time(stop, "stop", now)
        count = _check_count(count)
        if begin is not None and end is not None:
            count = None
        if plot not in (False, True, "save"):
            raise ValueError(f"plot must be False, True or 'save', got {plot!r}")
        return self.sync(self._get_task_stream, begin, end, count, plot, filename)

    async def _get_task_stream(self, start: float | None, stop: float | None, count: int | None,
                               plot: bool | str, filename: str) -> Any:
        records = await self.host.ask(self.scheduler, "get_task_stream", start=start, stop=stop, count=count)
        if not plot:
            return records
        page = html_report.render_task_stream_page(records)
        if plot == "save":
            _write(filename, page)
        return records, page

    def get_worker_figures(self) -> Any:
        """Each worker's latest figures: ``{address: {"cpu", "rss", "managed", "spilled",
        "limit", "sent_per_s", "received_per_s", "nthreads"}}`` (CPU in percent of one
        core, rates in bytes per second; None where not measured yet)."""
        return self.sync(self._get_worker_figures)

    async def _get_worker_figures(self) -> Any:
        return await self.host.ask(self.scheduler, "worker_figures")


def _write(filename: str, text: str) -> None:
    with open(os.fspath(filename), "w", encoding="utf-8") as f:
        f.write(text)


class get_task_stream:  # noqa: N801 (dask's name: a context manager used like a function)
    """Collect the task stream of the work done inside the block.

    >>> with get_task_stream() as ts:          # doctest: +SKIP
    ...     client.gather(client.map(inc, range(10)))
    >>> len(ts.data)                           # doctest: +SKIP
    10

    ``async with`` for an asynchronous client. ``plot="save"`` also writes the stream
    as an HTML page to ``filename``; ``plot=True`` keeps that page in ``.figure``.
    """

    def __init__(self, client: "Client | None" = None, plot: bool | str = False,
                 filename: str = "task-stream.html") -> None:
        if plot not in (False, True, "save"):
            raise ValueError(f"plot must be False, True or 'save', got {plot!r}")
        self._given = client
        self.plot = plot
        self.filename = filename
        self.data: list[dict[str, Any]] = []
        self.figure: str | None = None
        self._start = 0.0

    def __enter__(self) -> "get_task_stream":
        _sync_client(self._given, "get_task_stream")  # no client: say so now, not after the work
        self._start = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        client = default_client(self._given)
        self._keep(client.get_task_stream(start=self._start, plot=self.plot, filename=self.filename))

    async def __aenter__(self) -> "get_task_stream":
        default_client(self._given)
        self._start = time.time()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        client = default_client(self._given)
        got = client.get_task_stream(start=self._start, plot=self.plot, filename=self.filename)
        self._keep(await got if client.asynchronous else got)

    def _keep(self, got: Any) -> None:
        if self.plot:
            self.data, self.figure = got
        else:
            self.data = got


class performance_report:  # noqa: N801 (dask's name)
    """Write one self-contained HTML file of the work done inside the block: its task
    stream, per-function counts and durations, the workers' CPU and memory at its start
    and end, and a profile when the client can give one. It opens offline (no script
    or style is fetched from anywhere).

    >>> with performance_report(filename="run.html"):           # doctest: +SKIP
    ...     client.gather(client.map(process, files))

    ``async with`` for an asynchronous client.
    """

    def __init__(self, filename: str = "dask-report.html", client: "Client | None" = None,
                 stacklevel: int = 1, mode: Any = None, storage_options: Any = None) -> None:
        # dask's code capture (stacklevel), Bokeh output modes and fsspec targets have no
        # meaning for one self-contained file written here: refused, not ignored.
        for name, value, default in (("stacklevel", stacklevel, 1), ("mode", mode, None),
                                     ("storage_options", storage_options, None)):
            if value != default:
                raise ValueError(f"performance_report({name}=...) is not supported: the report is one "
                                 f"self-contained HTML file written to a local path; got {value!r}")
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"filename must be a path, got {type(filename).__name__}: {filename!r}")
        self.filename = os.fspath(filename)
        self._given = client
        self._start = 0.0
        self._figures_before: dict = {}

    def __enter__(self) -> "performance_report":
        client = _sync_client(self._given, "performance_report")
        self._start = time.time()
        self._figures_before = client.get_worker_figures()
        return self

    def __exit__(self, *exc: Any) -> None:
        client = default_client(self._given)
        stop = time.time()
        records = client.get_task_stream(start=self._start)
        figures = client.get_worker_figures()
        profile = _profile_sync(client, self._start, stop)
        self._write(records, figures, profile, stop)

    async def __aenter__(self) -> "performance_report":
        client = default_client(self._given)
        self._start = time.time()
        self._figures_before = await _maybe_await(client.get_worker_figures())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        client = default_client(self._given)
        stop = time.time()
        records = await _maybe_await(client.get_task_stream(start=self._start))
        figures = await _maybe_await(client.get_worker_figures())
        profile = await _profile_async(client, self._start, stop)
        self._write(records, figures, profile, stop)

    def _write(self, records: list, figures: dict, profile: str | None, stop: float) -> None:
        page = html_report.render_report(records, start=self._start, stop=stop,
                                         figures_before=self._figures_before, figures_after=figures,
                                         profile_svg=profile)
        _write(self.filename, page)


def _sync_client(given: "Client | None", what: str) -> "Client":
    client = default_client(given)
    if client.asynchronous:
        raise TypeError(f"{what} with an asynchronous client: use 'async with {what}(...)'")
    return client


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


def _profile_sync(client: "Client", start: float, stop: float) -> str:
    try:
        return flame_svg(client.profile(start=start, stop=stop))
    except Exception as e:  # a report without its profile beats no report
        return html_report.note(f"no profile: {type(e).__name__}: {e}")


async def _profile_async(client: "Client", start: float, stop: float) -> str:
    try:
        return flame_svg(await client.profile(start=start, stop=stop))
    except Exception as e:
        return html_report.note(f"no profile: {type(e).__name__}: {e}")


__all__ = ["TaskStreamMethods", "get_task_stream", "parse_time", "performance_report"]
