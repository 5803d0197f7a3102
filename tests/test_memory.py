"""Memory limits on a running cluster: results spill past the target and come back
transparently (for tasks, peers and gather), spill files go with their keys, and a
worker's memory shows in ``scheduler_info()``.

In-process workers keep the managed target only (their process is shared, so its
size says nothing about one of them); pausing, which goes by the process's size,
is tested with worker processes in test_memory_processes.py.
"""
from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager


from actorrt import wait
from actorrt.testing import cluster as in_process_cluster
from actorrt.testing import poll_for

import numpy as np  # (a test dependency: a missing one fails, never skips)

MB = 2**20


@asynccontextmanager
async def cluster(tmp_path, n_workers=1, memory_limit=10 * MB):
    """``n_workers`` in-process workers with ``memory_limit`` each, spilling under
    ``tmp_path``, and an asynchronous client."""
    async with in_process_cluster(n_workers, memory_limit=memory_limit, local_directory=str(tmp_path),
                               dashboard_address=None) as (client, lc):
        yield client, [lc.workers[name][1] for name in sorted(lc.workers, key=int)]


def block(i, mb=1):
    rng = np.random.default_rng(i)
    return rng.random(mb * MB // 8)


def total(*arrays):
    return float(sum(a.sum() for a in arrays))


def spilled_files(worker):
    return sorted(os.listdir(worker.data.directory))


def test_results_past_the_target_spill_and_tasks_read_them_back(tmp_path):
    async def main():
        async with cluster(tmp_path, memory_limit=10 * MB) as (client, [worker]):
            parts = client.map(block, range(12))  # 12 MiB of results under a 6 MiB target
            await wait(parts)
            assert worker.data.fast_bytes <= 6 * MB
            assert len(worker.data.slow) >= 6 and len(spilled_files(worker)) == len(worker.data.slow)
            got = await client.submit(total, *parts)
            assert got == sum(block(i).sum() for i in range(12))
            values = await client.gather(parts)  # gather: spilled ones are sent from their files
            for i, v in enumerate(values):
                assert v.tobytes() == block(i).tobytes()
    asyncio.run(main())


def test_a_peer_fetches_a_spilled_value_from_its_file(tmp_path):
    async def main():
        async with cluster(tmp_path, n_workers=2, memory_limit=4 * MB) as (client, (a, b)):
            parts = client.map(block, range(6), workers=[a.address])
            await wait(parts)
            spilled = [(i, p) for i, p in enumerate(parts) if a.data.is_spilled(p.key)]
            assert spilled
            before = a.data.unspill_count
            doubled = [client.submit(np.multiply, p, 2, workers=[b.address]) for _, p in spilled]
            for (i, _), d in zip(spilled, await client.gather(doubled)):
                assert d.tobytes() == (block(i) * 2).tobytes()
            # the holder sent the files' bytes: nothing came back into its memory for it
            assert a.data.unspill_count == before
            assert all(a.data.is_spilled(p.key) for _, p in spilled)
    asyncio.run(main())


def test_released_keys_take_their_spill_files_and_closing_takes_the_directory(tmp_path):
    async def main():
        async with cluster(tmp_path, memory_limit=4 * MB) as (client, [worker]):
            parts = client.map(block, range(8))
            await wait(parts)
            directory = worker.data.directory
            assert spilled_files(worker)
            del parts
            await poll_for(lambda: len(worker.data) == 0)
            assert os.listdir(directory) == []
        assert not os.path.exists(directory)
    asyncio.run(main())


def test_scheduler_info_shows_managed_spilled_and_the_limit(tmp_path):
    async def main():
        async with cluster(tmp_path, memory_limit=8 * MB) as (client, [worker]):
            parts = client.map(block, range(10))
            await wait(parts)

            async def memory():
                info = await client.scheduler_info()
                return info["workers"][worker.address]["memory"]
            await poll_for_async(lambda m: m["spilled"] > 0 and m["rss"] is not None, memory)
            m = await memory()
            assert m["limit"] == 8 * MB
            assert m["managed"] + m["spilled"] == 10 * MB
            assert m["spilled"] == worker.data.slow_bytes and m["paused"] is False
            assert m["spilled_disk"] >= m["spilled"]  # the files: the values' bytes and a header each
            info = (await client.scheduler_info())["workers"][worker.address]
            assert info["metrics"]["spilled_bytes"] == {"memory": m["spilled"], "disk": m["spilled_disk"]}
            assert m["rss"] > 0 and m["unmanaged"] >= 0
    asyncio.run(main())


async def poll_for_async(ok, get, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await get()
        if ok(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, f"still {value}"
        await asyncio.sleep(0.02)


def test_without_a_limit_nothing_spills(tmp_path):
    async def main():
        async with cluster(tmp_path, memory_limit=None) as (client, [worker]):
            await wait(client.map(block, range(4)))
            assert worker.data.directory is None and not worker.data.slow
    asyncio.run(main())


def test_an_actor_is_never_spilled(tmp_path):
    class Holder:
        def __init__(self):
            self.data = block(0)

        def size(self):
            return self.data.nbytes

    async def main():
        async with cluster(tmp_path, memory_limit=2 * MB) as (client, [worker]):
            actor = await client.submit(Holder, actor=True)
            await wait(client.map(block, range(4)))
            assert await actor.size() == MB
            assert not any(worker.data.is_spilled(k) for k in worker.user_actors)
    asyncio.run(main())
