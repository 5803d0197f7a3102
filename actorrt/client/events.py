"""Events and metadata on the Client (dask.distributed's names): ``log_event``,
``get_events``, ``subscribe_topic``/``unsubscribe_topic``, ``set_metadata``/
``get_metadata``; and the "print"/"warn" topics that ``actorrt.print``/``actorrt.warn``
in a task use to reach the client's console.

The log and the metadata live on the scheduler (scheduler/events.py). Messages and
values travel pickled (the scheduler stores them unopened), so any picklable value
works, not only msgpack-able ones as in dask. A metadata value that is a dict with str
keys goes as a nested map, so that a path of keys can reach into it on the scheduler.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable

from ..core import Actor, ActorRef, Host, Pickled
from ..core.checks import check_origin
from ..protocol import check_topic, event_message
from .datasets import NO_DEFAULT
from .part import ClientPart

if TYPE_CHECKING:
    from .future import CallbackThread

logger = logging.getLogger("actorrt.client")

PRINT_TOPIC = "print"
WARN_TOPIC = "warn"


class EventMethods(ClientPart):
    """Mixin of Client: the scheduler's event log and metadata."""

    if TYPE_CHECKING:  # provided by Client
        id: str
        host: Host
        scheduler: ActorRef
        loop: asyncio.AbstractEventLoop
        callbacks: CallbackThread

    _topics: "TopicsActor | None" = None

    # --- events -------------------------------------------------------------------
    def log_event(self, topic: str | list[str], msg: Any) -> Any:
        """Log ``msg`` (any picklable value) under ``topic`` (or each of a list of
        topics) on the scheduler, with the time; subscribers of the topic are called.

        >>> client.log_event("progress", {"done": 3})           # doctest: +SKIP
        >>> client.get_events("progress")                       # doctest: +SKIP
        ((1718000000.0, {'done': 3}),)
        """
        topic = check_topic(topic, many=True)
        return self.sync(self._tell_scheduler, "log_event", topic=topic, msg=event_message(msg))

    def get_events(self, topic: str | None = None) -> Any:
        """``((timestamp, msg), ...)`` of ``topic``, oldest first, or
        ``{topic: ((timestamp, msg), ...)}`` of every topic. The scheduler keeps the
        latest events of each topic (bounded: docs/api.md)."""
        if topic is not None:
            check_topic(topic)
        return self.sync(self._get_events, topic)

    async def _get_events(self, topic: str | None) -> Any:
        reply = await self.host.ask(self.scheduler, "get_events", topic=topic)
        if topic is not None:
            return _events(reply)
        return {name: _events(events) for name, events in reply.items()}

    def subscribe_topic(self, topic: str, handler: Callable[[Any], Any]) -> Any:
        """Call ``handler((timestamp, msg))`` for each event logged under ``topic`` from
        now on (one handler per topic; a new one replaces it). A sync client calls it
        on its callback thread, one event at a time and in order; an async client on
        its loop, and awaits it if it is a coroutine function."""
        check_topic(topic)
        if not callable(handler):
            raise TypeError(f"subscribe_topic: handler must be callable, not {type(handler).__name__}")
        return self.sync(self._subscribe, topic, handler)

    async def _subscribe(self, topic: str, handler: Callable[[Any], Any]) -> None:
        actor = self._topics_actor()
        actor.handlers[topic] = handler
        await self.host.ask(self.scheduler, "subscribe_topic", topic=topic, client=self.id, ref=actor.ref)

    def unsubscribe_topic(self, topic: str) -> Any:
        """Stop calling the handler of ``topic``; ValueError if there is none."""
        check_topic(topic)
        if self._topics is None or topic not in self._topics.handlers:
            raise ValueError(f"unsubscribe_topic: no handler is subscribed to topic {topic!r}")
        del self._topics.handlers[topic]
        return self.sync(self._tell_scheduler, "unsubscribe_topic", topic=topic, client=self.id)

    async def _tell_scheduler(self, op: str, **fields: Any) -> None:
        self.host.tell(self.scheduler, op, **fields)

    def _topics_actor(self) -> "TopicsActor":
        if self._topics is None:
            self._topics = TopicsActor(self)
            self.host.spawn(self._topics, f"topics-{self.id}")
        return self._topics

    def _subscribe_console(self) -> None:
        """(On the loop, as the client starts) print and warn what tasks send with
        ``actorrt.print``/``actorrt.warn``, as dask's client does."""
        actor = self._topics_actor()
        for topic, handler in ((PRINT_TOPIC, handle_print), (WARN_TOPIC, handle_warn)):
            actor.handlers.setdefault(topic, handler)
            self.host.tell(self.scheduler, "subscribe_topic", topic=topic, client=self.id, ref=actor.ref)

    # --- metadata -----------------------------------------------------------------
    def set_metadata(self, key: str | list[str], value: Any) -> Any:
        """Store ``value`` on the scheduler under ``key``, or under a path of keys
        (``set_metadata(["a", "b"], 1)``, then ``get_metadata("a") == {"b": 1}``)."""
        keys = metadata_path(key)
        return self.sync(self._tell_scheduler, "set_metadata", keys=keys, value=encode_metadata(value))

    def get_metadata(self, key: str | list[str], default: Any = NO_DEFAULT) -> Any:
        """The value at ``key`` (or a path of keys); ``default`` if absent, else KeyError."""
        return self.sync(self._get_metadata, metadata_path(key), default)

    async def _get_metadata(self, keys: list[str], default: Any) -> Any:
        found, value = await self.host.ask(self.scheduler, "get_metadata", keys=keys)
        if found:
            return decode_metadata(value)
        if default is NO_DEFAULT:
            raise KeyError(keys[0] if len(keys) == 1 else keys)
        return default


