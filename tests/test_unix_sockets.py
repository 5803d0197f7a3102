"""The same-machine shortcut (core/unix.py): ``tcp://`` between two processes of one
machine goes over a Unix socket in the abstract namespace; across machines (network
namespaces here) it stays TCP; ``ACTORRT_UNIX_SOCKETS=0`` turns it off."""
from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from actorrt import Client
from actorrt.core import Actor, Host
from actorrt.core import unix

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="the shortcut uses Linux's abstract Unix socket namespace"),
]

SECRET = b"unix-secret"


class Echo(Actor):
    def handle_echo(self, x):
        return x


def run(coro, timeout=10.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


def family_to(host: Host, address: str) -> socket.AddressFamily:
    """The socket family of ``host``'s connection to ``address``."""
    return host._comms[address]._sock.family


async def echo_over_sockets(secret=SECRET):
    """A listener and a dialler in this process that do not take the in-process
    shortcut: the family of the dialler's connection, and an echo through it."""
    async with Host("tcp://127.0.0.1:0", secret=secret, shortcut=False) as server, \
            Host(None, secret=secret, shortcut=False) as peer:
        ref = server.spawn(Echo())
        answer = await peer.ask(ref, "echo", x=[1, "two"])
        return family_to(peer, server.address), answer


# --- the names ---------------------------------------------------------------------------

def test_a_tcp_address_names_an_abstract_socket_and_nothing_else_does():
    name = unix.socket_name("tcp://127.0.0.1:8786")
    assert name == b"\0actorrt:tcp://127.0.0.1:8786"
    assert unix.socket_name("tls://127.0.0.1:8786") is None  # TLS is asked for by name
    assert unix.socket_name("inproc://1/x") is None
    long_host = "h" * 120
    assert unix.socket_name(f"tcp://{long_host}:1") is None  # past sockaddr_un's 108 bytes: TCP


def test_nobody_listening_means_tcp():
    assert unix.connect("tcp://127.0.0.1:1") is None


# --- one process, real sockets -------------------------------------------------------------

def test_a_dial_to_a_listener_on_this_machine_goes_over_a_unix_socket():
    family, answer = run(echo_over_sockets())
    assert family == socket.AF_UNIX
    assert answer == [1, "two"]


def test_the_secret_is_proven_over_the_unix_socket_too(caplog):
    """A wrong secret is refused exactly as over TCP: the shortcut trusts nothing more."""
    async def main():
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as server, \
                Host(None, secret=b"wrong", shortcut=False) as peer:
            probe = unix.connect(server.address)
            assert probe is not None, "no Unix listener"
            probe.close()
            with pytest.raises(Exception, match="authentication|secret"):
                await peer.connect(server.address, timeout=1.0)
    run(main())


def test_switched_off_dials_and_listens_over_tcp(monkeypatch):
    monkeypatch.setenv(unix.SWITCH, "0")
    family, answer = run(echo_over_sockets())
    assert family == socket.AF_INET
    assert answer == [1, "two"]
    assert unix.listen("tcp://127.0.0.1:9") is None


def test_a_listener_switched_off_is_reached_over_tcp(monkeypatch):
    """The dialler has the shortcut on, the listener opened no Unix socket: TCP."""
    async def main():
        monkeypatch.setenv(unix.SWITCH, "0")
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as server:
            monkeypatch.setenv(unix.SWITCH, "1")
            async with Host(None, secret=SECRET, shortcut=False) as peer:
                ref = server.spawn(Echo())
                assert await peer.ask(ref, "echo", x=3) == 3
                assert family_to(peer, server.address) == socket.AF_INET
    run(main())


def test_a_malformed_switch_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(unix.SWITCH, "maybe")
    with pytest.raises(ValueError, match="ACTORRT_UNIX_SOCKETS must be 1 or 0"):
        unix.connect("tcp://127.0.0.1:1")


def test_a_name_taken_leaves_the_tcp_listener_serving_alone():
    async def main():
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as server:
            assert unix.listen(server.address) is None  # (the server holds the name)
            async with Host(None, secret=SECRET, shortcut=False) as peer:
                ref = server.spawn(Echo())
                assert await peer.ask(ref, "echo", x=4) == 4
    run(main())


def test_a_stopped_listener_frees_its_name():
    async def main():
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as server:
            address = server.address
        return address
    address = run(main())
    assert unix.connect(address) is None
    sock = unix.listen(address)  # (the name can be bound again: nothing was left behind)
    assert sock is not None
    sock.close()


def test_a_unix_peer_comes_from_the_ip_it_dialled():
    """The scheduler refuses a worker registering an address others cannot reach by
    comparing it with where the worker connects from (test_cluster_trust.py). Over TCP
    a peer of this machine that dials one of its IPs comes from that IP; over the Unix
    socket it is given the same one: the host of the address it dialled."""
    async def main():
        async with Host("tcp://0.0.0.0:0", secret=SECRET, shortcut=False) as server, \
                Host(None, secret=SECRET, shortcut=False) as peer:
            await peer.connect(server.address)
            [accepted] = [c for c in server._all_comms]
            return server.address, accepted._sock.family, accepted.peer_ip
    address, family, ip = run(main())
    assert family == socket.AF_UNIX
    assert address == f"tcp://{ip}:{address.rsplit(':', 1)[1]}"


# --- a cluster of processes ------------------------------------------------------------------

def scheduler_family(dask_worker):
    return int(family_to(dask_worker.host, dask_worker.scheduler.address))


def peer_families(dask_worker):
    return sorted(int(c._sock.family) for c in dask_worker.host._all_comms if getattr(c, "_sock", None))


def test_a_local_cluster_talks_over_unix_sockets_and_moves_data_through_them():
    with Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert set(client.run(scheduler_family).values()) == {int(socket.AF_UNIX)}
        # A value made on one worker and used on the other crosses worker to worker.
        big = client.submit(bytes, 3 << 20, workers=[workers[0]], pure=False)
        assert client.submit(len, big, workers=[workers[1]]).result() == 3 << 20
        assert all(set(fams) == {int(socket.AF_UNIX)} for fams in client.run(peer_families).values())


def test_a_local_cluster_switched_off_talks_tcp(monkeypatch):
    monkeypatch.setenv(unix.SWITCH, "0")  # (inherited by the worker processes)
    with Client(n_workers=1, threads_per_worker=1, processes=True) as client:
        assert set(client.run(scheduler_family).values()) == {int(socket.AF_INET)}
        assert client.submit(sum, [1, 2]).result() == 3


# --- another machine -------------------------------------------------------------------------

def test_another_network_namespace_cannot_see_the_name():
    """Two machines never share a name: an abstract socket belongs to its network
    namespace, so a process in another one finds nothing there and dials TCP."""
    import netns
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"needs network namespaces: {reason}")

    async def main(lan):
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as server:
            probe = unix.connect(server.address)
            assert probe is not None  # here: found
            probe.close()
            other = lan.add("other")
            probe = other.run([sys.executable, "-c",
                               "import sys; from actorrt.core import unix; "
                               "print('found' if unix.connect(sys.argv[1]) else 'none')", server.address])
            out = await asyncio.get_running_loop().run_in_executor(None, probe.wait_for_line,
                                                                  lambda line: line in ("found", "none"), 30)
            return out[1]
    with netns.Lan() as lan:
        assert run(main(lan), timeout=40) == "none"

