"""The TCP (and TLS) transport: a non-blocking socket driven by the loop's selector.

Messages sent in one loop turn go out as one framed batch (layout in ``framing``);
large buffers are sent from their own memory in slices and received in place; a peer
that stops reading is dropped after ``WRITE_STALL_TIMEOUT``. The handshake (proving
the cluster's secret before any pickle is read) is ``comm``'s contract.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import socket
import ssl
import threading
from typing import Any, Callable, NoReturn

import msgpack

from .comm import (CHANNELS, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, ROLE_ACCEPT, ROLE_CONNECT, Comm, _mac,
                   host_of)
from .errors import AuthenticationError, CommClosedError, SerializationError
from .framing import MAX_FRAMES, STAGE_BYTES, UNLIMITED, FrameDecoder, encode_header
from .serialize import pack_frames, unpack_frames
from .spin import SocketPoll

logger = logging.getLogger("actorrt.comm")

# An accepted socket that has not proven itself by then is closed, so idle or hostile
# peers cannot hold connections open forever.
HANDSHAKE_TIMEOUT = 10.0
# A peer that accepts no byte for this long while we have data for it is dropped.
WRITE_STALL_TIMEOUT = 60.0
# A peer is dropped when more than OUTBOX_LIMIT bytes of messages made for it (encoded
# here, not views of values its sender holds anyway) wait unsent and that backlog has
# not shrunk OUTBOX_GRACE seconds later: it is not reading its replies, and they would
# pile up in this process without bound. (One large message on its way to a reader
# shrinks as it goes, and is never a reason.)
OUTBOX_LIMIT = 256 << 20
OUTBOX_GRACE = 3.0
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



class Traffic:
    """Bytes this process's TCP connections sent and received: a worker's figures
    (worker/activity.py). Two integer additions per socket call, no lock: each
    connection's I/O runs on its loop, and a figure off by a racing add is harmless."""

    __slots__ = ("sent", "received")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


