"""The user-facing side of a system actor: a small picklable proxy.

A proxy knows its primitive's kind and name (plus the options it was made with). On
first use it asks the scheduler host's registry for the actor's ref, once; after that
every operation is one ask straight to that actor. Pickled, a proxy carries only
name and options and binds lazily to the client of wherever it is unpickled (the
task's worker inside a task), so passing one to a task is cheap and safe.

Each operation is one ask (``Proxy._call``): with an asynchronous client the public
method returns a coroutine that awaits the reply; with a synchronous one the calling
thread sends the ask (itself, or through the client's loop) and waits for the reply
(see "the sync face" below; from inside a task, a call that must wait gives the
task's thread slot back meanwhile, as ``Client.sync`` does).
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar

from .. import runtime
from ..durations import parse_timeout
from ..client.actor_future import ActorFutureState
from ..client.actor_handle import load_binding
from ..client.errors import ClosedClientError
from ..client.future import futures_of
from ..client.routes import Route, routes_of
from ..core import ActorRef, Pickled
from ..core.thread_channel import ThreadChannel
from ..utils import fresh_ids
from .registry import REGISTRY_ID

if TYPE_CHECKING:
    from ..client.client import Client


def check_name(name: Any, kind: str) -> str:
    """A primitive's name: the given string, or a fresh unique one for ``None``."""
    if name is None:
        return f"{kind}-{fresh_ids.next()}"
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{kind} name must not be empty")
    return name


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """``None`` (wait forever) or a duration: seconds, ``"100ms"``, a ``timedelta``."""
    return parse_timeout(timeout, name)


def check_lease_timeout(blocking: bool, timeout: Any) -> float | None:
    """The actor-side timeout of ``acquire(blocking, timeout)``: 0 means 'try once'."""
    timeout = check_timeout(timeout)
    if not blocking:
        if timeout not in (None, 0.0):
            raise ValueError("can't specify a timeout for a non-blocking acquire")
        return 0.0
    return timeout


def dump_value(value: Any, what: str) -> tuple[Pickled, list[str]]:
    """Pickle ``value`` here (so a bad value fails before anything is sent) and list
    the keys of the Futures inside it, which the receiving actor keeps alive."""
    blob = Pickled.dumps(value, what=what)
    return blob, [f.key for f in futures_of(value)]


def load_value(blob: Pickled, client: "Client") -> Any:
    """Unpickle a received value; Futures and actor handles inside bind to ``client``,
    the receiver's (also on an asynchronous client's loop, where a handle would
    otherwise stay unbound)."""
    return load_binding(blob, client)


DONE = runtime.Ready()  # (``await pub.put(x)`` works on both faces)


async def _then(coro: Awaitable[Any], then: Callable[[Any], Any]) -> Any:
    return then(await coro)


