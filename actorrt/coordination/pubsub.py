"""Pub and Sub: broadcast messages on a named topic.

The topic is a system actor on the scheduler host. A ``Sub`` spawns a small inbox
actor on its own host and registers it with the topic; from then on the topic
pushes every published message to the inbox (batched per loop turn), and ``get``
reads the local inbox. A publisher's messages travel on one connection to one actor,
which forwards them on one connection per subscriber host, so each subscriber sees
every message published after it subscribed, exactly once and in publish order.
(dask/distributed removed its Pub/Sub for races between subscribers coming and going
and messages in flight, #8685; here a subscription is an ask, answered only once the
topic has added it, and nothing is forwarded through intermediaries.)
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

from .. import runtime
from ..core import Actor, ActorRef, Pickled
from ..core.checks import bad, check_origin
from ._actor import SystemActor
from ._proxy import DONE, Proxy, check_timeout, load_value, run_on_loop, tell_on_loop

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core import Host
    from ..core.comm import Comm


class TopicActor(SystemActor):
    """Subscribers of one topic and the messages on their way to each."""

    kind = "pubsub"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.subscribers: dict[str, ActorRef] = {}   # inbox id -> inbox ref
        self._out: dict[str, list[Pickled]] = {}
        self._flush_scheduled = False

    def summary(self) -> list[dict]:
        return [{"kind": self.kind, "name": self.name, "subscribers": len(self.subscribers)}]

    def idle(self) -> bool:
        return not self.subscribers and not self._out

    def handle_subscribe(self, inbox: ActorRef, origin: "Comm | None" = None) -> int:
        # A subscriber's inbox is on its own host: one elsewhere could never be reached
        # (and would not be dropped when its host goes away).
        check_origin("TopicActor.subscribe", "the host of field 'inbox'", inbox.address, origin)
        self.subscribers[inbox.id] = inbox
        return len(self.subscribers)

    def handle_unsubscribe(self, inbox: str) -> None:
        self.subscribers.pop(inbox, None)
        self._out.pop(inbox, None)

    def handle_publish(self, msgs: list) -> None:
        _check_messages("TopicActor.publish", msgs)
        if not self.subscribers:
            return
        for inbox in self.subscribers:
            self._out.setdefault(inbox, []).extend(msgs)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def handle_subscribers(self) -> int:
        return len(self.subscribers)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, {}
        for inbox, msgs in out.items():
            ref = self.subscribers.get(inbox)
            if ref is not None:
                self.tell(ref, "deliver", msgs=msgs)

    def peer_lost(self, address: str) -> None:
        for inbox in [i for i, ref in self.subscribers.items() if ref.address == address]:
            self.handle_unsubscribe(inbox)


def _check_messages(op: str, msgs: list) -> None:
    """Published messages are pickled by their publisher: anything else would fail in
    every subscriber's ``get`` instead of here."""
    for i, msg in enumerate(msgs):
        if type(msg) is not Pickled:
            raise bad(op, f"'msgs'[{i}]", "a pickled message", msg)


class Inbox(Actor):
    """A subscriber's buffer, on the subscriber's own host."""

    def __init__(self) -> None:
        self.buffer: deque[Pickled] = deque()
        self._wakeups: list[asyncio.Future] = []

    def handle_deliver(self, msgs: list) -> None:
        _check_messages("Inbox.deliver", msgs)
        self.buffer.extend(msgs)
        self._wake()

    def unget(self, msg: Pickled) -> None:
        """On the loop: a message taken by a get whose caller was interrupted as it came
        goes back to the front, for the next get."""
        self.buffer.appendleft(msg)
        self._wake()

    def _wake(self) -> None:
        wakeups, self._wakeups = self._wakeups, []
        for fut in wakeups:
            if not fut.done():
                fut.set_result(None)

    async def next(self, timeout: float | None, topic: str) -> Pickled:
        # Waiters are only woken; each takes its message itself after waking, so a
        # message is never handed to a get that is timing out at the same moment.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"Sub {topic!r}: no message within {timeout} s")
            fut = asyncio.get_running_loop().create_future()
            self._wakeups.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                pass
        return self.buffer.popleft()


