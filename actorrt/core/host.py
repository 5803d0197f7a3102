"""The Host: one per process role. Owns the loop's listener, the connections to peer
hosts and the registry of actors, and routes every message to its actor.

Envelope of every message: ``[dest_actor_id, op, request_id, fields]``; a reply is
``["", "_reply", request_id, {"value": v}]`` or ``{"error": Pickled, "tb": str}``.
Messages to an actor on this same host skip the wire but are still delivered on a
later loop turn, so local and remote calls have the same asynchronous semantics.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import os
import time
from typing import Any, Callable, Iterator

from . import spin
from .actor import Actor, ActorRef, Reply, fail_open_replies, own_task, track_reply
from .checks import check_fields
from .comm import REPLY, Comm, CommClosedError, InprocComm, max_frame_bytes_setting, reply_outcome
from .listener import Listener, connect
from .errors import (
    ActorDeadError,
    ActorNotFoundError,
    BadMessageError,
    SerializationError,
    UnknownOpError,
)
from .liveness import PING, Heartbeat, heartbeat_settings
from .loglimit import LogLimiter
from .security import Security
from .serialize import dumps_exception
from .thread_channel import ThreadChannel

logger = logging.getLogger("actorrt.host")

#: Longest time one peer's queued messages hold the loop before the rest waits a turn.
DISPATCH_SLICE = 0.05


class Host:
    """Actor registry, router and connection pool of one process role."""

    def __init__(self, address: str | None = "inproc://", *, secret: bytes | str | None = None,
                 name: str = "host", shortcut: bool = True,
                 max_frame_bytes: int | None = None, connect_timeout: float = 3.0,
                 heartbeat_interval: float | None = None, heartbeat_timeout: float | None = None,
                 contact_address: str | None = None, security: Security | None = None) -> None:
        self.requested_address = address
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.name = name
        self.shortcut = shortcut
        # The largest frame this host accepts; peers learn it in the handshake and refuse
        # a bigger one before sending it (see core/framing.py). Unset: no limit but memory.
        self.max_frame_bytes = max_frame_bytes or max_frame_bytes_setting()
        self.connect_timeout = connect_timeout
        self.contact_address = contact_address  # the address to advertise, if not the listener's
        self.security = security or Security()
        # Made once: a context loads its certificate files when built.
        self._server_ssl = self.security.server_context() if self.security.enabled else None
        self._client_ssl = self.security.client_context() if self.security.enabled else None
        self.heartbeat_interval, self.heartbeat_timeout = heartbeat_settings(heartbeat_interval, heartbeat_timeout)
        # How long a thread polls for a reply on its own connection before it sleeps.
        self.spin_budget = spin.default_budget()
        self._heartbeat: Heartbeat | None = None
        self._bad_input = LogLimiter(logger)  # lines about peers' malformed messages, rate-limited
        # A host that does not listen (a client) still needs a name peers can key it by.
        self.address = address or f"client://{os.getpid()}-{os.urandom(6).hex()}"
        self.status = "created"
        self.actors: dict[str, Actor] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._comms: dict[str, Comm] = {}
        self._bulk_comms: dict[str, Comm] = {}  # second connections for large values (ask_bulk)
        self._bulk_connecting: dict[str, asyncio.Future[Comm]] = {}
        self._all_comms: set[Comm] = set()
        self._thread_channels: dict[Comm, ThreadChannel] = {}  # opened here (open_thread_channel)
        self._queued_flushes: set[Comm] = set()  # connections with a flush queued (flush_pending)
        self._connecting: dict[str, asyncio.Task[None]] = {}
        self._queued: dict[str, list] = {}
        self._rids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future, Comm | None]] = {}
        # For a thread's asks (ask_from_thread): called as soon as the future is resolved,
        # in the same turn, rather than as its done-callback one turn later.
        self._then: dict[int, Callable[[asyncio.Future], None]] = {}
        # Requests threads wrote themselves, not yet answered (ask_from_thread).
        self._from_threads: set[int] = set()
        self._pending_by_comm: dict[Comm, set[int]] = {}
        self._local_batch: list = []
        self._local_scheduled = False
        # Per peer (None: this host), messages left for a later turn (_handle_slice).
        self._backlog: dict[Comm | None, collections.deque] = {}
        self._ids = itertools.count(1)
        self.peer_lost_callbacks: list[Callable[[str, Comm], None]] = []

    # lifecycle -------------------------------------------------------------
    async def start(self) -> "Host":
        self.loop = asyncio.get_running_loop()
        if self.requested_address:
            self._listener = Listener(self.requested_address, self._on_new_comm, self.secret,
                                      ActorRef, self.max_frame_bytes, shortcut=self.shortcut,
                                      contact_address=self.contact_address, ssl_context=self._server_ssl)
            await self._listener.start()
            self.address = self._listener.address
        self._heartbeat = Heartbeat(self.loop, lambda: self._all_comms, self.heartbeat_interval,
                                    self.heartbeat_timeout)
        self.status = "running"
        return self

    async def close(self) -> None:
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for actor_id in list(self.actors):
            self.stop_actor(actor_id)
        connecting = list(self._connecting.values()) + list(self._bulk_connecting.values())
        for task in connecting:
            task.cancel()
        # Await them: a connect cancelled mid-handshake closes its socket as it unwinds.
        await asyncio.gather(*connecting, return_exceptions=True)
        if self._listener is not None:
            await self._listener.stop()
        for comm in list(self._all_comms):
            comm.close()
        self._fail_pending(None, CommClosedError(f"host {self.address} closed"))
        # Let transports finish closing so no socket outlives the host.
        await asyncio.sleep(0)
        self.status = "closed"

    async def __aenter__(self) -> "Host":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # actors ----------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def spawn(self, actor: Actor, actor_id: str | None = None) -> ActorRef:
        actor.host = self
        actor.id = actor_id or self.new_id(type(actor).__name__.lower())
        if actor.id in self.actors:
            raise ValueError(f"actor id {actor.id!r} already in use on {self.address}")
        self.actors[actor.id] = actor
        actor.on_start()
        return ActorRef(self.address, actor.id)

    def stop_actor(self, actor_id: str) -> None:
        actor = self.actors.pop(actor_id, None)
        if actor is None:
            return
        try:
            actor.on_stop()
        finally:
            fail_open_replies(actor)

    # sending ---------------------------------------------------------------
    def tell(self, ref: ActorRef, op: str, /, **fields: Any) -> None:
        self._send(ref.address, [ref.id, op, 0, fields])

    def ask(self, ref: ActorRef, op: str, /, **fields: Any) -> "asyncio.Future[Any]":
        assert self.loop is not None, "host not started"
        rid = next(self._rids)
        comm = self._send(ref.address, [ref.id, op, rid, fields])
        return self._await_reply(rid, comm)

    def ask_from_thread(self, ref: ActorRef, op: str, fields: dict,
                        on_done: "Callable[[asyncio.Future[Any]], None] | None" = None,
                        ) -> "asyncio.Future[Any] | None":
        """``ask``, from a thread that does not run the loop, written straight onto the
        open connection to ``ref``'s host: the loop is not woken to send it, only by
        the reply. The future that reply resolves (on the loop), or None when the ask
        cannot go this way (no open plain-TCP connection yet, something queued for
        that peer, a large message), or while another ask a thread wrote awaits its
        reply: then the caller asks on the loop as usual. (Threads that ask at once, or
        one that pipelines, are served better by the loop, which writes a turn's
        asks at once: one write, and one wake-up of the peer, for all of them.)

        ``on_done(fut)`` is called on the loop as soon as the reply (or the connection's
        failure) resolves the future, in that same turn (not a turn later, as a
        done-callback would be: each turn is a few µs more on the caller's path). It is
        registered before the ask can be answered, since attaching a callback to a
        future another thread may resolve is not safe. (Cancelling the future, as an
        interrupted wait does, does not call it.)"""
        assert self.loop is not None, "host not started"
        comm = self._comm_for_thread(ref.address)
        if comm is None:
            return None
        rid = next(self._rids)
        data = comm.frame_for_thread([ref.id, op, rid, fields])
        if data is None:
            return None
        if on_done is not None:
            self._then[rid] = on_done
        # Registered before it is written (the reply may come at once). A connection
        # that closes in between is marked closed before the loop fails its asks, so
        # either the write below sees it closed, or the loop fails this ask.
        fut = self._await_reply(rid, comm)
        self._from_threads.add(rid)
        if comm.write_from_thread(data):
            return fut
        if self._pending.pop(rid, None) is None:
            return fut  # the connection closed meanwhile, and the loop failed the ask
        self._from_threads.discard(rid)
        self._then.pop(rid, None)
        rids = self._pending_by_comm.get(comm)
        if rids is not None:
            rids.discard(rid)
        return None

    def tell_from_thread(self, ref: ActorRef, op: str, fields: dict) -> bool:
        """``tell``, from a thread that does not run the loop, written straight onto the
        open connection (as :meth:`ask_from_thread`, on the same terms); False if it
        cannot go that way."""
        comm = self._comm_for_thread(ref.address)
        if comm is None:
            return False
        data = comm.frame_for_thread([ref.id, op, 0, fields])
        return data is not None and comm.write_from_thread(data)

    def _comm_for_thread(self, address: str) -> Comm | None:
        """The connection a thread may write a message to ``address`` on itself: open,
        plain TCP, and with nothing still waiting for it to open; none while another
        ask a thread wrote awaits its reply."""
        if self._from_threads:
            return None  # (see ask_from_thread)
        comm = self._comms.get(address)
        if comm is None or not comm.threads_may_send or address in self._queued:
            return None
        return comm

    def _await_reply(self, rid: int, comm: Comm | None) -> "asyncio.Future[Any]":
        """The future request ``rid`` resolves; only ``comm`` may answer it."""
        assert self.loop is not None
        fut = self.loop.create_future()
        self._pending[rid] = (fut, comm)
        if comm is not None:
            self._pending_by_comm.setdefault(comm, set()).add(rid)
        return fut

    async def ask_bulk(self, ref: ActorRef, op: str, /, **fields: Any) -> Any:
        """``ask`` on a second connection to the peer, kept for large values.

        Messages to one peer go in order on one connection, so a control message sent
        after a 1 GiB value would wait for all of it. Asks whose reply (or fields) may be
        large (``get_data``, ``put_data``) take this connection instead; their order
        against other messages does not matter. In-process peers need no second one.
        """
        assert self.loop is not None, "host not started"
        main = self._comms.get(ref.address)
        if ref.address == self.address or isinstance(main, InprocComm) or ref.address.startswith("inproc://"):
            return await self.ask(ref, op, **fields)
        comm = await self._bulk_comm(ref.address)
        # Backpressure: values already queued for this peer go out before more are added.
        await comm.drain()
        rid = next(self._rids)
        fut = self._await_reply(rid, comm)
        comm.send([ref.id, op, rid, fields])
        return await fut

    async def _bulk_comm(self, address: str) -> Comm:
        comm = self._bulk_comms.get(address)
        if comm is not None and not comm.closed:
            return comm
        opening = self._bulk_connecting.get(address)
        if opening is None:
            opening = self._bulk_connecting[address] = asyncio.ensure_future(self._open_bulk(address))
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._bulk_connecting.get(address) is opening:
                del self._bulk_connecting[address]

    async def _dial(self, address: str, channel: str = "main", timeout: float | None = None) -> Comm:
        """A new connection to ``address`` for ``channel`` (the handshake says which),
        with this host's identity and limits; refused if this host began closing
        while it was being opened. Not yet adopted."""
        comm = await connect(address, local_address=self.address, secret=self.secret,
                             ref_type=ActorRef, timeout=timeout or self.connect_timeout,
                             max_frame_bytes=self.max_frame_bytes, shortcut=self.shortcut,
                             on_messages=self._on_messages, channel=channel, ssl_context=self._client_ssl)
        if self.status in ("closing", "closed"):
            comm.close()
            raise CommClosedError(f"host {self.address} is closing: the connection to {address} "
                                  "it was opening is dropped")
        return comm

    async def _open_bulk(self, address: str) -> Comm:
        comm = await self._dial(address, "bulk")
        self._adopt(comm, address)
        self._bulk_comms[address] = comm
        return comm

    async def open_thread_channel(self, address: str, owner: int,
                                  post: Callable[..., None]) -> ThreadChannel:
        """A connection to ``address`` for thread ``owner``'s asks, whose replies that
        thread reads itself (core/thread_channel.py; ``post`` as there). Plain TCP only:
        a TLS object must not be read on one thread while another writes."""
        assert self.loop is not None, "host not started"
        comm = await self._dial(address, "thread")
        if not comm.threads_may_send:
            comm.close()
            raise CommClosedError(f"no thread connection to {address}: it is not plain TCP")
        self._adopt(comm, address)
        channel = self._thread_channels[comm] = ThreadChannel(comm, self.loop, owner, post, self.spin_budget)
        return channel

    def _send(self, address: str, msg: list) -> Comm | None:
        """Route one message; returns the comm it went on (None if local or queued)."""
        if address == self.address:
            self._local_batch.append(msg)
            if not self._local_scheduled:
                self._local_scheduled = True
                assert self.loop is not None
                self.loop.call_soon(self._drain_local)
            return None
        comm = self._comms.get(address)
        if comm is not None and not comm.closed:
            comm.send(msg)
            return comm
        self._queue_for_connect(address, msg)
        return None

    def _drain_local(self) -> None:
        self._local_scheduled = False
        batch, self._local_batch = self._local_batch, []
        self._on_messages(batch, None)

    def _queue_for_connect(self, address: str, msg: list) -> None:
        self._queued.setdefault(address, []).append(msg)
        if address not in self._connecting:
            task = asyncio.get_running_loop().create_task(self._connect_and_flush(address))
            self._connecting[address] = task

    async def _connect_and_flush(self, address: str) -> None:
        try:
            comm = await self.connect(address)
        except BaseException as e:
            self._connecting.pop(address, None)
            queued = self._queued.pop(address, [])
            err = e if isinstance(e, Exception) else CommClosedError(f"connect to {address} cancelled")
            for msg in queued:
                self._fail_rid(msg[2], err)
            if not isinstance(e, Exception):
                raise
            logger.info("could not reach %s: %s", address, e)
            return
        self._connecting.pop(address, None)
        # Forgotten only once sent: a thread's ask (ask_from_thread) must not pass them.
        for msg in self._queued.get(address, ()):
            comm.send(msg)
            if msg[2]:
                entry = self._pending.get(msg[2])
                if entry is not None:
                    self._pending[msg[2]] = (entry[0], comm)
                    self._pending_by_comm.setdefault(comm, set()).add(msg[2])
        self._queued.pop(address, None)

    async def connect(self, address: str, timeout: float | None = None) -> Comm:
        """Return the open comm to ``address``, opening one if needed."""
        comm = self._comms.get(address)
        if comm is not None and not comm.closed:
            return comm
        comm = await self._dial(address, timeout=timeout)
        existing = self._comms.get(address)
        self._adopt(comm, address)
        return existing if existing is not None and not existing.closed else comm

    def _on_new_comm(self, comm: Comm) -> None:
        self._adopt(comm, comm.peer_address)

    def _adopt(self, comm: Comm, address: str | None) -> None:
        comm.on_messages = self._on_messages
        comm.on_close = self._on_comm_closed
        comm.on_unencodable = lambda msg, exc: self._on_unencodable(comm, msg, exc)
        comm.queued_flushes = self._queued_flushes
        self._all_comms.add(comm)
        if comm.channel != "main":  # (bulk, thread) only the side that dialled it asks on it
            return
        if address and (address not in self._comms or self._comms[address].closed):
            self._comms[address] = comm

    def _on_comm_closed(self, comm: Comm, exc: BaseException | None) -> None:
        # What it sent before closing is handled first (in order, at once): replies among
        # it must resolve their asks before the rest of them fail below.
        backlog = self._backlog.pop(comm, None)
        for msg in _drain(backlog) if backlog else ():
            self._handle_message(msg, comm)
        self._all_comms.discard(comm)
        self._bad_input.forget(comm)
        address = comm.peer_address
        if address and self._comms.get(address) is comm:
            del self._comms[address]
        self._fail_pending(comm, CommClosedError(
            f"connection to {address} closed before the reply arrived" + (f" ({exc})" if exc else "")))
        channel = self._thread_channels.pop(comm, None)
        if channel is not None:
            channel.on_closed(exc)
        if comm.channel != "main":
            if address and self._bulk_comms.get(address) is comm:
                del self._bulk_comms[address]
            return  # a bulk or thread connection says nothing about whether the peer is alive
        # Thread connections carry no heartbeat of their own: the main one speaks for the peer.
        for other in [c for c in self._all_comms if c.channel == "thread" and c.peer_address == address]:
            other.close(CommClosedError(f"the connection to {address} closed"))
        if address and self.status == "running":
            for cb in list(self.peer_lost_callbacks):
                try:
                    cb(address, comm)
                except Exception:
                    logger.exception("peer-lost callback failed")

    def _on_unencodable(self, comm: Comm, msg: Any, exc: BaseException) -> None:
        """A message could not be encoded: every ask still resolves."""
        if not (isinstance(msg, list) and len(msg) == 4 and msg[2]):
            return
        err = SerializationError(f"cannot send {msg[1]!r} to {comm.peer_address}: {exc}")
        if msg[1] == REPLY:
            self._reply(comm, msg[2], False, err)
        else:
            self._fail_rid(msg[2], err)

    def _fail_pending(self, comm: Comm | None, exc: Exception) -> None:
        # (A copy: a thread's ask may add to the set meanwhile, see ask_from_thread.)
        rids = list(self._pending) if comm is None else list(self._pending_by_comm.pop(comm, ()))
        for rid in rids:
            self._fail_rid(rid, exc)

    def _fail_rid(self, rid: int, exc: BaseException) -> None:
        entry = self._pending.pop(rid, None) if rid else None
        if entry is None:
            return
        self._from_threads.discard(rid)
        if not entry[0].done():
            entry[0].set_exception(exc)
        self._answered(rid, entry[0])

    def _answered(self, rid: int, fut: "asyncio.Future[Any]") -> None:
        """Call what a thread's ask asked to be called once answered, if anything (not
        for a future cancelled meanwhile: an interrupted wait, nobody to tell)."""
        then = self._then.pop(rid, None) if self._then else None
        if then is None or fut.cancelled():
            return
        try:
            then(fut)
        except Exception:
            logger.exception("callback of request %s failed", rid)

    def is_connected(self, address: str) -> bool:
        comm = self._comms.get(address)
        return comm is not None and not comm.closed

    def flush_pending(self) -> None:
        """Write what every connection has queued now (Comm.flush_now), not on the next
        turn of the loop: an actor's per-turn batch, or an answer a caller waits for,
        then leaves in this turn.

        All of them, not only the one just used: what was queued earlier for another
        peer must not leave after it. (Leaving first does not make it arrive first on
        another connection: where that order matters, as for a claim on keys a caller
        is about to let go of, the sender waits for a receipt; see UserActor._keys_in.)"""
        for comm in list(self._queued_flushes):  # (only those with something queued)
            comm.flush_now()

    def comm_to(self, address: str) -> Comm | None:
        """The open connection messages to ``address`` go on, if there is one."""
        comm = self._comms.get(address)
        return comm if comm is not None and not comm.closed else None

    # receiving -------------------------------------------------------------
    def backlogged(self, comm: Comm) -> bool:
        """Whether messages of ``comm`` already read wait for a later turn (``_handle_slice``)."""
        return comm in self._backlog

    def _on_messages(self, batch: list, comm: Comm | None) -> None:
        backlog = self._backlog.get(comm)
        if backlog is not None:  # earlier messages of this peer still wait their turn
            backlog.extend(batch)
            return
        self._handle_slice(iter(batch), comm)

    def _handle_slice(self, messages: Iterator, comm: Comm | None) -> None:
        """Handle ``messages`` of one peer in order for at most DISPATCH_SLICE seconds;
        the rest waits for the next turn of the loop (with what this peer sends meanwhile).
        One peer's flood (a million keys released at once) then never keeps this host
        from its heartbeats and other peers for seconds: they would take it for dead.
        (The clock is read every 8 messages: a message costs microseconds.)"""
        deadline = time.perf_counter() + DISPATCH_SLICE
        handle = self._handle_message
        for i, msg in enumerate(messages, 1):
            handle(msg, comm)
            if not i & 7 and time.perf_counter() > deadline:
                rest = self._backlog.get(comm)
                if rest is None:  # (resuming, ``messages`` already is the stored backlog)
                    rest = self._backlog[comm] = collections.deque(messages)
                if rest:
                    assert self.loop is not None
                    self.loop.call_soon(self._resume, comm)
                else:
                    del self._backlog[comm]
                return
        self._backlog.pop(comm, None)

    def _resume(self, comm: Comm | None) -> None:
        rest = self._backlog.get(comm)
        if rest is not None:
            self._handle_slice(_drain(rest), comm)

    def _handle_message(self, msg: Any, comm: Comm | None) -> None:
        try:
            dest, op, rid, fields = msg
            if op == REPLY:
                self._on_reply(rid, fields, comm)
                return
            actor = self.actors.get(dest)
            if actor is None:
                if op == PING:  # its arrival was the point (core/liveness.py); no actor has ""
                    return
                if rid:
                    self._reply(comm, rid, False, ActorNotFoundError(
                        f"no actor {dest!r} on {self.address} (op {op!r})"))
                else:
                    logger.debug("dropping %r for missing actor %r", op, dest)
                return
            self._dispatch(actor, op, rid, fields, comm)
        except Exception as e:
            # A malformed message (unhashable id, reply that is not a map...) from
            # a peer: drop it, keep the rest of the batch and the connection.
            self._bad_input.warning(comm, _peer_name(comm), "dropping malformed message %.200r from %s: %s",
                                    msg, _peer_name(comm), e)

    def _dispatch(self, actor: Actor, op: str, rid: int, fields: Any, comm: Comm | None) -> None:
        if actor.before_dispatch is not None:
            actor.before_dispatch()
        handler = actor._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            self._reply_or_log(comm, rid, UnknownOpError(f"{type(actor).__name__} has no op {op!r}"))
            return
        if not isinstance(fields, dict) or not (
                handler.required <= fields.keys() and (handler.var_keyword or fields.keys() <= handler.params)):
            self._reply_or_log(comm, rid, _field_error(actor, op, handler, fields))
            return
        if handler.checks:
            bad = check_fields(f"{type(actor).__name__}.{op}", handler.checks, fields)
            if bad is not None:
                self._reply_or_log(comm, rid, bad)
                return
        kwargs = fields
        if handler.wants_reply:
            reply = self.reply_to(comm, rid, actor.answers_from_threads)
            track_reply(actor, reply)
            kwargs = {**fields, "reply": reply}
            if handler.wants_origin:
                kwargs["origin"] = comm
        elif handler.wants_origin:
            kwargs = {**fields, "origin": comm}
        method = getattr(actor, handler.name)
        try:
            result = method(**kwargs)
        except Exception as e:
            if handler.wants_reply:
                reply.fail(e)  # type: ignore[possibly-undefined]
            else:
                self._reply_or_log(comm, rid, e)
            return
        if handler.is_async:
            task = own_task(actor, result)
            if handler.wants_reply:
                task.add_done_callback(lambda t: self._fail_reply_from_task(t, reply, actor, op))
            else:
                task.add_done_callback(lambda t: self._reply_from_task(t, comm, rid, actor, op))
            return
        if rid and not handler.wants_reply:
            self._reply(comm, rid, True, result)

    @staticmethod
    def _fail_reply_from_task(task: asyncio.Task, reply: Reply, actor: Actor, op: str) -> None:
        # An async handler that took `reply` and then raised must not leave its ask hanging.
        if task.cancelled():
            reply.fail(ActorDeadError(f"actor {actor.id!r} stopped while handling {op!r}"))
        elif task.exception() is not None:
            reply.fail(task.exception())  # type: ignore[arg-type]

    def _reply_from_task(self, task: asyncio.Task, comm: Comm | None, rid: int, actor: Actor, op: str) -> None:
        if task.cancelled():
            self._reply_or_log(comm, rid, ActorDeadError(f"actor {actor.id!r} stopped while handling {op!r}"))
        elif task.exception() is not None:
            self._reply_or_log(comm, rid, task.exception())  # type: ignore[arg-type]
        elif rid:
            self._reply(comm, rid, True, task.result())

    def _reply_or_log(self, comm: Comm | None, rid: int, exc: BaseException) -> None:
        if rid:
            self._reply(comm, rid, False, exc)
        elif isinstance(exc, (BadMessageError, UnknownOpError)):
            # A peer's mistake, not ours: say who sent it; our own stack says nothing.
            self._bad_input.warning(comm, _peer_name(comm), "dropping a bad message from %s: %s",
                                    _peer_name(comm), exc)
        else:
            logger.error("error handling a tell: %s: %s", type(exc).__name__, exc, exc_info=exc)

    def _replier(self, comm: Comm | None, rid: int) -> Callable[[bool, Any], None]:
        def send(ok: bool, value: Any) -> None:
            if rid:
                self._reply(comm, rid, ok, value)
            elif not ok:  # a tell's handler failed: said as any tell's failure is
                self._reply_or_log(comm, rid, value)
        return send

    def reply_to(self, comm: Comm | None, rid: int, from_threads: bool = True) -> Reply:
        """The answer to ask ``rid`` that came on ``comm`` (None: a local ask), given to
        its handler by the dispatch, or made for an ask read off ``comm`` outside it (a
        user actor's lane reads its callers' own connections: worker/lane_reads.py).
        ``from_threads``: answerable from another thread, where the connection allows."""
        reply = Reply(self._replier(comm, rid))
        if from_threads and rid and comm is not None and comm.threads_may_send:
            reply.send_from_thread = functools.partial(self._reply_from_thread, comm, rid)
        return reply

    @staticmethod
    def _reply_from_thread(comm: Comm, rid: int, value: Any) -> bool:
        return comm.send_from_thread(["", REPLY, rid, {"value": value}])

    def _reply(self, comm: Comm | None, rid: int, ok: bool, value: Any) -> None:
        if comm is None:  # a local ask: resolve on a later turn, like a remote one
            self._local_batch.append(["", REPLY, rid, {"value": value} if ok else {"exc": value}])
            if not self._local_scheduled:
                self._local_scheduled = True
                assert self.loop is not None
                self.loop.call_soon(self._drain_local)
            return
        if comm.closed:
            return
        if ok:
            comm.send(["", REPLY, rid, {"value": value}])
        else:
            blob, tb = dumps_exception(value)
            comm.send(["", REPLY, rid, {"error": blob, "tb": tb}])

    def _on_reply(self, rid: int, fields: dict, origin: Comm | None) -> None:
        entry = self._pending.get(rid)
        if entry is None:
            return  # the asker gave up (timeout) or the host is closing
        fut, comm = entry
        if comm is not origin:
            # Only the connection the ask went out on may answer it: another peer
            # guessing request ids must not resolve our futures.
            logger.warning("dropping a reply to request %s from the wrong connection %s", rid, origin)
            return
        del self._pending[rid]
        self._from_threads.discard(rid)
        if comm is not None:
            rids = self._pending_by_comm.get(comm)
            if rids is not None:
                rids.discard(rid)
        if fut.done():  # (cancelled: the asker gave up)
            self._answered(rid, fut)
            return
        ok, value = reply_outcome(fields)
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
        self._answered(rid, fut)

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} {self.status}>"


def _field_error(actor: Actor, op: str, handler: Any, fields: Any) -> BadMessageError:
    if not isinstance(fields, dict):
        return BadMessageError(f"{type(actor).__name__}.{op}: fields must be a map")
    missing = sorted(handler.required - fields.keys())
    unknown = sorted(fields.keys() - handler.params)
    return BadMessageError(
        f"{type(actor).__name__}.{op}: missing fields {missing}, unknown fields {unknown}")


def _peer_name(comm: Comm | None) -> str:
    return str(comm.peer_address) if comm is not None else "this host"


def _drain(queue: collections.deque) -> Iterator:
    """Take from the left of ``queue`` until it is empty, as the caller iterates (what
    the caller does not take stays in it, and what is appended meanwhile comes too)."""
    while queue:
        yield queue.popleft()
