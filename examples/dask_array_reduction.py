"""A dask.array reduction on an actorrt cluster: the Client is dask's scheduler.

Run with ``python examples/dask_array_reduction.py`` (needs ``actorrt[dask]``).
The code is dask's; only the ``Client`` import differs from dask.distributed.
"""
import dask.array as da

from actorrt import Client


def main():
    with Client(n_workers=2, threads_per_worker=1) as client:
        x = da.random.default_rng(42).random((4_000, 4_000), chunks=1_000)
        y = client.persist(x + x.T)                   # 16 chunks kept on the workers
        column_means = y.mean(axis=0)
        total = column_means.sum().compute()          # dask's compute -> this client
        print(f"{len(client.who_has(y))} chunks on {len(client.nthreads())} workers")
        print(f"sum of column means = {total:.1f} (about {x.shape[0]}: each averages ~1)")


if __name__ == "__main__":
    main()
