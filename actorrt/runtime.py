"""Process-wide state in one place, and the one way a thread waits for the loop.

Everything here is ambient: it belongs to the process or to the calling thread, not
to any one object, and several layers need it without importing each other.

- **The default client**: the last ``Client`` created with ``set_as_default`` (what
  ``get_client()`` returns outside a task, and what dask's ``compute`` would use).
- **The current job**: the task or actor call this thread runs, and its **slots**, the
  policy of the pool it runs on for giving its thread slot back while it waits. A
  worker's pool installs both on its threads; the client only ever asks this module,
  so ``client`` never imports ``worker``.
- **The binding**: the client that Futures and actor handles unpickled in this context
  bind to (a fetched result, a Queue item), and the Futures met while pickling a
  call's arguments (kept until the call is answered).
- **block_on**: every sync call (``Future.result``, ``gather``, ``ActorFuture.result``,
  coordination calls, ``as_completed``'s ``next``) waits here, by one rule: a thread
  inside a task gives its slot back while the reply is not in, and takes one again
  before it continues, so tasks that wait on other work cannot starve a worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Protocol

if TYPE_CHECKING:
    from .client.client import Client
    from .client.future import Future


# --- the default client ---------------------------------------------------------------

_default: "weakref.ref[Client] | None" = None

# ``client.as_current()``: the client of this context (thread, asyncio task) only, ahead
# of the process-wide default, as dask's ``_current_client`` contextvar: two threads
# each inside their own ``with c.as_current()`` see their own client.
_current: "contextvars.ContextVar[weakref.ref[Client] | None]" = contextvars.ContextVar(
    "actorrt_current_client", default=None)


def default_client() -> "Client | None":
    """This context's current client (``as_current``), else the default client, if it
    is running; else None."""
    ref = _current.get()
    client = ref() if ref is not None else None
    if client is None or client.status != "running":
        client = _default() if _default is not None else None
    return client if client is not None and client.status == "running" else None


def set_default_client(client: "Client | None") -> None:
    global _default
    _default = weakref.ref(client) if client is not None else None


def unset_default_client(client: "Client") -> None:
    """Forget ``client`` as the default (if it is: a newer client keeps its place)."""
    global _default
    if _default is not None and _default() is client:
        _default = None


@contextlib.contextmanager
def default_client_as(client: "Client") -> Iterator[None]:
    """``client`` is the current one in this context inside the block (other threads
    and tasks keep theirs); the previous one again afterwards."""
    token = _current.set(weakref.ref(client))
    try:
        yield
    finally:
        _current.reset(token)


# --- the current job and its slot policy ------------------------------------------------

class Slots(Protocol):
    """What a worker's pool installs on its threads (``worker/pool.py``)."""

    loop: asyncio.AbstractEventLoop

    def block_on(self, start: Callable[[], Awaitable[Any]],
                 undo: Callable[[Any], None] | None = None, direct: "Direct | None" = None,
                 arm: "Callable[[Waiter], bool] | None" = None) -> Any:
        """Wait for ``start()``'s outcome with the calling job's slot given back
        (``undo``, ``direct``, ``arm``: see :func:`block_on`)."""

    def secede(self) -> bool:
        """Give the calling job's slot back; False if there is none to give."""

    def rejoin(self) -> None:
        """Take a slot again after :meth:`secede`."""


class _ThreadState(threading.local):
    posts = 0                       # calls this thread has had a loop make (post)
    job: Any = None                 # the job (task run or actor call) this thread runs
    slots: Slots | None = None      # its pool's slot policy, on pool threads
    actor: tuple[str, int] | None = None  # (key, max_concurrency) of the actor this lane serves


_thread = _ThreadState()


class _Ledger:
    """How many calls were handed to one loop (:func:`post`) and how many it has run."""

    __slots__ = ("made", "run", "lock")

    def __init__(self) -> None:
        self.made = 0  # (any thread, under the lock)
        self.run = 0   # (the loop's thread only)
        self.lock = threading.Lock()


_ledgers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ledger]" = weakref.WeakKeyDictionary()
_ledgers_lock = threading.Lock()


def _ledger(loop: asyncio.AbstractEventLoop) -> _Ledger:
    ledger = _ledgers.get(loop)
    if ledger is None:
        with _ledgers_lock:
            ledger = _ledgers.get(loop)
            if ledger is None:
                ledger = _ledgers[loop] = _Ledger()
    return ledger


