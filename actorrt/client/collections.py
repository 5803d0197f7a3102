"""dask collections on the cluster: ``compute``, ``persist`` and ``get`` of dask.array,
dask.dataframe, dask.bag and dask.delayed objects, and this client as dask's scheduler.

dask turns collections into graphs; we never reimplement that. Its public protocol
does the work, as dask.distributed's client uses it: ``collections_to_expr`` merges
the collections into one expression, ``optimize()`` lowers and optimises it (a
dataframe's expression becomes partition tasks here), ``__dask_keys__`` names the
outputs and ``__dask_graph__`` materialises the graph, which ``graph.submit_graph``
turns into actorrt tasks. ``__dask_postpersist__`` rebuilds a persisted collection
around the Futures of its keys.

dask is optional: everything here imports it when called, and says which extra to
install when it is missing.
"""
from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..utils import when_imported
from .graph import annotated_resources, flatten_keys, submit_graph

if TYPE_CHECKING:
    from .client import Client

INSTALL_HINT = "dask collections need dask: pip install 'actorrt[dask]'"


def _dask() -> Any:
    try:
        import dask
        import dask.base  # noqa: F401  (collections_to_expr lives there)
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return dask


def is_collection(x: Any) -> bool:
    """Whether ``x`` is a dask collection (without importing dask when it is absent)."""
    return not isinstance(x, type) and callable(getattr(x, "__dask_graph__", None))


def _as_items(collections: Any) -> tuple[list, bool]:
    """``collections`` as a list, and whether a lone collection was given."""
    if isinstance(collections, (list, tuple, set, frozenset)):
        return list(collections), False
    return [collections], True


def _traversed(items: list, traverse: bool) -> list:
    """With ``traverse``, a list/tuple/set/dict/iterator holding collections is computed
    as one (dask's ``compute`` does the same); other items stay as they are."""
    if not traverse:
        return items
    containers = (list, tuple, set, dict, Iterator)
    if not any(isinstance(x, containers) for x in items):
        return items
    delayed = _dask().delayed
    return [delayed(x) if isinstance(x, containers) else x for x in items]


def _expression(variables: list, optimize_graph: bool, finalize: bool) -> Any:
    """One optimised expression for ``variables``: dask's own lowering."""
    dask = _dask()
    try:
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr
    except ImportError as e:
        raise ImportError(f"dask {dask.__version__} is older than the expression protocol "
                          f"actorrt uses (dask.base.collections_to_expr): {INSTALL_HINT}") from e
    expr = collections_to_expr(variables, optimize_graph)
    if finalize:
        expr = FinalizeCompute(expr)
    return expr.optimize()


def compute(client: "Client", collections: Any, *, optimize_graph: bool = True, sync: bool = False,
            traverse: bool = True, **options: Any) -> Any:
    """One Future per dask collection (other items are returned as they are)."""
    items, single = _as_items(collections)
    items = _traversed(items, traverse)
    variables = [x for x in items if is_collection(x)]
    futures: list = []
    if variables:
        expr = _expression(variables, optimize_graph, finalize=True)
        names = flatten_keys(expr.__dask_keys__())
        by_key = submit_graph(client, expr.__dask_graph__(), names,
                              resources_by_key=annotated_resources(expr), **options)
        futures = [by_key[k] for k in names]
    it = iter(futures)
    out = [next(it) if is_collection(x) else x for x in items]
    if not sync:
        return out[0] if single else out
    if client.asynchronous:
        return _gather_async(client, out, single)
    values = client.gather(out)
    return values[0] if single else values


async def _gather_async(client: "Client", futures: list, single: bool) -> Any:
    values = await client.gather(futures)
    return values[0] if single else values


