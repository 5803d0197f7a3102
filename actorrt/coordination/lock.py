"""Lock and MultiLock: mutual exclusion by name, FIFO-fair, leases tied to liveness.

All lock names live in one system actor, the lock table. That is what lets a
MultiLock take several names in one step: a request joins the wait line of every
name it wants at once (one message, so two requests are in the same relative order
in every line they share) and is granted only when it is at the head of all of them
and all are free. No request holds one name while waiting for another, and no two
requests can wait on each other in a cycle: no deadlock. A Lock is a MultiLock of
one name, so ``Lock("a")`` and ``MultiLock(["a", "b"])`` exclude each other.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from ..core import Reply
from ..core.checks import str_list
from ..core.errors import BadMessageError
from ._actor import SystemActor, Waiter
from ._lease import LeaseProxy
from ._proxy import check_name

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm


class LockTable(SystemActor):
    """Owners and FIFO wait lines of every lock name.

    A request is a :class:`Waiter` whose ``data`` is the tuple of names it wants;
    once granted it stays as the lease record until released.
    """

    kind = "lock"
    shared = True  # one actor serves every name (see the module docstring)

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.owner: dict[str, Waiter] = {}
        self.lines: dict[str, deque[Waiter]] = {}
        self.calls: dict[str, Waiter] = {}              # waiting or granted, by call id
        self.held: dict[tuple[str, str], list[Waiter]] = {}  # (address, token) -> leases

    def describe(self) -> str:
        return "the lock table"

    def summary(self) -> list[dict]:
        names = sorted(set(self.owner) | {n for n, line in self.lines.items() if line})
        return [{"kind": "lock", "name": n,
                 "holders": [self.owner[n].address] if n in self.owner else [],
                 "waiters": [w.address for w in self.lines.get(n, ())]} for n in names]

    # --- handlers -----------------------------------------------------------------
    def handle_acquire(self, call: str, token: str, names: list, reply: Reply,
                       origin: "Comm | None", timeout: float | None = None) -> None:
        names = _check_names(names, "acquire")
        request = self.waiter(reply, origin, call, token, data=tuple(names))
        if all(n not in self.owner and not self.lines.get(n) for n in names):
            self._grant(request)
            return
        if timeout == 0:
            request.answer(False)
            return
        for n in names:
            self.lines.setdefault(n, deque()).append(request)
        self.calls[call] = request
        self.arm(request, timeout, self._expire)

    def handle_release(self, token: str, names: list, origin: "Comm | None") -> None:
        key = (self._address(origin), token)
        wanted = set(_check_names(names, "release"))
        for lease in self.held.get(key, ()):
            if set(lease.data) == wanted:
                self._release(lease)
                return
        raise RuntimeError(f"{_what(names)} released but not held by this object "
                           "(release it from the object that acquired it)")

    def handle_locked(self, names: list) -> bool:
        names = _check_names(names, "locked")
        return any(n in self.owner for n in names)

    def handle_abandon(self, call: str) -> None:
        """The caller gave up on ``call``: drop the request, or undo a grant it will not see."""
        request = self.calls.get(call)
        if request is None:
            return
        if self.owner.get(request.data[0]) is request:
            self._release(request)
        else:
            self._withdraw(request)
            request.answer(False)

    def peer_lost(self, address: str) -> None:
        for request in [r for r in self.calls.values() if r.address == address]:
            if self.owner.get(request.data[0]) is request:
                self._release(request)
            else:
                self._withdraw(request)
                request.answer(False)

    # --- machinery ----------------------------------------------------------------
    def _address(self, origin: "Comm | None") -> str:
        from ._actor import origin_address
        return origin_address(self, origin)

    def _grant(self, request: Waiter) -> None:
        for n in request.data:
            self.owner[n] = request
        self.calls[request.call] = request
        self.held.setdefault((request.address, request.token), []).append(request)
        self.disarm(request)
        request.answer(True)

    def _release(self, lease: Waiter) -> None:
        key = (lease.address, lease.token)
        leases = self.held.get(key, [])
        if lease in leases:
            leases.remove(lease)
        if not leases:
            self.held.pop(key, None)
        self.calls.pop(lease.call, None)
        for n in lease.data:
            if self.owner.get(n) is lease:
                del self.owner[n]
        self._wake(lease.data)

    def _expire(self, request: Waiter) -> None:
        self._withdraw(request)
        request.answer(False)

    def _withdraw(self, request: Waiter) -> None:
        """Take a waiting request out of every line it stands in."""
        self.calls.pop(request.call, None)
        self.disarm(request)
        for n in request.data:
            line = self.lines.get(n)
            if line is not None:
                try:
                    line.remove(request)
                except ValueError:
                    pass
                if not line:
                    del self.lines[n]
        # The heads behind it may be grantable now.
        self._wake(request.data)

    def _wake(self, names: Iterable[str]) -> None:
        """Grant the head requests of these names' lines that now can be granted."""
        todo = list(names)
        while todo:
            n = todo.pop()
            line = self.lines.get(n)
            if not line:
                continue
            head = line[0]
            if not head.alive():  # its host is gone; peer_lost will also come by
                self._withdraw_quietly(head)
                todo.extend(head.data)
                continue
            if all(m not in self.owner and self.lines[m][0] is head for m in head.data):
                for m in head.data:
                    line_m = self.lines[m]
                    line_m.popleft()
                    if not line_m:
                        del self.lines[m]
                self._grant(head)

    def _withdraw_quietly(self, request: Waiter) -> None:
        self.calls.pop(request.call, None)
        self.disarm(request)
        for n in request.data:
            line = self.lines.get(n)
            if line is not None and request in line:
                line.remove(request)
                if not line:
                    del self.lines[n]
        request.answer(False)


