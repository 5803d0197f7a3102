"""dask's collections on actorrt and on dask.distributed: the same dask code, the
client doing the scheduling is the only difference.

    python benchmarks/bench_collections.py            # full sizes, best of 3
    python benchmarks/bench_collections.py --quick    # tiny sizes, seconds

Workloads (issue 11's targets: actorrt at least 2x dask.distributed's speed on each):

* a dask.array reduction, ``(x + x.T).mean(axis=0).sum()`` on 8,000 x 8,000 random
  numbers in 500 x 500 chunks (256 chunks; the transpose moves every chunk once);
* a dask.dataframe groupby-mean over 20 partitions made on the workers;
* ``client.get`` of a 100,000-node graph (50,000 leaves reduced pairwise): the cost
  of turning a graph into tasks in the client, sending it, and scheduling it.

Both clients are given the collections through ``client.compute`` / ``client.get``,
so neither depends on which one dask's global configuration names.

The floor: the array and dataframe work run by dask's local threaded scheduler on two
threads in this process: the same numpy/pandas work with no process boundary, no
transfers and no scheduler messages (numpy and pandas release the GIL for most of
it). A cluster of two single-thread worker processes cannot beat it by much.
"""
from __future__ import annotations

import operator
import sys

from common import Workload, compare, fmt_seconds, format_columns, parse_args, print_table, timeit

try:
    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
except ImportError:  # the dataframe/array workloads need the test or bench extras
    da = dd = np = pd = None


def inc(x: int) -> int:
    return x + 1


def make_partition(i: int, rows: int):
    """One partition, made on a worker (nothing large travels from the client)."""
    rng = np.random.default_rng(i)
    return pd.DataFrame({"k": rng.integers(0, 100, rows), "v": rng.random(rows)})


def array_reduction(n: int, chunk: int):
    def run(client):
        x = da.random.default_rng(0).random((n, n), chunks=chunk)
        value = client.compute((x + x.T).mean(axis=0).sum()).result()
        assert abs(value / n - 1) < 0.05  # each column of x + x.T averages about 1
    return run


def dataframe_groupby(partitions: int, rows: int):
    meta = pd.DataFrame({"k": pd.Series([], dtype="int64"), "v": pd.Series([], dtype="float64")})

    def run(client):
        df = dd.from_map(make_partition, range(partitions), rows=rows, meta=meta)
        means = client.compute(df.groupby("k").v.mean()).result()
        assert len(means) == 100
    return run


def tree_graph(leaves: int) -> tuple[dict, str]:
    """``leaves`` inc tasks reduced pairwise by add: about 2 x leaves nodes."""
    graph: dict = {("leaf", i): (inc, i) for i in range(leaves)}
    level = [("leaf", i) for i in range(leaves)]
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level) - 1, 2):
            key = ("sum", depth, j // 2)
            graph[key] = (operator.add, level[j], level[j + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return graph, level[0]


def graph_get(leaves: int):
    graph, root = tree_graph(leaves)
    expected = sum(range(1, leaves + 1))

    def run(client):
        assert client.get(graph, root) == expected
    return run


def workloads(quick: bool) -> list[Workload]:
    n, chunk = (1_000, 250) if quick else (8_000, 500)
    partitions, rows = (4, 10_000) if quick else (20, 500_000)
    leaves = 2_000 if quick else 50_000
    out = [Workload(f"client.get of a {2 * leaves - 1:,}-node graph", graph_get(leaves),
                    tasks=2 * leaves - 1)]
    if da is not None:
        out += [
            Workload(f"array (x + x.T).mean(0).sum(), {n:,}^2 in {chunk}^2 chunks",
                     array_reduction(n, chunk)),
            Workload(f"dataframe groupby-mean, {partitions} x {rows:,} rows",
                     dataframe_groupby(partitions, rows)),
        ]
    else:
        print("# dask.array / dask.dataframe not installed: graph workload only", file=sys.stderr)
    return out


class _LocalThreads:
    """Stands in for a client: computes on dask's threaded scheduler, two threads."""

    def compute(self, collection):
        import concurrent.futures

        import dask
        value = dask.compute(collection, scheduler="threads", num_workers=2)[0]
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(value)
        return done


def floor_lines(chosen: list[Workload], rows: list, args) -> list[tuple[str, ...]]:
    """Each collection workload's floor (local threads) against actorrt's time."""
    lines = []
    local = _LocalThreads()
    for w, row in zip(chosen, rows):
        if w.tasks is not None:  # the graph workload: its cost is the scheduling itself
            continue
        seconds = timeit(lambda: w.run(local), repeat=1 if args.quick else (args.repeat or 3))
        ours = row.seconds.get("actorrt")
        ratio = "n/a" if not ours else f"{ours / seconds:.2f}x"
        lines.append((w.name, fmt_seconds(seconds), "-" if ours is None else fmt_seconds(ours), ratio))
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    chosen = [w for w in workloads(args.quick) if not args.only or any(o in w.name for o in args.only)]
    rows = compare(chosen, args)
    print_table(rows, title="dask collections: actorrt vs dask.distributed, 2 worker processes x 1 thread")
    print("target (issue 11): ratio >= 2 on each")
    lines = floor_lines(chosen, rows, args) if da is not None else []
    if lines:
        print()
        print(format_columns(("floor: dask local threads (2)", "floor", "actorrt", "actorrt / floor (time)"),
                             lines))


if __name__ == "__main__":
    main()
