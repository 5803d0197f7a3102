"""Transports: framed, batched, authenticated connections between hosts.

One contract, two transports:

* ``tcp://host:port`` (and ``tls://``) on a non-blocking socket driven by the event
  loop's selector (``TCPComm``, in ``tcp.py``; listening and dialling in
  ``listener.py``): messages sent in one loop turn go out as one framed batch (layout
  in ``framing``), large buffers are sent from their own memory and received in place;
* ``inproc://name`` for hosts living in one process, which hands message objects
  across without serializing them but keeps the same asynchronous delivery.

Before any message carrying a pickle is read, both ends prove they know the
cluster's secret: each sends a hello with a random nonce, then an HMAC over its
role (``connect`` or ``accept``), the peer's nonce and its own. The role keeps a
listener from being used as an oracle for its own challenge (a reflection attack:
open a second connection, hand it the first one's nonce, replay its answer). Until
then only single small frames of plain msgpack without extension types are decoded,
so an unauthenticated peer can never make us load a pickle nor buffer much.
The hello also tells the peer our ``max_frame_bytes``, so a sender refuses a message
we would reject before writing a byte of it.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from typing import Any, Callable

from .errors import BadMessageError, CommClosedError
from .framing import UNLIMITED
from .serialize import Pickled, loads_exception

# 3: a run's start, stop and thread in tasks_done; transfers and disk activity; CPU
# and network figures in a worker's memory report (the task stream).
# 4: a Pickled repeated in one envelope is sent once (serialize.EXT_PICKLE_AGAIN).
# 5: update_graph told with ack_later; its acknowledgement rides on a report (acked).
PROTOCOL_VERSION = 5
MAX_HANDSHAKE_BYTES = 4096
def max_frame_bytes_setting() -> int:
    """``ACTORRT_MAX_FRAME_BYTES``: the largest frame this process accepts (no limit if unset)."""
    raw = os.environ.get("ACTORRT_MAX_FRAME_BYTES", "").strip()
    if not raw:
        return UNLIMITED
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"ACTORRT_MAX_FRAME_BYTES must be a number of bytes, got {raw!r}") from None
    if value < MAX_HANDSHAKE_BYTES:
        raise ValueError(f"ACTORRT_MAX_FRAME_BYTES must be at least {MAX_HANDSHAKE_BYTES}, got {value}")
    return value


OnMessages = Callable[[list, "Comm"], None]
OnClose = Callable[["Comm", BaseException | None], None]


def parse_address(address: str) -> tuple[str, str]:
    """Split ``scheme://rest``; raise ValueError on anything else."""
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"not an actorrt address: {address!r} (expected tcp://host:port, tls://host:port or inproc://name)")
    scheme, rest = address.split("://", 1)
    if scheme not in ("tcp", "tls", "inproc"):
        raise ValueError(f"unsupported address scheme {scheme!r} in {address!r}")
    return scheme, rest


def split_host_port(rest: str) -> tuple[str, int]:
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {rest!r}")
    return host.strip("[]"), int(port)


def host_of(address: str) -> str | None:
    """The host part of a tcp:// or tls:// address (``"127.0.0.1"``, ``"::1"``); None for
    any other kind (inproc://), which no host name can select."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "tls"):
        return None
    try:
        return split_host_port(rest)[0]
    except ValueError:
        return None


ROLE_CONNECT = b"connect"
ROLE_ACCEPT = b"accept"


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    """Proof sent by the side playing ``role``: HMAC over (role, peer nonce, own nonce)."""
    return hmac.new(secret, b"actorrt-auth:" + role + b":" + first + second, hashlib.sha256).digest()


# What a connection is for: "main" carries a peer's messages in order; "bulk" carries
# only asks for large values and their replies, so a value on the wire never holds up
# the control messages behind it (see Host.ask_bulk); "thread" carries one thread's
# asks and their replies, which that thread reads itself (core/thread_channel.py).
CHANNELS = ("main", "bulk", "thread")

#: The op of a reply: ``["", REPLY, request id, {"value": ...} | {"error": ..., "tb": ...}]``.
REPLY = "_reply"


def reply_outcome(fields: Any) -> tuple[bool, Any]:
    """A reply's fields as ``(ok, value)``, ``value`` the exception when not ok:
    ``{"value": v}``; ``{"error": pickled exception, "tb": text}`` from a peer;
    ``{"exc": exception}`` from this host's own loop (a local ask). Anything else is a
    peer's malformed reply, and fails the ask saying so."""
    if type(fields) is dict:
        if "value" in fields:
            return True, fields["value"]
        err = fields.get("error")
        if isinstance(err, Pickled):
            return False, loads_exception(err, fields.get("tb"))
        exc = fields.get("exc")
        if isinstance(exc, BaseException):
            return False, exc
    return False, BadMessageError(f"malformed reply {fields!r}")


