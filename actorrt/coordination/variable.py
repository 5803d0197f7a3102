"""Variable: one named value shared across the cluster."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import Pickled, Reply
from ..core.checks import str_list
from ._actor import KeyHolder, SystemActor, Waiter
from ._proxy import Proxy, check_timeout, dump_value, load_value

if TYPE_CHECKING:
    from ..client.client import Client
    from ..core.comm import Comm


class VariableActor(SystemActor):
    """The value (pickled, never opened here) and the gets waiting for a first one."""

    kind = "variable"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.value: Pickled | None = None
        self.value_keys: list[str] = []
        self.waiters: dict[str, Waiter] = {}   # data: the getter's client id
        self.keys: KeyHolder

    def on_start(self) -> None:
        self.keys = KeyHolder(self, f"variable/{self.name}")

    def summary(self) -> list[dict]:
        value = None if self.value is None else f"{self.value.nbytes:,} bytes (pickled)"
        return [{"kind": self.kind, "name": self.name, "value": value, "keys": list(self.value_keys),
                 "waiters": [w.address for w in self.waiters.values()]}]

    def idle(self) -> bool:
        return self.value is None and not self.waiters and not self.keys.counts

    def on_stop(self) -> None:
        super().on_stop()
        self.keys.drop_all()

    def handle_set(self, value: Pickled, keys: list) -> None:
        str_list("VariableActor.set", "keys", keys)
        # Hold the new keys before dropping the old: a key in both stays alive.
        self.keys.hold(keys)
        self.keys.drop(self.value_keys)
        self.value, self.value_keys = value, list(keys)
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            self.disarm(waiter)
            self._answer(waiter)

    def handle_get(self, call: str, client: str, reply: Reply, origin: "Comm | None",
                   timeout: float | None = None) -> None:
        waiter = self.waiter(reply, origin, call, data=client)
        if self.value is not None:
            self._answer(waiter)
        elif timeout == 0:
            waiter.answer(None)
        else:
            self.waiters[call] = waiter
            self.arm(waiter, timeout, self._expire)

    def handle_delete(self) -> None:
        self.keys.drop(self.value_keys)
        self.value, self.value_keys = None, []

    def handle_abandon(self, call: str) -> None:
        waiter = self.waiters.get(call)
        if waiter is not None:
            self._expire(waiter)

    def _answer(self, waiter: Waiter) -> None:
        self.keys.give(waiter.data, self.value_keys)
        waiter.answer([self.value])

    def _expire(self, waiter: Waiter) -> None:
        self.waiters.pop(waiter.call, None)
        self.disarm(waiter)
        waiter.answer(None)

    def peer_lost(self, address: str) -> None:
        for waiter in [w for w in self.waiters.values() if w.address == address]:
            self._expire(waiter)


class Variable(Proxy):
    """A named value: ``set(value)``, ``get(timeout=)``, ``delete()``.

    ``get`` waits until a value has been set (TimeoutError after ``timeout``). A Future
    stored in a Variable stays alive while stored and comes out as a Future.

    >>> v = Variable("model")                # doctest: +SKIP
    >>> v.set(client.submit(train, data))    # doctest: +SKIP
    >>> v.get().result()                     # in any task or client  # doctest: +SKIP
    """

    kind = "variable"

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)

    def __reduce__(self) -> Any:
        return Variable, (self.name,)

    def set(self, value: Any, **kwargs: Any) -> Any:
        """Replace the value (a value that cannot be pickled raises here, and the
        Variable keeps its old value)."""
        blob, keys = dump_value(value, f"value for Variable {self.name!r}")
        return self._call("set", value=blob, keys=keys)

    def get(self, timeout: float | None = None, **kwargs: Any) -> Any:
        """The value; waits until one is set (TimeoutError after ``timeout`` seconds)."""
        timeout = check_timeout(timeout)

        def loaded(blobs: list | None) -> Any:
            if blobs is None:
                raise TimeoutError(f"Variable {self.name!r}: get timed out after {timeout} s "
                                   "(no value was set)")
            return load_value(blobs[0], self.client)
        return self._call("get", blocking=True, then=loaded, client=self.client.id, timeout=timeout)

    def delete(self) -> Any:
        """Remove the value (and let go of the Futures in it)."""
        return self._call("delete")
