"""Trust across machines: a peer's identity is the connection it registered on."""
from __future__ import annotations

import asyncio

import pytest

from actorrt import Client, LocalCluster
from actorrt.core import ActorRef, Host
from actorrt.core.errors import BadMessageError


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
