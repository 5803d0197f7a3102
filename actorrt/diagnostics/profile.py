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
at most ``max_depth`` frames, a tree at most ``max_nodes`` nodes (a sample that would
need more is counted at the deepest node it already has), and :class:`ProfileHistory`
keeps one tree per task name per second for a limited number of seconds.
"""
from __future__ import annotations

import linecache
import threading
import time
from collections import deque
from types import CodeType, FrameType
from typing import Any, Container, Iterable

#: Frames kept per sample, from the outermost (the task's function) inwards: recursion
#: deeper than this is counted at the last frame kept.
MAX_DEPTH = 100
#: Nodes per tree (one task name, one second): a sampler on a worker running code with
#: endlessly varied stacks still holds a bounded amount.
MAX_NODES = 2_000
#: Task names kept apart per second; the rest are counted under :data:`OTHER`.
MAX_GROUPS = 50
OTHER = "<other>"
#: Seconds of history a worker keeps (older seconds are dropped as new ones arrive).
KEEP_SECONDS = 600

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
        _merge_into(out, tree)
    return out


def _merge_into(into: dict[str, Any], tree: dict[str, Any]) -> None:
    into["count"] += tree["count"]
    children = into["children"]
    for ident, child in tree["children"].items():
        mine = children.get(ident)
        if mine is None:
            mine = children[ident] = {"identifier": ident, "count": 0, "children": {},
                                      "description": dict(child["description"])}
        _merge_into(mine, child)


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


class _Second:
    """The samples of one second: a tree per task name, each within its node budget."""

    __slots__ = ("when", "trees", "budgets")

    def __init__(self, when: int) -> None:
        self.when = when
        self.trees: dict[str, dict[str, Any]] = {}
        self.budgets: dict[str, int] = {}


class ProfileHistory:
    """The samples of the last ``keep`` seconds, one tree per task name per second.

    Written by a sampler thread, read by the worker's loop: a lock keeps each read
    from seeing half a sample. Reading merges the seconds asked for.
    """

    def __init__(self, keep: int = KEEP_SECONDS, max_nodes: int = MAX_NODES, max_groups: int = MAX_GROUPS) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least one second, got {keep!r}")
        self.keep = keep
        self.max_nodes = max_nodes
        self.max_groups = max_groups
        self.samples = 0
        self._seconds: deque[_Second] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, path: list[Frame], name: str, when: float | None = None) -> None:
        """Count one sample of a thread running a task called ``name``."""
        second = int(time.time() if when is None else when)
        with self._lock:
            self.samples += 1
            bucket = self._bucket(second)
            if name not in bucket.trees:
                if len(bucket.trees) >= self.max_groups:
                    name = OTHER
                if name not in bucket.trees:
                    bucket.trees[name] = new_tree()
                    bucket.budgets[name] = self.max_nodes
            bucket.budgets[name] -= add_path(bucket.trees[name], path, budget=bucket.budgets[name])

    def _bucket(self, second: int) -> _Second:
        seconds = self._seconds
        if seconds and seconds[-1].when == second:
            return seconds[-1]
        if seconds and seconds[-1].when > second:  # the clock went back: count in the last one
            return seconds[-1]
        bucket = _Second(second)
        seconds.append(bucket)  # (the deque's maxlen drops the oldest)
        return bucket

    def get(self, start: float | None = None, stop: float | None = None, key: str | None = None) -> dict[str, Any]:
        """The merged tree of the seconds in ``[start, stop]`` (times as ``time.time()``),
        of every task or only of those called as ``key`` (a task name, or a key whose
        name part is one)."""
        lo = float("-inf") if start is None else int(start)
        hi = float("inf") if stop is None else stop
        with self._lock:
            chosen = [b for b in self._seconds if lo <= b.when <= hi]
            if key is None:
                return merge(*(t for b in chosen for t in b.trees.values()))
            names = {n for b in chosen for n in b.trees}
            name = key if key in names else task_name(key)
            return merge(*(b.trees[name] for b in chosen if name in b.trees))

    def names(self) -> list[str]:
        """Task names sampled in the history kept."""
        with self._lock:
            return sorted({n for b in self._seconds for n in b.trees})

    def clear(self) -> None:
        with self._lock:
            self._seconds.clear()
            self.samples = 0
