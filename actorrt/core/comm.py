"""Transports: framed, batched, authenticated connections between hosts.

One contract, two transports:

* ``tcp://host:port`` on a bare asyncio ``Protocol`` (measured on our machines at
  roughly 4x the round-trip rate of tornado's ``IOStream`` — DESIGN §2);
* ``inproc://name`` for hosts living in one process, which hands message objects
  across without serializing them but keeps the same asynchronous delivery.

Wire format of one write (one *batch* of messages)::

    !I  n           number of frames (network byte order)
    !Q  len * n     length of each frame
    frame 0         msgpack list of messages
    frame 1..n-1    out-of-band pickle buffers

Before any message carrying a pickle is read, both ends prove they know the
cluster's secret: each sends a hello with a random nonce, then an HMAC over its
role (``connect`` or ``accept``), the peer's nonce and its own. The role keeps a
listener from being used as an oracle for its own challenge (a reflection attack:
open a second connection, hand it the first one's nonce, replay its answer). Until
then only small frames of plain msgpack without extension types are decoded, so an
unauthenticated peer can never make us load a pickle nor buffer much.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import struct
import weakref
from typing import Any, Callable

import msgpack

from .errors import AuthenticationError, CommClosedError
from .serialize import pack_frames, unpack_frames

logger = logging.getLogger("actorrt.comm")

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1 << 30
MAX_FRAMES = 1 << 16
MAX_HANDSHAKE_BYTES = 4096
# An accepted socket that has not proven itself by then is closed, so idle or hostile
# peers cannot hold connections open forever.
HANDSHAKE_TIMEOUT = 10.0
_HEAD = struct.Struct("!I")

OnMessages = Callable[[list, "Comm"], None]
OnClose = Callable[["Comm", BaseException | None], None]


def parse_address(address: str) -> tuple[str, str]:
    """Split ``scheme://rest``; raise ValueError on anything else."""
    if not isinstance(address, str) or "://" not in address:
        raise ValueError(f"not an actorrt address: {address!r} (expected tcp://host:port or inproc://name)")
    scheme, rest = address.split("://", 1)
    if scheme not in ("tcp", "inproc"):
        raise ValueError(f"unsupported address scheme {scheme!r} in {address!r}")
    return scheme, rest


def split_host_port(rest: str) -> tuple[str, int]:
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {rest!r}")
    return host.strip("[]"), int(port)


ROLE_CONNECT = b"connect"
ROLE_ACCEPT = b"accept"


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    """Proof sent by the side playing ``role``: HMAC over (role, peer nonce, own nonce)."""
    return hmac.new(secret, b"actorrt-auth:" + role + b":" + first + second, hashlib.sha256).digest()


