"""Call trees from sampled stacks: pure data, no threads, no I/O (docs/profiling.md).

A sampler (worker/profiler.py) looks at the stack of each thread running a task every
few milliseconds. Each look is a *path* of frames, outermost first; paths are merged
into a counting tree shaped as dask.distributed's profiles are, so tools written for
those read ours::

    {"identifier": "root", "count": 12,
     "description": {"filename": "", "name": "", "line_number": 0, "line": ""},
     "children": {"<name>;<file>;<line>": {same shape, count <= parent's}, ...}}

A node's ``count`` is the number of samples that passed through it; a node's own
time is its count minus its children's. Memory is bounded everywhere: a path keeps
at most ``max_depth`` frames, a tree grows within a node budget (a sample that would
need more is counted at the deepest node it already has), and :class:`ProfileHistory`
keeps trees by task name, by second for the last minute and by minute before that,
for a limited time.
"""
from __future__ import annotations

import heapq
import linecache
import threading
import time
from collections import deque
from types import CodeType, FrameType
from typing import Any, Container, Iterable, Sequence

#: Frames kept per sample, from the outermost (the task's function) inwards: recursion
#: deeper than this is counted at the last frame kept.
MAX_DEPTH = 100
#: Nodes per second, all task names together: a sampler on a worker running code with
#: endlessly varied stacks still holds a bounded amount.
MAX_NODES = 1_000
#: Nodes per minute, for the samples older than :data:`RECENT_SECONDS`.
MAX_NODES_MINUTE = 4_000
#: Task names kept apart per second (minute); the rest are counted under :data:`OTHER`.
MAX_GROUPS = 50
OTHER = "<other>"
#: Seconds of history a worker keeps; the last :data:`RECENT_SECONDS` by second, the
#: rest by minute.
KEEP_SECONDS = 600
RECENT_SECONDS = 60

#: One frame of a path: (function name, file name, line number).
Frame = tuple[str, str, int]


def new_tree() -> dict[str, Any]:
    """An empty tree: the root alone, no samples."""
    return {"identifier": "root", "count": 0, "children": {},
            "description": {"filename": "", "name": "", "line_number": 0, "line": ""}}


def frame_path(frame: FrameType | None, stop: Container[CodeType] = (),
               max_depth: int = MAX_DEPTH) -> list[Frame]:
    """The frames from ``frame`` outwards, up to (not including) the first running one
    of the codes in ``stop`` (the runtime's own frames below a task are not the
    user's), outermost first. With ``stop`` given but none of it running, no frames:
    the thread is in the runtime (between tasks), not in a task."""
    path: list[Frame] = []
    while frame is not None:
        code = frame.f_code
        if code in stop:
            break
        path.append((code.co_name, code.co_filename, frame.f_lineno))
        frame = frame.f_back
    else:
        if stop:
            return []
    path.reverse()
    # Outermost frames first: the task's function and what it called matter more than
    # the leaf of a runaway recursion.
    return path[:max_depth]


def identifier(frame: Frame) -> str:
    name, filename, line = frame
    return f"{name};{filename};{line}"


def _node(frame: Frame) -> dict[str, Any]:
    name, filename, line = frame
    # Source text is read once per new node (linecache keeps the file), not per sample.
    text = linecache.getline(filename, line).strip()
    return {"identifier": identifier(frame), "count": 0, "children": {},
            "description": {"filename": filename, "name": name, "line_number": line, "line": text}}


def add_path(tree: dict[str, Any], path: Iterable[Frame], count: int = 1, budget: int = MAX_NODES) -> int:
    """Count ``path`` in ``tree``, creating at most ``budget`` nodes; the number created.

    With no budget left, the sample is counted down to the deepest node already there.
    """
    tree["count"] += count
    node = tree
    created = 0
    for frame in path:
        children = node["children"]
        ident = identifier(frame)
        child = children.get(ident)
        if child is None:
            if created >= budget:
                break
            child = children[ident] = _node(frame)
            created += 1
        child["count"] += count
        node = child
    return created


def node_count(tree: dict[str, Any]) -> int:
    """Nodes below the root."""
    return sum(1 + node_count(child) for child in tree["children"].values())


