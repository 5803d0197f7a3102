"""Results larger than the workers' memory: they spill to disk and come back when needed.

Two workers with 256 MiB each hold 1 GiB of results (2x their limits together);
partial sums of four partitions each read them back, and the result is checked.
(A task's inputs are in memory while it runs: with 60% of the limit kept in memory,
four 8 MiB inputs leave room below the 95% at which the nanny restarts a worker.)
"""
import numpy as np

from actorrt import Client, wait

MiB = 2**20
PART = 8 * MiB


def load_partition(i):
    return np.full(PART // 8, float(i))  # stands in for reading a file


def partial_sum(*parts):
    return float(sum(p.sum() for p in parts))


def main():
    with Client(n_workers=2, threads_per_worker=1, memory_limit="256MiB") as client:
        parts = client.map(load_partition, range(128))  # 128 x 8 MiB = 1 GiB
        wait(parts)
        for address, w in sorted(client.scheduler_info()["workers"].items()):
            m = w["memory"]
            print(f"{address}: {m['managed'] / MiB:.0f} MiB in memory, {m['spilled'] / MiB:.0f} MiB "
                  f"on disk, limit {w['memory_limit'] / MiB:.0f} MiB")
        partials = [client.submit(partial_sum, *parts[i:i + 4]) for i in range(0, len(parts), 4)]
        total = sum(client.gather(partials))
        expected = sum(float(i) * (PART // 8) for i in range(128))
        print(f"sum of 1 GiB of partitions: {total:.0f}")
        assert total == expected


if __name__ == "__main__":
    main()
