"""Memory limits on worker processes: a worker whose process passes the pause fraction
starts no new task (the scheduler places work elsewhere) but still serves its data,
and resumes when it is back under; results spill and reload across processes
bit-identical."""
from __future__ import annotations

import sys

import pytest

from actorrt import Client, LocalCluster, wait
from actorrt.testing import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="measures worker processes through /proc (Linux)")

import numpy as np  # (a test dependency: a missing one fails, never skips)

MiB = 2**20
LIMIT = 320 * MiB


def hog_to(fraction: float, limit: int) -> int:
    """Hold memory outside any result (as a task's cache would) until this process is
    at ``fraction`` of ``limit``; the bytes held."""
    from actorrt.worker.memory import process_rss
    n = max(0, int(fraction * limit) - (process_rss() or 0))
    sys._actorrt_test_hog = b"x" * n  # b"x" * n writes every page: resident, unlike calloc
    return n


def let_go() -> None:
    sys.__dict__.pop("_actorrt_test_hog", None)


def peak_rss() -> int:
    """The most this process has ever had resident (VmHWM)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def where_am_i() -> str:
    from actorrt import get_worker
    return get_worker().address


def paused(client: Client, address: str) -> bool:
    return client.scheduler_info()["workers"][address]["memory"]["paused"]


@pytest.fixture(scope="module")
def mclient():
    with LocalCluster(2, 1, processes=True, memory_limit=LIMIT, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.mark.timeout(120)
def test_a_full_worker_pauses_serves_its_data_and_resumes(mclient):
    client = mclient
    a, b = sorted(client.scheduler_info()["workers"])
    held = client.submit(np.arange, 1000, workers=[a], pure=False)
    wait(held)
    assert client.submit(hog_to, 0.87, LIMIT, workers=[a], pure=False).result() > 0
    wait_until(lambda: paused(client, a), timeout=10)
    info = client.scheduler_info()["workers"][a]["memory"]
    assert info["rss"] > 0.8 * LIMIT and info["unmanaged"] > 0.7 * LIMIT

    # New work goes to the other worker; the paused one still serves what it holds.
    placed = client.gather(client.map(lambda i: where_am_i(), range(8), pure=False))
    assert set(placed) == {b}
    assert client.submit(lambda x: int(x.sum()), held, workers=[b]).result() == 499500
    pinned = client.submit(where_am_i, workers=[a], pure=False)  # must wait for the resume

    client.run(let_go, workers=[a])
    wait_until(lambda: not paused(client, a), timeout=10)
    assert pinned.result(timeout=10) == a


@pytest.mark.timeout(120)
def test_results_past_the_target_spill_and_move_between_processes_bit_identical(mclient):
    client = mclient
    a, b = sorted(client.scheduler_info()["workers"])
    # 48 x 8 MiB = 384 MiB on a worker whose target is 0.6 x 320 = 192 MiB
    parts = client.map(lambda i: np.random.default_rng(i).random(MiB), range(48), workers=[a], pure=False)
    wait(parts)
    wait_until(lambda: client.scheduler_info()["workers"][a]["memory"]["spilled"] > 100 * MiB, timeout=10)
    assert client.run(peak_rss, workers=[a])[a] < 1.15 * LIMIT
    sums = client.gather([client.submit(lambda x: float(x.sum()), p, workers=[b]) for p in parts])
    assert sums == [float(np.random.default_rng(i).random(MiB).sum()) for i in range(48)]
    back = client.gather(parts[:3])
    for i, x in enumerate(back):
        assert x.tobytes() == np.random.default_rng(i).random(MiB).tobytes()
    del parts, back
