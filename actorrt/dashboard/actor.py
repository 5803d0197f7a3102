"""The Dashboard actor: owns the listening socket, the web server and the live pushes.

It lives on the scheduler's host, so it shares the scheduler's loop: it reads the
state between the scheduler's messages, never concurrently with them, and never
writes it. It stops with its host.

Nothing here imports tornado. The web layer (:mod:`.app`, ~35 ms to import) is
loaded when the first browser connects: until then the dashboard is one listening
socket and a reader on the loop, so a cluster nobody looks at starts as fast as one
without a dashboard. Connections that arrive meanwhile wait in the socket's backlog.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from ..core import Actor
from .actor_view import ActorStats, actor_rows, actors, workers_hosting
from .coordination_view import coordination
from .event_view import events_since
from .graph_view import diff, graph
from .status import status, story
from .task_view import task_info

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

logger = logging.getLogger("actorrt.dashboard")

#: How long a closing dashboard waits for browsers to answer the websocket close.
CLOSE_GRACE = 1.0


#: What a page may subscribe to (``/ws?page=...``): each gets its own data pushed.
PAGES = ("status", "task", "graph", "events", "actors", "coordination")


class Pushable(Protocol):
    """A page's websocket, as the dashboard sees it (``app.StatusSocket``).

    ``page`` and ``key`` say what it shows; ``seen`` is what it was last sent, for the
    pages pushed incrementally (graph: its nodes and edges; events: the last seq).
    """

    ws_connection: Any
    page: str
    key: str | None
    seen: dict[str, Any]

    def ready(self) -> bool: ...

    def push(self, text: str) -> None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Dashboard(Actor):
    """Serves the dashboard page, its JSON API and its websocket on ``sock``.

    It owns everything it opened (the listening socket, HTTP connections, websockets,
    the push timer): :meth:`close` ends them gracefully; stopping the actor (its host
    closing) ends them at once.
    """

    def __init__(self, scheduler: Scheduler, sock: socket.socket, link: str, *,
                 loopback_only: bool = True, interval: float = 0.5) -> None:
        self.scheduler = scheduler
        self.link = link
        self.loopback_only = loopback_only
        self.interval = interval
        self.started = time.time()
        self.sockets: set[Pushable] = set()
        self._sock: socket.socket | None = sock
        self._server: Any = None  # tornado's HTTPServer, once the first browser came
        self._timer: asyncio.TimerHandle | None = None
        self._sockets_gone: asyncio.Event | None = None
        self.actor_stats = ActorStats()
        self.push_seconds = 0.0  # the loop's time spent building and sending pushes (its cost)

    # --- lifecycle ------------------------------------------------------------
    def on_start(self) -> None:
        assert self._sock is not None
        try:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._first_connection)
        except NotImplementedError:  # a loop without readers (Windows' proactor): serve now
            self._first_connection()

    def _first_connection(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        from .app import serve  # the web layer, now that someone wants it
        self._server = serve(self, sock)

    async def close(self) -> None:
        """Stop listening, close the websockets with a goodbye, close every HTTP connection."""
        server = self._server
        if server is None:
            self.host.stop_actor(self.id)
            return
        self._stop_pushing()
        server.stop()
        self._sock = None
        if self.sockets:
            protocols = [ws.ws_connection for ws in self.sockets]
            self._sockets_gone = asyncio.Event()
            for ws in list(self.sockets):
                ws.close(1001, "the scheduler is closing")
            try:
                await asyncio.wait_for(self._sockets_gone.wait(), CLOSE_GRACE)
            except asyncio.TimeoutError:  # a browser that does not answer: hang up
                _hang_up(protocols)
        await server.close_all_connections()
        self._server = None
        self.host.stop_actor(self.id)

    def on_stop(self) -> None:
        # Closing (or the host closing without close() having run): end everything now.
        self._stop_pushing()
        self.actor_stats.close()
        sock, self._sock = self._sock, None
        server, self._server = self._server, None
        if server is None:
            if sock is not None:  # no browser ever came: only the socket to close
                with contextlib.suppress(NotImplementedError):
                    asyncio.get_running_loop().remove_reader(sock.fileno())
                sock.close()
            return
        server.stop()
        protocols = [ws.ws_connection for ws in self.sockets]
        for ws in list(self.sockets):
            ws.close(1001, "the scheduler is closing")
        _hang_up(protocols)
        for conn in list(getattr(server, "_connections", ())):  # (no public sync way)
            conn.stream.close()

    # --- reading the state --------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {**status(self.scheduler, self.started), "dashboard": {"push_seconds": self.push_seconds}}

    def story(self, key: str) -> dict[str, Any] | None:
        return story(self.scheduler, key)

    def task(self, key: str) -> dict[str, Any] | None:
        return task_info(self.scheduler, key)

    def graph(self) -> dict[str, Any]:
        return graph(self.scheduler)

    def events(self, since: int = 0) -> dict[str, Any]:
        return events_since(self.scheduler, since)

    def coordination(self) -> dict[str, Any]:
        return coordination(self.scheduler)

    def actors(self) -> dict[str, Any]:
        """The actors and their last figures; asks the workers for fresh ones (answers
        arrive for the next push or request)."""
        self.actor_stats.refresh(self.host, workers_hosting(actor_rows(self.scheduler)))
        return actors(self.scheduler, self.actor_stats)

    def allows_host(self, host_name: str) -> bool:
        """On loopback, only requests addressed to an IP or ``localhost``.

        A web page elsewhere could make a browser fetch from a DNS name it points at
        127.0.0.1 (DNS rebinding); such a request names that DNS name in its Host header.
        """
        if not self.loopback_only:
            return True
        name = host_name.strip("[]")
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    # --- pushing to websockets ------------------------------------------------------
    def socket_opened(self, ws: Pushable) -> None:
        self.sockets.add(ws)
        text = self._message_for(ws, {})
        if text is not None:
            ws.push(text)
        if self._timer is None:
            self._schedule(self.interval)

    def socket_closed(self, ws: Pushable) -> None:
        self.sockets.discard(ws)
        if not self.sockets:
            self._stop_pushing()
            self.actor_stats.close()
            if self._sockets_gone is not None:
                self._sockets_gone.set()

    def _message_for(self, ws: Pushable, cache: dict[Any, Any]) -> str | None:
        """The push for ``ws``, or None when it has nothing new. What every page of a
        kind gets is read once per round (``cache``); incremental pages get what
        changed since their last push (a skipped push is folded into the next one)."""
        page = ws.page
        if page == "graph":
            if "graph" not in cache:
                cache["graph"] = self.graph()
            change = diff(cache["graph"], ws.seen)
            if not (change["reset"] or change["nodes"] or change["removed"] or change["edges"]):
                return None
            return _encode(page, change)
        if page == "events":
            found = self.events(ws.seen.get("last", 0))
            if ws.seen and not found["events"]:
                return None
            ws.seen["last"] = found["last"]
            return _encode(page, found)
        slot = (page, ws.key)
        if slot not in cache:
            data = (self.status() if page == "status" else self.coordination() if page == "coordination"
                    else self.actors() if page == "actors" else self._task_or_missing(ws.key or ""))
            cache[slot] = _encode(page, data)
        text: str = cache[slot]
        if ws.seen.get("sent") == text:  # unchanged since its last push (a quiet page)
            return None
        ws.seen["sent"] = text
        return text

    def _task_or_missing(self, key: str) -> dict[str, Any]:
        found = self.task(key)
        return found if found is not None else {"key": key, "state": None,
                                                "error": f"the scheduler knows no task with key {key!r}"}

    def _schedule(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._push_all)

    def _push_all(self) -> None:
        self._timer = None
        if not self.sockets or self._server is None:
            return
        t0 = time.perf_counter()
        cache: dict[Any, Any] = {}
        for ws in list(self.sockets):
            if not ws.ready():  # still sending the last push: it gets the next round's
                continue
            try:
                text = self._message_for(ws, cache)
            except Exception:  # a bug here must not end the pushes (nor touch the scheduler)
                logger.exception("dashboard: could not read the scheduler's state for a %s page", ws.page)
                continue
            if text is not None:
                ws.push(text)
        cost = time.perf_counter() - t0
        self.push_seconds += cost
        # A snapshot of a huge graph is not free: keep it under ~5% of the loop's time.
        self._schedule(max(self.interval, 20 * cost))

    def _stop_pushing(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _encode(page: str, data: Any) -> str:
    return json.dumps({"page": page, "data": data}, separators=(",", ":"), default=str)


def _hang_up(protocols: list) -> None:
    for proto in protocols:
        stream = getattr(proto, "stream", None)
        if stream is not None:
            stream.close()
