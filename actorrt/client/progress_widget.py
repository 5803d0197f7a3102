"""``progress()`` in Jupyter: an ipywidgets bar that updates by itself, so the cell
returns at once (dask's notebook behaviour). Used only where :func:`in_notebook`."""
from __future__ import annotations

import importlib.util
import sys
from typing import Any

from .. import runtime
from .future import Future, FutureState


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
    """A bar and a label, updated on the client's loop as each future finishes."""

    def __init__(self, futures: list[Future], widgets: Any = None) -> None:
        if widgets is None:
            import importlib
            widgets = importlib.import_module("ipywidgets")  # (optional: only in a notebook)
        self.total = len(futures)
        self.done = 0
        self.errors = 0
        self.bar = widgets.IntProgress(value=0, min=0, max=max(self.total, 1), description="progress")
        self.label = widgets.HTML(value=self._text())
        self.box = widgets.HBox([self.bar, self.label])
        for f in futures:
            runtime.call_on(f.client.loop, f._state.add_callback, self._one_done)

    def _text(self) -> str:
        tail = f", {self.errors} failed" if self.errors else ""
        return f"{self.done} / {self.total} done{tail}"

    def _one_done(self, st: FutureState) -> None:
        self.done += 1
        if st.status != "finished":
            self.errors += 1
            self.bar.bar_style = "danger"
        elif self.done == self.total and not self.errors:
            self.bar.bar_style = "success"
        self.bar.value = self.done
        self.label.value = self._text()


def show(futures: list[Future]) -> WidgetBar:
    bar = WidgetBar(futures)
    _display(bar.box)
    return bar


__all__ = ["WidgetBar", "in_notebook", "show"]
