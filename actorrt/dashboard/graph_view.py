"""The graph page's data: the tasks the scheduler holds and their dependency edges.

Bounded: up to ``max_nodes`` tasks the page gets one node per task; beyond, one node
per task name (the function prefix) with its tasks counted by state, and edges between
names. Either way a snapshot is one pass over the tasks and their dependencies; the
dashboard's push timer stretches its interval when a snapshot gets expensive.

The page is kept up to date incrementally (:func:`diff`): each socket remembers what it
was sent, and gets only the nodes that appeared, changed or went away.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

#: Beyond this many tasks the graph groups them by name (a browser lays out a few
#: thousand nodes quickly; the scheduler's pass stays a few milliseconds).
MAX_NODES = 2000
#: Edges sent at most (a dense graph's edges outnumber its nodes by far).
MAX_EDGES = 10_000


def graph(scheduler: Scheduler, max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """``{"grouped": bool, "nodes": {id: [label, state]}, "edges": [[from, to], ...]}``.

    An edge goes from a dependency to its dependent. Grouped nodes' "state" is their
    most advanced state that is not done yet, and ``counts`` gives every state.
    """
    tasks = scheduler.state.tasks
    if len(tasks) > max_nodes:
        return _grouped(tasks)
    nodes = {key: [ts.name, ts.state] for key, ts in tasks.items()}
    edges: list[list[str]] = []
    for key, ts in tasks.items():
        for dep in ts.dependencies:
            if len(edges) >= MAX_EDGES:
                break
            edges.append([dep.key, key])
    return {"grouped": False, "nodes": nodes, "edges": edges, "counts": {}}


#: A group's colour: the first of these states any of its tasks is in.
_GROUP_ORDER = ("erred", "processing", "queued", "waiting", "memory", "released")


def _grouped(tasks: dict) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    edges: set[tuple[str, str]] = set()
    for ts in tasks.values():
        by_state = counts.get(ts.name)
        if by_state is None:
            by_state = counts[ts.name] = {}
        by_state[ts.state] = by_state.get(ts.state, 0) + 1
        for dep in ts.dependencies:
            if dep.name != ts.name and len(edges) < MAX_EDGES:
                edges.add((dep.name, ts.name))
    nodes = {name: [f"{name} ({sum(c.values())})", next(s for s in _GROUP_ORDER if c.get(s))]
             for name, c in counts.items()}
    return {"grouped": True, "nodes": nodes, "edges": sorted([a, b] for a, b in edges),
            "counts": counts}


def diff(snapshot: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    """What a page that has ``seen`` (``{"nodes": ..., "edges": set, "grouped": bool}``,
    updated here to ``snapshot``) must be told: everything when the grouping changed,
    else the nodes added or changed, the ids removed and the edges added."""
    nodes = snapshot["nodes"]
    if seen.get("grouped") is not snapshot["grouped"] or "nodes" not in seen:
        seen.update(grouped=snapshot["grouped"], nodes=dict(nodes),
                    edges={tuple(e) for e in snapshot["edges"]})
        return {"reset": True, **snapshot}
    old = seen["nodes"]
    changed = {k: v for k, v in nodes.items() if old.get(k) != v}
    removed = [k for k in old if k not in nodes]
    old_edges = seen["edges"]
    added_edges = [e for e in snapshot["edges"] if tuple(e) not in old_edges]
    seen["nodes"] = dict(nodes)
    seen["edges"] = {tuple(e) for e in snapshot["edges"]}
    return {"reset": False, "grouped": snapshot["grouped"], "nodes": changed, "removed": removed,
            "edges": added_edges, "counts": snapshot["counts"]}
