"""A dynamic reduction: combine results two at a time, in the order they finish.

``as_completed`` yields futures as they complete; sums are submitted while iterating
and added back to the same iterator, so the reduction never waits for a slow input
while others are ready. With ``python examples/dynamic_reduction.py``.
"""
import random
import time

from actorrt import Client, as_completed, progress


def load(i):
    time.sleep(random.random() / 100)  # inputs finish in no particular order
    return i


def add(a, b):
    return a + b


def main(n=256):
    with Client(n_workers=2, threads_per_worker=1) as client:
        inputs = client.map(load, range(n))
        progress(inputs)  # a live bar on a terminal, a line per tenth elsewhere
        seq = as_completed(inputs)
        while seq.count() > 1:
            a, b = next(seq), next(seq)
            seq.add(client.submit(add, a, b))
        total = next(seq).result()
        print("total =", total)
        assert total == sum(range(n))


if __name__ == "__main__":
    main()
