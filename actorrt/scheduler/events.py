"""Events and metadata on the scheduler: dask's ``log_event``/``get_events``/
``subscribe_topic`` and ``set_metadata``/``get_metadata``.

:class:`EventLog` is the pure part: a bounded log per topic, and who subscribed to
which topic. The log is bounded per topic, in total and in bytes (oldest events go
first), so a client or task calling ``log_event`` in a loop cannot grow the scheduler
without limit. :class:`EventHandlers` is the Scheduler actor's face for it (a mixin of
``Scheduler``): checks at the edge, then the log, then the subscribers told.

Messages are opaque here: clients send them pickled (the scheduler never unpickles
user data), the scheduler's own (a worker joining) are plain msgpack values.
"""
from __future__ import annotations

import collections
import os
import time
from typing import TYPE_CHECKING, Any

from ..core import ActorRef, Pickled
from ..core.comm import Comm
from ..core.errors import BadMessageError
from ..core.serialize import pack_frames
from ..protocol import check_metadata_keys, check_topics
from .metadata import MetadataStore

if TYPE_CHECKING:
    from ..core.host import Host

# Bounds of the log: events kept per topic, in all, and their bytes in all. dask keeps
# 100,000 per topic and no total; ours also has a total, the part that bounds memory.
EVENTS_PER_TOPIC = int(os.environ.get("ACTORRT_EVENTS_PER_TOPIC", 10_000))
EVENTS_TOTAL = int(os.environ.get("ACTORRT_EVENTS_TOTAL", 100_000))
EVENTS_BYTES = int(os.environ.get("ACTORRT_EVENTS_BYTES", 64 * 2**20))

# What a message that is not a Pickled counts for at least (a small dict the scheduler
# made; a peer's plain message counts its size on the wire).
PLAIN_EVENT_BYTES = 200

# Topics the scheduler logs itself: workers joining and leaving (dask logs both under
# "all" and the worker's address; one topic is enough to follow a cluster).
WORKERS_TOPIC = "workers"


def event_nbytes(msg: Any) -> int:
    """What an event counts against the log's byte bound: its size on the wire (a
    Pickled nested in a plain message counts too), and never less than a small dict."""
    if type(msg) is Pickled:
        return msg.nbytes + 64
    if msg is None or type(msg) in (bool, int, float):
        return PLAIN_EVENT_BYTES
    return max(PLAIN_EVENT_BYTES, sum(memoryview(f).nbytes for f in pack_frames([msg], ActorRef)) + 64)


class EventLog:
    """Bounded logs of ``(timestamp, msg)`` per topic, and each topic's subscribers."""

    def __init__(self, per_topic: int = EVENTS_PER_TOPIC, total: int = EVENTS_TOTAL,
                 max_bytes: int = EVENTS_BYTES) -> None:
        for name, v in (("per_topic", per_topic), ("total", total), ("max_bytes", max_bytes)):
            if type(v) is not int or v < 1:
                raise ValueError(f"EventLog: {name} must be a positive int, not {v!r}")
        self.per_topic, self.total, self.max_bytes = per_topic, total, max_bytes
        self.topics: dict[str, collections.deque] = {}  # topic -> (seq, time, msg, nbytes)
        # Every event's (seq, topic) in the order logged, to drop the oldest of all; an
        # entry whose event a per-topic bound dropped already is skipped (and compacted).
        self._order: collections.deque = collections.deque()
        self._seq = 0
        self.count = 0
        self.nbytes = 0
        self.subscribers: dict[str, dict[str, ActorRef]] = {}  # topic -> {client id: its ref}

    def add(self, topic: str, msg: Any, timestamp: float | None = None) -> tuple[float, list[ActorRef]]:
        """Log ``msg`` under ``topic``; its timestamp and the refs to tell about it."""
        now = time.time() if timestamp is None else timestamp
        size = event_nbytes(msg)
        self._seq += 1
        log = self.topics.get(topic)
        if log is None:
            log = self.topics[topic] = collections.deque()
        log.append((self._seq, now, msg, size))
        self._order.append((self._seq, topic))
        self.count += 1
        self.nbytes += size
        if len(log) > self.per_topic:
            self._drop_first(topic)
        while self.count > self.total or (self.nbytes > self.max_bytes and self.count > 1):
            self._drop_oldest()
        if len(self._order) > 2 * self.total:
            self._compact()
        return now, list(self.subscribers.get(topic, {}).values())

    def _drop_first(self, topic: str) -> None:
        log = self.topics[topic]
        _, _, _, size = log.popleft()
        self.count -= 1
        self.nbytes -= size
        if not log:
            del self.topics[topic]

    def _drop_oldest(self) -> None:
        while self._order:
            seq, topic = self._order.popleft()
            log = self.topics.get(topic)
            if log and log[0][0] == seq:
                self._drop_first(topic)
                return

    def _compact(self) -> None:
        live = {(e[0], topic) for topic, log in self.topics.items() for e in log}
        self._order = collections.deque(x for x in self._order if x in live)

    def events(self, topic: str | None = None) -> Any:
        """``[(time, msg), ...]`` of one topic (oldest first), or ``{topic: [...]}``."""
        if topic is not None:
            return [(t, m) for _, t, m, _ in self.topics.get(topic, ())]
        return {name: [(t, m) for _, t, m, _ in log] for name, log in self.topics.items()}

    def since(self, seq: int, limit: int) -> list[tuple[int, str, float, Any]]:
        """The last ``limit`` events logged after sequence number ``seq``, oldest first, as
        ``(seq, topic, time, msg)`` (the dashboard's events page, told only what is new).
        Each topic's log is walked from its newest end, so this costs what it returns."""
        out = []
        for topic, log in self.topics.items():
            for i in range(len(log) - 1, max(-1, len(log) - 1 - limit), -1):
                entry = log[i]
                if entry[0] <= seq:
                    break
                out.append((entry[0], topic, entry[1], entry[2]))
        out.sort(key=lambda e: e[0])
        return out[-limit:]

    @property
    def last_seq(self) -> int:
        return self._seq

    def subscribe(self, topic: str, client: str, ref: ActorRef) -> None:
        self.subscribers.setdefault(topic, {})[client] = ref

    def unsubscribe(self, topic: str, client: str) -> None:
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.pop(client, None)
            if not subs:
                del self.subscribers[topic]

    def forget_client(self, client: str) -> None:
        for topic in [t for t, subs in self.subscribers.items() if client in subs]:
            self.unsubscribe(topic, client)


