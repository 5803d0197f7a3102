"""Task graphs: dask-style graphs and dask collections, run as actorrt tasks.

A graph is a mapping ``key -> value``. A value is a task ``(callable, *args)``, a
reference to another key (an alias), a list (whose items may be keys or tasks), a
Future (data already on the cluster), or plain data. Arguments of a task refer to
other keys by naming them; tuples whose first item is callable nest tasks. dask's
own node objects (``dask._task_spec``: ``Task``, ``Alias``, ``DataNode``, ...) are
accepted too: such a node is called on the worker with its inputs, as dask would.

Each key becomes one actorrt task; dependencies are submitted before dependents in
one ``update_graph`` message. The common shape ``(func, arg, key, [key, ...])``
travels like ``client.submit(func, ...)``: the function pickled once per function
object, the keys as references the worker fills in. Only tasks with nested calls go
through a small evaluator on the worker. dask is optional: plain dict graphs need
nothing but actorrt; collections (``dask.delayed``, ``dask.array``, ...) are handled
through their collection protocol (``__dask_graph__``, ``__dask_keys__``,
``__dask_postcompute__``, ``__dask_postpersist__``).
"""
from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, Hashable, Mapping

from ..spec import TaskRef, pack_args
from .arguments import check_resources, check_running, check_sendable, check_workers
from .future import Future, held_future

if TYPE_CHECKING:
    from .client import Client


# --- worker side: how a translated task runs --------------------------------------------
class _Ref:
    """A reference to an input's value inside a nested expression (see :func:`_evaluate`)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> Any:
        return _Ref, (self.key,)


class _Call:
    """A nested task ``(fn, *args)`` inside an expression."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> Any:
        return _Call, (self.fn, self.args)


def _identity(x: Any) -> Any:
    return x


def _evaluate(expr: Any, values: dict) -> Any:
    """Evaluate a legacy expression with nested calls; ``values`` holds the inputs."""
    typ = type(expr)
    if typ is _Ref:
        return values[expr.key]
    if typ is _Call:
        return expr.fn(*[_evaluate(a, values) for a in expr.args])
    if typ is list:
        return [_evaluate(x, values) for x in expr]
    if typ is dict:
        return {k: _evaluate(v, values) for k, v in expr.items()}
    return expr


def _run_nested(expr: Any, values: dict) -> Any:
    """Worker entry point for a task with nested calls (``values``: key -> input)."""
    return _evaluate(expr, values)


def _run_node(node: Any, inputs: list) -> Any:
    """Worker entry point for a dask ``GraphNode``: ``inputs`` is [[dask key, value], ...]."""
    return node({k: v for k, v in inputs})


# --- keys -------------------------------------------------------------------------------
def stringify(key: Hashable) -> str:
    """The scheduler key for a graph key (dask keys may be tuples, ints, ...)."""
    return key if type(key) is str else str(key)


_TOKEN = re.compile(r"-[0-9a-f]{8}.*$")


def key_name(key: Hashable) -> str:
    """A short name for a key, for the task's name: ``('sum-ab12cd34...', 0)`` -> ``sum``."""
    while isinstance(key, tuple) and key:
        key = key[0]
    return _TOKEN.sub("", str(key)) or str(key)


def _is_node(value: Any) -> bool:
    """Is ``value`` one of dask's graph node objects? (never imports dask)"""
    mod = sys.modules.get("dask._task_spec")
    return mod is not None and isinstance(value, mod.GraphNode)


# --- translation ----------------------------------------------------------------------
_MISSING = object()


class GraphError(ValueError):
    """The graph cannot be run (a key it needs is missing, a cycle, ...)."""