def persist(client: "Client", collections: Any, *, optimize_graph: bool = True,
            **options: Any) -> Any:
    """Start computing ``collections``; the same collections, backed by Futures."""
    items, single = _as_items(collections)
    variables = [x for x in items if is_collection(x)]
    rebuilt: list = []
    if variables:
        expr = _expression(variables, optimize_graph, finalize=False)
        keys_per = expr.__dask_keys__()  # one (nested) list per collection
        if len(keys_per) != len(variables):
            raise RuntimeError(f"dask lowered {len(variables)} collections into {len(keys_per)}")
        wanted = flatten_keys(keys_per)
        futures = submit_graph(client, expr.__dask_graph__(), wanted,
                               resources_by_key=annotated_resources(expr), **options)
        for x, keys in zip(variables, keys_per):
            rebuild, extra = x.__dask_postpersist__()
            rebuilt.append(rebuild({k: futures[k] for k in flatten_keys(keys)}, *extra))
    it = iter(rebuilt)
    out = [next(it) if is_collection(x) else x for x in items]
    if single:
        return out[0]
    return type(collections)(out) if isinstance(collections, tuple) else out


def futures_in_collection(x: Any) -> list:
    """Futures a dask collection's graph holds (a persisted collection)."""
    from .future import Future
    out = []
    for value in x.__dask_graph__().values():
        if isinstance(value, Future):
            out.append(value)
        elif isinstance(getattr(value, "value", None), Future):
            out.append(value.value)
    return out


# --- this client as dask's scheduler -------------------------------------------------------
class ClientScheduler:
    """dask's scheduler while a client runs (``dask.config`` key ``scheduler``).

    ``x.compute()`` and ``dask.compute`` call it as ``get``; ``x.persist()`` and
    ``dask.persist`` call its ``persist``. Each call goes to the client of wherever it
    is made: inside a task its worker's client, else the client that installed it.
    """

    def __init__(self, client: "Client") -> None:
        self._installed_by = weakref.ref(client)

    def _client(self) -> "Client":
        if runtime.current_worker() is not None:
            return runtime.current_client()  # inside a task: its worker's client
        client = self._installed_by()
        if client is None or client.status == "closed":
            raise RuntimeError("dask's scheduler is an actorrt client that has closed; create a "
                               "Client again or pass scheduler=... to compute")
        if client.asynchronous:
            raise RuntimeError(f"the default client {client.id} is asynchronous: use 'await "
                               "client.compute(x)' or 'await client.gather(...)' instead of "
                               "dask.compute() / x.compute() in async code")
        return client

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return self._client().get(dsk, keys, **kwargs)

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        return self._client().persist(collections, **kwargs)


_NOT_SET = object()


class DaskDefault:
    """Installs a client as dask's scheduler for as long as it runs, and on close puts
    back what was there, unless another client took the place since."""

    def __init__(self) -> None:
        self._installed: ClientScheduler | None = None
        self._previous: Any = _NOT_SET
        self._wanted = False  # installing, now or once dask is imported

    def install(self, client: "Client") -> None:
        """From now, or from when dask is first imported if that is later."""
        if importlib.util.find_spec("dask") is None:
            return  # no dask: nothing will ask for a scheduler
        self._wanted = True
        ref = weakref.ref(client)
        when_imported("dask", lambda: self._install_now(ref))

    def _install_now(self, ref: "weakref.ref[Client]") -> None:
        client = ref()
        if not self._wanted or client is None or client.status == "closed":
            return
        import dask.config
        self._previous = dask.config.get("scheduler", _NOT_SET)
        self._installed = ClientScheduler(client)
        dask.config.set(scheduler=self._installed)

    def uninstall(self) -> None:
        self._wanted = False
        if self._installed is None:
            return
        import dask.config
        if dask.config.get("scheduler", None) is self._installed:
            previous = self._previous
            if isinstance(previous, ClientScheduler):
                owner = previous._installed_by()
                if owner is None or owner.status == "closed":
                    previous = _NOT_SET
            if previous is _NOT_SET:
                dask.config.config.pop("scheduler", None)
            else:
                dask.config.set(scheduler=previous)
        self._installed = None


__all__ = ["ClientScheduler", "DaskDefault", "INSTALL_HINT", "compute", "futures_in_collection", "is_collection",
           "persist"]
