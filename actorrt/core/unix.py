"""The same-machine shortcut: a ``tcp://`` connection between two processes of one
machine goes over a Unix socket instead of TCP.

A small message costs the kernel about half as much on a Unix socket as on loopback
TCP (no TCP state machine, no acknowledgements, one copy): a ping-pong between two
processes here takes ~33 µs against ~66 µs. Every call, reply and task report between
a machine's workers, its scheduler and its clients pays that once per message, so it
is the largest single cost left on a small round trip (``benchmarks/floors.py``).

How peers find it, without a word on the wire:

* A listener on ``tcp://`` also listens on a Unix socket in Linux's *abstract*
  namespace, named after the address it advertises (:func:`socket_name`). Abstract
  names are not files: nothing to clean up, gone when the socket closes.
* A dialler of a ``tcp://`` address tries that name first (:func:`connect`) and falls
  back to TCP if nobody listens there.

The abstract namespace belongs to a *network* namespace, so a name is reachable
exactly where the TCP address is local: two machines, or two ``ip netns`` of one,
never see each other's names and talk TCP. What runs over the socket is unchanged:
the same framing and the same handshake proving the cluster's secret (comm.py), so
the shortcut trusts nothing TCP would not. ``tls://`` never takes it (its certificates
are checked per connection, and it was asked for by name).

``ACTORRT_UNIX_SOCKETS=0`` turns it off in a process: its listeners open no Unix
socket and its dials go over TCP. Off Linux it is off.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys

from .env import env_switch

logger = logging.getLogger("actorrt.comm")

SWITCH = "ACTORRT_UNIX_SOCKETS"
PREFIX = b"\0actorrt:"
# sockaddr_un's path holds 108 bytes; an address whose name would not fit goes by TCP.
MAX_NAME = 107


def enabled() -> bool:
    """Whether this process listens and dials through Unix sockets (read at each use,
    so a test or a benchmark may turn it off for the hosts it starts)."""
    return sys.platform.startswith("linux") and env_switch(SWITCH, True)


def socket_name(address: str) -> bytes | None:
    """The abstract Unix socket name of the listener advertising ``address``; None for
    anything but a ``tcp://`` address that fits."""
    if not address.startswith("tcp://"):
        return None
    name = PREFIX + address.encode()
    return name if len(name) <= MAX_NAME else None


def listen(address: str, backlog: int = 1024) -> socket.socket | None:
    """A non-blocking Unix socket listening beside the TCP listener at ``address``;
    None if the shortcut is off or the name is taken (the TCP listener serves alone)."""
    name = socket_name(address) if enabled() else None
    if name is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        # Taken: another listener of this network namespace advertises the same
        # address (it could only be a process that inherited a closed listener's
        # socket). Dials then reach that one, which answers or drops them; TCP users
        # are unaffected.
        sock.close()
        logger.debug("no Unix socket beside %s: %s", address, e)
        return None
    return sock


def connect(address: str) -> socket.socket | None:
    """A non-blocking Unix socket connected to the listener advertising ``address`` on
    this machine; None if there is none (or the shortcut is off): dial TCP then.

    A Unix connect does not wait on the network: it is accepted into the listener's
    backlog at once, or refused at once, so it is done here without the loop."""
    name = socket_name(address) if enabled() else None
    if name is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(name)
    except OSError as e:
        sock.close()
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
            logger.debug("Unix socket for %s: %s; dialling TCP", address, e)
        return None
    return sock
