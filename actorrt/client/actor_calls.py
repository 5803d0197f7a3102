"""Sending actor calls: one ask from the caller's host straight to the actor's host.

Every client (a user's, or the one a worker shares with its tasks and actors) has one
:class:`Caller`. A call made from another thread than the loop's goes one of two ways:

* **written by that thread** (``Host.ask_from_thread``), when no other ask a thread
  wrote awaits its reply and nothing handed to the loop is still to run: the loop is
  woken only by the reply, so a sequential call costs one thread hand-off fewer;
* otherwise it joins a small outbox that is flushed onto the client's loop once per
  loop turn (one wake-up for however many calls arrived), so a tight loop of
  ``counter.increment()`` costs one write per batch, not per call.

Calls from one thread keep their order: a thread writes a call itself only when none
of its earlier ones is still in the outbox or the loop's hands, the outbox is FIFO,
and a host keeps per-connection order.

A thread that calls one host again and again gets a connection of its own to it
(client/routes.py, core/thread_channel.py), and reads the replies to its calls there
itself while it waits: the loop is not woken at all for a sequential call. Its calls
to that host take that connection only while none it sent another way is unanswered,
and then all of them do (written by the loop when the thread may not write), so they
still arrive in order.

Each actor the client talks to has a :class:`Link`: where the actor lives now and
whether that is being re-learned. The scheduler is asked only after a failure:

* a call that never reached the actor (the connection could not be opened, or the
  host no longer holds the actor) waits for the scheduler's answer and is sent again
  to wherever the actor lives now — a restarted actor, if it restarts;
* a call that was in flight when the connection dropped may have run, so it fails
  with :class:`ActorDeadError`; later calls wait for the scheduler's answer.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..core import ActorRef
from ..core.errors import ActorDeadError, ActorNotFoundError, CommClosedError
from ..core.serialize import is_remote
from ..utils import PerObject
from .routes import Route, routes_of

if TYPE_CHECKING:
    from .actor_handle import ActorFutureState
    from .client import Client

logger = logging.getLogger("actorrt.actors")

CALL = "call"        # op: run a method
GETATTR = "getattr"  # op: read an attribute


class Call:
    """One method call or attribute read on its way to an actor."""

    __slots__ = ("op", "name", "args", "state", "futures")

    def __init__(self, op: str, name: str, args: Any, state: "ActorFutureState",
                 futures: list | None = None) -> None:
        self.op = op
        self.name = name
        self.args = args
        self.state = state
        self.futures = futures  # Futures in ``args``: kept until the reply (future.PICKLED_FUTURES)


class Link:
    """What one client knows about where one actor lives."""

    __slots__ = ("key", "label", "ref", "resolving", "backlog", "dead", "caller", "__weakref__")

    def __init__(self, key: str, label: str, ref: ActorRef, caller: "Caller") -> None:
        self.key = key
        self.caller = caller
        self.label = label              # "Counter (key Counter-ab12...)" for error messages
        self.ref = ref
        self.resolving = False          # asking the scheduler where the actor is
        self.backlog: list[Call] = []   # calls waiting for that answer, in order
        self.dead: ActorDeadError | None = None


class Caller:
    """A client's sender of actor calls (see the module docstring)."""

    def __init__(self, client: "Client") -> None:
        self._client = weakref.ref(client)
        self.client_id = client.id  # named in calls: Futures in a reply pass to this holder
        self.host = client.host
        self.loop = client.loop
        self.scheduler = client.scheduler
        # Shared by every handle of one actor in this client; gone with the last handle.
        self.links: weakref.WeakValueDictionary[str, Link] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._outbox: list[tuple[Link, Call]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self.routes = routes_of(client)

    def link(self, key: str, label: str, ref: ActorRef) -> Link:
        """The link to actor ``key``; a fresh one if the known one is dead and ``ref`` is newer."""
        with self._lock:  # (any thread: handles are used from tasks, actors, user threads)
            link = self.links.get(key)
            if link is None or (link.dead is not None and link.ref != ref):
                link = self.links[key] = Link(key, label, ref, self)
            return link

    # --- sending: any thread ------------------------------------------------------
    def send(self, link: Link, call: Call) -> None:
        if runtime.on_loop(self.loop):
            self._dispatch(link, call)
            return
        route = self.routes.route(link.ref.address)
        with self._lock:
            post = False
            if not self._send_on_channel(link, call, route):
                if route is not None:  # (counted before it can be answered)
                    route.elsewhere.sent += 1
                    call.state.counted_by(route.elsewhere)
                # Straight onto the wire if nothing sent earlier is still on its way to
                # it (this thread's calls keep their order): the loop is then woken only
                # by the reply, one thread hand-off fewer per call.
                if not self._send_from_thread(link, call):
                    self._outbox.append((link, call))
                    post = not self._scheduled
                    self._scheduled = True
        if post:
            try:
                runtime.post(self.loop, self._flush)
            except RuntimeError:  # the loop is closed: so is the client
                self._flush_closed()
        self.routes.open_if_wanted(route, link.ref.address)

    def _send_on_channel(self, link: Link, call: Call, route: Route | None) -> bool:
        """Send ``call`` on this thread's own connection to the actor's host, if it has
        one and no call it sent another way is unanswered (core/thread_channel.py).
        Written by the loop, after what the thread handed it, if the thread may not
        write it yet (as for :meth:`_send_from_thread`). ``_lock`` held."""
        channel = route.channel_open() if route is not None else None
        if channel is None or link.resolving or link.dead is not None or self.host.status != "running":
            return False
        may_write = not self._scheduled and runtime.caught_up(self.loop)
        settle = functools.partial(self._on_channel_outcome, link, call)
        call.state.on_channel(channel, channel.ask(link.ref.id, call.op, self._fields(call), settle, may_write))
        return True

    def _send_from_thread(self, link: Link, call: Call) -> bool:
        """Send ``call`` from this thread (see Host.ask_from_thread); False if it must
        go through the loop: the link is being re-learned, there is no open connection
        to the actor's host to write on, or the loop has yet to run something handed
        to it (a submit of a Future this call carries: the call must not pass it).
        ``_lock`` held."""
        if link.resolving or link.dead is not None or self.host.status != "running" \
                or self._scheduled or not runtime.caught_up(self.loop):
            return False
        # (Written on an open connection, so it may have reached the actor if it fails.
        # Calls made faster than replies come, a pipeline, go in the loop's batches: a
        # host lets a thread write an ask only while none it wrote awaits its reply.)
        fut = self.host.ask_from_thread(link.ref, call.op, self._fields(call),
                                        functools.partial(self._on_reply, link, call, True))
        return fut is not None

    def _on_channel_outcome(self, link: Link, call: Call, ok: bool, value: Any) -> None:
        """A call's outcome read off its thread's channel, by that thread or the loop."""
        if ok:
            call.state.finish(value)
        elif runtime.on_loop(self.loop):
            self._on_failure(link, call, True, value)
        elif isinstance(value, (ActorNotFoundError, ActorDeadError, OSError)) or self._client_gone():
            # (The connection's loss, or the actor's: re-learning where it lives is the loop's.)
            try:
                runtime.post(self.loop, self._on_failure, link, call, True, value)
            except RuntimeError:
                call.state.err(self._closed_error(value))
        else:
            call.state.err(value)  # the method's own exception

    def _fields(self, call: Call) -> dict:
        if call.op == CALL:
            return {"method": call.name, "args": call.args, "holder": self.client_id}
        return {"name": call.name, "holder": self.client_id}

    def _flush(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._scheduled = False
        for link, call in batch:
            self._dispatch(link, call)
        self.host.flush_pending()  # this batch is the turn's: on the wire now, not one turn later

    def _flush_closed(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
        for _, call in batch:
            call.state.err(RuntimeError("the client closed before the actor call was sent"))

    # --- the loop side ---------------------------------------------------------------
    def _dispatch(self, link: Link, call: Call) -> None:
        if self._client_gone() or self.host.status != "running":  # raced with close()
            call.state.err(RuntimeError(f"the client closed before {call.name}() was sent"))
        elif link.dead is not None:
            call.state.err(link.dead)
        elif link.resolving:
            link.backlog.append(call)
        else:
            self._ask(link, call)

    def _ask(self, link: Link, call: Call) -> None:
        host, ref = self.host, link.ref
        # Whether the message can have reached the actor if this ask fails: not when
        # the connection is still to be opened (a dead host refuses it).
        reachable = ref.address == host.address or host.is_connected(ref.address)
        try:
            fut = host.ask(ref, call.op, **self._fields(call))
        except Exception as e:  # the host is closing
            call.state.err(self._closed_error(e))
            return
        fut.add_done_callback(functools.partial(self._on_reply, link, call, reachable))

    def _on_reply(self, link: Link, call: Call, reachable: bool, fut: asyncio.Future) -> None:
        if fut.cancelled():
            call.state.err(ActorDeadError(f"call {call.name}() on actor {link.label} was cancelled"))
            return
        exc = fut.exception()
        if exc is None:
            call.state.finish(fut.result())
        else:
            self._on_failure(link, call, reachable, exc)

    def _on_failure(self, link: Link, call: Call, reachable: bool, exc: BaseException) -> None:
        if self._client_gone():
            call.state.err(self._closed_error(exc))
        elif isinstance(exc, ActorNotFoundError) or (not reachable and self._lost_in_transit(link, exc)):
            # It never reached the actor: send it again once we know where the actor is.
            link.backlog.append(call)
            self._resolve(link)
        elif isinstance(exc, ActorDeadError):  # the host stopped the actor under this call
            call.state.err(ActorDeadError(
                f"actor {link.label} stopped before replying to {call.name}(): it was released, "
                f"or its worker is closing"))
            self._resolve(link)
        elif self._lost_in_transit(link, exc):
            call.state.err(ActorDeadError(
                f"actor {link.label} died before replying to {call.name}() "
                f"(its worker {link.ref.address} went away: {exc})"))
            self._resolve(link)
        else:
            call.state.err(exc)  # the method's own exception

    def _lost_in_transit(self, link: Link, exc: BaseException) -> bool:
        """Whether the connection failed, rather than the method raising an OSError of its
        own (TimeoutError, FileNotFoundError, ...): that one arrives as a reply, with its
        remote traceback as cause, or from an actor on this very host."""
        if isinstance(exc, CommClosedError):
            return True
        return (isinstance(exc, OSError) and not is_remote(exc)
                and link.ref.address != self.host.address)

    # --- re-learning where an actor lives ------------------------------------------------
    def _resolve(self, link: Link) -> None:
        if link.resolving or link.dead is not None:
            return
        link.resolving = True
        task = self.loop.create_task(self._locate(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _locate(self, link: Link) -> None:
        """Ask the scheduler where the actor lives; it answers once it knows (DESIGN §1)."""
        try:
            info = await self.host.ask(self.scheduler, "actor_status", key=link.key,
                                       stale=link.ref.address)
        except asyncio.CancelledError:
            info = {"status": "dead", "reason": "the client closed"}
        except Exception as e:
            info = {"status": "dead", "reason": f"the scheduler could not be asked ({e})"}
        if info.get("status") == "ok":
            link.ref = ActorRef(info["address"], link.ref.id)
        else:
            link.dead = ActorDeadError(f"actor {link.label} {info.get('reason', 'is gone')}")
        # The backlog goes out before the link is marked known: a thread sends a new
        # call itself only once nothing sent earlier waits here (send).
        backlog, link.backlog = link.backlog, []
        for call in backlog:
            if link.dead is not None or self._client_gone() or self.host.status != "running":
                self._dispatch(link, call)
            else:
                self._ask(link, call)
        link.resolving = False

    # --- closing -----------------------------------------------------------------------------
    def _client_gone(self) -> bool:
        client = self._client()
        return client is None or client.status not in ("running", "created")

    def _closed_error(self, exc: BaseException) -> BaseException:
        return RuntimeError(f"the client closed before the actor replied ({exc})")

    def __repr__(self) -> str:
        return f"<Caller {self.host.address} {len(self.links)} actors>"


#: ``caller_of(client)``: the client's caller, made on first use.
caller_of: "PerObject[Client, Caller]" = PerObject(Caller)