class Comm:
    """A connection to one peer host. ``send`` is batched per loop iteration."""

    peer_address: str | None = None
    local_address: str | None = None

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

    def send(self, msg: Any) -> None:
        if self.closed:
            raise CommClosedError(f"connection to {self.peer_address} is closed")
        self._outbox.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        raise NotImplementedError

    def close(self, reason: BaseException | None = None) -> None:
        raise NotImplementedError

    def _closed(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        if not self.ready.done():
            self.ready.set_exception(exc or CommClosedError("connection closed during handshake"))
            self.ready.exception()  # mark retrieved: the opener may have given up
        if self.on_close is not None:
            self.on_close(self, exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.local_address} -> {self.peer_address}>"


# --- TCP ------------------------------------------------------------------------


class TCPComm(Comm, asyncio.Protocol):
    """TCP connection on an asyncio Protocol: framing, batching, HMAC handshake."""

    def __init__(
        self,
        local_address: str | None,
        secret: bytes | None,
        ref_type: type,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_open: Callable[["TCPComm"], None] | None = None,
        accepting: bool = False,
    ) -> None:
        Comm.__init__(self)
        self.local_address = local_address
        self._role, self._peer_role = (ROLE_ACCEPT, ROLE_CONNECT) if accepting else (ROLE_CONNECT, ROLE_ACCEPT)
        self._secret = secret
        self._ref_type = ref_type
        self._max_frame = max_frame_bytes
        self._on_open = on_open
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._phase = "hello"  # hello -> proof -> open
        self._nonce = os.urandom(16)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._peer_nonce = b""

    # asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = {"v": PROTOCOL_VERSION, "nonce": self._nonce, "address": self.local_address}
        self._write_frames([msgpack.packb(hello)])
        self._handshake_timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if self._phase != "open" and not self.closed:
            logger.warning("closing connection from %s: no handshake within %s s",
                           self._peername(), HANDSHAKE_TIMEOUT)
            self.close(CommClosedError("handshake timed out"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self._buf and not self.closed:
            logger.warning("connection from %s closed in the middle of a frame (%d bytes unread)",
                           self.peer_address or self._peername(), len(self._buf))
        self._closed(CommClosedError(f"connection to {self.peer_address} lost" + (f": {exc}" if exc else "")))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while True:
                frames, pos = self._parse_one(buf, pos)
                if frames is None:
                    break
                self._on_frames(frames)
                if self.closed:
                    return
        except Exception as e:  # malformed input: drop this peer, keep serving others
            logger.warning("closing connection from %s: %s", self.peer_address or self._peername(), e)
            self.close(e)
            return
        if pos:
            del buf[:pos]

    def _peername(self) -> str:
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer)

    def _parse_one(self, buf: bytearray, pos: int) -> tuple[list | None, int]:
        avail = len(buf) - pos
        if avail < 4:
            return None, pos
        (n,) = _HEAD.unpack_from(buf, pos)
        if n == 0 or n > MAX_FRAMES:
            raise ValueError(f"bad frame count {n}")
        head = 4 + 8 * n
        if avail < head:
            return None, pos
        lengths = struct.unpack_from(f"!{n}Q", buf, pos + 4)
        total = sum(lengths)
        limit = self._max_frame if self._phase == "open" else MAX_HANDSHAKE_BYTES
        if total > limit:
            raise ValueError(f"message of {total} bytes exceeds the limit of {limit}")
        if avail < head + total:
            return None, pos
        frames = []
        off = pos + head
        for length in lengths:
            # One copy, and writable: numpy arrays loaded from these buffers must be too.
            frames.append(buf[off : off + length])
            off += length
        return frames, off

    def _on_frames(self, frames: list) -> None:
        if self._phase == "open":
            messages = unpack_frames(frames, self._ref_type)
            if self.on_messages is not None:
                self.on_messages(messages, self)
            return
        # Handshake: plain msgpack only; an extension type here is an attack or a bug.
        msg = msgpack.unpackb(frames[0], raw=False, ext_hook=_refuse_ext)
        if not isinstance(msg, dict):
            raise ValueError("malformed handshake")
        if self._phase == "hello":
            if msg.get("v") != PROTOCOL_VERSION:
                raise ValueError(f"peer speaks protocol {msg.get('v')!r}, we speak {PROTOCOL_VERSION}")
            nonce = msg.get("nonce")
            if not isinstance(nonce, bytes) or len(nonce) != 16:
                raise ValueError("malformed handshake nonce")
            address = msg.get("address")
            if address is not None and not isinstance(address, str):
                raise ValueError("malformed handshake address")
            self._peer_nonce = nonce
            self.peer_address = address
            mac = _mac(self._secret, self._role, nonce, self._nonce) if self._secret else b""
            self._write_frames([msgpack.packb({"mac": mac})])
            self._phase = "proof"
        elif self._phase == "proof":
            proof: Any = msg.get("mac")
            expected = _mac(self._secret, self._peer_role, self._nonce, self._peer_nonce) if self._secret else b""
            if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
                err = AuthenticationError(
                    f"peer {self._peername()} failed authentication (wrong or missing cluster secret)"
                )
                logger.warning("%s", err)
                self.close(err)
                return
            self._phase = "open"
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            self.ready.set_result(None)
            if self._on_open is not None:
                self._on_open(self)
            if self._outbox and not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    # sending ---------------------------------------------------------------
    def _write_frames(self, frames: list) -> None:
        lengths = [memoryview(f).nbytes for f in frames]
        header = struct.pack(f"!I{len(frames)}Q", len(frames), *lengths)
        assert self._transport is not None
        self._transport.writelines([header, *frames])

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self._phase != "open" or not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        try:
            frames = pack_frames(batch, self._ref_type)
        except Exception:
            # A bug put something unencodable in a message: send the rest, log the culprit.
            frames = None
            good = []
            for m in batch:
                try:
                    pack_frames([m], self._ref_type)
                    good.append(m)
                except Exception as e:
                    logger.error("dropping unencodable message %r: %s",
                                 m[:2] if isinstance(m, (list, tuple)) else m, e)
                    if self.on_unencodable is not None:
                        self.on_unencodable(m, e)
            if good:
                frames = pack_frames(good, self._ref_type)
        if frames is not None:
            self._write_frames(frames)

    def close(self, reason: BaseException | None = None) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self._outbox and self._phase == "open":
                self._flush()
            self._transport.close()
        self._closed(reason or CommClosedError(f"connection to {self.peer_address} closed"))

    @property
    def buffered_bytes(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not allowed before authentication")


# --- in-process -----------------------------------------------------------------


class InprocComm(Comm):
    """One end of an in-process pair: delivers message objects, unserialized."""

    def __init__(self, local_address: str | None) -> None:
        super().__init__()
        self.local_address = local_address
        self.peer: InprocComm | None = None
        self.ready.set_result(None)

    def _flush(self) -> None:
        self._flush_scheduled = False
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


# --- listening and connecting ----------------------------------------------------


class Listener:
    """Accepts connections at ``address``; hands each opened Comm to ``on_comm``."""

    def __init__(self, address: str, on_comm: Callable[[Comm], None], secret: bytes | None,
                 ref_type: type, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 shortcut: bool = True) -> None:
        self.requested = address
        self.address = address
        self.on_comm = on_comm
        self.secret = secret
        self.ref_type = ref_type
        self.max_frame_bytes = max_frame_bytes
        self.shortcut = shortcut
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Accepted connections; those still in the handshake belong to nobody else.
        self._accepted: weakref.WeakSet[TCPComm] = weakref.WeakSet()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        scheme, rest = parse_address(self.requested)
        if scheme == "inproc":
            if not rest:
                rest = f"{os.getpid()}/{os.urandom(6).hex()}"
            self.address = f"inproc://{rest}"
            if self.address in _local_listeners:
                raise OSError(f"address {self.address} is in use")
        else:
            host, port = split_host_port(rest)
            if self.secret is None and host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(
                    f"refusing to listen on {host!r} without a cluster secret: set ACTORRT_SECRET "
                    "or pass secret=, or listen on 127.0.0.1"
                )
            self._server = await self._loop.create_server(self._make_protocol, host, port)
            sock = self._server.sockets[0]
            self.address = f"tcp://{host}:{sock.getsockname()[1]}"
        _local_listeners[self.address] = self

    def _make_protocol(self) -> TCPComm:
        comm = TCPComm(self.address, self.secret, self.ref_type, self.max_frame_bytes,
                       on_open=self.on_comm, accepting=True)
        self._accepted.add(comm)
        return comm

    def accept_inproc(self, client_address: str | None) -> InprocComm:
        theirs, ours = inproc_pair(client_address, self.address)
        self.on_comm(ours)
        return theirs

    async def stop(self) -> None:
        if _local_listeners.get(self.address) is self:
            del _local_listeners[self.address]
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for comm in list(self._accepted):
            if not comm.ready.done():  # opened ones are closed by their host
                comm.close(CommClosedError(f"listener {self.address} stopped during the handshake"))


# Listeners of this process, by address: a host connecting to one of these on the
# same loop gets an in-process pair and skips the socket and serialization.
_local_listeners: dict[str, Listener] = {}


async def connect(address: str, *, local_address: str | None, secret: bytes | None,
                  ref_type: type, timeout: float = 10.0,
                  max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, shortcut: bool = True,
                  on_messages: OnMessages | None = None) -> Comm:
    """Open an authenticated connection to ``address``, retrying until ``timeout``.

    ``on_messages`` is installed before the handshake: the peer may send as soon as
    it has verified us, possibly in the same read as its proof, before we return.
    """
    scheme, rest = parse_address(address)
    loop = asyncio.get_running_loop()
    listener = _local_listeners.get(address)
    if listener is not None and listener._loop is loop and (listener.shortcut and shortcut or scheme == "inproc"):
        theirs = listener.accept_inproc(local_address)
        theirs.on_messages = on_messages
        return theirs
    if scheme == "inproc":
        raise CommClosedError(f"no in-process listener at {address}")
    host, port = split_host_port(rest)
    deadline = loop.time() + timeout
    delay = 0.01

    def factory() -> TCPComm:
        comm = TCPComm(local_address, secret, ref_type, max_frame_bytes)
        comm.on_messages = on_messages
        return comm

    async def attempt() -> TCPComm:
        _, comm = await loop.create_connection(factory, host, port)
        try:
            await asyncio.shield(comm.ready)
        except BaseException:  # timed out or cancelled mid-handshake: do not leak the socket
            comm.close()
            raise
        return comm

    while True:
        try:
            if hasattr(asyncio, "timeout_at"):
                # Python 3.11+. Not wait_for: it runs the attempt as another task and
                # swallows our cancellation when the attempt finishes at the same moment
                # (bpo-42130), so closing a host could hang on a connect.
                async with asyncio.timeout_at(max(deadline, loop.time() + 0.01)):
                    return await attempt()
            return await asyncio.wait_for(attempt(), max(0.01, deadline - loop.time()))
        except AuthenticationError:
            raise
        except (OSError, asyncio.TimeoutError, CommClosedError) as e:
            if loop.time() + delay >= deadline:
                raise CommClosedError(f"could not connect to {address} within {timeout}s: {e}") from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
