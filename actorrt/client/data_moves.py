"""Moving data between workers on request: ``replicate``, ``rebalance`` and
``retire_workers`` (dask.distributed's names and signatures), a mixin of the Client.

The scheduler plans and carries out the moves (scheduler/replicas.py, moves.py); the
workers fetch from each other, and the scheduler counts a copy only once its new
holder has it, so no value is ever without a holder it knows.
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, cast

from .admin import _resolve_workers
from .future import Future, futures_of, wait_all
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client


class DataMoveMethods(ClientPart):
    """Mixin of Client: copies, balance and graceful removal of workers."""

    def replicate(self, futures: Any, n: int | None = None, workers: Any = None,
                  branching_factor: int = 2, **kwargs: Any) -> Any:
        """Have ``n`` workers (every one of ``workers``, when None) hold each future's value.

        Waits for the futures to finish first. A value already on more than ``n`` of
        ``workers`` loses the extra copies there (dask: replicate sets the count).
        ``workers`` are addresses or names; ``branching_factor`` is accepted for dask's
        sake (each new holder fetches from an existing one).

        >>> x = client.submit(make_table)          # doctest: +SKIP
        >>> client.replicate([x], n=2)              # doctest: +SKIP
        >>> len(client.who_has([x])[x.key])         # doctest: +SKIP
        2
        """
        _no_other_options("replicate", kwargs)
        flat = self._own_futures("replicate", futures)
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1):
            raise ValueError(f"replicate's n must be a positive int or None, got {n!r}")
        return self.sync(_replicate, self, flat, None if n is None else int(n), workers)

    def rebalance(self, futures: Any = None, workers: Any = None, **kwargs: Any) -> Any:
        """Move values from the workers holding the most bytes to those holding the fewest,
        until each holds within 10% of the mean (as far as whole values allow).

        ``futures`` limits what moves (every value in memory when None); ``workers``
        (addresses or names) limits where from and to. Waits for ``futures`` first.

        >>> client.rebalance()                      # doctest: +SKIP
        """
        _no_other_options("rebalance", kwargs)
        flat = None if futures is None else self._own_futures("rebalance", futures)
        return self.sync(_rebalance, self, flat, workers)

    def retire_workers(self, workers: Any = None, close_workers: bool = True, **kwargs: Any) -> Any:
        """Gracefully remove workers: what only they hold is copied to other workers
        first, then they are closed (under a nanny too, which does not restart them)
        and removed. ``{address: info}`` of the workers retired.

        ``workers``: addresses (or names); when None, ``names=[...]`` or ``n=`` choose,
        or else the idle workers the cluster can spare. ``remove=False`` leaves them
        listed until they go; ``close_workers=False`` leaves them running, unused. A
        worker whose values have nowhere to go (it is the last, or hosts an actor) is
        not retired and not in the result, as in dask.

        >>> client.retire_workers(["tcp://127.0.0.1:40123"])   # doctest: +SKIP
        {'tcp://127.0.0.1:40123': {'type': 'Worker', 'name': '0', ...}}
        """
        names = kwargs.pop("names", None)
        n = kwargs.pop("n", None)
        remove = kwargs.pop("remove", True)
        kwargs.pop("stimulus_id", None)
        _no_other_options("retire_workers", kwargs)
        if workers is not None and names is not None:
            raise TypeError("retire_workers: workers and names are mutually exclusive")
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0):
            raise ValueError(f"retire_workers' n must be a non-negative int, got {n!r}")
        if names is not None:
            names = [str(x) for x in ([names] if isinstance(names, (str, int)) else names)]
        return self.sync(_retire, self, _as_list("workers", workers), names, n, bool(close_workers),
                         bool(remove))

    def _own_futures(self, op: str, futures: Any) -> list[Future]:
        flat = futures_of(futures)
        if not flat and futures is not None and not isinstance(futures, (list, tuple, set, dict)):
            raise TypeError(f"{op} takes Futures (or collections of them), got {type(futures).__name__}")
        foreign = [f for f in flat if f.client is not self]
        if foreign:
            raise ValueError(f"{op}: {len(foreign)} Future(s) belong to another client (e.g. {foreign[0].key!r})")
        return flat


def _as_list(what: str, value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, (list, tuple, set)):
        raise TypeError(f"{what} must be a list of worker addresses or names, got {type(value).__name__}")
    return list(value)


def _no_other_options(method: str, kwargs: dict) -> None:
    """dask's signatures end in ``**kwargs``; a keyword we do not know is a mistake."""
    if kwargs:
        raise TypeError(f"{method} got unexpected keyword arguments {sorted(kwargs)}")


async def _resolve(client: "Client", workers: Any, strict: bool) -> list[str] | None:
    """Addresses for ``workers`` (addresses or names); unknown ones raise when ``strict``,
    else are skipped (retire_workers of a worker already gone retires nothing)."""
    if workers is None:
        return None
    info = await client.host.ask(client.scheduler, "workers")
    entries = _as_list("workers", workers) or []
    return _resolve_workers(info, entries, strict)


async def _ready(client: "Client", futures: list[Future]) -> list[str]:
    """Send what is in the outbox, wait for ``futures``; their keys that hold values."""
    client.table.flush()
    await wait_all([f._state for f in futures])
    return [f.key for f in futures if f.status == "finished"]


async def _replicate(client: "Client", futures: list[Future], n: int | None, workers: Any) -> None:
    addresses = await _resolve(client, workers, strict=True)
    keys = await _ready(client, futures)
    if keys:
        await client.host.ask(client.scheduler, "replicate", keys=keys, n=n, workers=addresses)


async def _rebalance(client: "Client", futures: list[Future] | None, workers: Any) -> None:
    addresses = await _resolve(client, workers, strict=True)
    keys = None if futures is None else await _ready(client, futures)
    if keys == []:
        return
    await client.host.ask(client.scheduler, "rebalance", keys=keys, workers=addresses)


async def _retire(client: "Client", workers: list | None, names: list | None, n: int | None, close: bool,
                  remove: bool) -> dict:
    addresses = await _resolve(client, workers, strict=False)
    client.table.flush()
    result = await client.host.ask(client.scheduler, "retire_workers", workers=addresses, names=names, n=n,
                                   close_workers=close, remove=remove)
    cluster = cast(Any, client).cluster
    if close and result and cluster is not None and hasattr(cluster, "_forget_retired"):
        await cluster._forget_retired([str(i.get("name")) for i in result.values()])
    return result


__all__ = ["DataMoveMethods"]
