"""Chaos: worker processes SIGKILLed every couple of seconds while tasks run, an actor
is called and locks are held. Nothing may come back wrong, go missing or hang."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from actorrt import ActorDeadError, Client, LocalCluster, Lock
from actorrt.testing import wait_until


def square(x):
    return x * x


def locked_square(x):
    with Lock("chaos-lock"):  # a killed holder's lease must be released, or this hangs
        return x * x


class Tally:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


def _kill_and_replace(cluster, client, stop, killed, rng):
    """Every ~1.5 s: SIGKILL a random worker, wait for the scheduler to drop it, scale back."""
    while not stop.wait(1.5):
        workers = client.scheduler_info()["workers"]
        if len(workers) < 2:
            continue
        address = rng.choice(sorted(workers))
        os.kill(workers[address]["pid"], signal.SIGKILL)
        killed.append(address)
        wait_until(lambda: address not in client.scheduler_info()["workers"], timeout=30)
        cluster.scale(3)  # (its nanny restarts it anyway: then there is nothing to scale)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_killed_under_load_lose_and_corrupt_nothing():
    rng = random.Random(7)
    # allowed_failures: this test kills a dozen workers, so a task may well be on four of
    # them; by default (3, as dask) it would then fail as KilledWorker, correctly. The
    # claim here is that nothing comes back wrong, goes missing or hangs.
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                      validate=True, allowed_failures=100) as cluster, \
            Client(cluster) as client:
        tally = client.submit(Tally, actor=True, max_restarts=-1).result(timeout=30)
        stop, killed = threading.Event(), []
        killer = threading.Thread(target=_kill_and_replace, args=(cluster, client, stop, killed, rng))
        killer.start()
        calls_ok = calls_dead = 0
        try:
            deadline = time.monotonic() + 20
            batch = 0
            while time.monotonic() < deadline or len(killed) < 3 or batch < 3:
                xs = range(batch * 1000, (batch + 1) * 1000)
                futures = client.map(square, xs, pure=False)
                locked = client.map(locked_square, range(batch * 20, (batch + 1) * 20), pure=False)
                for _ in range(20):
                    try:
                        tally.add(1).result(timeout=60)
                        calls_ok += 1
                    except ActorDeadError:  # in flight when its worker died: may or may not have run
                        calls_dead += 1
                assert client.gather(futures) == [x * x for x in xs]
                assert client.gather(locked) == [x * x for x in range(batch * 20, (batch + 1) * 20)]
                batch += 1
        finally:
            stop.set()
            killer.join(60)
        assert len(killed) >= 3 and batch >= 3
        assert calls_ok > 0
        assert tally.add(0).result(timeout=60) >= 0  # the actor still answers after all this
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 3, timeout=60)
        assert client.gather(client.map(square, range(100), pure=False)) == [x * x for x in range(100)]