class _Translator:
    """Turns one graph into task specs for the client's ``update_graph`` message."""

    def __init__(self, client: "Client", dsk: Mapping, priority: int, retries: int,
                 workers: list[str] | None, allow_other_workers: bool,
                 resources: dict[str, float] | None, resources_by_key: Mapping) -> None:
        self.client = client
        self.dsk = dsk
        self.options = (priority, retries, workers, allow_other_workers)
        self.resources = resources
        self.resources_by_key = resources_by_key  # per key (dask.annotate), over ``resources``
        self._values: dict = {}  # key -> value with dask nodes made to see our Futures

    def value(self, key: Hashable) -> Any:
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            value = self.dsk[key]
            if _is_node(value):
                value = self._unwrap_future(value)
            self._values[key] = value
        return value

    def is_key(self, x: Any) -> bool:
        if type(x) not in (str, tuple, int, float, bytes):
            return False
        try:
            return x in self.dsk
        except TypeError:  # a tuple holding something unhashable
            return False

    # --- dependencies ---------------------------------------------------------
    def dependencies(self, key: Hashable) -> list:
        """Keys of ``dsk`` (or external future keys) that ``key``'s value needs."""
        value = self.value(key)
        if _is_node(value):
            return list(value.dependencies)
        if isinstance(value, Future):
            return [] if stringify(key) == value.key else [value.key]
        deps: list = []
        self._find_refs(value, deps)
        return deps

    def _find_refs(self, x: Any, out: list) -> None:
        typ = type(x)
        if typ is tuple and x and callable(x[0]):
            for a in x[1:]:
                self._find_refs(a, out)
        elif self.is_key(x):
            out.append(x)
        elif typ is list:
            for a in x:
                self._find_refs(a, out)
        elif typ is dict:
            for a in x.values():
                self._find_refs(a, out)
        elif isinstance(x, Future):
            out.append(x.key)

    def order(self, outputs: list) -> list:
        """Keys needed for ``outputs``, each after its dependencies (iterative DFS)."""
        done: set = set()
        on_path: set = set()
        ordered: list = []
        for root in outputs:
            if root in done:
                continue
            stack: list = [(root, iter(self.dependencies(root)))]
            on_path.add(root)
            while stack:
                key, deps = stack[-1]
                for dep in deps:
                    if dep in done or dep not in self.dsk:
                        continue
                    if dep in on_path:
                        raise GraphError(f"the graph has a cycle through {dep!r}")
                    on_path.add(dep)
                    stack.append((dep, iter(self.dependencies(dep))))
                    break
                else:
                    stack.pop()
                    on_path.discard(key)
                    done.add(key)
                    ordered.append(key)
        return ordered

    # --- one task ------------------------------------------------------------
    def spec(self, key: Hashable) -> list | None:
        """The client-format spec of ``key``, or None if it is a Future under its own key."""
        value = self.value(key)
        skey = stringify(key)
        if isinstance(value, Future) and value.key == skey:
            return None  # already on the cluster (a persisted collection)
        if _is_node(value):
            deps = sorted({stringify(d) for d in value.dependencies})
            inputs = [[d, TaskRef(stringify(d))] for d in value.dependencies]
            return self._spec(skey, key, _run_node, (value, inputs), deps)
        deps_found: set[str] = set()
        nested = [False]
        converted = self._convert(value, deps_found, nested, top=True)
        deps = sorted(deps_found)
        if nested[0]:
            refs = {d: TaskRef(d) for d in deps}
            return self._spec(skey, key, _run_nested, (converted, refs), deps)
        if type(converted) is _Call:  # the common case: one call, inputs by reference
            return self._spec(skey, key, converted.fn, converted.args, deps)
        return self._spec(skey, key, _identity, (converted,), deps)

    @staticmethod
    def _unwrap_future(node: Any) -> Any:
        """Make dask's node see our Futures as references to their keys.

        A DataNode holding one of our Futures stands for that Future. A Task built by
        ``dask.delayed(f)(future)`` or ``dask.delayed(sum)([future, other])`` keeps the
        Future as plain data, at any depth of its arguments (dask only recognises its
        own references there): rebuild it with each Future made a reference to its key,
        so the worker passes the value.
        """
        spec = sys.modules["dask._task_spec"]
        if isinstance(node, spec.DataNode) and isinstance(node.value, Future):
            return node.value
        if isinstance(node, spec.Task) and _holds_future(node):
            return _futures_as_refs(node, spec)
        return node

    def _convert(self, x: Any, deps: set, nested: list, top: bool = False) -> Any:
        """Legacy value -> expression: keys become TaskRefs (or _Refs under a call)."""
        typ = type(x)
        if typ is tuple and x and callable(x[0]):
            args = tuple(self._convert(a, deps, nested) for a in x[1:])
            if not top:
                nested[0] = True
            return _Call(x[0], args)
        if self.is_key(x):
            skey = stringify(x)
            deps.add(skey)
            return TaskRef(skey)
        if isinstance(x, Future):
            deps.add(x.key)
            return TaskRef(x.key)
        if typ is list:
            return [self._convert(a, deps, nested) for a in x]
        if typ is dict:
            return {k: self._convert(v, deps, nested) for k, v in x.items()}
        return x

    def _spec(self, skey: str, key: Hashable, fn: Any, args: tuple, deps: list[str]) -> list:
        if fn is _run_nested:
            args = (_refs_to_nested(args[0]), args[1])
        priority, retries, workers, allow_other = self.options
        client = self.client
        blob = pack_args(args, {})
        resources = self.resources_by_key.get(key, self.resources)
        return [skey, [client.functions.pickled(fn), blob], deps, key_name(key), priority, retries,
                workers, allow_other, False, resources]