class TopicsActor(Actor):
    """On the client's host: receives the events of the topics it subscribed to."""

    def __init__(self, client: EventMethods) -> None:
        self.client = client
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self._running: set[asyncio.Task] = set()  # async handlers still running

    def handle_event(self, topic: str, time: float, msg: Any, origin: Any) -> None:
        check_origin("TopicsActor.event", "the scheduler", self.client.scheduler.address, origin,
                     self.client.host)
        handler = self.handlers.get(topic)
        if handler is None:
            return
        if not self.client.asynchronous:  # user code never runs on the client's loop
            self.client.callbacks.submit(_call_handler, (handler, topic, time, msg))
            return
        try:
            out = handler((time, _load(msg)))
        except Exception:
            logger.exception("handler of topic %r failed", topic)
            return
        if inspect.isawaitable(out):
            task = asyncio.ensure_future(out)
            self._running.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("async event handler failed", exc_info=task.exception())

    def on_stop(self) -> None:
        for task in self._running:
            task.cancel()


def _call_handler(item: tuple) -> None:
    handler, topic, time, msg = item
    try:
        handler((time, _load(msg)))
    except Exception:
        logger.exception("handler of topic %r failed", topic)


def _load(msg: Any) -> Any:
    return msg.loads() if type(msg) is Pickled else msg


def _events(events: Any) -> tuple:
    return tuple((t, _load(m)) for t, m in events)


# --- print and warn, the client's side -----------------------------------------------
def handle_print(event: tuple) -> None:
    """Print what a task printed with ``actorrt.print``."""
    _, msg = event
    if not isinstance(msg, dict) or not isinstance(msg.get("args"), (tuple, list)):
        print(msg)  # logged by hand under "print": show it as it is
        return
    file = sys.stderr if msg.get("file") == 2 else sys.stdout
    print(*msg["args"], sep=msg.get("sep", " "), end=msg.get("end", "\n"), file=file,
          flush=bool(msg.get("flush")))


def handle_warn(event: tuple) -> None:
    """Warn here what a task warned with ``actorrt.warn``."""
    _, msg = event
    if not isinstance(msg, dict) or "message" not in msg:
        warnings.warn(str(msg))
        return
    category = msg.get("category")
    if not (isinstance(category, type) and issubclass(category, Warning)):
        category = None
    warnings.warn(msg["message"], category=category, stacklevel=1)


# --- checks and encodings --------------------------------------------------------------
def metadata_path(key: Any) -> list[str]:
    keys = [key] if isinstance(key, str) else key
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"key must be a str or a non-empty list of str, not {key!r:.80}")
    return [str(k) for k in keys]


def encode_metadata(value: Any) -> Any:
    """Dicts with str keys as maps (a path can reach inside), every other value pickled."""
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: encode_metadata(v) for k, v in value.items()}
    return Pickled.dumps(value, what="metadata value")


def decode_metadata(value: Any) -> Any:
    if type(value) is Pickled:
        return value.loads()
    if isinstance(value, dict):
        return {k: decode_metadata(v) for k, v in value.items()}
    return value


__all__ = ["EventMethods", "PRINT_TOPIC", "TopicsActor", "WARN_TOPIC", "handle_print", "handle_warn"]