def post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """From a thread that does not run ``loop``: have it call ``fn(*args)`` soon (calls
    from one thread run in the order made). RuntimeError if the loop is closed.

    Every hand-off of work from a thread to a loop goes through here (not a pool thread
    handing its finished job back, which comes last) and is counted twice:

    - per thread (:func:`posts_made`), so a thread can tell whether what it just ran
      asked the loop for anything: an actor's answer (UserActor._run_sync) or a task's
      report (Worker._report_from_thread) written from its thread must not pass what
      the method or the task left queued on the loop;
    - per loop (:func:`caught_up`), so a thread about to send a message itself can
      tell whether anything handed to the loop before, by any thread, is still to run
      (and would then leave after it)."""
    _thread.posts += 1
    ledger = _ledger(loop)
    with ledger.lock:
        ledger.made += 1
    try:
        loop.call_soon_threadsafe(_run_posted, ledger, fn, args)
    except RuntimeError:  # the loop is closed: never run, and no longer waited for
        with ledger.lock:
            ledger.made -= 1
        raise


def _run_posted(ledger: _Ledger, fn: Callable[..., Any], args: tuple) -> None:
    try:
        fn(*args)
    finally:
        ledger.run += 1


def caught_up(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has run every call handed to it (:func:`post`) so far. A thread
    sends a message itself (``Host.ask_from_thread``) only then: whatever those calls
    queue for the wire went before it."""
    ledger = _ledgers.get(loop)
    return ledger is None or ledger.run == ledger.made


def posts_made() -> int:
    """How many calls this thread has had a loop make so far (:func:`post`)."""
    return _thread.posts


def current_job() -> Any:
    """The job this thread runs (its ``context`` is the task or actor), else None."""
    return _thread.job


def enter_job(job: Any) -> None:
    _thread.job = job


def leave_job() -> None:
    _thread.job = None


def current_worker() -> Any:
    """The Worker whose task or actor this thread runs, else None."""
    job = _thread.job
    return getattr(getattr(job, "context", None), "worker", None) if job is not None else None


def current_client() -> "Client":
    """The client to use here: inside a task or an actor method its worker's own client
    (sharing the worker's host, loop and connections), else the default client.
    ValueError when there is none."""
    worker = current_worker()
    if worker is not None:
        return worker.client()
    client = default_client()
    if client is None:
        raise ValueError("get_client() was called outside a task and no Client is running in "
                         "this process: call it inside a task, or create a Client first")
    return client


def current_slots() -> Slots | None:
    return _thread.slots


def install_slots(slots: Slots | None) -> None:
    """Called once by each pool thread: how jobs on it give their slot back."""
    _thread.slots = slots


def running_actor() -> tuple[str, int] | None:
    """``(key, max_concurrency)`` of the user actor this thread serves, else None."""
    return _thread.actor


def serve_actor(key: str, max_concurrency: int) -> None:
    """Called once by each thread of a user actor's lane."""
    _thread.actor = (key, max_concurrency)


# --- binding: which client unpickled Futures and handles belong to ----------------------

_binding: "contextvars.ContextVar[Client | None]" = contextvars.ContextVar(
    "actorrt_binding", default=None)

#: Set while pickling a call's arguments: each Future pickled adds itself, and the call
#: keeps them (so their keys) until it is answered, by when the receiver's copies hold
#: the keys: the caller's own may be temporaries, dropped as soon as the call is sent.
pickled_futures: "contextvars.ContextVar[list[Future] | None]" = contextvars.ContextVar(
    "actorrt_pickled_futures", default=None)


#: Set while an actor call's arguments are unpickled: each Future unpickled there whose
#: key is new to its client (so its client tells the scheduler it wants the key) adds
#: ``(its client's table, key)``. The actor answers only once the scheduler has that
#: claim: the caller drops its own copy as soon as the answer comes, and the key must
#: not be forgotten in between (worker/user_actor.py).
claimed_keys: "contextvars.ContextVar[list[tuple[Any, str]] | None]" = contextvars.ContextVar(
    "actorrt_claimed_keys", default=None)


def bound_client() -> "Client | None":
    """The client that objects unpickled here bind to, if one was named."""
    return _binding.get()


class _Setting:
    """``with``: a context variable set for the block. (A class, not a generator-based
    contextmanager: these wrap every submit, result load and actor call, where a
    generator and its wrapper cost more than the pickling they surround.)"""

    __slots__ = ("_var", "_value", "_token")

    def __init__(self, var: "contextvars.ContextVar[Any]", value: Any) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc: Any) -> None:
        self._var.reset(self._token)


def binding(client: "Client | None") -> _Setting:
    """Futures and actor handles unpickled inside the block bind to ``client``."""
    return _Setting(_binding, client)


def collecting_futures(kept: "list[Future]") -> _Setting:
    """Futures pickled inside the block are appended to ``kept``."""
    return _Setting(pickled_futures, kept)


def collecting_claims(kept: list) -> _Setting:
    """Keys that Futures unpickled inside the block newly claim go to ``kept``, as
    ``(table, key)`` (see :data:`claimed_keys`)."""
    return _Setting(claimed_keys, kept)


# --- what the client layer lends the layers below it -------------------------------------
# A worker makes a client for its tasks and a handle for each actor it hosts, but the
# client sits above the worker. The client package lends its two makers here when it
# is imported (importing actorrt always imports it), so the worker never imports it.

_task_client_maker: "Callable[[Any, str], Client] | None" = None
_actor_handle_maker: Callable[..., Any] | None = None


def lend_client_makers(task_client: "Callable[[Any, str], Client]",
                       actor_handle: Callable[..., Any]) -> None:
    """``task_client(host, scheduler_address)``: a client sharing a worker's host;
    ``actor_handle(key, class name, ref, methods, attributes)``: an unbound handle."""
    global _task_client_maker, _actor_handle_maker
    _task_client_maker, _actor_handle_maker = task_client, actor_handle


def make_task_client(host: Any, scheduler_address: str) -> "Client":
    if _task_client_maker is None:
        raise RuntimeError("actorrt.client is not imported: import actorrt before starting a worker")
    return _task_client_maker(host, scheduler_address)


def make_actor_handle(key: str, cls_name: str, ref: Any, methods: Any, attrs: Any) -> Any:
    if _actor_handle_maker is None:
        raise RuntimeError("actorrt.client is not imported: import actorrt before starting a worker")
    return _actor_handle_maker(key, cls_name, ref, methods, attrs)


# --- block_on -----------------------------------------------------------------------------

class Waiter:
    """One thread parked until the loop hands it an outcome.

    A pre-acquired lock rather than a ``threading.Event``: the thread sleeps in one
    ``acquire`` and the loop wakes it with one ``release``, the cheapest hand-off
    CPython has (an Event adds a Condition and a second lock on each side).
    """

    __slots__ = ("_lock", "result", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self, result: Any, error: BaseException | None = None) -> None:
        """Loop side (or any thread): deliver the outcome and wake the waiting thread."""
        self.result, self.error = result, error
        self._lock.release()

    def set_from(self, fut: "asyncio.Future[Any]") -> None:
        """Deliver the outcome of a done asyncio future (a done-callback)."""
        if fut.cancelled():
            self.set(None, asyncio.CancelledError())
        else:
            error = fut.exception()
            self.set(None if error is not None else fut.result(), error)

    def wait(self) -> Any:
        """Thread side: sleep until :meth:`set`, then return the result or raise."""
        self._lock.acquire()
        if self.error is not None:
            raise self.error
        return self.result


#: ``direct(on_done)``: send an ask from the calling thread and return the future its
#: reply resolves; ``on_done(fut)`` (if not None) is called on the loop as the reply
#: resolves it (not if it is cancelled). None if it cannot go that way (see
#: ``Host.ask_from_thread``).
Direct = Callable[["Callable[[asyncio.Future[Any]], None] | None"], "asyncio.Future[Any] | None"]


def block_on(loop: asyncio.AbstractEventLoop, start: Callable[[], Awaitable[Any]],
             arm: Callable[[Waiter], bool] | None = None,
             undo: Callable[[Any], None] | None = None,
             direct: Direct | None = None) -> Any:
    """Run ``start()`` on ``loop`` and wait, from this thread, for its outcome.

    ``start`` is called on the loop and returns an awaitable (a coroutine, or an
    asyncio future such as a pending ask). Inside a task on a worker whose loop this
    is, the task's thread slot is given back while the outcome is not in. Interrupted
    (Ctrl-C), the awaitable is cancelled on the loop, so a blocking ask is withdrawn;
    a value that had already arrived, which the caller will now never see, goes to
    ``undo`` (a queue's get puts its items back).

    ``arm``, for an outcome the loop delivers anyway (an actor call's reply), saves
    the hop to the loop where no slot must be given back through it (outside a task,
    or a task that only lends its slot, see ``TaskPool._wait_lending``):
    ``arm(waiter)`` registers ``waiter`` with the outcome, thread-safely, and returns
    False if it is already there; block_on then returns None, and the caller reads
    the outcome itself.

    ``direct``, for an ask this thread may write to the wire itself (see
    :data:`Direct`), saves the hop to the loop on the way out: it is tried when the
    loop has run everything handed to it so far (:func:`caught_up`), so the ask
    cannot pass any of it. The loop is then woken by the reply alone, or, inside a
    task's first wait, also to give the slot back, once the ask is on its way.
    """
    if asyncio._get_running_loop() is loop:  # (the non-raising form: this is a hot path)
        raise RuntimeError("blocking call on the client's event loop; use `await` "
                           "(Client(asynchronous=True)) from async code")
    slots = _thread.slots
    if slots is not None and slots.loop is loop:
        return slots.block_on(start, undo, direct, arm)
    if arm is not None and slots is None:
        waiter = Waiter()
        return waiter.wait() if arm(waiter) else None
    # A task using a client on another loop (or an explicit ``worker_client``) still
    # gives its slot back: the rule does not depend on whose loop answers.
    seceded = slots is not None and slots.secede()
    try:
        return wait_on_loop(loop, start, undo=undo, direct=direct)
    finally:
        if seceded:
            assert slots is not None
            slots.rejoin()


def wait_on_loop(loop: asyncio.AbstractEventLoop, start: Callable[[], Awaitable[Any]],
                 then: "Callable[[asyncio.Future, Waiter], None] | None" = None,
                 undo: Callable[[Any], None] | None = None,
                 direct: Direct | None = None, waiter: "Waiter | None" = None) -> Any:
    """The bare hand-off of :func:`block_on`: no slot policy of its own. ``then(fut,
    waiter)``, on the loop once ``start()``'s future exists, arranges for the waiter to
    be woken (a pool gives the slot back meanwhile); by default when ``fut`` is done.
    (``direct``: see :func:`block_on`; ``waiter``: the one to wake, if not a new one:
    the loop calls its ``set``.)"""
    waiter = waiter if waiter is not None else Waiter()
    started: list[asyncio.Future] = []
    fut = direct(waiter.set_from if then is None else None) \
        if direct is not None and caught_up(loop) else None
    if fut is None:
        post(loop, _begin, start, waiter, started, then or _wake_when_done)
    else:
        started.append(fut)  # (read on the loop only after a later post: _after_interrupt)
        if then is not None:
            post(loop, then, fut, waiter)
    try:
        return waiter.wait()
    except BaseException as e:
        if e is not waiter.error:  # interrupted (Ctrl-C), not the outcome's own error
            try:
                post(loop, _after_interrupt, started, undo)
            except RuntimeError:
                pass  # the loop is closed: nothing is left to withdraw
        raise


def _after_interrupt(started: list, undo: Callable[[Any], None] | None) -> None:
    """Loop side of an interrupted :func:`wait_on_loop`. It runs after ``_begin`` (one
    thread's callbacks run in order), so whatever was started is known here, whether
    or not the thread saw it: a pending awaitable is cancelled, and a value that came
    in while the thread was being interrupted goes to ``undo`` rather than nowhere."""
    if not started:
        return  # start() itself failed: nothing was sent
    fut = started[0]
    if not fut.done():
        fut.cancel()
    elif undo is not None and not fut.cancelled() and fut.exception() is None:
        undo(fut.result())


def _begin(start: Callable[[], Awaitable[Any]], waiter: Waiter, started: list,
           then: "Callable[[asyncio.Future, Waiter], None]") -> None:
    """Loop side of :func:`wait_on_loop`."""
    try:
        fut = asyncio.ensure_future(start())
    except BaseException as e:
        waiter.set(None, e)
        return
    started.append(fut)
    then(fut, waiter)


def _wake_when_done(fut: asyncio.Future, waiter: Waiter) -> None:
    fut.add_done_callback(waiter.set_from)


class Ready:
    """What an async face returns for work it has already done (a cancel, a put that
    needs no reply): awaitable, and unlike a coroutine safe to drop unawaited."""

    __slots__ = ("value", "error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    def __await__(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value
        yield  # (unreachable: makes this a generator, as __await__ must be)


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop`` (where nothing may block)."""
    return asyncio._get_running_loop() is loop


def call_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` on ``loop``: now if this thread runs it, else soon (in the
    order calls from one thread were made)."""
    if asyncio._get_running_loop() is loop:
        fn(*args)
    else:
        post(loop, fn, *args)


__all__ = ["Direct", "Ready", "Slots", "Waiter", "binding", "block_on", "bound_client", "call_on",
           "caught_up", "claimed_keys", "collecting_claims", "collecting_futures", "current_client",
           "current_job", "current_slots", "current_worker", "default_client", "default_client_as",
           "enter_job", "install_slots", "leave_job", "lend_client_makers", "make_actor_handle",
           "make_task_client", "on_loop", "pickled_futures", "post", "posts_made", "running_actor",
           "serve_actor", "set_default_client", "unset_default_client", "wait_on_loop"]