class EventHandlers:
    """The Scheduler's event and metadata ops (a mixin of the Scheduler actor)."""

    if TYPE_CHECKING:  # provided by Scheduler
        host: Host
        client_refs: dict[str, ActorRef]

        def _check_peer(self, op: str, kind: str, name: str, origin: Comm | None) -> None: ...

    event_log: EventLog
    metadata: MetadataStore

    def init_events(self) -> None:
        self.event_log = EventLog()
        self.metadata = MetadataStore()

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log ``msg`` (msgpack-able, or Pickled) under ``topic`` (or each of a list),
        and tell the topic's subscribers. Also for code on the scheduler."""
        for name in [topic] if isinstance(topic, str) else topic:
            now, refs = self.event_log.add(name, msg)
            for ref in refs:
                self.host.tell(ref, "event", topic=name, time=now, msg=msg)

    def handle_log_event(self, topic: Any, msg: Any) -> None:
        self.log_event(check_topics("Scheduler.log_event", topic), msg)

    def handle_get_events(self, topic: Any = None) -> Any:
        if topic is not None:
            check_topics("Scheduler.get_events", topic, single=True)
        return self.event_log.events(topic)

    def get_events(self, topic: str | None = None) -> Any:
        """(For code on the scheduler) as the op."""
        return self.event_log.events(topic)

    def handle_subscribe_topic(self, topic: Any, client: str, ref: ActorRef, origin: Comm | None) -> None:
        check_topics("Scheduler.subscribe_topic", topic, single=True)
        self._check_subscriber("subscribe_topic", client, ref, origin)
        self.event_log.subscribe(topic, client, ref)

    def handle_unsubscribe_topic(self, topic: Any, client: str, origin: Comm | None) -> None:
        check_topics("Scheduler.unsubscribe_topic", topic, single=True)
        self._check_peer("unsubscribe_topic", "client", client, origin)
        self.event_log.unsubscribe(topic, client)

    def _check_subscriber(self, op: str, client: Any, ref: Any, origin: Comm | None) -> None:
        # Events go to registered clients only, at the host they registered from: a peer
        # cannot point a client's events elsewhere.
        if type(client) is not str or client not in self.client_refs:
            raise BadMessageError(f"Scheduler.{op}: field 'client' is {client!r}, not a registered client")
        if type(ref) is not ActorRef or ref.address != self.client_refs[client].address:
            raise BadMessageError(f"Scheduler.{op}: field 'ref' must be an actor on client "
                                  f"{client!r}'s host, not {ref!r}")
        self._check_peer(op, "client", client, origin)

    def handle_set_metadata(self, keys: Any, value: Any) -> None:
        self.metadata.set(check_metadata_keys("Scheduler.set_metadata", keys), value)

    def handle_get_metadata(self, keys: Any) -> list:
        """``[True, value]`` or ``[False, None]`` when absent (the client raises or
        gives its default)."""
        try:
            return [True, self.metadata.get(check_metadata_keys("Scheduler.get_metadata", keys))]
        except KeyError:
            return [False, None]

    def workers_event(self, action: str, address: str, **extra: Any) -> None:
        self.log_event(WORKERS_TOPIC, {"action": action, "worker": address, **extra})


__all__ = ["EVENTS_BYTES", "EVENTS_PER_TOPIC", "EVENTS_TOTAL", "WORKERS_TOPIC", "EventHandlers",
           "EventLog"]