def merge(*trees: dict[str, Any]) -> dict[str, Any]:
    """One tree counting the samples of all of ``trees`` (they are left unchanged)."""
    out = new_tree()
    for tree in trees:
        merge_into(out, tree)
    return out


def merge_into(into: dict[str, Any], tree: dict[str, Any], budget: int | None = None) -> int:
    """Add ``tree``'s samples to ``into``, creating at most ``budget`` nodes (None: no
    limit; a node not made keeps its samples in its parent); the number created."""
    into["count"] += tree["count"]
    children = into["children"]
    created = 0
    for ident, child in tree["children"].items():
        mine = children.get(ident)
        if mine is None:
            if budget is not None and created >= budget:
                continue
            mine = children[ident] = {"identifier": ident, "count": 0, "children": {},
                                      "description": dict(child["description"])}
            created += 1
        created += merge_into(mine, child, None if budget is None else budget - created)
    return created


def prune(tree: dict[str, Any], max_nodes: int) -> dict[str, Any]:
    """``tree`` with at most ``max_nodes`` nodes: the most sampled ones (a node is kept
    only with its parent; the samples of those left out stay in their parents)."""
    if node_count(tree) <= max_nodes:
        return tree
    out = {"identifier": tree["identifier"], "count": tree["count"], "children": {},
           "description": dict(tree["description"])}
    heap: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []
    order = 0  # (ties keep insertion order; dicts are not comparable)
    for child in tree["children"].values():
        heap.append((-child["count"], order, child, out))
        order += 1
    heapq.heapify(heap)
    kept = 0
    while heap and kept < max_nodes:
        _, _, node, parent = heapq.heappop(heap)
        copy = parent["children"][node["identifier"]] = {
            "identifier": node["identifier"], "count": node["count"], "children": {},
            "description": dict(node["description"])}
        kept += 1
        for child in node["children"].values():
            heapq.heappush(heap, (-child["count"], order, child, copy))
            order += 1
    return out


def trim(tree: dict[str, Any], max_depth: int | None = None, min_count: int = 0) -> dict[str, Any]:
    """A copy of ``tree`` without nodes deeper than ``max_depth`` (the root is depth 0)
    or counted fewer than ``min_count`` times (their samples stay in their parent)."""
    return _trim(tree, 0, max_depth, min_count)


def _trim(node: dict[str, Any], depth: int, max_depth: int | None, min_count: int) -> dict[str, Any]:
    children: dict[str, Any] = {}
    if max_depth is None or depth < max_depth:
        children = {ident: _trim(child, depth + 1, max_depth, min_count)
                    for ident, child in node["children"].items() if child["count"] >= min_count}
    return {"identifier": node["identifier"], "count": node["count"],
            "description": dict(node["description"]), "children": children}


def task_name(key: str) -> str:
    """The name part of a key, as the scheduler groups tasks: ``inc-6f1c...`` -> ``inc``."""
    return key.rsplit("-", 1)[0] if "-" in key else key


class _Bucket:
    """The samples of ``span`` seconds from ``when``: a tree per task name, all of them
    within one node budget."""

    __slots__ = ("when", "span", "trees", "budget")

    def __init__(self, when: int, span: int, budget: int) -> None:
        self.when = when
        self.span = span
        self.trees: dict[str, dict[str, Any]] = {}
        self.budget = budget

    def tree_for(self, name: str, max_groups: int) -> dict[str, Any]:
        tree = self.trees.get(name)
        if tree is None:
            if len(self.trees) >= max_groups:
                name = OTHER
            tree = self.trees.get(name)
            if tree is None:
                tree = self.trees[name] = new_tree()
        return tree

    def add(self, path: Sequence[Frame], name: str, max_groups: int, count: int = 1) -> None:
        self.budget -= add_path(self.tree_for(name, max_groups), path, count, budget=self.budget)

    def fold(self, other: "_Bucket", max_groups: int) -> None:
        for name, tree in other.trees.items():
            self.budget -= merge_into(self.tree_for(name, max_groups), tree, self.budget)


