"""A dask.dataframe groupby on a small parquet dataset this script writes itself.

Run with ``python examples/dask_dataframe_groupby.py`` (needs ``actorrt[dataframe]``:
dask, pandas, pyarrow). The workers write and read the files; the client only sees
the results.
"""
import tempfile

import dask.dataframe as dd
import pandas as pd

from actorrt import Client


def make_sales(part: int) -> pd.DataFrame:
    stores = ["north", "south", "east", "west"]
    return pd.DataFrame({"store": [stores[(part + i) % 4] for i in range(1_000)],
                         "amount": [float((part * 1_000 + i) % 97) for i in range(1_000)]})


def main():
    with Client(n_workers=2, threads_per_worker=1), tempfile.TemporaryDirectory() as path:
        meta = pd.DataFrame({"store": pd.Series([], dtype="object"),
                             "amount": pd.Series([], dtype="float64")})
        dd.from_map(make_sales, range(8), meta=meta).to_parquet(path)  # written by the workers
        sales = dd.read_parquet(path)
        per_store = sales.groupby("store").amount.agg(["count", "mean"]).compute()
        print(per_store.sort_index().to_string())
        print(f"rows: {int(per_store['count'].sum())}")


if __name__ == "__main__":
    main()
