"""Failure detection: a peer that goes silent without closing is noticed and dropped."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from actorrt import Client, wait
from actorrt.core import Actor, Host
from actorrt.core.errors import CommClosedError
from actorrt.core.liveness import heartbeat_settings


class Echo(Actor):
    def handle_echo(self, x):
        return x


def test_quiet_connections_are_kept_alive_and_silent_ones_closed():
    async def main():
        async with Host("tcp://127.0.0.1:0", shortcut=False, heartbeat_interval=0.1, heartbeat_timeout=0.5) as a, \
                Host("tcp://127.0.0.1:0", shortcut=False, heartbeat_interval=0.1, heartbeat_timeout=0.5) as b:
            ref = b.spawn(Echo())
            assert await a.ask(ref, "echo", x=1) == 1
            comm = a.comm_to(b.address)
            lost = asyncio.Event()
            a.peer_lost_callbacks.append(lambda address, c: lost.set())
            # Idle for several timeouts: the pings keep both ends alive.
            deadline = asyncio.get_running_loop().time() + 1.5
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                assert not comm.closed
            # b freezes (reads and writes nothing, closes nothing): a notices.
            peer = b.comm_to(a.address)
            b.loop.remove_reader(peer._fd)
            b._heartbeat.stop()
            t0 = asyncio.get_running_loop().time()
            await asyncio.wait_for(lost.wait(), 3)
            assert asyncio.get_running_loop().time() - t0 < 0.5 + 0.5  # within the timeout + a tick
            with pytest.raises(CommClosedError):
                comm.send(["x", "echo", 0, {}])
    asyncio.run(main())


@pytest.mark.parametrize("interval,timeout,error", [
    ("abc", None, "ACTORRT_HEARTBEAT_INTERVAL must be a positive number of seconds, got 'abc'"),
    ("-1", None, "must be a positive number"),
    ("2", "1", "must be longer than its interval"),
])
def test_bad_heartbeat_settings_are_named(monkeypatch, interval, timeout, error):
    monkeypatch.setenv("ACTORRT_HEARTBEAT_INTERVAL", interval)
    if timeout:
        monkeypatch.setenv("ACTORRT_HEARTBEAT_TIMEOUT", timeout)
    with pytest.raises(ValueError, match=error):
        heartbeat_settings()


def slow_inc(x, delay):
    time.sleep(delay)
    return x + 1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP freezes a process only on POSIX")
def test_a_frozen_worker_is_declared_lost_and_its_work_redone(monkeypatch):
    # SIGSTOP: the process reads and sends nothing, yet its kernel keeps the
    # connections open (no FIN, no RST) -- a silent partition, as a pulled cable.
    monkeypatch.setenv("ACTORRT_HEARTBEAT_TIMEOUT", "2")
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        a, b = sorted(c.scheduler_info()["workers"])
        pid = c.scheduler_info()["workers"][a]["pid"]
        held = c.submit(slow_inc, 1, 0, workers=[a], allow_other_workers=True, pure=False)
        wait(held)
        running = c.map(slow_inc, range(4), [0.2] * 4, workers=[a], allow_other_workers=True, pure=False)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            while a in c.scheduler_info()["workers"]:
                assert time.monotonic() - t0 < 2 + 2, "the frozen worker was not declared lost in time"
                time.sleep(0.05)
            assert held.result(timeout=20) == 2          # recomputed elsewhere
            assert c.gather(running) == [1, 2, 3, 4]
        finally:
            os.kill(pid, signal.SIGCONT)
        # Thawed, it finds its scheduler gone (the connection was closed) and exits.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if _is_zombie(pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the thawed worker did not exit")
        assert c.submit(slow_inc, 5, 0, pure=False).result(timeout=10) == 6


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True


def inc(x):
    return x + 1


def test_a_worker_that_loses_its_scheduler_rejoins_empty():
    from actorrt.deploy.local import start_scheduler
    from actorrt.testing import poll_for
    from actorrt.worker import start_worker
    secret = b"rejoin"

    async def main():
        host, scheduler = await start_scheduler("tcp://127.0.0.1:0", secret=secret)
        whost, worker = await start_worker(host.address, secret=secret, death_timeout=10)
        try:
            worker.data["stale"] = 1  # a result the scheduler is about to give up on
            host.comm_to(whost.address).close()  # a blip: the scheduler drops the worker
            assert whost.address not in scheduler.worker_info
            await poll_for(lambda: whost.address in scheduler.worker_info, timeout=10)
            assert "stale" not in worker.data  # it came back empty: nothing stale to hand in
            async with Client(host.address, secret=secret, asynchronous=True, set_as_default=False) as c:
                assert await c.submit(inc, 1, pure=False) == 2
        finally:
            await whost.close()
            await host.close()
    asyncio.run(main())


def test_a_worker_whose_scheduler_stays_away_stops_after_its_death_timeout():
    from actorrt.deploy.local import start_scheduler
    from actorrt.worker import start_worker
    secret = b"gone"

    async def main():
        host, _ = await start_scheduler("tcp://127.0.0.1:0", secret=secret)
        whost, worker = await start_worker(host.address, secret=secret, death_timeout=0.5)
        try:
            await host.close()
            t0 = asyncio.get_running_loop().time()
            await asyncio.wait_for(worker.closed.wait(), 10)
            assert asyncio.get_running_loop().time() - t0 >= 0.4  # it tried for its death timeout first
        finally:
            await whost.close()
    asyncio.run(main())