class ProfileHistory:
    """The samples of the last ``keep`` seconds: by second for the last ``recent``
    seconds, by minute before that; in each second (minute) a tree per task name.

    Memory is bounded: a second holds at most ``max_nodes`` nodes and a minute
    ``max_nodes_minute``, whatever the names; so the whole history holds at most
    ``recent * max_nodes + (keep - recent) / 60 * max_nodes_minute`` (~100,000 by
    default, and far fewer for stacks that repeat, as most do).

    Written by a sampler thread, read by the worker's loop: a lock keeps a read from
    seeing half a sample. Only the newest second changes, so a read copies that one
    and takes the others as they are (:meth:`snapshot`), merging them outside the lock.
    """

    def __init__(self, keep: int = KEEP_SECONDS, recent: int = RECENT_SECONDS, max_nodes: int = MAX_NODES,
                 max_nodes_minute: int = MAX_NODES_MINUTE, max_groups: int = MAX_GROUPS) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least one second, got {keep!r}")
        self.keep = keep
        self.recent = max(1, min(recent, keep))
        self.max_nodes = max_nodes
        self.max_nodes_minute = max_nodes_minute
        self.max_groups = max_groups
        self.samples = 0
        self._seconds: deque[_Bucket] = deque()
        self._minutes: deque[_Bucket] = deque(maxlen=-(-(keep - self.recent) // 60))
        self._lock = threading.Lock()

    def add(self, path: Sequence[Frame], name: str, when: float | None = None, count: int = 1) -> None:
        """Count ``count`` samples (threads seen at once) of a task called ``name``."""
        second = int(time.time() if when is None else when)
        with self._lock:
            self.samples += count
            self._bucket(second).add(path, name, self.max_groups, count)
            self._age(second)

    def _bucket(self, second: int) -> _Bucket:
        seconds = self._seconds
        if seconds and seconds[-1].when >= second:  # (the clock went back: the last one)
            return seconds[-1]
        bucket = _Bucket(second, 1, self.max_nodes)
        seconds.append(bucket)
        return bucket

    def _age(self, now: int) -> None:
        """Fold the seconds older than ``recent`` into their minutes."""
        seconds, minutes = self._seconds, self._minutes
        while seconds and seconds[0].when <= now - self.recent:
            old = seconds.popleft()
            if minutes.maxlen == 0:
                continue
            minute = old.when - old.when % 60
            if not minutes or minutes[-1].when < minute:
                minutes.append(_Bucket(minute, 60, self.max_nodes_minute))  # (maxlen drops the oldest)
            minutes[-1].fold(old, self.max_groups)

    def snapshot(self, start: float | None = None, stop: float | None = None,
                 key: str | None = None) -> list[dict[str, Any]]:
        """The trees of the seconds (minutes) overlapping ``[start, stop]`` (times as
        ``time.time()``), of every task or only of those called as ``key`` (a task
        name, or a key whose name part is one). Merge them to read them: the newest is
        a copy, the others no longer change."""
        lo = float("-inf") if start is None else start
        hi = float("inf") if stop is None else stop
        with self._lock:
            chosen = [b for b in (*self._minutes, *self._seconds) if b.when + b.span > lo and b.when <= hi]
            if key is not None:
                names = {n for b in chosen for n in b.trees}
                key = key if key in names else task_name(key)
            newest = self._seconds[-1] if self._seconds else None
            return [merge(t) if b is newest else t for b in chosen
                    for n, t in b.trees.items() if key is None or n == key]

    def get(self, start: float | None = None, stop: float | None = None, key: str | None = None) -> dict[str, Any]:
        """The merged tree of :meth:`snapshot`."""
        return merge(*self.snapshot(start, stop, key))

    def names(self) -> list[str]:
        """Task names sampled in the history kept."""
        with self._lock:
            return sorted({n for b in (*self._minutes, *self._seconds) for n in b.trees})

    def nodes(self) -> int:
        """Nodes held in all (what the bounds bound)."""
        with self._lock:
            return sum(node_count(t) for b in (*self._minutes, *self._seconds) for t in b.trees.values())

    def clear(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._minutes.clear()
            self.samples = 0