class Comm:
    """A connection to one peer host. ``send`` is batched per loop iteration."""

    peer_address: str | None = None
    local_address: str | None = None
    channel = "main"
    threads_may_send = False  # whether send_from_thread can ever succeed
    #: Who reads this connection instead of the loop, if anyone: a user actor's lane
    #: reads its callers' own connections itself (worker/lane_reads.py).
    lent_to: Any = None

    def __init__(self) -> None:
        self.closed = False
        self.on_messages: OnMessages | None = None
        self.on_close: OnClose | None = None
        # Called with (message, exception) for a message that cannot be encoded, so
        # the host can fail the ask or send an error reply instead of going silent.
        self.on_unencodable: Callable[[Any, BaseException], None] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._outbox: list = []
        self._flush_scheduled = False
        # The host's set of its connections with a flush queued (Host.flush_pending
        # writes them out at once); None until a host adopts this one.
        self.queued_flushes: set[Comm] | None = None

    def send(self, msg: Any) -> None:
        if self.closed:
            raise CommClosedError(f"connection to {self.peer_address} is closed")
        self._outbox.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
            if self.queued_flushes is not None:
                self.queued_flushes.add(self)

    def _flush(self) -> None:
        raise NotImplementedError

    def _flush_started(self) -> None:
        """Each ``_flush`` starts here: nothing is queued for a later one any more."""
        self._flush_scheduled = False
        if self.queued_flushes is not None:
            self.queued_flushes.discard(self)

    def flush_now(self) -> None:
        """Send what is queued now rather than on the next turn of the loop (an actor
        that batches its own messages per turn calls this once it has sent them). An
        in-process peer still gets them on the next turn: its handlers never run inside
        the sender's."""

    def send_from_thread(self, msg: Any) -> bool:
        """From a thread other than the loop's: write ``msg`` to the peer at once, if it
        can go before anything else is sent (nothing is queued ahead of it, it is small,
        the transport allows it). False, with nothing done, if not: then ``send`` it on
        the loop. It saves the wake-up of the loop on a waiting caller's path (a
        cross-CPU wake-up costs tens of microseconds on a VM).

        In-process connections never do: the loop hands their messages across anyway."""
        data = self.frame_for_thread(msg)
        return data is not None and self.write_from_thread(data)

    def frame_for_thread(self, msg: Any) -> bytes | None:
        """The first half of :meth:`send_from_thread`: ``msg`` encoded for
        :meth:`write_from_thread`, or None if it may not go that way. A thread that has
        something to do between the two (hand its work back to the loop) encodes
        first: the loop, woken meanwhile, then takes the interpreter lock from a
        thread that only has a socket write left."""
        return None

    def write_from_thread(self, data: bytes) -> bool:
        """The second half of :meth:`send_from_thread`: write what
        :meth:`frame_for_thread` made, if nothing is queued ahead of it (False if not)."""
        return False

    async def drain(self) -> None:
        """Wait until what is queued for the peer is small (in-process: nothing waits)."""

    def close(self, reason: BaseException | None = None) -> None:
        raise NotImplementedError

    def _closed(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        self._flush_started()  # (nothing left to flush)
        if not self.ready.done():
            self.ready.set_exception(exc or CommClosedError("connection closed during handshake"))
            self.ready.exception()  # mark retrieved: the opener may have given up
        if self.on_close is not None:
            self.on_close(self, exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.local_address} -> {self.peer_address}>"


# --- in-process -----------------------------------------------------------------


class InprocComm(Comm):
    """One end of an in-process pair: delivers message objects, unserialized."""

    def __init__(self, local_address: str | None) -> None:
        super().__init__()
        self.local_address = local_address
        self.peer: InprocComm | None = None
        self.ready.set_result(None)

    def _flush(self) -> None:
        self._flush_started()
        if self.closed or not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        peer = self.peer
        if peer is not None and not peer.closed and peer.on_messages is not None:
            peer.on_messages(batch, peer)

    def close(self, reason: BaseException | None = None) -> None:
        if self.closed:
            return
        if self._outbox:
            self._flush()
        exc = reason or CommClosedError(f"connection to {self.peer_address} closed")
        self._closed(exc)
        peer = self.peer
        if peer is not None and not peer.closed:
            # The far end learns of the close on a later turn, as it would over TCP.
            self._loop.call_soon(peer._closed, CommClosedError(f"connection to {peer.peer_address} closed"))


def inproc_pair(a_address: str | None, b_address: str | None) -> tuple[InprocComm, InprocComm]:
    a, b = InprocComm(a_address), InprocComm(b_address)
    a.peer, b.peer = b, a
    a.peer_address, b.peer_address = b_address, a_address
    return a, b