class Proxy:
    """Base of Queue, Lock, Semaphore, Event, Variable, Pub, Sub and Condition."""

    kind: ClassVar[str] = ""
    #: Whether the registry counts this proxy as a holder of its actor (registry.py,
    #: "Reclaiming names"). Not for locks: one shared table serves every lock name.
    reclaimable: ClassVar[bool] = True

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        self.name = check_name(name, type(self).__name__)
        self._client = client
        self._ref: ActorRef | None = None
        self._actor_options: dict = {}
        # Identifies this proxy object as a holder (of a lease, a subscription).
        self._token = fresh_ids.next()
        self._calls = itertools.count()

    # --- binding ------------------------------------------------------------------
    @property
    def client(self) -> "Client":
        """The client this proxy talks through (bound on first use)."""
        if self._client is None:
            self._client = runtime.current_client()
        return self._client

    def _options(self) -> dict:
        """Options the actor is created with (and checked against on later lookups)."""
        return {}

    async def _resolve(self) -> ActorRef:
        ref = self._ref
        if ref is None:
            client = self.client
            registry = ActorRef(client.scheduler.address, REGISTRY_ID)
            holder = self._token if self.reclaimable else None
            ref, options = await client.host.ask(registry, "get_or_create", kind=self.kind,
                                                 name=self.name, options=self._options(), holder=holder)
            if self._ref is not None:  # a concurrent call resolved it first (one hold, by token)
                return self._ref
            self._actor_options = options
            self._ref = ref
            if holder is not None:
                finalizer = weakref.finalize(self, _release, client, registry, self.kind, self.name, holder)
                finalizer.atexit = False  # (at exit the cluster goes too: nothing to release)
        return ref

    def __await__(self) -> Any:
        """``await proxy`` resolves the actor up front (optional) and returns the proxy."""
        async def resolved() -> "Proxy":
            await self._resolve()
            return self
        return resolved().__await__()

    # --- talking ------------------------------------------------------------------
    def _call(self, op: str, *, then: Callable[[Any], Any] | None = None, blocking: bool = False,
              on_late: Callable[[Any], None] | None = None, **fields: Any) -> Any:
        """One ask to the actor, on the client's face.

        ``then`` post-processes the reply in the caller's thread (where unpickled
        Futures must bind); ``blocking`` marks an ask whose reply may wait (it gets a
        call id, so a caller that gives up can withdraw it, see ``_ask_withdrawable``).
        """
        client = self.client
        if blocking:
            fields["call"] = f"{self._token}-{next(self._calls)}"
        if client.asynchronous:
            return self._call_async(op, fields, then, blocking, on_late)
        if self._ref is None:
            run_on_loop(client, self._resolve)
        assert self._ref is not None
        # What this client queued lazily goes first (a release waits up to 2 ms for
        # company): the actor may hand this client a key it just let go of (a Queue.get
        # of a Future it put), and that release, arriving after, would free the value.
        client.table.flush_soon()
        value = ask_and_wait(client, self._ref, op, fields, on_late=on_late)
        return value if then is None else then(value)

    async def _call_async(self, op: str, fields: dict, then: Callable[[Any], Any] | None,
                          blocking: bool, on_late: Callable[[Any], None] | None) -> Any:
        ref = self._ref or await self._resolve()
        if self.client.table.lazy:  # (sent before the ask, as in ``_call``)
            self.client.table.flush()
        if blocking:
            value = await _ask_withdrawable(self.client.host, ref, op, fields, on_late)
        else:
            value = await self.client.host.ask(ref, op, **fields)
        return value if then is None else then(value)

    def _run(self, fn: Callable[[], Awaitable[Any]], *, then: Callable[[Any], Any] | None = None,
             undo: Callable[[Any], None] | None = None) -> Any:
        """Run coroutine function ``fn`` on the client's face (for what is not one ask).
        ``undo``: see runtime.block_on (a sync wait interrupted as the value arrives)."""
        client = self.client
        if client.asynchronous:
            return fn() if then is None else _then(fn(), then)
        value = run_on_loop(client, fn, undo)
        return value if then is None else then(value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


# --- the sync face ------------------------------------------------------------------
# A sync call from a thread waits in runtime.block_on, like every other sync call. From
# a thread's second call to a host on, the ask goes on the thread's own connection to
# it, and the thread reads the reply there itself while it waits (client/routes.py,
# core/thread_channel.py). Else the thread writes the ask itself when it may
# (``direct``: Host.ask_from_thread), or hands it to the client's loop, and the reply
# comes back through the loop. A task's thread slot is given back (or lent) while the
# reply is not in.


def ask_and_wait(client: "Client", ref: ActorRef, op: str, fields: dict,
                 on_late: Callable[[Any], None] | None = None) -> Any:
    """Send one ask from this (non-loop) thread and wait for its reply.

    If the wait is interrupted (Ctrl-C), a blocking ask is withdrawn as a cancelled
    async one is: the actor drops it, and a late reply goes to ``on_late``.
    """
    _check_open(client)
    routes = routes_of(client)
    # (Not on the main thread, where Ctrl-C lands: interrupted as its reply is being
    # read off its own connection, a get's item would be lost, see ThreadChannel.)
    route = routes.route(ref.address) if threading.current_thread() is not threading.main_thread() else None
    channel = route.channel_open() if route is not None else None
    if channel is not None:
        return _ask_on_channel(client, channel, ref, op, fields, on_late)
    try:
        value = _ask_shared(client, ref, op, fields, on_late)
    except Exception:
        _handled_so_far(route)  # (an error reply, or the connection's loss)
        raise
    except BaseException:
        if route is not None:  # interrupted: the ask, and its withdrawal, may be on their way
            route.tells_elsewhere = True
        raise
    finally:
        routes.open_if_wanted(route, ref.address)
    _handled_so_far(route)
    return value


def _handled_so_far(route: Route | None) -> None:
    """An ask this thread sent the shared way is answered: its tells sent that way
    before it were handled (one connection's messages are handled in order)."""
    if route is not None:
        route.tells_elsewhere = False


def _ask_on_channel(client: "Client", channel: ThreadChannel, ref: ActorRef, op: str, fields: dict,
                    on_late: Callable[[Any], None] | None) -> Any:
    """:func:`ask_and_wait` on this thread's own connection to the actor's host: the
    reply is read by this thread while it waits (or by the loop, see
    core/thread_channel.py). Interrupted, a blocking ask is withdrawn on the same
    connection, after it."""
    state = ActorFutureState(f"{op}-{ref.id}")
    state.on_channel(channel, channel.ask(ref.id, op, fields, state.settle, runtime.caught_up(client.loop)))
    try:
        runtime.block_on(client.loop, functools.partial(state.settled_future, client.loop), arm=state.arm)
    except BaseException:
        if "call" in fields:
            _withdraw_on_channel(client, channel, ref, fields["call"], state, on_late)
        raise
    return state.outcome()


def _withdraw_on_channel(client: "Client", channel: ThreadChannel, ref: ActorRef, call: str,
                         state: ActorFutureState, on_late: Callable[[Any], None] | None) -> None:
    """As :func:`_withdraw`: the actor is told (after the ask, on its connection), and a
    reply that came or comes goes to ``on_late``, on the loop."""
    channel.tell(ref.id, "abandon", {"call": call}, runtime.caught_up(client.loop))

    def late(st: ActorFutureState) -> None:
        if st.status == "finished" and on_late is not None:
            on_late(st.outcome())
    try:
        runtime.post(client.loop, state.add_callback, late)
    except RuntimeError:
        pass  # the loop is closed: nothing is left to hand back to


def _ask_shared(client: "Client", ref: ActorRef, op: str, fields: dict,
                on_late: Callable[[Any], None] | None) -> Any:
    """:func:`ask_and_wait` on the host's shared connection to the actor's host."""
    host = client.host
    if "call" in fields:  # (a blocking ask: see Proxy._call)
        def unseen(value: Any) -> None:
            # The reply came as the wait was interrupted: the caller never sees it, so
            # it is withdrawn as if it had not come yet.
            host.tell(ref, "abandon", call=fields["call"])
            if on_late is not None:
                on_late(value)

        return runtime.block_on(
            client.loop, lambda: _withdrawable_future(host, ref, op, fields, on_late), undo=unseen,
            direct=lambda on_done: _withdrawable_from_thread(host, ref, op, fields, on_late, on_done))
    return runtime.block_on(client.loop, lambda: host.ask(ref, op, **fields),
                            direct=lambda on_done: host.ask_from_thread(ref, op, fields, on_done))


def _withdrawable_future(host: Any, ref: ActorRef, op: str, fields: dict,
                         on_late: Callable[[Any], None] | None) -> "asyncio.Future[Any]":
    """On the loop: a blocking ask as a withdrawable bare future (:func:`_withdrawable`)."""
    def send(settle: Callable[["asyncio.Future[Any]"], None]) -> "asyncio.Future[Any]":
        fut = host.ask(ref, op, **fields)
        fut.add_done_callback(settle)
        return fut
    outer = _withdrawable(host, ref, fields["call"], on_late, None, send)
    assert outer is not None  # (an ask on the loop always goes)
    return outer


def _withdrawable_from_thread(host: Any, ref: ActorRef, op: str, fields: dict,
                              on_late: Callable[[Any], None] | None,
                              on_done: "Callable[[asyncio.Future[Any]], None] | None",
                              ) -> "asyncio.Future[Any] | None":
    """From a thread: the same, sent by the thread itself (``runtime.Direct``), or None."""
    return _withdrawable(host, ref, fields["call"], on_late, on_done,
                         lambda settle: host.ask_from_thread(ref, op, fields, settle))


def _withdrawable(host: Any, ref: ActorRef, call: str, on_late: Callable[[Any], None] | None,
                  on_done: "Callable[[asyncio.Future[Any]], None] | None",
                  send: "Callable[[Callable[[asyncio.Future[Any]], None]], asyncio.Future[Any] | None]",
                  ) -> "asyncio.Future[Any] | None":
    """:func:`_ask_withdrawable` as a bare future, for a thread's wait (no coroutine: it
    would cost an asyncio Task and more turns of the loop per call). Cancelled (the
    waiting thread was interrupted), the ask is withdrawn the same way. (The async face
    keeps the coroutine: a Task cancelled after this future got its value but before
    the Task resumed would drop the value, where the coroutine's ``except
    CancelledError`` hands it back.)

    ``send(settle)`` sends the ask, on the loop or from the thread, with ``settle``
    attached to its future; this returns None if it did not go (from a thread: see
    Host.ask_from_thread). Every callback is attached before the ask is sent, since a
    thread may not attach one to a future the loop could already be resolving."""
    outer = host.loop.create_future()
    asked: list[asyncio.Future[Any]] = []

    def settle(f: "asyncio.Future[Any]") -> None:
        if outer.done():
            return
        if f.cancelled():
            outer.cancel()
        elif f.exception() is not None:
            outer.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            outer.set_result(f.result())
        if on_done is not None:
            on_done(outer)  # (at once, as the ask's own on_done is called: no turn more)

    def given_up(o: "asyncio.Future[Any]") -> None:
        if o.cancelled():  # (runs on the loop, after send returned)
            _withdraw(host, ref, call, asked[0], on_late)

    outer.add_done_callback(given_up)
    fut = send(settle)
    if fut is None:
        return None
    asked.append(fut)
    return outer


async def _ask_withdrawable(host: Any, ref: ActorRef, op: str, fields: dict,
                            on_late: Callable[[Any], None] | None) -> Any:
    """An ask that may wait long. If the caller gives up (its wait is cancelled), the
    actor is told to drop the request, and a reply already on its way goes to
    ``on_late`` (e.g. to put received items back) instead of being lost."""
    fut = host.ask(ref, op, **fields)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        _withdraw(host, ref, fields["call"], fut, on_late)
        raise


def _withdraw(host: Any, ref: ActorRef, call: str, fut: "asyncio.Future[Any]",
              on_late: Callable[[Any], None] | None) -> None:
    """The caller gave up on blocking ask ``call``. The actor is told even if it has
    answered already: it drops a waiting request, undoes a grant its caller will never
    see (a lock, a semaphore lease) and ignores a call it is done with. A reply that
    came, or comes, goes to ``on_late``."""
    host.tell(ref, "abandon", call=call)
    fut.add_done_callback(lambda f: _late_reply(f, on_late))


def run_on_loop(client: "Client", fn: Callable[[], Awaitable[Any]],
                undo: Callable[[Any], None] | None = None) -> Any:
    """Run coroutine function ``fn`` on the client's loop from this thread; its value
    (which, if the wait is interrupted as it arrives, goes to ``undo`` instead)."""
    _check_open(client)
    return runtime.block_on(client.loop, fn, undo=undo)


def tell(client: "Client", ref: ActorRef, op: str, **fields: Any) -> None:
    """From a thread that does not run the client's loop: send a tell, without waiting.
    Written by this thread itself once the loop has run everything handed to it so far
    (so it passes none of it, see ``runtime.caught_up``), else through the loop; calls
    from one thread keep their order either way."""
    _check_open(client)
    route = routes_of(client).route(ref.address, call=False)
    channel = route.channel_open() if route is not None else None
    if channel is not None:  # (after this thread's asks there: see ask_and_wait)
        channel.tell(ref.id, op, fields, runtime.caught_up(client.loop))
        return
    if route is not None:
        route.tells_elsewhere = True
    if runtime.caught_up(client.loop) and client.host.tell_from_thread(ref, op, fields):
        return
    _post_tell(client, ref, op, fields)


def tell_on_loop(client: "Client", ref: ActorRef, op: str, **fields: Any) -> None:
    """From a thread that does not run the client's loop: have the loop send a tell.
    For a stream of tells nobody waits on, which the loop writes a turn's worth at a
    time; calls from one thread keep their order."""
    _check_open(client)
    route = routes_of(client).route(ref.address, call=False)
    if route is not None:  # (the thread's next asks there must not take its channel past it)
        route.tells_elsewhere = True
    _post_tell(client, ref, op, fields)


def _post_tell(client: "Client", ref: ActorRef, op: str, fields: dict) -> None:
    runtime.post(client.loop, functools.partial(client.host.tell, ref, op, **fields))


def _release(client: "Client", registry: ActorRef, kind: str, name: str, holder: str) -> None:
    """Tell the registry a resolved proxy is gone (from whatever thread collected it;
    nothing to tell once its client is closed: the host's loss releases it)."""
    if client.status == "closed":
        return
    try:
        runtime.post(client.loop, functools.partial(client.host.tell, registry, "release", kind=kind,
                                                    name=name, holder=holder))
    except RuntimeError:  # its loop is closed
        pass


def _check_open(client: "Client") -> None:
    if client.status == "closed":  # its loop may be closed (or running on without it): say so
        raise ClosedClientError(f"client is closed; cannot reach coordination actors through {client.id}")


def _late_reply(fut: "asyncio.Future[Any]", on_late: Callable[[Any], None] | None) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()  # retrieved, so asyncio does not log it as lost
    if exc is None and on_late is not None:
        on_late(fut.result())
