"""tls:// connections: mutual TLS with the cluster's CA, the secret's handshake inside."""
from __future__ import annotations

import asyncio
import ssl

import numpy as np
import pytest

from actorrt import AuthenticationError, Client, LocalCluster, Security
from actorrt.core import Actor, Host, Pickled
from actorrt.core.errors import CommClosedError

from tls_certs import make_ca, make_cert

SECRET = b"tls-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d)
    other_ca = make_ca(d, "someone-else")

    def security(name, authority=ca):
        cert, key = make_cert(d, authority, name)
        return Security(tls_ca_file=str(authority[2]), tls_cert=str(cert), tls_key=str(key))
    return security, ca, other_ca


class Echo(Actor):
    def handle_echo(self, x):
        return x


def test_hosts_talk_over_tls_and_large_values_move(pki):
    security, _, _ = pki

    async def main():
        async with Host("tls://127.0.0.1:0", secret=SECRET, security=security("a"), shortcut=False) as a, \
                Host("tls://127.0.0.1:0", secret=SECRET, security=security("b"), shortcut=False) as b:
            assert a.address.startswith("tls://127.0.0.1:")
            ref = b.spawn(Echo())
            assert await a.ask(ref, "echo", x="hello") == "hello"
            big = np.arange(3 << 20, dtype=np.float64)  # 24 MB: many TLS records, both ways
            back = await a.ask(ref, "echo", x=Pickled.dumps(big))
            assert np.array_equal(back.loads(), big)
            comm = a.comm_to(b.address)
            assert isinstance(comm._sock, ssl.SSLSocket)  # encrypted, not plain TCP
            # An SSL object must not write on one thread while the loop reads on another.
            assert not comm.threads_may_send
            assert await asyncio.to_thread(comm.send_from_thread, [ref.id, "echo", 0, {"x": 1}]) is False
    asyncio.run(main())


@pytest.mark.parametrize("who", ["no-certificate", "another-ca"])
def test_a_peer_without_a_certificate_from_the_cluster_ca_is_refused(pki, who):
    security, ca, other_ca = pki

    async def main():
        async with Host("tls://127.0.0.1:0", secret=SECRET, security=security("server"), shortcut=False) as server:
            ref = server.spawn(Echo())
            if who == "no-certificate":
                with pytest.raises(ValueError, match="tls:// needs a Security"):
                    async with Host(None, secret=SECRET, shortcut=False) as stranger:
                        await stranger.ask(ref, "echo", x=1)
            else:
                async with Host(None, secret=SECRET, security=security("mallory", other_ca),
                                shortcut=False, connect_timeout=1.0) as stranger:
                    with pytest.raises((AuthenticationError, CommClosedError)):
                        await stranger.ask(ref, "echo", x=1)
            async with Host(None, secret=SECRET, security=security("friend"), shortcut=False) as friend:
                assert await friend.ask(ref, "echo", x=2) == 2  # the server goes on
    asyncio.run(main())


def test_security_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="missing: tls_key"):
        Security(tls_ca_file=__file__, tls_cert=__file__)
    with pytest.raises(ValueError, match="tls_cert: no such file"):
        Security(tls_ca_file=__file__, tls_cert=str(tmp_path / "nope.pem"), tls_key=__file__)


def inc(x):
    return x + 1


def total(a):
    return float(a.sum())


def test_a_local_cluster_of_processes_over_tls(pki):
    security, _, _ = pki
    sec = security("node")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, security=sec,
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with Client(cluster) as client:
            assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
            a, b = sorted(client.scheduler_info()["workers"])
            assert a.startswith("tls://") and b.startswith("tls://")
            x = client.submit(np.ones, 1 << 20, workers=[a], pure=False)  # 8 MB, worker to worker
            assert client.submit(total, x, workers=[b], pure=False).result(timeout=30) == 1 << 20
            assert x.result(timeout=30).sum() == 1 << 20


def test_tls_configured_but_a_tcp_address_is_refused_not_sent_in_clear(pki):
    security, _, _ = pki

    async def main():
        with pytest.raises(ValueError, match="TLS is configured.*tls://"):
            async with Host("tcp://127.0.0.1:0", secret=SECRET, security=security("a")):
                pass
        async with Host("tcp://127.0.0.1:0", secret=SECRET, shortcut=False) as plain, \
                Host(None, secret=SECRET, security=security("b"), shortcut=False) as tls:
            with pytest.raises(ValueError, match="TLS is configured.*tls://"):
                await tls.connect(plain.address)
    asyncio.run(main())