def _check_names(names: Any, op: str) -> list[str]:
    str_list(f"LockTable.{op}", "names", names)
    if not names:
        raise BadMessageError(f"LockTable.{op}: field 'names' must name at least one lock")
    return list(dict.fromkeys(names))


def _what(names: list) -> str:
    return f"Lock {names[0]!r}" if len(names) == 1 else f"MultiLock {list(names)!r}"


class _LockBase(LeaseProxy):
    kind = "lock"
    reclaimable = False  # (the one shared LockTable drops a name's state on release itself)
    names: list[str]

    def _holder(self) -> dict:
        return {"token": self._token, "names": self.names}

    def locked(self) -> Any:
        """Whether the lock (any of the names, for a MultiLock) is held by anyone."""
        return self._call("locked", names=self.names)


class Lock(_LockBase):
    """A cluster-wide mutual exclusion lock, by name.

    Non-reentrant, like ``threading.Lock``; waiters are served first come, first
    served. The lease is this object's: another ``Lock`` object of the same name
    (e.g. one unpickled in a task) cannot release it. It is released for you only
    when the holder's worker process dies or its client disconnects.

    >>> lock = Lock("db")                     # doctest: +SKIP
    >>> with lock:                            # doctest: +SKIP
    ...     write_to_db()
    >>> lock.acquire(timeout=1)               # doctest: +SKIP
    True
    """

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)
        self.names = [self.name]

    def __reduce__(self) -> Any:
        return Lock, (self.name,)


class MultiLock(_LockBase):
    """Several named locks taken together, all or nothing, without deadlock.

    The names are the same as :class:`Lock`'s: ``MultiLock(["a", "b"])`` waits until
    both ``Lock("a")`` and ``Lock("b")`` are free and takes them in one step.

    >>> with MultiLock(["accounts/1", "accounts/2"]):   # doctest: +SKIP
    ...     transfer(1, 2)
    """

    def __init__(self, names: Iterable[str] = (), client: "Client | None" = None) -> None:
        if isinstance(names, str):
            raise TypeError("MultiLock takes a list of names, not a string")
        names = list(names)
        if not names:
            raise ValueError("MultiLock needs at least one name")
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"MultiLock name must be a string, got {type(n).__name__}: {n!r}")
        checked = [check_name(n, "MultiLock") for n in names]
        super().__init__(checked[0], client)
        self.names = list(dict.fromkeys(checked))

    def __reduce__(self) -> Any:
        return MultiLock, (self.names,)

    def __repr__(self) -> str:
        return f"<MultiLock: {self.names}>"
