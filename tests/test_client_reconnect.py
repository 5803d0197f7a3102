"""A client that loses its scheduler reconnects when it comes back (a blip, a restart
at the same address) and says so; one that does not come back in time is closed."""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from actorrt import Client
from actorrt.deploy.local import start_scheduler
from actorrt.testing import poll_for
from actorrt.worker import start_worker

SECRET = b"reconnect-test-secret"


def inc(x):
    return x + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_client_reconnects_to_a_scheduler_restarted_at_the_same_address(caplog):
    async def main():
        address = f"tcp://127.0.0.1:{free_port()}"
        host, _ = await start_scheduler(address, secret=SECRET)
        whost, _ = await start_worker(address, address="tcp://127.0.0.1:0", secret=SECRET, death_timeout=30)
        client = await Client(address, asynchronous=True, secret=SECRET, timeout=20)
        try:
            assert await client.submit(inc, 1) == 2
            pending = client.submit(asyncio.sleep, 30, pure=False)
            with caplog.at_level(logging.WARNING, logger="actorrt"):
                await host.close()
                await poll_for(lambda: client.status == "connecting", timeout=10)
                with pytest.raises(RuntimeError, match="lost connection to the scheduler"):
                    await pending
                with pytest.raises(RuntimeError, match="reconnecting"):
                    client.submit(inc, 2)
                host, _ = await start_scheduler(address, secret=SECRET)
                await poll_for(lambda: client.status == "running", timeout=15)
            assert "lost its scheduler" in caplog.text and "reconnected to its scheduler" in caplog.text
            # The worker rejoined too: work runs again, keys submitted before included.
            await poll_for(lambda: bool(host.actors["scheduler"].worker_info), timeout=15)
            assert await client.submit(inc, 1) == 2
            assert await client.submit(inc, 10) == 11
        finally:
            await client.close()
            await whost.close()
            await host.close()
    asyncio.run(main())


@pytest.mark.timeout(60)
def test_a_client_whose_scheduler_does_not_come_back_closes(caplog):
    async def main():
        address = f"tcp://127.0.0.1:{free_port()}"
        host, _ = await start_scheduler(address, secret=SECRET)
        client = await Client(address, asynchronous=True, secret=SECRET, timeout=1)
        with caplog.at_level(logging.WARNING, logger="actorrt"):
            await host.close()
            await poll_for(lambda: client.status == "closed", timeout=10)
        assert "could not reconnect to its scheduler" in caplog.text
        with pytest.raises(RuntimeError, match="closed"):
            client.submit(inc, 1)
    asyncio.run(main())