traffic = Traffic()


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
        # SO_RCVLOWAT is TCP's: a Unix socket's poll ignores it (core/unix.py).
        self._lowat_works = _HAS_RCVLOWAT and sock.family != socket.AF_UNIX
        self._writer = _SocketWriter(sock, self._loop, self._write_failed, WRITE_STALL_TIMEOUT)
        self._in_hand = False  # the loop is writing a batch it took from the outbox
        # A thread's own connection (thread_channel.py), accepted here: its one thread
        # waits for the answers to what it just sent, so they are written as soon as
        # what was read is handled, not a loop turn later (_read_ready).
        self._answers_now = False
        self.threads_may_send = not self._tls  # (an SSL object: one thread at a time)
        self._poll = SocketPoll(self._fd)  # a thread's, the reading lent to it
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
        if not self._answers_now:
            self._read_batch()
            return
        # A thread's own connection: what handling this read sends goes out at its end,
        # in one write, and no flush is left queued for a later turn of the loop (its
        # thread waits for exactly these answers).
        held = self._flush_scheduled
        self._flush_scheduled = True  # (sends meanwhile queue no flush of their own)
        try:
            self._read_batch()
        finally:
            if not held:
                self._flush()

    def _read_batch(self) -> None:
        sock, decoder = self._sock, self._decoder
        # A bounded number of reads per wake-up: one busy peer must not starve the loop.
        # TLS hands out one record (16 KiB) per read: allow more of them per wake-up.
        for _ in range(256 if self._tls else 16):
            if sock is None or self.closed:
                return
            try:
                n, size = self._take_in(sock)
            except _WOULD_BLOCK:
                return
            except OSError as e:
                self._lost(e)
                return
            if n == 0:
                self._lost(None)
                return
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
            self._track_large_frame(sock)
            if n < size:  # the socket is drained: another read would only raise EAGAIN
                return
        else:
            if self._tls and sock is not None and not self.closed and sock.pending():  # type: ignore[attr-defined]
                # Out of turns with decrypted bytes held inside TLS: no socket event
                # will announce them, so come back on the next loop turn.
                self._loop.call_soon(self._read_ready)

    # A thread reading for itself (core/thread_channel.py) --------------------------
    def fileno(self) -> int:
        """The socket's file descriptor (a thread the reading is lent to polls it)."""
        return self._fd

    def lend_reading(self) -> None:
        """Loop side: stop reading; a thread reads with :meth:`read_messages` until
        :meth:`take_reading_back`. (Bytes already read stay in the decoder, so either
        reader goes on where the other stopped.)"""
        if not self.closed:
            self._loop.remove_reader(self._fd)

    def take_reading_back(self) -> None:
        """Loop side: read on the loop again."""
        if not self.closed:
            self._loop.add_reader(self._fd, self._read_ready)

    def wait_readable(self, timeout: float) -> bool:
        """From the one thread the reading is lent to: whether bytes (or the end) came
        within ``timeout`` seconds, asleep meanwhile. Nothing is read: interrupted here
        (Ctrl-C), the connection is as it was."""
        return self._sock is None or self.closed or self._poll.sleep(timeout)

    def readable_within(self, budget: float) -> bool:
        """The same, polling without sleeping for up to ``budget`` seconds (core/spin.py)."""
        return self._sock is None or self.closed or self._poll.spin(budget)

    def read_messages(self, tell_loop: Callable[..., None]) -> list:
        """From the one thread the reading is lent to, once :meth:`wait_readable`: the
        messages that arrived (empty if only part of one did). CommClosedError if the
        connection is lost or the peer sends garbage; the loop is told
        (``tell_loop(fn, *args)`` has it call ``fn``), and closes it as it would have."""
        sock, decoder = self._sock, self._decoder
        if sock is None or self.closed:
            raise CommClosedError(f"connection to {self.peer_address} is closed")
        try:
            n, _ = self._take_in(sock)
        except _WOULD_BLOCK:
            return []
        except OSError as e:
            self._lost_on_thread(e, tell_loop)
        if n == 0:
            self._lost_on_thread(None, tell_loop)
        messages: list = []
        try:
            while (frames := decoder.next_message()) is not None:
                messages.extend(unpack_frames(frames, self._ref_type))
        except Exception as e:  # malformed input: as _read_ready would, drop this peer
            logger.warning("closing connection from %s: %s", self.peer_address or self._peername(), e)
            tell_loop(self.close, e)
            raise CommClosedError(f"connection to {self.peer_address} closed: {e}") from None
        self._track_large_frame(sock)
        return messages

    def _lost_on_thread(self, exc: BaseException | None, tell_loop: Callable[..., None]) -> NoReturn:
        tell_loop(self._lost, exc)
        raise CommClosedError(f"connection to {self.peer_address} lost" + (f": {exc}" if exc else ""))

    def _take_in(self, sock: socket.socket) -> tuple[int, int]:
        """One read into the decoder: (bytes read, room there was); 0 bytes read is the
        peer's end. Raises what ``recv_into`` raises (would block, lost)."""
        buf = self._decoder.get_buffer()
        try:
            n = sock.recv_into(buf)
        finally:
            size = len(buf)
            buf.release()
        if n:
            self.last_received = self._loop.time()
            traffic.received += n
            self._decoder.buffer_updated(n)
        return n, size

    def _track_large_frame(self, sock: socket.socket) -> None:
        if (self._lowat != 1 or self._decoder.large_remaining) and self._lowat_works:
            self._set_lowat(sock, self._decoder.large_remaining)

    def _set_lowat(self, sock: socket.socket, remaining: int) -> None:
        """While a large frame streams in, wake only for a worthwhile amount of it."""
        lowat = min(remaining, RCVLOWAT_BYTES) or 1
        if lowat != self._lowat and not self.closed:
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
        # A peer that closed its end (it exited; a cluster closing) is a lost connection
        # however it is noticed: no louder for a write than for a read finding the end.
        if not self.closed and not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            logger.warning("closing connection to %s: %s", self.peer_address or self._peername(), exc)
        self._lost(exc)

    @property
    def peer_ip(self) -> str | None:
        """The IP this connection comes from, as the network sees it. A Unix socket's
        peer is on this machine and dialled the listener's advertised address
        (core/unix.py): over TCP it would have come from that very IP (a connection to
        one of this machine's addresses leaves from it), so that is its IP here."""
        if self._sock is None:
            return None
        if self._sock.family == socket.AF_UNIX:
            listener = self.local_address if self._role == ROLE_ACCEPT else self.peer_address
            return (host_of(listener) if listener else None) or "127.0.0.1"
        try:
            return str(self._sock.getpeername()[0])
        except OSError:
            return None

    def _peername(self) -> str:
        if self._sock is not None and self._sock.family == socket.AF_UNIX:
            # (Its name says nothing: empty on the accepting side, ours on the other.)
            return f"{self.peer_address or 'a process on this machine'} (Unix socket)"
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
                self._answers_now = channel == "thread"
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
        # The header and the envelope are made for this send; the frames after them are
        # the buffers of values their senders hold anyway.
        self._writer.write([header, *frames], len(header) + sum(lengths), owned=2)

    def _flush(self) -> None:
        self._flush_started()
        if self.closed or self._phase != "open" or not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        self._in_hand = True  # (a sending thread waits its turn behind this batch)
        try:
            self._write_batch(batch)
        finally:
            self._in_hand = False

    def _write_batch(self, batch: list) -> None:
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

    def flush_now(self) -> None:
        if self._flush_scheduled:
            self._flush()  # (the turn's scheduled flush then finds nothing)

    # send_from_thread (Comm's) is these two: encoded on the calling thread; written under
    # the writer's lock, only when nothing the loop holds for this peer (its batch, its
    # queue) would go after it.
    def frame_for_thread(self, msg: Any) -> bytes | None:
        if not self.threads_may_send or self.closed or self._phase != "open":
            return None
        try:
            frames = pack_frames([msg], self._ref_type)
            self._check_sizes(frames)
        except Exception:
            return None  # (sent the usual way, it fails the usual way: on_unencodable)
        lengths = [memoryview(f).nbytes for f in frames]
        if sum(lengths) > SMALL_WRITE_BYTES:
            return None  # a large one goes in slices, from the loop
        return b"".join([encode_header(lengths), *frames])

    def write_from_thread(self, data: bytes) -> bool:
        if self.closed or self._outbox or self._in_hand:
            return False
        with self._writer.lock:
            if self.closed or self._outbox or self._in_hand or not self._writer.send_first(data):
                return False
        self.last_sent = self._loop.time()
        return True

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

    The loop does all of this. One other thread may write too (:meth:`send_first`): a
    small message with nothing queued ahead of it, sent by the thread that made it
    rather than woken onto the loop to be sent from there. ``lock`` orders the two:
    every touch of the socket's sending side and of the queue happens under it, and
    nothing else does (a failure is reported after it is released, see ``_fail``).
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop,
                 on_error: Callable[[BaseException], None], stall_timeout: float) -> None:
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._loop = loop
        self._on_error = on_error
        self._stall_timeout = stall_timeout
        self.lock = threading.Lock()
        self._queue: collections.deque[memoryview] = collections.deque()
        # Whether each queued view is of bytes made for this peer (counted in ``owned``)
        # rather than of a value its sender holds anyway (a result's buffer).
        self._owned_flags: collections.deque[bool] = collections.deque()
        self.buffered = 0
        self.owned = 0
        self._waiting = False  # registered for writability
        self._drainers: list[asyncio.Future[None]] = []
        self._progress = 0  # bytes sent in all: the stall watchdog compares it
        self._watchdog: asyncio.TimerHandle | None = None
        self._backlog_check: asyncio.TimerHandle | None = None  # while over OUTBOX_LIMIT
        self._close_after = False

    def write(self, buffers: list, total: int, owned: int | None = None) -> None:
        """Queue ``buffers`` (``total`` bytes in all) and send what the socket takes now.

        The first ``owned`` buffers (all by default) were made for this peer: unsent,
        they count against OUTBOX_LIMIT; the others are views of values held anyway."""
        with self.lock:
            error = self._write_locked(buffers, total, owned)
        if error is not None:
            self._fail(error)
            return
        if self.owned > OUTBOX_LIMIT and self._backlog_check is None and self._sock is not None:
            self._backlog_check = self._loop.call_later(OUTBOX_GRACE, self._check_backlog, self.owned)

    def _write_locked(self, buffers: list, total: int, owned: int | None) -> BaseException | None:
        if self._sock is None:
            return None
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
                return e
            self._count_sent(n)
            if n == len(data):
                return None
            buffers, owned = [memoryview(data)[n:]], None  # (joined: all of it is a copy)
        self._enqueue(buffers, owned)
        if not self._waiting:
            return self._send_locked()
        return None

    def send_first(self, data: bytes) -> bool:
        """From a thread other than the loop's, with ``lock`` held, on a plain socket (the
        caller checks: an SSL object must not write on one thread while another reads):
        send ``data`` (one small framed message) at once if nothing is queued ahead of
        it; False, and nothing done, if something is.

        What the socket does not take now, or an error, is the loop's to carry on with
        (woken for it), so the failure is met where every other one is."""
        if self._sock is None or self._queue:
            return False
        try:
            n = self._sock.send(data)
        except OSError:  # (would block, or failed: the loop's next send says which)
            n = 0
        self._count_sent(n)
        if n < len(data):
            self._enqueue([memoryview(data)[n:]], None)
            try:
                self._loop.call_soon_threadsafe(self._on_writable)
            except RuntimeError:  # the loop is closed, and this connection with it
                pass
        return True

    def _count_sent(self, n: int) -> None:
        self._progress += n
        traffic.sent += n

    def _enqueue(self, buffers: list, owned: int | None) -> None:
        queue, flags = self._queue, self._owned_flags
        for i, b in enumerate(buffers):
            view = b if type(b) is memoryview else memoryview(b)
            if view.nbytes:
                queue.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
                mine = owned is None or i < owned
                flags.append(mine)
                self.buffered += view.nbytes
                if mine:
                    self.owned += view.nbytes

    def _check_backlog(self, before: int) -> None:
        self._backlog_check = None
        if self._sock is None or self.owned <= OUTBOX_LIMIT:
            return
        if self.owned >= before:
            self._fail(CommClosedError(
                f"peer is not reading: {self.owned} bytes of messages for it wait unsent, more than "
                f"{OUTBOX_LIMIT}, and the backlog has not shrunk in {OUTBOX_GRACE:g} s; dropping the "
                f"connection"))
            return
        self._backlog_check = self._loop.call_later(OUTBOX_GRACE, self._check_backlog, self.owned)

    def _on_writable(self) -> None:
        with self.lock:
            error = self._send_locked()
        if error is not None:
            self._fail(error)

    def _send_locked(self) -> BaseException | None:
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
                return e
            self._count_sent(n)
            self.buffered -= n
            flags = self._owned_flags
            while n:
                head = queue[0]
                if n >= head.nbytes:
                    n -= head.nbytes
                    queue.popleft()
                    if flags.popleft():
                        self.owned -= head.nbytes
                else:
                    queue[0] = head[n:]
                    if flags[0]:
                        self.owned -= n
                    n = 0
        if queue:
            if not self._waiting and sock is not None:
                self._waiting = True
                self._loop.add_writer(self._fd, self._on_writable)
                self._arm_watchdog()
            return None
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._fd)
        if self._close_after:
            self._close_socket_locked()
        self._wake_drainers()
        return None

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
        """Loop side, ``lock`` not held: ``on_error`` closes the connection, and its
        callbacks may do anything (a thread waiting for the lock must not wait on them)."""
        with self.lock:
            self._close_socket_locked()
        self._on_error(exc)

    def close_when_sent(self, abort: bool) -> None:
        with self.lock:
            if abort or not self._queue:
                self._close_socket_locked()
                return
            # Flush what the peer was already sent, as a transport's close() would.
            self._close_after = True
        self._arm_watchdog()

    def _close_socket_locked(self) -> None:
        sock, self._sock = self._sock, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._backlog_check is not None:
            self._backlog_check.cancel()
            self._backlog_check = None
        if sock is None:
            return
        if self._waiting:
            self._waiting = False
            self._loop.remove_writer(self._fd)
        self._queue.clear()
        self._owned_flags.clear()
        self.buffered = self.owned = 0
        sock.close()
        self._wake_drainers()


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not allowed before authentication")


