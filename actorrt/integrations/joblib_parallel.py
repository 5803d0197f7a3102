"""joblib's parallel-backend protocol, answered by an actorrt Client.

``joblib.Parallel`` cuts its calls into batches and hands each to the backend's
``submit(batch, callback)``; the backend must call ``callback`` when the batch is
done, and joblib then asks ``retrieve_result_callback(out)`` for its value on that
same thread, and dispatches the next batch from there. Here a batch becomes one
task (``pure=False``: two equal batches are still two runs), its Future is ``out``,
and ``Future.add_done_callback`` supplies the thread (the client's callback thread,
never its event loop).

Imported only by :func:`.joblib_backend.register`: this module needs joblib.
The client is reached through :func:`actorrt.runtime.default_client` (or given as
``client=``) and used duck-typed, so this unit never imports ``client``.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import uuid
from typing import Any, Callable, Iterable

from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
    parallel_config,
    register_parallel_backend,
)

from .. import runtime
from ..utils import sizeof
from . import joblib_backend

logger = logging.getLogger(__name__)

NO_CLIENT = (
    "To use joblib's 'dask' backend with actorrt, create an actorrt Client first:\n\n"
    "    from actorrt import Client\n"
    "    client = Client()                          # a local cluster\n"
    "or\n"
    "    client = Client('tcp://scheduler-address:8786')\n\n"
    "or pass one: joblib.parallel_backend('dask', client=client)")

# An argument at least this big is scattered once per Parallel call and sent to the
# batches that use it as a Future, rather than pickled into every batch (GridSearchCV
# passes the same X and y to each of its hundreds of fits).
AUTO_SCATTER_BYTES = 100_000

# The arguments the backend sets itself on each submit.
_OWN_SUBMIT_ARGS = frozenset({"key", "pure"})


# --- on the worker ------------------------------------------------------------------

def run_batch(calls: list, nested: tuple) -> list:
    """Run one batch of joblib calls in order, on a worker thread.

    An inner ``Parallel`` in one of the calls uses ``nested`` (a backend, n_jobs),
    the backend chosen by :meth:`ActorrtBackend.get_nested_backend`.
    """
    # A call may name "dask" again: on a worker process whose own client never
    # registered the backend, that would reach dask's backend and fail for want of a
    # dask client, rather than fall back to running here.
    joblib_backend.register()
    backend, n_jobs = nested
    with parallel_config(backend=backend, n_jobs=n_jobs):
        return [func(*args, **kwargs) for func, args, kwargs in calls]


# --- finding the client -------------------------------------------------------------

def in_task() -> bool:
    """Whether this thread runs an actorrt task or actor call."""
    return runtime.current_worker() is not None


def is_actorrt_client(obj: Any) -> bool:
    # By module rather than isinstance: this unit does not import ``client``.
    return type(obj).__module__.split(".")[0] == "actorrt"


def resolve_client(client: Any, scheduler_host: Any = None) -> Any:
    """The running, synchronous actorrt client to submit to; ValueError if none."""
    if scheduler_host is not None:
        raise ValueError("scheduler_host= is not supported by actorrt's joblib backend: create "
                         f"Client({scheduler_host!r}) and pass it as client=, or just create it "
                         "(it becomes the default)")
    if client is None:
        client = runtime.default_client()
        if client is None:
            raise ValueError(NO_CLIENT)
    if not is_actorrt_client(client):
        raise TypeError(f"client= must be an actorrt Client, got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"the Client given to joblib's backend is {client.status}, not running")
    if client.asynchronous:
        # joblib blocks threads on its results; an asynchronous client would run
        # joblib's callbacks on its event loop, where blocking stalls every reply.
        raise ValueError("joblib's backend needs a synchronous Client (asynchronous=False)")
    return client


def total_threads(client: Any) -> int:
    return sum(client.nthreads().values())


def wait_for_a_worker(client: Any, timeout: float) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as e:
        raise TimeoutError(
            f"joblib's backend found no actorrt worker after {timeout} s: start workers, or wait "
            f"longer with parallel_backend('dask', wait_for_workers_timeout={max(10, 2 * timeout)})"
        ) from e


# --- batches ------------------------------------------------------------------------

def call_name(func: Any) -> str:
    """A readable name for a call, for its task's key (sklearn wraps functions in an
    object that keeps them as ``.function``)."""
    inner = getattr(func, "function", func)
    name = getattr(inner, "__name__", None) or type(inner).__name__
    return "lambda" if name == "<lambda>" else str(name)


def batch_key(calls: list) -> str:
    name = call_name(calls[0][0]) if calls else "empty"
    return f"joblib-{name}-{uuid.uuid4().hex}"


def local_backend(nesting_level: int) -> Any:
    """What runs Parallel calls inside a task: threads one level down, sequential below
    (joblib's own rule for nested calls, so nesting cannot multiply threads)."""
    return (ThreadingBackend if nesting_level <= 1 else SequentialBackend)(nesting_level=nesting_level)


class ActorrtBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs joblib's batches as tasks on an actorrt cluster.

    Arguments as joblib's dask backend (``parallel_backend("dask", ...)``):

    - ``client``: the Client to use; default: the default client (the last created);
    - ``scatter``: a list of objects to broadcast to every worker once, up front;
      calls that take one of these objects (the same object) get it from there;
    - ``wait_for_workers_timeout``: how long to wait for a first worker (seconds);
    - any other keyword goes to ``Client.submit`` (``workers=``, ``retries=``, ...).

    Inside a task (a batch whose calls start a ``Parallel`` of their own) there is
    nothing to submit to: the backend falls back to threads, then sequential.
    """

    # A batch should take 0.2-1 s: long enough to hide a task's trip through the
    # scheduler, short enough that the last batches spread over the workers.
    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 1.0
    supports_retrieve_callback = True  # results are taken on the client's callback thread
    default_n_jobs = -1                # Parallel() without n_jobs uses the whole cluster
    uses_threads = False
    supports_sharedmem = False         # tasks may run in other processes

    def __init__(self, scheduler_host: Any = None, scatter: Iterable | None = None,
                 client: Any = None, wait_for_workers_timeout: float = 10,
                 nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **submit_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        own = _OWN_SUBMIT_ARGS & set(submit_kwargs)
        if own:
            raise TypeError(f"joblib's backend sets {sorted(own)} itself; do not pass them")
        # In a task the backend only ever falls back (configure), so it needs no client.
        self.client: Any = None if in_task() else resolve_client(client, scheduler_host)
        self.wait_for_workers_timeout = wait_for_workers_timeout
        self.submit_kwargs = submit_kwargs
        self._lock = threading.Lock()
        self._pending: set = set()  # Futures of batches not yet done, to cancel on abort
        # id(obj) -> (obj, Future): the object is kept so that its id cannot be reused.
        self._scattered = self._scatter_up_front(scatter)
        self._call_scattered: dict[int, tuple[Any, Any]] = {}  # the same, for one Parallel call

    def __reduce__(self) -> Any:
        # A backend can travel inside a pickled batch (joblib's SequentialBackend hands
        # on the active one). Its client and futures must not: the copy finds its own.
        return rebuild_backend, (self.nesting_level,)

    # --- joblib's protocol --------------------------------------------------------------
    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_args: Any) -> int:
        if self.client is None:
            raise FallbackToBackend(local_backend((self.nesting_level or 0) + 1))
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def effective_n_jobs(self, n_jobs: int) -> int:
        """Every thread of every worker: the cluster decides, not ``n_jobs`` (as with
        joblib's dask backend). 1 inside a task, where the backend falls back."""
        if self.client is None:
            return 1
        threads = total_threads(self.client)
        if threads == 0 and self.wait_for_workers_timeout:
            wait_for_a_worker(self.client, self.wait_for_workers_timeout)
            threads = total_threads(self.client)
        return max(threads, 1)

    def start_call(self) -> None:
        self._call_scattered = {}

    def stop_call(self) -> None:
        # Drops this call's scattered Futures, so the cluster may free that data.
        self._call_scattered = {}

    def submit(self, func: Any, callback: Callable[[Any], Any] | None = None) -> Any:
        """Send one batch as one task; ``callback(future)`` runs once it is done."""
        future = self._submit_task(func)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(functools.partial(self._on_done, callback))
        return future

    # joblib before 1.5 calls apply_async rather than submit.
    apply_async = submit

    def retrieve_result_callback(self, out: Any) -> Any:
        """The batch's list of results; raises the first call's exception (the remote
        frames as its traceback)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every batch not done: joblib will not read their results. The backend
        stays usable either way (it owns no pool to restart)."""
        with self._lock:
            pending, self._pending = list(self._pending), set()
        if pending and self.client is not None and self.client.status == "running":
            self.client.cancel(pending)

    def get_nested_backend(self) -> tuple[Any, Any]:
        # A batch's inner Parallel runs on the worker thread itself. Sending it back to
        # the cluster would leave the outer task holding its thread while it waits on
        # its own sub-tasks: with every thread so taken, nothing runs (a deadlock).
        return local_backend((self.nesting_level or 0) + 1), None

    # --- inside ---------------------------------------------------------------------------
    def _submit_task(self, func: Any) -> Any:
        calls = getattr(func, "items", None)  # joblib's BatchedCalls keeps its calls there
        if calls is None:
            return self.client.submit(func, key=batch_key([(func, (), {})]), pure=False,
                                      **self.submit_kwargs)
        remote = [(f, [self._remote(a) for a in args], {k: self._remote(v) for k, v in kwargs.items()})
                  for f, args, kwargs in calls]
        return self.client.submit(run_batch, remote, self.get_nested_backend(), key=batch_key(remote),
                                  pure=False, **self.submit_kwargs)

    def _on_done(self, callback: Callable[[Any], Any] | None, future: Any) -> None:
        with self._lock:
            self._pending.discard(future)
        if callback is None:
            return
        try:
            callback(future)
        except Exception:
            # The callback thread's pool would swallow it: say so at least.
            logger.exception("joblib's completion callback failed for %s", future.key)

    def _scatter_up_front(self, scatter: Iterable | None) -> dict[int, tuple[Any, Any]]:
        if scatter is None:
            return {}
        if not isinstance(scatter, (list, tuple)):
            raise TypeError(f"scatter must be a list or tuple, got {type(scatter).__name__}")
        if not scatter or self.client is None:
            return {}
        futures = self.client.scatter(list(scatter), broadcast=True, hash=False)
        return {id(obj): (obj, f) for obj, f in zip(scatter, futures)}

    def _remote(self, arg: Any) -> Any:
        """What to send for one argument: its Future if it is (or now gets) scattered.

        joblib dispatches under its own lock, so no two calls of this race.
        """
        for table in (self._scattered, self._call_scattered):
            held = table.get(id(arg))
            if held is not None and held[0] is arg:
                return held[1]
        if sizeof(arg) < AUTO_SCATTER_BYTES:
            return arg
        [future] = self.client.scatter([arg], hash=False)
        self._call_scattered[id(arg)] = (arg, future)
        return future


def rebuild_backend(nesting_level: int | None) -> ActorrtBackend:
    return ActorrtBackend(nesting_level=nesting_level)


# --- registration ---------------------------------------------------------------------

def wants_dask_distributed(client: Any) -> bool:
    """Whether ``parallel_backend("dask")`` here means dask.distributed, not actorrt:
    given a dask client, or with no actorrt client but a dask one running (a process
    that imported distributed itself). Registering "dask" must not break dask users."""
    if client is not None:
        return not is_actorrt_client(client)
    if in_task() or runtime.default_client() is not None:
        return False
    distributed = sys.modules.get("distributed")  # never imported here just to ask
    if distributed is None:
        return False
    try:
        distributed.get_client()
    except Exception:
        return False
    return True


def make_dask_backend(**kwargs: Any) -> Any:
    """joblib's factory for "dask": actorrt's backend, unless dask.distributed is meant."""
    if wants_dask_distributed(kwargs.get("client")):
        from joblib._dask import DaskDistributedBackend
        return DaskDistributedBackend(**kwargs)
    return ActorrtBackend(**kwargs)


def register_backends() -> None:
    register_parallel_backend("dask", make_dask_backend)
    register_parallel_backend("actorrt", ActorrtBackend)
