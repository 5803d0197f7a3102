"""Addresses peers can reach: what a host listening on a wildcard tells others, which
interface a worker listens on, and whether an address is only reachable from here.

A listener bound to ``0.0.0.0`` accepts on every interface, but ``tcp://0.0.0.0:8786``
is no address to dial from another machine. Each host advertises one address that its
peers use to reach it (workers fetch inputs from each other directly), so that address
must be one they can route to.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import sys

WILDCARDS = ("0.0.0.0", "::", "")


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; a DNS name other than localhost is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def format_host(host: str) -> str:
    """``host`` as it stands in an address: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def interface_toward(host: str) -> str:
    """The local IP this machine uses to reach ``host`` (per its routing table).

    Connecting a UDP socket only picks a route and a source address; no packet is sent.
    """
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return "127.0.0.1"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.connect(sockaddr)
            except OSError:
                continue
            return str(probe.getsockname()[0])
    return "127.0.0.1"


def primary_ip() -> str:
    """This machine's address for a listener on a wildcard: the first IPv4 address of
    an interface other than loopback, else the host name's, else loopback."""
    for ip in _interface_ips():
        if not ipaddress.ip_address(ip).is_loopback:
            return ip
    try:
        ip = socket.gethostbyname(socket.gethostname())
        if not ipaddress.ip_address(ip).is_loopback:
            return ip
    except OSError:
        pass
    return "127.0.0.1"


def _interface_ips() -> list[str]:
    """IPv4 addresses of this machine's interfaces, in interface order (Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl
    siocgifaddr = 0x8915
    ips = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            ips.append(socket.inet_ntoa(raw[20:24]))
    return ips


def advertised(host: str, port: int, contact: str | None = None, scheme: str = "tcp") -> str:
    """The address a listener on ``host:port`` tells its peers."""
    if contact:
        return contact
    if is_wildcard(host):
        host = primary_ip()
    return f"{scheme}://{format_host(host)}:{port}"


def with_default_scheme(address: str) -> str:
    """``"127.0.0.1:8786"`` and ``"localhost:8786"`` mean ``tcp://``, as in dask: an
    ``host:port`` given without a scheme gets ``tcp://``; anything else is returned as it is."""
    if isinstance(address, str) and is_host_port(address):
        return f"tcp://{address}"
    return address  # (anything else fails where it is parsed, with the message for it)


def is_host_port(text: str) -> bool:
    """Whether ``text`` reads as ``host:port`` without a scheme (``"10.0.0.2:40123"``,
    ``"[::1]:8786"``), as opposed to a worker name or a bare host such as ``"::1"``."""
    if "://" in text:
        return False
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return False
    return host.startswith("[") and host.endswith("]") or ":" not in host


#: One ``workers=`` entry: ``host:port`` means the tcp:// address; names and hosts
#: stay as they are.
worker_entry = with_default_scheme
