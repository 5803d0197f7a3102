"""Fibonacci by tasks that launch tasks, on ONE worker with ONE thread.

Each ``fib(n)`` task submits ``fib(n-1)`` and ``fib(n-2)`` and waits for them. In
dask.distributed this deadlocks unless every task calls ``secede()``/``rejoin()`` or
uses ``worker_client()``: the waiting parent holds the only thread. In actorrt, a task
that blocks on ``gather``/``result``/``wait`` gives its thread slot back while it
waits, so the plain version finishes. With ``python examples/fib.py``.
"""
import time

from actorrt import Client, get_client


def fib(n):
    if n < 2:
        return n
    client = get_client()  # the worker's own client: no new connection per task
    a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
    return sum(client.gather([a, b]))


def main(n=15):
    with Client(n_workers=1, threads_per_worker=1) as client:
        start = time.perf_counter()
        result = client.submit(fib, n).result()
        print(f"fib({n}) = {result} in {time.perf_counter() - start:.3f} s on 1 worker x 1 thread")
        assert result == 610 if n == 15 else result > 0


if __name__ == "__main__":
    main()
