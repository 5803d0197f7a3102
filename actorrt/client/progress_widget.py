"""``progress()`` in Jupyter: an ipywidgets bar that updates by itself, so the cell
returns at once (dask's notebook behaviour). Used only where :func:`in_notebook`."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .progress import Tracker


def in_notebook() -> bool:
    """Whether ipywidgets is installed and this process is an IPython *kernel* (a
    terminal IPython has no kernel, and a widget there would print as text)."""
    ipython = sys.modules.get("IPython")
    if ipython is None or importlib.util.find_spec("ipywidgets") is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display(widget: Any) -> None:
    from IPython.display import display
    display(widget)


class WidgetBar:
    """A :class:`~actorrt.client.progress.Tracker` drawn as ipywidgets bars (one more
    per task name with ``multi``). Redrawn on the client's loop at most every
    ``interval`` seconds, and once at the end: each change of a widget is a message to
    the browser, so a million futures must not make a million of them."""

    def __init__(self, tracker: "Tracker", loop: asyncio.AbstractEventLoop, interval: float,
                 multi: bool = False, widgets: Any = None) -> None:
        if widgets is None:
            import importlib
            widgets = importlib.import_module("ipywidgets")  # (optional: only in a notebook)
        self.tracker = tracker
        self.loop = loop
        self.interval = interval
        names = [""] + (sorted(tracker.per_name) if multi else [])
        self.rows = {name: self._row(widgets, name) for name in names}
        self.bar, self.label = self.rows[""]
        self.box = widgets.VBox([widgets.HBox(list(row)) for row in self.rows.values()])
        self._pending: asyncio.TimerHandle | None = None
        self.draw()

    @staticmethod
    def _row(widgets: Any, name: str) -> tuple[Any, Any]:
        bar = widgets.IntProgress(value=0, min=0, max=1, description=name or "progress")
        return bar, widgets.HTML(value="")

    def changed(self) -> None:
        """On the loop, as each future is done (the tracker's ``on_change``)."""
        if self.tracker.finished:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            self.draw()
        elif self._pending is None:
            self._pending = self.loop.call_later(self.interval, self._draw_pending)

    def _draw_pending(self) -> None:
        self._pending = None
        self.draw()

    def draw(self) -> None:
        t = self.tracker
        self._set(self.rows[""], t.done, t.total, t.errors)
        for name, (done, total) in t.per_name.items():
            if name in self.rows:
                self._set(self.rows[name], done, total, 0)

    def _set(self, row: tuple[Any, Any], done: int, total: int, errors: int) -> None:
        bar, label = row
        bar.max = max(total, 1)
        bar.value = done
        if errors:
            bar.bar_style = "danger"
        elif done >= total:
            bar.bar_style = "success"
        tail = f", {errors} failed" if errors else ""
        label.value = f"{done} / {total} done{tail}"


def show(tracker: "Tracker", loop: asyncio.AbstractEventLoop, interval: float, multi: bool = False) -> WidgetBar:
    """Display ``tracker`` as a widget that updates itself (call before it is watched)."""
    bar = WidgetBar(tracker, loop, interval, multi)
    tracker.on_change = bar.changed
    _display(bar.box)
    return bar


__all__ = ["WidgetBar", "in_notebook", "show"]
