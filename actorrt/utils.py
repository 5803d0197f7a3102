"""Small helpers shared by the client, worker and deploy layers."""
from __future__ import annotations

import asyncio
import importlib.abc
import itertools
import logging
import os
import sys
import threading
import weakref
from typing import Any, Awaitable, Callable, Generic, Iterator, TypeVar

from . import runtime

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class LoopRunner:
    """An asyncio loop running in a daemon thread: the engine of every sync face."""

    def __init__(self, name: str = "actorrt-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()
        # Drain what is left so no task is destroyed pending.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None,
            **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("cannot block on the event loop from its own thread; use the async API")
        return runtime.block_on(self.loop, lambda: asyncio.wait_for(fn(*args, **kwargs), timeout))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)


# Containers are measured from a sample of this many items, scaled to their length:
# a result of a million small objects must not cost a million calls to report.
_SIZEOF_SAMPLE = 16


class FreshIds:
    """Unique 32-hex-digit ids, as ``uuid4().hex`` gives, for keys and tokens made at
    every ``submit``: a random 96-bit prefix drawn once (again in a forked child, and
    after 2**32 ids) and a counter. uuid4 reads the OS's random source for each id, a
    system call per key (``submit()`` measured 42 -> 39 µs here without it)."""

    _SPAN = 1 << 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = self._fresh_state()
        os.register_at_fork(after_in_child=self._reset)

    @staticmethod
    def _fresh_state() -> tuple[str, Iterator[int]]:
        return os.urandom(12).hex(), itertools.count()

    def _reset(self) -> None:
        self._state = self._fresh_state()

    def next(self) -> str:
        # One snapshot of (prefix, counter): a thread that drew from an old counter
        # writes the old prefix, so no id is made twice across a change of prefix.
        state = self._state
        prefix, count = state
        n = next(count)  # (atomic under the GIL: threads never share a number)
        if n < self._SPAN:
            return f"{prefix}{n:08x}"
        with self._lock:
            if self._state is state:  # (the first thread to run out draws the new prefix)
                self._state = self._fresh_state()
        return self.next()


#: The process's source of fresh ids (``f"inc-{fresh_ids.next()}"``).
fresh_ids = FreshIds()


class PerObject(Generic[K, V]):
    """``make(obj)``, once per object: made on first use (by whichever thread asks
    first) and dropped with the object (a client's caller of actors, its routes)."""

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._made: "weakref.WeakKeyDictionary[K, V]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, obj: K) -> V:
        value = self._made.get(obj)
        if value is None:
            with self._lock:
                value = self._made.get(obj)
                if value is None:
                    value = self._made[obj] = self._make(obj)
        return value


def env_count(name: str, default: int) -> int:
    """The positive integer in environment variable ``name``, else ``default``;
    ValueError naming the variable for anything else."""
    text = os.environ.get(name)
    if not text:
        return default
    return positive_count(name, text)


def positive_count(name: str, text: str) -> int:
    """``text`` as a positive integer; ValueError naming ``name`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return value


def sizeof(obj: Any, depth: int = 3) -> int:
    """An estimate of the memory ``obj`` holds: buffers' lengths, numpy's ``nbytes``,
    a sample of a container's items, else ``sys.getsizeof`` (pandas answers that deeply).

    The scheduler accounts each stored value with it (``scheduler_info()``'s per-worker
    ``memory["managed"]``), so it must be cheap and never raise.
    """
    nbytes = getattr(obj, "nbytes", None)
    if type(nbytes) is int:
        return nbytes
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj)
    try:
        own = sys.getsizeof(obj)
    except Exception:
        return 64
    if depth > 1 and type(obj) in (list, tuple, set, frozenset, dict) and obj:
        items = list(itertools.islice(obj.values() if type(obj) is dict else obj, _SIZEOF_SAMPLE))
        sample = sum(sizeof(x, depth - 1) for x in items)
        own += sample * len(obj) // len(items)
    return own


# --- after a module is imported ------------------------------------------------------------
class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs callbacks once a watched top-level module has been imported.

    Registering with dask and joblib means importing them (~0.15 s together), which a
    Client must not cost a user who never touches either. So a Client registers at
    once only if they are imported already; else this finder waits for the import.
    It finds nothing itself: it asks the finders after it for the real spec and wraps
    that spec's loader, so the module loads exactly as it would have.
    """

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[], object]]] = {}
        self.lock = threading.Lock()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.pending:
            return None
        spec = _spec_from_others(self, fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        with self.lock:
            callbacks = self.pending.pop(fullname, [])
        spec.loader = _LoaderThenCall(spec.loader, callbacks)
        return spec


def _spec_from_others(me: Any, fullname: str, path: Any, target: Any) -> Any:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if finder is me or find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _LoaderThenCall:
    """A loader that is ``loader``, and then runs ``callbacks`` (errors are logged: a
    failing integration must not break the user's import)."""

    def __init__(self, loader: Any, callbacks: list[Callable[[], object]]) -> None:
        self._loader = loader
        self._callbacks = callbacks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # what the module would have had
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                logging.getLogger("actorrt").exception("actorrt's hook after importing %s failed",
                                                       module.__name__)


_after_import = _AfterImport()


def when_imported(module: str, callback: Callable[[], object]) -> None:
    """Run ``callback()`` now if top-level ``module`` is imported, else right after its
    first import (in the importing thread). The same callback asked for twice runs once
    (every Client asks for joblib's registration: it must not pile up until the import)."""
    if module in sys.modules:
        callback()
        return
    with _after_import.lock:
        pending = _after_import.pending.setdefault(module, [])
        if callback not in pending:
            pending.append(callback)
        if _after_import not in sys.meta_path:
            sys.meta_path.insert(0, _after_import)
