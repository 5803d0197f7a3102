"""Where the dashboard listens: parsing ``dashboard_address``, the exposure rule, binding.

Nothing here imports tornado: a socket is bound with the standard library, so the
port (and the link) is known before the web application exists, and a busy port
falls back to a free one without touching the web layer.
"""
from __future__ import annotations

import errno
import logging
import socket
from typing import NamedTuple

from ..core.addresses import is_loopback
from ..core.listener import listening_socket

logger = logging.getLogger("actorrt.dashboard")

#: Like dask's default, but ``":8787"`` means the loopback interface here (see is_loopback).
DEFAULT_DASHBOARD_ADDRESS = ":8787"
LOOPBACK_HOST = "127.0.0.1"


class DashboardAddress(NamedTuple):
    host: str
    port: int


def parse_dashboard_address(address: str | int) -> DashboardAddress:
    """``":8787"``, ``"8787"``, ``8787``, ``"127.0.0.1:0"``, ``"[::1]:8787"`` -> (host, port).

    An empty host means loopback: the dashboard shows task names and worker addresses,
    so serving it to the network must be asked for by naming an interface.

    >>> parse_dashboard_address(":8787")
    DashboardAddress(host='127.0.0.1', port=8787)
    >>> parse_dashboard_address("0.0.0.0:0")
    DashboardAddress(host='0.0.0.0', port=0)
    """
    if isinstance(address, bool) or not isinstance(address, (str, int)):
        raise TypeError(f"dashboard_address must be a str like ':8787' or '127.0.0.1:0', an int "
                        f"port, or None to disable the dashboard; got {address!r}")
    text = str(address).strip()
    for scheme in ("http://", "tcp://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or LOOPBACK_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"dashboard_address {address!r}: the port must be a number from 0 to 65535 "
                         "(0 picks a free port), e.g. ':8787' or '127.0.0.1:0'")
    return DashboardAddress(host, port)


def check_exposure(where: DashboardAddress, secret_configured: bool) -> None:
    """Refuse a non-loopback dashboard on a cluster without a secret.

    A cluster without a secret listens on loopback only (docs/internals.md); its
    dashboard must not tell the network what that cluster runs.
    """
    if not is_loopback(where.host) and not secret_configured:
        raise ValueError(
            f"refusing to serve the dashboard on {where.host!r} without a cluster secret: it shows "
            "task names and worker addresses to anyone who can reach it; configure a secret "
            "(ACTORRT_SECRET or secret=) or use a loopback address such as '127.0.0.1:8787'")


def bind_socket(where: DashboardAddress) -> socket.socket:
    """A listening, non-blocking socket at ``where``; a free port if the one asked is busy.

    The fallback is silent (logged at info), as in dask: two notebooks each starting a
    cluster both get a dashboard.
    """
    try:
        return listening_socket(where.host, where.port)
    except OSError as e:
        if where.port == 0 or e.errno != errno.EADDRINUSE:
            raise
    sock = listening_socket(where.host, 0)
    logger.info("dashboard port %d on %s is busy; serving on port %d instead",
                where.port, where.host, sock.getsockname()[1])
    return sock


def link_for(sock: socket.socket, requested_host: str, fallback_host: str | None = None) -> str:
    """The URL a browser on this machine (or beside it) opens: ``http://host:port/status``.

    A wildcard bind (``0.0.0.0``) is not an address to open: the scheduler's own host
    name stands in for it.
    """
    port = sock.getsockname()[1]
    host = requested_host
    if host in ("0.0.0.0", "::"):
        host = fallback_host if fallback_host and fallback_host not in ("0.0.0.0", "::") \
            else socket.gethostname()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}/status"