def _holds_future(x: Any) -> bool:
    """Whether a Future is anywhere in ``x``: plain containers and dask's Task nodes
    (their arguments, keyword arguments and nested containers)."""
    stack = [x]
    while stack:
        item = stack.pop()
        if isinstance(item, Future):
            return True
        if type(item) in (list, tuple, set, frozenset):
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())
        elif _is_node(item) and hasattr(item, "args"):
            stack.extend(item.args)
            stack.extend(item.kwargs.values())
    return False


def _futures_as_refs(x: Any, spec: Any) -> Any:
    """``x`` with every Future replaced by dask's reference to its key (a rebuilt node)."""
    if isinstance(x, Future):
        return spec.TaskRef(x.key)
    if not _holds_future(x):
        return x
    if isinstance(x, spec.NestedContainer):  # List, Tuple, Set, Dict: their items are args
        return type(x)(*[_futures_as_refs(a, spec) for a in x.args])
    if isinstance(x, spec.Task):
        return spec.Task(x.key, x.func, *[_futures_as_refs(a, spec) for a in x.args],
                         **{k: _futures_as_refs(v, spec) for k, v in x.kwargs.items()})
    if type(x) is dict:
        return spec.parse_input({k: _futures_as_refs(v, spec) for k, v in x.items()})
    return spec.parse_input(type(x)(_futures_as_refs(a, spec) for a in x))


def _refs_to_nested(expr: Any) -> Any:
    """Under nested calls, inputs are read from the ``values`` dict: TaskRef -> _Ref."""
    typ = type(expr)
    if typ is TaskRef:
        return _Ref(expr.key)
    if typ is _Call:
        return _Call(expr.fn, tuple(_refs_to_nested(a) for a in expr.args))
    if typ is list:
        return [_refs_to_nested(a) for a in expr]
    if typ is dict:
        return {k: _refs_to_nested(v) for k, v in expr.items()}
    return expr


def as_mapping(dsk: Any) -> Mapping:
    """A graph, a HighLevelGraph or a dask expression -> a mapping of key -> value."""
    if isinstance(dsk, Mapping):
        return dsk
    graph = getattr(dsk, "__dask_graph__", None)
    if graph is None:
        raise TypeError(f"expected a task graph (a dict of key -> task), got {type(dsk).__name__}")
    return graph()


