"""Transports: framed, batched, authenticated connections between hosts.

One contract, two transports:

* ``tcp://host:port`` on a non-blocking socket driven by the event loop's selector
  (``TCPComm``): messages sent in one loop turn go out as one framed batch (layout in
  ``framing``), large buffers are sent from their own memory and received in place;
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
import collections
import functools
import hashlib
import hmac
import logging
import os
import socket
import ssl
import weakref
from typing import Any, Callable

import msgpack

from .addresses import advertised, is_loopback, is_wildcard
from .errors import AuthenticationError, CommClosedError, SerializationError
from .framing import MAX_FRAMES, STAGE_BYTES, UNLIMITED, FrameDecoder, encode_header
from .serialize import pack_frames, unpack_frames

logger = logging.getLogger("actorrt.comm")

PROTOCOL_VERSION = 2
MAX_HANDSHAKE_BYTES = 4096
# Connections allowed in the handshake at once; past that the oldest is closed.
MAX_PENDING_HANDSHAKES = 256
# An accepted socket that has not proven itself by then is closed, so idle or hostile
# peers cannot hold connections open forever.
HANDSHAKE_TIMEOUT = 10.0
# A peer that accepts no byte for this long while we have data for it is dropped.
WRITE_STALL_TIMEOUT = 60.0
# drain() waits above HIGH_WATER queued bytes, until the queue is under LOW_WATER.
HIGH_WATER = 8 << 20
LOW_WATER = 1 << 20
# While a large frame streams in, the socket wakes us only once this much of it has
# arrived (SO_RCVLOWAT): fewer, larger reads (+5-10% on 512 MB worker->worker here).
RCVLOWAT_BYTES = 256 << 10
_HAS_RCVLOWAT = hasattr(socket, "SO_RCVLOWAT")
# Batches up to this size are joined and sent with one send() instead of sendmsg().
SMALL_WRITE_BYTES = 64 << 10
# Bytes per sendmsg call. One call with a whole large value is slower than the same
# bytes in slices (loopback, 512 MB: ~2.5 GB/s against ~5 GB/s in 1 MiB slices, see
# benchmarks/bench_data.py's floor): the kernel keeps the socket locked for the whole
# call, so the peer's acknowledgements wait and the window stalls. With 512 MB here,
# gather went from ~1,770 to ~2,130 MB/s and worker->worker from ~1,470 to ~1,740
# (256 KiB and 4 MiB slices did less well).
SEND_CHUNK_BYTES = 1 << 20
# Buffers per sendmsg call (the kernel's limit on an iovec).
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


# "Try again later" from a plain or a TLS socket (a TLS record may be half in).
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


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


ROLE_CONNECT = b"connect"
ROLE_ACCEPT = b"accept"


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    """Proof sent by the side playing ``role``: HMAC over (role, peer nonce, own nonce)."""
    return hmac.new(secret, b"actorrt-auth:" + role + b":" + first + second, hashlib.sha256).digest()


# What a connection is for: "main" carries a peer's messages in order; "bulk" carries
# only asks for large values and their replies, so a value on the wire never holds up
# the control messages behind it (see Host.ask_bulk).
CHANNELS = ("main", "bulk")


class Comm:
    """A connection to one peer host. ``send`` is batched per loop iteration."""

    peer_address: str | None = None
    local_address: str | None = None
    channel = "main"

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

    async def drain(self) -> None:
        """Wait until what is queued for the peer is small (in-process: nothing waits)."""

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


class TCPComm(Comm):
    """TCP connection on a non-blocking socket: framing, batching, HMAC handshake.

    It drives the socket itself (``add_reader``/``add_writer``) rather than through an
    asyncio transport, for the two things bulk data needs and Python 3.11's transport
    lacks: receiving into a buffer we choose (large frames land in their final memory,
    see ``framing``), and sending a list of memoryviews with ``sendmsg`` so nothing is
    joined or copied into a write buffer (3.11's transport copies whatever the kernel
    did not take at once, which is most of a large value).
    """

    def __init__(
        self,
        sock: socket.socket,
        local_address: str | None,
        secret: bytes | None,
        ref_type: type,
        max_frame_bytes: int | None = None,
        on_open: Callable[["TCPComm"], None] | None = None,
        accepting: bool = False,
        channel: str = "main",
    ) -> None:
        Comm.__init__(self)
        self.local_address = local_address
        self.channel = channel
        self._role, self._peer_role = (ROLE_ACCEPT, ROLE_CONNECT) if accepting else (ROLE_CONNECT, ROLE_ACCEPT)
        self._secret = secret
        self._ref_type = ref_type
        self.max_frame_bytes = max_frame_bytes or UNLIMITED
        self.peer_max_frame_bytes = UNLIMITED
        self._on_open = on_open
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        # Until the peer proves itself: one frame of at most 4 KiB, and no more than a
        # few KB of our memory (a big staging buffer comes with authentication).
        self._decoder = FrameDecoder(MAX_HANDSHAKE_BYTES, max_frames=1, stage_bytes=2 * MAX_HANDSHAKE_BYTES)
        self._lowat = 1
        self._phase = "hello"  # hello -> proof -> open
        self._nonce = os.urandom(16)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._peer_nonce = b""
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._writer = _SocketWriter(sock, self._loop, self._write_failed, WRITE_STALL_TIMEOUT)
        # Signs of life, for the heartbeat (core/liveness.py): loop times of the last
        # bytes read and the last message written.
        self.last_received = self.last_sent = self._loop.time()

    def start(self) -> None:
        """Begin the handshake (the socket is connected): TLS first for ``tls://``."""
        sock = self._sock
        assert sock is not None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._handshake_timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_expired)
        if isinstance(sock, ssl.SSLSocket):
            self._tls_step()
        else:
            self._say_hello()

    def _tls_step(self) -> None:
        """Drive the TLS handshake on the non-blocking socket, one step per readiness."""
        sock = self._sock
        if sock is None or self.closed:
            return
        assert isinstance(sock, ssl.SSLSocket)
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.add_reader(self._fd, self._tls_step)
            return
        except ssl.SSLWantWriteError:
            self._loop.add_writer(self._fd, self._tls_step)
            return
        except (ssl.SSLError, OSError) as e:
            err = AuthenticationError(f"TLS handshake with {self._peername()} failed: {e}")
            logger.warning("%s", err)
            self.close(err)
            return
        self._say_hello()

    def _say_hello(self) -> None:
        self._loop.add_reader(self._fd, self._read_ready)
        hello = {"v": PROTOCOL_VERSION, "nonce": self._nonce, "address": self.local_address,
                 "max_frame": self.max_frame_bytes, "channel": self.channel}
        self._write_frames([msgpack.packb(hello)])

    def _handshake_expired(self) -> None:
        if self._phase != "open" and not self.closed:
            logger.warning("closing connection from %s: no handshake within %s s",
                           self._peername(), HANDSHAKE_TIMEOUT)
            self.close(CommClosedError("handshake timed out"))

    # receiving ---------------------------------------------------------------
    def _read_ready(self) -> None:
        sock, decoder = self._sock, self._decoder
        # A bounded number of reads per wake-up: one busy peer must not starve the loop.
        # TLS hands out one record (16 KiB) per read: allow more of them per wake-up.
        for _ in range(256 if self._tls else 16):
            if sock is None or self.closed:
                return
            buf = decoder.get_buffer()
            try:
                n = sock.recv_into(buf)
            except _WOULD_BLOCK:
                return
            except OSError as e:
                self._lost(e)
                return
            finally:
                size = len(buf)
                buf.release()
            if n == 0:
                self._lost(None)
                return
            self.last_received = self._loop.time()
            decoder.buffer_updated(n)
            try:
                while not self.closed:
                    frames = decoder.next_message()
                    if frames is None:
                        break
                    self._on_frames(frames)
            except Exception as e:  # malformed input: drop this peer, keep serving others
                logger.warning("closing connection from %s: %s", self.peer_address or self._peername(), e)
                self.close(e)
                return
            if self._tls:
                # A TLS read yields one record (16 KiB) however much has arrived, and
                # decrypted bytes can wait inside the TLS object with nothing on the
                # socket to wake us: read on until it says it wants more.
                continue
            if self._lowat != 1 or decoder.large_remaining:
                self._set_lowat(sock, decoder.large_remaining)
            if n < size:  # the socket is drained: another read would only raise EAGAIN
                return
        else:
            if self._tls and sock is not None and not self.closed and sock.pending():  # type: ignore[attr-defined]
                # Out of turns with decrypted bytes held inside TLS: no socket event
                # will announce them, so come back on the next loop turn.
                self._loop.call_soon(self._read_ready)

    def _set_lowat(self, sock: socket.socket, remaining: int) -> None:
        """While a large frame streams in, wake only for a worthwhile amount of it."""
        lowat = min(remaining, RCVLOWAT_BYTES) or 1
        if lowat != self._lowat and _HAS_RCVLOWAT and not self.closed:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
                self._lowat = lowat
            except OSError:
                pass

    def _lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        if self._decoder.in_message:
            logger.warning("connection from %s closed in the middle of a frame",
                           self.peer_address or self._peername())
        self._shutdown(abort=True)
        self._closed(CommClosedError(f"connection to {self.peer_address} lost" + (f": {exc}" if exc else "")))

    def _write_failed(self, exc: BaseException) -> None:
        if not self.closed:
            logger.warning("closing connection to %s: %s", self.peer_address or self._peername(), exc)
        self._lost(exc)

    @property
    def peer_ip(self) -> str | None:
        """The IP this connection comes from, as the network sees it."""
        try:
            return str(self._sock.getpeername()[0]) if self._sock is not None else None
        except OSError:
            return None

    def _peername(self) -> str:
        try:
            return str(self._sock.getpeername()) if self._sock is not None else "?"
        except OSError:
            return "?"

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
            peer_max = msg.get("max_frame", UNLIMITED)
            if type(peer_max) is not int or peer_max < MAX_HANDSHAKE_BYTES:
                raise ValueError("malformed handshake max_frame")
            channel = msg.get("channel", "main")
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r} in handshake")
            if self._role == ROLE_ACCEPT:
                self.channel = channel  # the dialling side chose what this connection is for
            self._peer_nonce = nonce
            self.peer_address = address
            self.peer_max_frame_bytes = peer_max
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
            self._decoder.max_frame_bytes = self.max_frame_bytes
            self._decoder.max_frames = MAX_FRAMES
            self._decoder.grow_stage(STAGE_BYTES)
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
        self.last_sent = self._loop.time()
        lengths = [memoryview(f).nbytes for f in frames]
        header = encode_header(lengths)
        self._writer.write([header, *frames], len(header) + sum(lengths))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or self._phase != "open" or not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        try:
            frames = pack_frames(batch, self._ref_type)
            self._check_sizes(frames)
        except Exception:
            # Something in the batch cannot go (a bug put an unencodable value in a
            # message, or a value is larger than the peer accepts): send the rest,
            # fail or log the culprits.
            frames = None
            good = []
            for m in batch:
                try:
                    self._check_sizes(pack_frames([m], self._ref_type), m)
                    good.append(m)
                except Exception as e:
                    logger.error("dropping a message that cannot be sent %r: %s",
                                 m[:2] if isinstance(m, (list, tuple)) else m, e)
                    if self.on_unencodable is not None:
                        self.on_unencodable(m, e)
            if good:
                frames = pack_frames(good, self._ref_type)
        if frames is not None:
            self._write_frames(frames)

    def _check_sizes(self, frames: list, msg: Any = None) -> None:
        limit = self.peer_max_frame_bytes
        if limit >= UNLIMITED:
            return
        for frame in frames:
            size = memoryview(frame).nbytes
            if size > limit:
                what = f" ({msg[1]!r})" if isinstance(msg, (list, tuple)) and len(msg) > 1 else ""
                raise FrameTooLargeError(
                    f"a message{what} to {self.peer_address} holds a frame of {size} bytes; the peer "
                    f"accepts at most {limit} (its max_frame_bytes, set by ACTORRT_MAX_FRAME_BYTES)")

    async def drain(self) -> None:
        """Wait until what is queued for this peer is below the high-water mark."""
        await self._writer.drain()

    def close(self, reason: BaseException | None = None) -> None:
        if self._sock is not None and not self.closed:
            if self._outbox and self._phase == "open":
                self._flush()
            self._shutdown(abort=False)
        self._closed(reason or CommClosedError(f"connection to {self.peer_address} closed"))

    def _shutdown(self, abort: bool) -> None:
        """Stop reading; close the socket now, or once what was written has gone."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._loop.remove_reader(self._fd)
        self._writer.close_when_sent(abort)

    @property
    def buffered_bytes(self) -> int:
        return self._writer.buffered


def _chunk(queue: collections.deque, limit: int) -> list[memoryview]:
    """The first buffers of ``queue``, at most ``limit`` bytes and IOV_MAX buffers."""
    out: list[memoryview] = []
    for view in queue:
        if view.nbytes >= limit:
            out.append(view[:limit])
            break
        out.append(view)
        limit -= view.nbytes
        if len(out) == IOV_MAX:
            break
    return out


class FrameTooLargeError(SerializationError):
    """A message holds a frame larger than its receiver accepts (``max_frame_bytes``)."""


class _SocketWriter:
    """Writes lists of buffers to a non-blocking socket without joining them.

    Buffers are queued as memoryviews and handed to ``sendmsg`` as they are, so a large
    value is sent from its own memory (the sender holds no copy of it). Above
    ``HIGH_WATER`` queued bytes, :meth:`drain` waits; a peer that takes nothing for
    ``stall_timeout`` seconds while we have data for it has stopped reading, and the
    connection is dropped (``on_error``) rather than kept growing.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop,
                 on_error: Callable[[BaseException], None], stall_timeout: float) -> None:
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._loop = loop
        self._on_error = on_error
        self._stall_timeout = stall_timeout
        self._queue: collections.deque[memoryview] = collections.deque()
        self.buffered = 0
        self._waiting = False  # registered for writability
        self._drainers: list[asyncio.Future[None]] = []
        self._progress = 0  # bytes sent in all: the stall watchdog compares it
        self._watchdog: asyncio.TimerHandle | None = None
        self._close_after = False

    def write(self, buffers: list, total: int) -> None:
        """Queue ``buffers`` (``total`` bytes in all) and send what the socket takes now."""
        if self._sock is None:
            return
        if not self._queue and total <= SMALL_WRITE_BYTES:
            # The common case, a batch of small messages: one join and one send, as
            # cheap as a transport's write (a round trip costs ~10 µs less than sendmsg
            # of views here).
            data = b"".join(buffers)
            try:
                n = self._sock.send(data)
            except _WOULD_BLOCK:
                n = 0
            except OSError as e:
                self._fail(e)
                return
            self._progress += n
            if n == len(data):
                return
            buffers = [memoryview(data)[n:]]
        for b in buffers:
            view = b if type(b) is memoryview else memoryview(b)
            if view.nbytes:
                self._queue.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
                self.buffered += view.nbytes
        if not self._waiting:
            self._send()

    def _send(self) -> None:
        sock, queue = self._sock, self._queue
        while queue and sock is not None:
            try:
                if self._tls:
                    # TLS has no sendmsg. A write that would block is retried later with
                    # the very same bytes, as OpenSSL requires (the head stays unchanged).
                    n = sock.send(queue[0][:SEND_CHUNK_BYTES])
                else:
                    n = sock.sendmsg(_chunk(queue, SEND_CHUNK_BYTES))
            except _WOULD_BLOCK:
                break
            except OSError as e:
                self._fail(e)
                return
            self._progress += n
            self.buffered -= n
            while n:
                head = queue[0]
                if n >= head.nbytes:
                    n -= head.nbytes
                    queue.popleft()
                else:
                    queue[0] = head[n:]
                    n = 0
        if queue:
            if not self._waiting:
                self._waiting = True
                self._loop.add_writer(self._fd, self._send)
                self._arm_watchdog()
            return
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._fd)
        if self._close_after:
            self._close_socket()
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        if self.buffered <= LOW_WATER or self._sock is None:
            drainers, self._drainers = self._drainers, []
            for fut in drainers:
                if not fut.done():
                    fut.set_result(None)

    async def drain(self) -> None:
        if self.buffered <= HIGH_WATER or self._sock is None:
            return
        fut = self._loop.create_future()
        self._drainers.append(fut)
        await fut

    def _arm_watchdog(self) -> None:
        if self._stall_timeout <= 0 or self._watchdog is not None:
            return
        self._watchdog = self._loop.call_later(self._stall_timeout, self._check_stall, self._progress)

    def _check_stall(self, seen: int) -> None:
        self._watchdog = None
        if not self._queue or self._sock is None:
            return
        if self._progress == seen:
            self._fail(CommClosedError(
                f"peer stopped reading: {self.buffered} bytes unsent for {self._stall_timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._stall_timeout, self._check_stall, self._progress)

    def _fail(self, exc: BaseException) -> None:
        self._close_socket()
        self._on_error(exc)

    def close_when_sent(self, abort: bool) -> None:
        if abort or not self._queue:
            self._close_socket()
        else:  # flush what the peer was already sent, as a transport's close() would
            self._close_after = True
            self._arm_watchdog()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if sock is None:
            return
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._fd)
        self._queue.clear()
        self.buffered = 0
        sock.close()
        self._wake_drainers()


def _reach_hint(host: str) -> str:
    """How to fix an address that cannot work from another machine."""
    if is_wildcard(host):
        return (f" ({host} is a wildcard to listen on, not an address to dial: use the host's own IP, "
                "or start it with --contact-address)")
    if is_loopback(host):
        return (f" ({host} is loopback, reachable only on its own machine: start that host with --host "
                "set to an address the others can reach, or leave --host out)")
    return ""


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
                 ref_type: type, max_frame_bytes: int | None = None,
                 shortcut: bool = True, contact_address: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.requested = address
        self.contact_address = contact_address
        self.ssl_context = ssl_context  # for tls:// (core/security.py)
        self.address = address
        self.on_comm = on_comm
        self.secret = secret
        self.ref_type = ref_type
        self.max_frame_bytes = max_frame_bytes
        self.shortcut = shortcut
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Accepted connections; those still in the handshake belong to nobody else.
        self._accepted: weakref.WeakSet[TCPComm] = weakref.WeakSet()
        self._pending: dict[TCPComm, None] = {}  # still in the handshake, oldest first
        self._tls = False  # set by start(): the scheme listened on, whatever is advertised
        self._dropped_handshakes = 0

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
            if scheme == "tls" and self.ssl_context is None:
                raise ValueError(f"cannot listen on {self.requested}: tls:// needs a Security with "
                                 "tls_ca_file, tls_cert and tls_key")
            self._tls = scheme == "tls"
            self._sock = listening_socket(host, port)
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)
            # What peers dial: never a wildcard (see core/addresses.py).
            self.address = advertised(host, self._sock.getsockname()[1], self.contact_address, scheme)
        _local_listeners[self.address] = self

    def _accept_ready(self) -> None:
        for _ in range(64):  # a burst of connections must not hold the loop
            if self._sock is None:
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: log, keep listening
                logger.warning("accept on %s failed: %s", self.address, e)
                return
            conn.setblocking(False)
            if self._tls:
                assert self.ssl_context is not None
                conn = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            comm = TCPComm(conn, self.address, self.secret, self.ref_type, self.max_frame_bytes,
                           on_open=self.on_comm, accepting=True)
            self._accepted.add(comm)
            self._pending[comm] = None
            comm.ready.add_done_callback(functools.partial(self._handshake_over, comm))
            comm.start()
            self._drop_oldest_handshakes()

    def _handshake_over(self, comm: TCPComm, _: Any) -> None:
        self._pending.pop(comm, None)

    def _drop_oldest_handshakes(self) -> None:
        """Strangers that connect and say nothing cannot crowd out real peers: past
        MAX_PENDING_HANDSHAKES unproven connections, the oldest are closed."""
        while len(self._pending) > MAX_PENDING_HANDSHAKES:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest, None)
            self._dropped_handshakes += 1
            if self._dropped_handshakes in (1, 10, 100) or self._dropped_handshakes % 1000 == 0:
                logger.warning("%d connections to %s closed unauthenticated: more than %d waited in the "
                               "handshake at once", self._dropped_handshakes, self.address, MAX_PENDING_HANDSHAKES)
            oldest.close(CommClosedError("too many connections waiting in the handshake"))

    def accept_inproc(self, client_address: str | None) -> InprocComm:
        theirs, ours = inproc_pair(client_address, self.address)
        self.on_comm(ours)
        return theirs

    async def stop(self) -> None:
        if _local_listeners.get(self.address) is self:
            del _local_listeners[self.address]
        sock, self._sock = self._sock, None
        if sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for comm in list(self._accepted):
            if not comm.ready.done():  # opened ones are closed by their host
                comm.close(CommClosedError(f"listener {self.address} stopped during the handshake"))


def listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` (port 0: any free one)."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # (on Windows SO_REUSEADDR lets another process steal the port)
            # A restarted server may rebind while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list:
    """Addresses for ``host:port``: an IP literal at once, a name through the loop's resolver.

    (The resolver runs in the loop's executor thread; asking it for an IP literal
    would start that thread for nothing, as asyncio's own connect avoids too.)
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def _connected_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    infos = await _resolve(loop, host, port)
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
        except BaseException:  # cancelled: do not leak the socket
            sock.close()
            raise
    raise error or OSError(f"cannot resolve {host!r}")


# Listeners of this process, by address: a host connecting to one of these on the
# same loop gets an in-process pair and skips the socket and serialization.
_local_listeners: dict[str, Listener] = {}


async def connect(address: str, *, local_address: str | None, secret: bytes | None,
                  ref_type: type, timeout: float = 10.0,
                  max_frame_bytes: int | None = None, shortcut: bool = True,
                  on_messages: OnMessages | None = None, channel: str = "main",
                  ssl_context: ssl.SSLContext | None = None) -> Comm:
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
    if scheme == "tls" and ssl_context is None:
        raise ValueError(f"cannot connect to {address}: tls:// needs a Security with tls_ca_file, tls_cert "
                         "and tls_key (Client(security=...), --tls-ca-file/--tls-cert/--tls-key)")
    host, port = split_host_port(rest)
    deadline = loop.time() + timeout
    delay = 0.01

    async def attempt() -> TCPComm:
        sock = await _connected_socket(loop, host, port)
        if scheme == "tls":
            assert ssl_context is not None
            sock = ssl_context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        comm = TCPComm(sock, local_address, secret, ref_type, max_frame_bytes, channel=channel)
        comm.on_messages = on_messages
        comm.start()
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
                raise CommClosedError(f"could not connect to {address} within {timeout}s: {e}"
                                      f"{_reach_hint(host)}") from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
