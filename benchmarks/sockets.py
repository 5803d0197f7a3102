"""The socket a floor is measured on: the kind actorrt uses between two processes of
this machine (a Unix socket, core/unix.py; TCP where that is off), so that a row's
distance from its floor is neither flattered nor hidden by the transport.

An address here is text a child process can be handed: ``unix:NAME`` (an abstract
Unix socket name, without its leading NUL) or ``tcp:127.0.0.1:PORT``.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
from typing import Any, Callable

_names = itertools.count()


def same_machine_kind() -> str:
    """``"unix"`` or ``"tcp"``: what actorrt dials between two processes here."""
    from actorrt.core import unix
    return "unix" if unix.enabled() else "tcp"


def _fresh_name() -> str:
    return f"actorrt-floor-{os.getpid()}-{next(_names)}"


def _unix_path(address: str) -> str:
    return "\0" + address[len("unix:"):]


def _tcp_target(address: str) -> tuple[str, int]:
    host, port = address[len("tcp:"):].rsplit(":", 1)
    return host, int(port)


def listener(kind: str | None = None) -> tuple[socket.socket, str]:
    """A blocking socket listening for one peer, and the address to hand it."""
    kind = kind or same_machine_kind()
    if kind == "unix":
        name = _fresh_name()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + name)
        sock.listen(1)
        return sock, f"unix:{name}"
    sock = socket.create_server(("127.0.0.1", 0))
    return sock, f"tcp:127.0.0.1:{sock.getsockname()[1]}"


def connect(address: str, timeout: float = 10.0) -> socket.socket:
    """A blocking socket connected to ``address`` (TCP_NODELAY on TCP, as actorrt's)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(_unix_path(address))
        return sock
    sock = socket.create_connection(_tcp_target(address), timeout=timeout)
    nodelay(sock)
    return sock


def nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(factory: Callable[[], asyncio.Protocol]) -> tuple[Any, str]:
    """An asyncio server of ``factory``'s protocols on this machine's kind of socket:
    (the server, its address)."""
    loop = asyncio.get_running_loop()
    if same_machine_kind() == "unix":
        name = _fresh_name()
        server = await loop.create_unix_server(factory, path="\0" + name)
        return server, f"unix:{name}"
    server = await loop.create_server(factory, "127.0.0.1", 0)
    return server, f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def open_connection(factory: Callable[[], asyncio.Protocol], address: str) -> Any:
    """``(transport, protocol)`` of an asyncio connection to ``address``."""
    loop = asyncio.get_running_loop()
    if address.startswith("unix:"):
        return await loop.create_unix_connection(factory, path=_unix_path(address))
    host, port = _tcp_target(address)
    return await loop.create_connection(factory, host, port)