def submit_graph(client: "Client", dsk: Mapping, outputs: list, *, priority: int = 0,
                 retries: int | None = None, workers: Any = None,
                 allow_other_workers: bool = False, resources: Any = None,
                 resources_by_key: Mapping | None = None) -> dict[Hashable, Future]:
    """Submit what ``outputs`` need from ``dsk``; one Future per output key.

    Keys not needed for the outputs are not run. Dependencies the graph does not
    hold must be keys of Futures this client has (persisted data). ``resources``
    applies to every task; ``resources_by_key`` (``dask.annotate(resources=...)``)
    to the keys it names, in its place.
    """
    check_running(client)
    for key in outputs:
        if key not in dsk:
            raise GraphError(f"key {key!r} is not in the graph")
    by_key = {k: check_resources(v, f"resources of key {k!r}")
              for k, v in (resources_by_key or {}).items()}
    tr = _Translator(client, dsk, priority, retries or 0, check_workers(workers),
                     allow_other_workers, check_resources(resources), by_key)
    ordered = tr.order(list(dict.fromkeys(outputs)))
    specs = []
    for key in ordered:
        spec = tr.spec(key)
        if spec is not None:
            check_sendable(spec[0], "graph key")
            specs.append(spec)
    _check_external(client, dsk, specs)
    client._check_size(len(specs))
    futures = _queue(client, specs, {stringify(k): k for k in outputs})
    client.table.wait_for_room()  # (a graph larger than the backlog waits for the cluster here)
    return futures


def _check_external(client: "Client", dsk: Mapping, specs: list) -> None:
    known = {s[0] for s in specs}
    for spec in specs:
        for dep in spec[2]:
            if dep not in known and dep not in client.table:
                raise GraphError(f"task {spec[0]!r} depends on {dep!r}, which is neither in the "
                                 "graph nor a Future of this client")


def _queue(client: "Client", specs: list, outputs: dict[str, Hashable]) -> dict[Hashable, Future]:
    """Register Futures for the outputs and queue the specs (one update_graph message)."""
    futures: dict[Hashable, Future] = {}
    submitted = {spec[0] for spec in specs}
    table = client.table
    with table.lock:
        for spec in specs:
            skey = spec[0]
            wanted = skey in outputs
            table.queue_locked("update_graph", (spec, skey if wanted else None))
        for skey, key in outputs.items():
            # (a Future given as an output, not submitted here, is wanted again)
            st = table.hold_new(skey, None, wanted=skey not in submitted)
            futures[key] = held_future(skey, client, st)
    return futures


# --- the user-facing operations ----------------------------------------------------
def flatten_keys(keys: Any) -> list:
    """Keys in nested lists -> a flat list (a lone key -> [key])."""
    if not isinstance(keys, list):
        return [keys]
    out: list = []
    stack = [iter(keys)]
    while stack:
        for k in stack[-1]:
            if isinstance(k, list):
                stack.append(iter(k))
                break
            out.append(k)
        else:
            stack.pop()
    return out


def _nest(keys: Any, futures: dict) -> Any:
    if isinstance(keys, list):
        return [_nest(k, futures) for k in keys]
    return futures[keys]


def annotated_resources(dsk: Any) -> dict:
    """``dask.annotate(resources=...)`` per key of a dask expression, as dask's lowering
    kept them (low-level fusion may drop a fused task's, as under dask.distributed)."""
    annotations = getattr(dsk, "__dask_annotations__", None)
    if annotations is None or isinstance(dsk, Mapping):
        return {}
    return dict((annotations() or {}).get("resources", {}))


def get(client: "Client", dsk: Any, keys: Any, *, sync: bool = True, **options: Any) -> Any:
    """Run graph ``dsk`` and return the values of ``keys`` (same nesting as ``keys``)."""
    graph = as_mapping(dsk)
    futures = submit_graph(client, graph, flatten_keys(keys), resources_by_key=annotated_resources(dsk),
                           **options)
    nested = _nest(keys, futures)
    if not sync:
        return nested
    return client.gather(nested)


__all__ = ["GraphError", "flatten_keys", "get", "stringify", "submit_graph"]
