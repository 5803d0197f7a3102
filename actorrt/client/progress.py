"""Progress bars for futures: a live bar in a terminal, plain lines elsewhere.

Counting is pushed: each future's state runs a callback on the client's loop when it
finishes, which bumps a counter and wakes the drawing side. Drawing happens in the
caller (the thread blocked in :func:`progress`, or the coroutine awaiting it), at
most every ``interval`` seconds and once more at the end; the loop never writes.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any, Callable

from .. import runtime
from ..durations import parse_interval
from . import progress_widget
from .future import Future, FutureState, futures_of

BAR_WIDTH = 40


def task_name(key: str) -> str:
    """The name part of a key: ``inc-6f1c...`` -> ``inc``."""
    return key.rsplit("-", 1)[0] if "-" in key else key


class Tracker:
    """How many of some futures are done, per task name. Updated on the client's loop."""

    def __init__(self, futures: list[Future]) -> None:
        self.total = len(futures)
        self.done = 0
        self.errors = 0
        self.per_name: dict[str, list[int]] = {}  # name -> [done, total]
        for f in futures:
            self.per_name.setdefault(task_name(f.key), [0, 0])[1] += 1
        # Set (on the loop, where it counts) when a future is done; the bar reads the
        # counts from the thread that draws it.
        self.changed: asyncio.Event | None = None
        # Called on the loop as each future is done (a notebook widget redraws itself).
        self.on_change: Callable[[], None] | None = None
        self.start_time = time.monotonic()

    def watch(self, futures: list[Future]) -> None:
        for f in futures:
            name = task_name(f.key)

            def one_done(st: FutureState, name: str = name) -> None:
                self._count(st, name)
            runtime.call_on(f.client.loop, f._state.add_callback, one_done)

    def _count(self, st: FutureState, name: str) -> None:
        self.done += 1
        self.per_name[name][0] += 1
        if st.status != "finished":
            self.errors += 1
        if self.changed is not None:
            self.changed.set()
        if self.on_change is not None:
            self.on_change()

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start_time


class ProgressBar:
    """Draws a :class:`Tracker` to ``file``: redrawn in place on a terminal (one line,
    or one per task name with ``multi``), else a line at each tenth and at the end."""

    def __init__(self, tracker: Tracker, file: IO[str] | None = None, multi: bool = False) -> None:
        self.tracker = tracker
        self.file = file if file is not None else sys.stdout
        self.multi = multi
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._lines_drawn = 0
        self._last_tenth = -1

    def draw(self, final: bool = False) -> None:
        t = self.tracker
        done, errors = t.done, t.errors
        per_name = {k: tuple(v) for k, v in t.per_name.items()}
        if self.tty:
            self._draw_tty(done, errors, per_name, final)
        else:
            self._draw_text(done, errors, final)

    def _draw_tty(self, done: int, errors: int, per_name: dict, final: bool) -> None:
        rows = [self._row("", done, self.tracker.total, errors)]
        if self.multi:
            rows += [self._row(name, d, n, 0) for name, (d, n) in sorted(per_name.items())]
        out = ""
        if self._lines_drawn > 1:
            out += f"\x1b[{self._lines_drawn - 1}F"  # back to the first line we drew
        out += "\n".join("\r" + row + "\x1b[K" for row in rows)
        self._lines_drawn = len(rows)
        if final:
            out += "\n"
            self._lines_drawn = 0
        self.file.write(out)
        self.file.flush()

    def _row(self, name: str, done: int, total: int, errors: int) -> str:
        frac = done / total if total else 1.0
        filled = int(round(frac * BAR_WIDTH))
        bar = "#" * filled + " " * (BAR_WIDTH - filled)
        label = f"{name:>16} " if name else ""
        tail = f" | {errors} failed" if errors else ""
        return (f"{label}[{bar}] {frac:4.0%} | {done}/{total} done | "
                f"{self.tracker.elapsed:5.1f}s{tail}")

    def _draw_text(self, done: int, errors: int, final: bool) -> None:
        total = self.tracker.total
        tenth = (10 * done) // total if total else 10
        if not final and tenth == self._last_tenth:
            return
        if final and self._last_tenth == 10:
            return
        self._last_tenth = tenth
        tail = f", {errors} failed" if errors else ""
        self.file.write(f"progress: {done}/{total} done ({done / total if total else 1:.0%}) "
                        f"after {self.tracker.elapsed:.1f}s{tail}\n")
        self.file.flush()


def progress(*futures: Any, multi: bool = False, complete: bool = True, file: IO[str] | None = None,
             interval: Any = 0.1, notebook: Any = None) -> Any:
    """Show the progress of ``futures`` until all are done (an awaitable with an
    asynchronous client).

    On a terminal, a bar is redrawn in place (with ``multi=True``, one per task
    name); elsewhere (a log, a pipe), a line is printed at every tenth done. Failed
    tasks count as done and are tallied. In a Jupyter kernel with ipywidgets, a
    widget bar is shown instead and ``progress`` returns at once (``notebook=False``
    keeps the text bar; ``file=`` always writes text); it redraws at most every
    ``interval``. ``complete=False`` leaves out the futures already done when it is
    called, as dask's does.

    >>> futures = client.map(slow_inc, range(100))   # doctest: +SKIP
    >>> progress(futures)                             # doctest: +SKIP
    [########################################] 100% | 100/100 done |   2.1s
    """
    interval = parse_interval(interval)  # (dask's default is "100ms")
    flat = futures_of(list(futures))
    if not flat:
        return None
    client = flat[0].client
    if not complete:
        flat = [f for f in flat if not f.done()]
        if not flat:
            return runtime.Ready() if client.asynchronous else None
    tracker = Tracker(flat)
    if file is None and (notebook or (notebook is None and progress_widget.in_notebook())):
        progress_widget.show(tracker, client.loop, interval, multi)  # the cell returns at once
        tracker.watch(flat)
        return runtime.Ready() if client.asynchronous else None
    bar = ProgressBar(tracker, file=file, multi=multi)
    tracker.watch(flat)
    if client.asynchronous:
        return _show_async(tracker, bar, interval)
    _show(client, tracker, bar, interval)
    return None


def _show(client: Any, tracker: Tracker, bar: ProgressBar, interval: float) -> None:
    """Wait through runtime.block_on (a task gives its slot back meanwhile), draw on
    this thread: a slow terminal or pipe must not hold up the client's loop."""
    while True:
        finished = client.sync(_next_change, tracker, interval)
        bar.draw(final=finished)
        if finished:
            return


async def _show_async(tracker: Tracker, bar: ProgressBar, interval: float) -> None:
    while True:
        finished = await _next_change(tracker, interval)
        bar.draw(final=finished)
        if finished:
            return


async def _next_change(tracker: Tracker, interval: float) -> bool:
    """On the loop: wait until a future is done or ``interval`` passed; whether all are."""
    if tracker.changed is None:
        tracker.changed = asyncio.Event()
    if not tracker.finished:
        try:
            await asyncio.wait_for(tracker.changed.wait(), interval)
        except asyncio.TimeoutError:
            pass
        tracker.changed.clear()
    return tracker.finished


__all__ = ["ProgressBar", "Tracker", "progress"]
