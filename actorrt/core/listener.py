"""Listening and connecting: the entry points that make Comms.

A ``Listener`` accepts on a socket (TCP or TLS, and for ``tcp://`` a Unix socket
beside it for this machine's peers, see ``unix.py``) or registers an in-process address,
and bounds what strangers may cost before they prove the secret (``MAX_PENDING_HANDSHAKES``
at once, each for at most ``tcp.HANDSHAKE_TIMEOUT``). ``connect`` dials an address.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
from typing import Any, Callable

from .addresses import advertised, is_loopback, is_wildcard
from .comm import (
    Comm,
    InprocComm,
    OnMessages,
    inproc_pair,
    parse_address,
    split_host_port,
)
from .errors import AuthenticationError, CommClosedError
from . import unix
from .tcp import TCPComm

logger = logging.getLogger("actorrt.comm")

# Connections allowed in the handshake at once; past that the oldest is closed.
MAX_PENDING_HANDSHAKES = 256


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
        self._unix_sock: socket.socket | None = None  # the same-machine shortcut (unix.py)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Accepted connections still in the handshake, oldest first: they belong to
        # nobody else yet (an open one is its host's).
        self._pending: dict[TCPComm, None] = {}
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
            if self.secret is None and not is_loopback(host):
                raise ValueError(
                    f"refusing to listen on {host!r} without a cluster secret: set ACTORRT_SECRET "
                    "or pass secret=, or listen on 127.0.0.1"
                )
            if scheme == "tls" and self.ssl_context is None:
                raise ValueError(f"cannot listen on {self.requested}: tls:// needs a Security with "
                                 "tls_ca_file, tls_cert and tls_key")
            if scheme == "tcp" and self.ssl_context is not None:  # (never plain text by mistake)
                raise ValueError(f"cannot listen on {self.requested}: TLS is configured (security=), "
                                 "so listen on tls:// instead of tcp://")
            self._tls = scheme == "tls"
            self._sock = listening_socket(host, port)
            self._loop.add_reader(self._sock.fileno(), self._accept_ready, self._sock)
            # What peers dial: never a wildcard (see core/addresses.py).
            self.address = advertised(host, self._sock.getsockname()[1], self.contact_address, scheme)
            self._unix_sock = unix.listen(self.address) if not self._tls else None
            if self._unix_sock is not None:
                self._loop.add_reader(self._unix_sock.fileno(), self._accept_ready, self._unix_sock)
        _local_listeners[self.address] = self

    def _accept_ready(self, sock: socket.socket) -> None:
        for _ in range(64):  # a burst of connections must not hold the loop
            if self._sock is None:
                return
            try:
                conn, _ = sock.accept()
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
        for sock in (self._sock, self._unix_sock):
            if sock is not None:
                assert self._loop is not None
                self._loop.remove_reader(sock.fileno())
                sock.close()
        self._sock = self._unix_sock = None
        for comm in list(self._pending):  # (opened ones are closed by their host)
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


async def _connected_socket(loop: asyncio.AbstractEventLoop, address: str, host: str,
                            port: int) -> socket.socket:
    """A socket connected to ``address``: on this machine a Unix one (unix.py), else TCP."""
    sock = unix.connect(address)
    if sock is not None:
        return sock
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
    if scheme == "tcp" and ssl_context is not None:  # (never plain text by mistake)
        raise ValueError(f"cannot connect to {address}: TLS is configured (security=), so dial the "
                         "tls:// address instead of tcp://")
    host, port = split_host_port(rest)
    deadline = loop.time() + timeout
    delay = 0.01

    async def attempt() -> TCPComm:
        sock = await _connected_socket(loop, address, host, port)
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


def _reach_hint(host: str) -> str:
    """How to fix an address that cannot work from another machine."""
    if is_wildcard(host):
        return (f" ({host} is a wildcard to listen on, not an address to dial: use the host's own IP, "
                "or start it with --contact-address)")
    if is_loopback(host):
        return (f" ({host} is loopback, reachable only on its own machine: start that host with --host "
                "set to an address the others can reach, or leave --host out)")
    return ""
