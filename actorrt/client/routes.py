"""A thread's routes to the hosts it calls: whether a call may take the thread's own
connection to that host (core/thread_channel.py), where the thread reads its replies
itself while it waits.

One client's actor calls (client/actor_calls.py) and coordination calls
(coordination/_proxy.py) share them: one channel per thread and host. A thread's
second call to a host has the loop open its channel; from then on its calls there take
it while nothing the thread sent that host another way may still be on its way:

* an ask sent another way and not yet answered (:class:`Tally`);
* a tell sent another way (it has no answer): an ask sent the same way and answered
  since shows it was handled (a host handles one connection's messages in order).

Then every call the thread makes there takes the channel, so they arrive in order.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from .. import runtime
from ..core.thread_channel import ThreadChannel
from ..utils import PerObject

if TYPE_CHECKING:
    from .client import Client

logger = logging.getLogger("actorrt.client")


class Tally:
    """How many of one thread's asks to one host went another way than its channel,
    and how many of those are answered. Each count has one writer (the thread; the
    loop, which settles them), so neither needs a lock."""

    __slots__ = ("sent", "answered")

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0


class Route:
    """One thread's calls to one host: may they take the thread's own connection?"""

    __slots__ = ("channel", "opening", "calls", "elsewhere", "tells_elsewhere", "__weakref__")

    def __init__(self) -> None:
        self.channel: ThreadChannel | None = None
        self.opening = False  # the loop is opening the channel
        self.calls = 0        # made so far (the channel is opened for a second one)
        self.elsewhere = Tally()     # asks sent another way
        self.tells_elsewhere = False  # a tell sent another way, not yet shown handled

    def channel_open(self) -> ThreadChannel | None:
        """The channel, if it is open and nothing sent another way may be on its way."""
        channel = self.channel
        if channel is None or channel.closed or self.tells_elsewhere \
                or self.elsewhere.answered != self.elsewhere.sent:
            return None
        return channel

    def __del__(self) -> None:  # the thread ended (its thread-local routes go with it)
        if self.channel is not None:
            self.channel.release()


class _ByAddress(threading.local):
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}


class Routes:
    """One client's routes, per thread and host."""

    def __init__(self, client: "Client") -> None:
        self.host = client.host
        self.loop = client.loop
        self._local = _ByAddress()
        self._tasks: set[asyncio.Task] = set()

    def route(self, address: str, call: bool = True) -> Route | None:
        """This thread's route to ``address``; None where a thread may not have a
        connection of its own (this host, in-process, TLS). ``call``: count a call
        (a tell is not one: it never waits, and opens no channel)."""
        routes = self._local.routes
        route = routes.get(address)
        if route is None:
            comm = self.host.comm_to(address)
            if address == self.host.address or not address.startswith("tcp://") \
                    or (comm is not None and not comm.threads_may_send):  # (in-process, TLS)
                return None
            route = routes[address] = Route()
        elif route.channel is not None and route.channel.closed:
            route.channel, route.opening = None, False  # (opened again if still wanted)
        if call:
            route.calls += 1
        return route

    def known(self, address: str) -> Route | None:
        """This thread's route to ``address`` if it has one (nothing counted or made)."""
        return self._local.routes.get(address)

    def open_if_wanted(self, route: Route | None, address: str) -> None:
        """Ask the loop to open this thread's channel for its second call to a host.
        (After that call is sent: a hand-off to the loop pending would make it wait.)"""
        if route is None or route.calls < 2 or route.channel is not None or route.opening \
                or self.host.status != "running":
            return
        route.opening = True
        try:
            runtime.post(self.loop, self._open, weakref.ref(route), address, threading.get_ident())
        except RuntimeError:
            pass  # the loop is closed: so is the client

    def _open(self, route_ref: "weakref.ref[Route]", address: str, owner: int) -> None:
        task = self.loop.create_task(self._open_async(route_ref, address, owner))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_async(self, route_ref: "weakref.ref[Route]", address: str, owner: int) -> None:
        try:
            channel = await self.host.open_thread_channel(address, owner,
                                                          functools.partial(runtime.post, self.loop))
        except Exception as e:  # (calls go the shared way, as before)
            logger.debug("no connection of its own for thread %s to %s: %s", owner, address, e)
            return
        route = route_ref()
        if route is None:  # the thread ended meanwhile
            channel.release()
            return
        route.channel = channel

    def __repr__(self) -> str:
        return f"<Routes {self.host.address}>"


#: ``routes_of(client)``: the client's routes, made on first use.
routes_of: "PerObject[Client, Routes]" = PerObject(Routes)