class Pub(Proxy):
    """Publish messages on a named topic.

    ``put`` pickles the message here (an unpicklable one raises at once) and sends it
    without waiting; every ``Sub`` of the topic that exists at that moment gets it.

    >>> pub = Pub("progress")      # doctest: +SKIP
    >>> pub.put({"step": 1})       # doctest: +SKIP
    """

    kind = "pubsub"

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)
        self._backlog: list[Pickled] = []
        self._resolving: asyncio.Task | None = None

    def __reduce__(self) -> Any:
        return Pub, (self.name,)

    def put(self, msg: Any) -> Any:
        """Publish ``msg`` to every current subscriber (returns at once; awaitable)."""
        blob = Pickled.dumps(msg, what=f"message for topic {self.name!r}")
        client = self.client
        if client.asynchronous:
            self._put_on_loop(blob)
            return DONE
        ref = self._ref or run_on_loop(client, self._resolve)
        # A stream nobody waits on: the loop writes a turn's messages at once, where a
        # write each from this thread made 9% fewer messages a second arrive.
        tell_on_loop(client, ref, "publish", msgs=[blob])
        return None

    def _put_on_loop(self, blob: Pickled) -> None:
        if self._ref is not None and not self._backlog:
            self.client.host.tell(self._ref, "publish", msgs=[blob])
            return
        # The topic is not resolved yet: keep order by queueing behind the lookup.
        self._backlog.append(blob)
        if self._resolving is None:
            self._resolving = asyncio.get_running_loop().create_task(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        try:
            ref = await self._resolve()
            backlog, self._backlog = self._backlog, []
            self.client.host.tell(ref, "publish", msgs=backlog)
        finally:
            self._resolving = None


class Sub(Proxy):
    """Receive the messages published on a topic after this Sub subscribed.

    With a synchronous client the constructor returns once subscribed; with an
    asynchronous one, ``await Sub(name)`` does (or the first ``get``). Every message
    arrives once, in publish order. ``get(timeout=)`` raises TimeoutError when no
    message comes in time; a Sub is also an iterator and an async iterator.

    >>> sub = Sub("progress")      # doctest: +SKIP
    >>> sub.get(timeout=5)         # doctest: +SKIP
    {'step': 1}
    >>> for msg in sub: ...        # doctest: +SKIP
    """

    kind = "pubsub"

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)
        self._inbox: Inbox | None = None
        self._subscribed: asyncio.Future | None = None
        client = self.client
        if client.asynchronous:
            self._subscribed = asyncio.ensure_future(self._subscribe())
        else:
            run_on_loop(client, self._subscribe)

    def __reduce__(self) -> Any:
        return Sub, (self.name,)

    async def _subscribe(self) -> None:
        ref = await self._resolve()
        host = self.client.host
        inbox = Inbox()
        host.spawn(inbox, f"sub-{uuid.uuid4().hex}")
        self._inbox = inbox
        try:
            await host.ask(ref, "subscribe", inbox=inbox.ref)
        except BaseException:
            host.stop_actor(inbox.id)
            self._inbox = None
            raise

    def __await__(self) -> Any:
        async def subscribed() -> "Sub":
            await self._ready()
            return self
        return subscribed().__await__()

    async def _ready(self) -> Inbox:
        if self._inbox is None and self._subscribed is not None:
            await self._subscribed
        if self._inbox is None:
            raise RuntimeError(f"Sub {self.name!r} is closed")
        return self._inbox

    async def _next(self, timeout: float | None) -> Pickled:
        inbox = await self._ready()
        return await inbox.next(timeout, self.name)

    def get(self, timeout: float | None = None) -> Any:
        """The next message; TimeoutError if none arrives within ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        inbox = self._inbox
        if inbox is not None and inbox.buffer and not self.client.asynchronous:
            # Already here: take it without a trip through the loop. The loop thread
            # only appends; deque.popleft is atomic, so threads never share a message.
            try:
                return self._load(inbox.buffer.popleft())
            except IndexError:
                pass  # another thread took the last one
        return self._run(lambda: self._next(timeout), then=self._load, undo=self._unget)

    def _load(self, blob: Pickled) -> Any:
        return load_value(blob, self.client)

    def _unget(self, blob: Pickled) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.unget(blob)

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return self._load(await self._next(None))

    def close(self) -> None:
        """Unsubscribe now (also done when the Sub is garbage collected)."""
        inbox, self._inbox = self._inbox, None
        if inbox is not None and self._ref is not None:
            _unsubscribe(self.client.host, self._ref, inbox.id)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown, or the client's loop is gone


def _unsubscribe(host: "Host", topic: ActorRef, inbox: str) -> None:
    def run() -> None:
        host.stop_actor(inbox)
        if host.status == "running":
            try:
                host.tell(topic, "unsubscribe", inbox=inbox)
            except Exception:
                pass  # the scheduler is gone too: nothing left to tell
    loop = host.loop
    if loop is None or loop.is_closed():
        return
    runtime.post(loop, run)
