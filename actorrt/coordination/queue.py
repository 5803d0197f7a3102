"""Queue: a named FIFO shared by every client and task of the cluster.

The queue is a system actor on the scheduler host holding pickled items. ``get`` on
an empty queue and ``put`` on a full one are asks whose reply waits until they can be
served or their timeout (enforced here) expires. Items are never unpickled on the
scheduler; Futures inside them stay alive while queued (see ``KeyHolder``).
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..core import Pickled, Reply
from ..core.checks import bad, str_list
from ._actor import KeyHolder, SystemActor, Waiter
from ._proxy import DONE, Proxy, check_timeout, dump_value, load_value, tell

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm

Item = tuple[Pickled, list]  # (pickled value, keys of the Futures inside it)


def check_maxsize(maxsize: Any) -> int:
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"Queue maxsize must be an int, got {type(maxsize).__name__}: {maxsize!r}")
    if maxsize < 0:
        raise ValueError(f"Queue maxsize must be >= 0 (0 means unbounded), got {maxsize}")
    return maxsize


class QueueActor(SystemActor):
    """The state of one named queue: items, blocked getters, blocked putters."""

    kind = "queue"

    def __init__(self, name: str, maxsize: int = 0) -> None:
        super().__init__(name)
        self.maxsize = check_maxsize(maxsize)
        self.items: deque[Item] = deque()
        self.getters: deque[Waiter] = deque()   # data: (count, getter's client id); count 1..n
        self.putters: deque[Waiter] = deque()   # data: Item
        self.calls: dict[str, Waiter] = {}
        self.keys: KeyHolder

    def on_start(self) -> None:
        self.keys = KeyHolder(self, f"queue/{self.name}")

    def on_stop(self) -> None:
        super().on_stop()
        self.keys.drop_all()

    def summary(self) -> list[dict]:
        return [{"kind": self.kind, "name": self.name, "size": len(self.items), "maxsize": self.maxsize,
                 "waiters": [w.address for w in self.getters] + [w.address for w in self.putters]}]

    def idle(self) -> bool:
        return not (self.items or self.getters or self.putters or self.calls or self.keys.counts)

    def options(self) -> dict:
        return {"maxsize": self.maxsize}

    def check_options(self, options: dict) -> None:
        maxsize = options.get("maxsize", 0)
        if maxsize and maxsize != self.maxsize:
            raise ValueError(f"Queue {self.name!r} exists with maxsize={self.maxsize}, "
                             f"not {maxsize}")

    # --- handlers ---------------------------------------------------------------
    def handle_put(self, call: str, value: Pickled, keys: list, reply: Reply, origin: "Comm | None",
                   timeout: float | None = None) -> None:
        str_list("QueueActor.put", "keys", keys)
        waiter = self.waiter(reply, origin, call, data=(value, keys))
        self._enqueue(self.putters, waiter, timeout)

    def handle_put_nowait(self, value: Pickled) -> None:
        """A put that needs no answer: a plain item (no Futures) on an unbounded queue."""
        if self.maxsize:
            raise RuntimeError(f"put_nowait on bounded Queue {self.name!r}")
        self.items.append((value, []))
        self._pump()

    def handle_get(self, call: str, client: str, reply: Reply, origin: "Comm | None",
                   timeout: float | None = None, count: int = 1) -> None:
        if count < 0:
            raise bad("QueueActor.get", "'count'", "an int >= 0 (0: whatever is queued)", count)
        if count == 0:  # batch=True: whatever is there now, possibly nothing
            items = list(self.items)
            self.items.clear()
        elif not self.getters and len(self.items) >= count:  # served at once: the common case
            items = [self.items.popleft() for _ in range(count)]
        else:
            if 0 < self.maxsize < count:
                raise ValueError(f"cannot get a batch of {count} from Queue {self.name!r} of "
                                 f"maxsize {self.maxsize}: it never holds that many")
            self._enqueue(self.getters, self.waiter(reply, origin, call, data=(count, client)), timeout)
            return
        self._hand_over(client, reply, items)
        if self.putters:
            self._pump()

    def handle_qsize(self) -> int:
        return len(self.items)

    def handle_abandon(self, call: str) -> None:
        """The caller gave up on ``call`` (its task was cancelled)."""
        waiter = self.calls.get(call)
        if waiter is not None:
            self._drop(waiter, None)

    def handle_unget(self, items: list) -> None:
        """Items that reached a caller after it gave up go back to the front."""
        for i, item in enumerate(items):  # all of them before any goes back
            if not ((type(item) is list or type(item) is tuple) and len(item) == 2
                    and type(item[0]) is Pickled and (type(item[1]) is list or type(item[1]) is tuple)
                    and all(type(k) is str for k in item[1])):
                raise bad("QueueActor.unget", f"'items'[{i}]", "[pickled value, [keys]]", item)
        for value, keys in reversed(items):
            self.items.appendleft((value, keys))
            self.keys.hold(keys)
        self._pump()

    # --- machinery ----------------------------------------------------------------
    def _enqueue(self, line: deque[Waiter], waiter: Waiter, timeout: float | None) -> None:
        line.append(waiter)
        self.calls[waiter.call] = waiter
        self._pump()
        if waiter.reply.done:
            return
        if timeout == 0:
            self._drop(waiter, None)
        else:
            self.arm(waiter, timeout, lambda w: self._drop(w, None))

    def _drop(self, waiter: Waiter, answer: Any) -> None:
        """Take a waiting call out of line (timed out, abandoned, its host lost)."""
        for line in (self.getters, self.putters):
            try:
                line.remove(waiter)
            except ValueError:
                continue
        self._forget(waiter)
        waiter.answer(answer)
        self._pump()  # a blocked head may have been holding back the calls behind it

    def _forget(self, waiter: Waiter) -> None:
        self.calls.pop(waiter.call, None)
        self.disarm(waiter)

    def _has_room(self) -> bool:
        return self.maxsize == 0 or len(self.items) < self.maxsize

    def _pump(self) -> None:
        """Admit blocked putters while there is room; serve getters in arrival order."""
        progressed = True
        while progressed:
            progressed = False
            while self.putters and self._has_room():
                waiter = self.putters.popleft()
                self._forget(waiter)
                if not waiter.alive():
                    waiter.answer(None)  # its host is gone: the item never enters
                    continue
                value, keys = waiter.data
                self.items.append((value, keys))
                self.keys.hold(keys)
                waiter.answer(True)
                progressed = True
            while self.getters:
                waiter = self.getters[0]
                if not waiter.alive():  # its host is gone: an item handed to it would be lost
                    self.getters.popleft()
                    self._forget(waiter)
                    waiter.answer(None)
                    continue
                count = waiter.data[0]
                if len(self.items) < count:
                    break
                self.getters.popleft()
                self._forget(waiter)
                waiter.cancel_timer()
                self._hand_over(waiter.data[1], waiter.reply,
                                [self.items.popleft() for _ in range(count)])
                progressed = True

    def _hand_over(self, client: str, reply: Reply, items: list[Item]) -> None:
        """Answer a get with ``items``; their Futures' keys pass to the getter's client."""
        keys = [k for _, ks in items for k in ks]
        if keys:
            self.keys.give(client, keys)
            self.keys.drop(keys)
        reply.ok([[value, ks] for value, ks in items])

    def peer_lost(self, address: str) -> None:
        for line in (self.getters, self.putters):
            for waiter in [w for w in line if w.address == address]:
                line.remove(waiter)
                self._forget(waiter)
                waiter.answer(None)
        self._pump()


class Queue(Proxy):
    """A cluster-wide FIFO queue, reachable by name from clients and tasks.

    ``put`` blocks while a bounded queue (``maxsize > 0``) is full; ``get`` blocks while
    it is empty. Both take ``timeout=`` and raise ``TimeoutError`` when it expires,
    leaving the queue as it was. Futures put on a queue stay alive while queued and
    come out as Futures.

    >>> q = Queue("jobs")                      # doctest: +SKIP
    >>> q.put(1); q.put(client.submit(inc, 1)) # doctest: +SKIP
    >>> q.get(), q.get().result()              # doctest: +SKIP
    (1, 2)
    >>> q.get(timeout=0.1)                     # doctest: +SKIP
    Traceback (most recent call last):
    TimeoutError: Queue 'jobs': get timed out after 0.1 s
    """

    kind = "queue"

    def __init__(self, name: str | None = None, client: "Client | None" = None, maxsize: int = 0) -> None:
        super().__init__(name, client)
        self.maxsize = check_maxsize(maxsize)

    def _options(self) -> dict:
        return {"maxsize": self.maxsize} if self.maxsize else {}

    def __reduce__(self) -> Any:
        return Queue, (self.name, None, self.maxsize)

    def put(self, value: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Append ``value``; waits for room in a bounded queue (TimeoutError after ``timeout``)."""
        timeout = check_timeout(timeout)
        blob, keys = dump_value(value, f"item for Queue {self.name!r}")
        if not keys and self._ref is not None and self._actor_options.get("maxsize") == 0:
            # Nothing to wait for: send it on and return (see ``_put_nowait``).
            return self._put_nowait(blob)

        def done(ok: bool | None) -> None:
            if ok is None:
                raise TimeoutError(f"Queue {self.name!r}: put timed out after {timeout} s (queue full)")
        return self._call("put", blocking=True, then=done, value=blob, keys=keys, timeout=timeout)

    def _put_nowait(self, blob: Pickled) -> Any:
        """An unbounded queue's put of a plain item is a tell, not an ask: it cannot
        fail or wait there, and one host's messages reach the queue in the order sent,
        so anything this thread does next (a get, a qsize, setting an Event, finishing
        its task) is seen after the item is in. This is what lets a producer stream.
        A put holding Futures stays an ask: the queue must claim their keys before the
        putter may let go of them."""
        client, ref = self.client, self._ref
        assert ref is not None
        if client.asynchronous:
            client.host.tell(ref, "put_nowait", value=blob)
            return DONE
        tell(client, ref, "put_nowait", value=blob)
        return None

    def get(self, timeout: float | None = None, batch: bool | int = False) -> Any:
        """Remove and return the oldest item.

        ``batch=True`` returns a list of every item queued right now (maybe empty,
        never waits); ``batch=n`` waits for ``n`` items and returns them as a list.
        """
        timeout = check_timeout(timeout)
        count = _batch_count(batch)

        def loaded(items: list | None) -> Any:
            if items is None:
                raise TimeoutError(f"Queue {self.name!r}: get timed out after {timeout} s")
            if batch is False:
                return load_value(items[0][0], self.client)
            return [load_value(value, self.client) for value, _ in items]
        return self._call("get", blocking=True, then=loaded, on_late=self._unget,
                          client=self.client.id, timeout=timeout, count=count)

    def _unget(self, items: Any) -> None:
        if items and self._ref is not None:
            self.client.host.tell(self._ref, "unget", items=items)

    def qsize(self) -> Any:
        """The number of items in the queue now."""
        return self._call("qsize")


def _batch_count(batch: Any) -> int:
    """How many items one ``get`` takes: 1 (batch=False), 0 = all there (True), or n."""
    if batch is False:
        return 1
    if batch is True:
        return 0
    if isinstance(batch, int) and batch >= 1:
        return batch
    raise ValueError(f"batch must be True, False or a positive int, got {batch!r}")
