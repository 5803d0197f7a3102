"""Trust across machines: a peer's identity is the connection it registered on."""
from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from actorrt import Client, LocalCluster
from actorrt.core import ActorRef, Host
from actorrt.core.errors import BadMessageError
from actorrt.testing import poll_for


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as lc:
        with Client(lc) as client:
            yield lc, client


async def _impostor(secret: bytes, claims: str, target: str) -> Host:
    """A host that knows the secret and names itself ``claims`` to ``target``."""
    host = Host("tcp://127.0.0.1:0", secret=secret, name="impostor", shortcut=False)
    await host.start()
    host.address = claims
    await host.connect(target)
    return host


def test_a_connection_naming_a_worker_neither_speaks_for_it_nor_removes_it(cluster):
    lc, client = cluster
    victim = sorted(client.scheduler_info()["workers"])[0]

    async def main():
        host = await _impostor(lc.secret, victim, lc.scheduler_address)
        try:
            scheduler = ActorRef(lc.scheduler_address, "scheduler")
            with pytest.raises(BadMessageError, match=f"only worker {victim!r} may send this"):
                await host.ask(scheduler, "tasks_done", worker=victim, finished=[], erred=[])
            with pytest.raises(BadMessageError, match="already registered from another connection"):
                await host.ask(scheduler, "register_worker", address=victim, nthreads=1)
        finally:
            await host.close()  # closing the impostor's connection is not the worker's death
    asyncio.run(main())
    assert victim in client.scheduler_info()["workers"]
    assert client.submit(inc, 1, workers=[victim], pure=False).result(timeout=10) == 2


def test_a_connection_naming_the_scheduler_does_not_stop_a_worker(cluster):
    lc, client = cluster
    victim = sorted(client.scheduler_info()["workers"])[1]

    async def main():
        host = await _impostor(lc.secret, lc.scheduler_address, victim)
        with pytest.raises(BadMessageError, match="only the scheduler"):
            await host.ask(ActorRef(victim, "worker"), "close")
        await host.close()
    asyncio.run(main())
    assert client.submit(inc, 2, workers=[victim], pure=False).result(timeout=10) == 3
    assert victim in client.scheduler_info()["workers"]


def test_a_graph_naming_another_client_is_refused(cluster):
    lc, client = cluster

    async def main():
        host = await _impostor(lc.secret, "tcp://127.0.0.1:1", lc.scheduler_address)
        try:
            with pytest.raises(BadMessageError, match=f"only client {client.id!r} may send this"):
                await host.ask(ActorRef(lc.scheduler_address, "scheduler"), "update_graph",
                               client=client.id, tasks=[], wanted=[])
        finally:
            await host.close()
    asyncio.run(main())
    assert client.submit(inc, 3, pure=False).result(timeout=10) == 4  # the real client goes on


# --- addresses peers can reach ----------------------------------------------------------

def test_a_worker_advertising_loopback_from_another_address_is_refused_by_name():
    from actorrt.core.addresses import is_loopback, primary_ip
    from actorrt.deploy.local import start_scheduler
    ip = primary_ip()
    if is_loopback(ip):
        pytest.skip("this machine has no address but loopback to connect from")
    secret = "s" * 32

    async def main():
        host, scheduler = await start_scheduler("tcp://0.0.0.0:0", secret=secret.encode())
        env = {**os.environ, "ACTORRT_SECRET": secret}
        cmd = [sys.executable, "-m", "actorrt.deploy.cli", "worker", host.address]
        try:
            assert host.address.startswith(f"tcp://{ip}:")
            refused = await asyncio.create_subprocess_exec(*cmd, "--host", "127.0.0.1", env=env,
                                                           stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(refused.communicate(), 30)
            assert refused.returncode == 1
            assert re.search(rf"registers as tcp://127\.0\.0\.1:\d+, which other machines cannot reach, "
                             rf"but it connects from {re.escape(ip)}: start it with --host {re.escape(ip)}",
                             err.decode()), err.decode()
            assert not scheduler.worker_info
            # Without --host it listens toward the scheduler, and is welcome.
            joined = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE)
            try:
                line = (await asyncio.wait_for(joined.stdout.readline(), 30)).decode()
                assert line.startswith(f"actorrt worker at tcp://{ip}:"), line
                await poll_for(lambda: len(scheduler.worker_info) == 1, timeout=30)
                assert next(iter(scheduler.worker_info)).startswith(f"tcp://{ip}:")
            finally:
                joined.terminate()
                await asyncio.wait_for(joined.wait(), 30)
        finally:
            await host.close()
    asyncio.run(main())


# --- what cannot be encoded is refused where it is written ----------------------------

BAD = "part-\udcff.csv"  # a lone surrogate: os.fsdecode of a non-UTF-8 file name


@pytest.mark.parametrize("call", [
    lambda c: c.submit(inc, 1, key=BAD),
    lambda c: c.map(inc, [1, 2], key=BAD),
    lambda c: c.map(inc, [1, 2], key=["fine", BAD]),
    lambda c: c.get({BAD: (inc, 1)}, BAD),
    lambda c: c.scatter({BAD: 1}),
], ids=["submit", "map-prefix", "map-keys", "get", "scatter"])
def test_a_key_that_cannot_be_sent_is_refused_at_the_call(cluster, call):
    lc, client = cluster
    with pytest.raises(ValueError, match=r"cannot be sent: it is not valid UTF-8 \(surrogates not allowed"):
        call(client)
    assert client.submit(inc, 10, pure=False).result(timeout=10) == 11  # nothing else was lost


def test_a_function_whose_name_cannot_be_sent_still_runs(cluster):
    lc, client = cluster

    def f(x):
        return x * 2
    f.__name__ = BAD
    assert client.submit(f, 21, pure=False).result(timeout=10) == 42
