"""The face shared by everything lock-like: acquire/release and context managers.

A lease is held by one proxy object (its token) on one host (its address). The
actor releases a host's leases when that host's connection closes -- a worker
process died or a client disconnected -- and at no other time: there is no
wall-clock lease that could expire under a slow but living holder
(dask/distributed#2362, #7371, #4057).
"""
from __future__ import annotations

from typing import Any

from ._proxy import Proxy, check_lease_timeout


class LeaseProxy(Proxy):
    """acquire(blocking, timeout) -> bool, release(), ``with`` and ``async with``."""

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        """Take a lease; True once held, False if ``timeout`` passed (or, with
        ``blocking=False``, if it could not be had at once)."""
        timeout = check_lease_timeout(blocking, timeout)
        return self._call("acquire", blocking=True, timeout=timeout, **self._holder())

    def release(self) -> Any:
        """Give back a lease this object holds; RuntimeError if it holds none."""
        return self._call("release", **self._holder())

    def _holder(self) -> dict:
        """The fields that say which lease: this object's token (and names)."""
        return {"token": self._token}

    def __enter__(self) -> "LeaseProxy":
        if self.client.asynchronous:
            raise TypeError(f"use 'async with' for a {type(self).__name__} of an asynchronous client")
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> "LeaseProxy":
        if not self.client.asynchronous:
            raise TypeError(f"use 'with' for a {type(self).__name__} of a synchronous client")
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.release()
