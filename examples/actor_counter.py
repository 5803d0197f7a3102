"""A counter actor: state that lives on one worker, methods called directly.

Run it from the repository root::

    python examples/actor_counter.py

Each ``counter.increment()`` is one message from this process straight to the worker
hosting the counter and one reply back; the scheduler is not involved.
"""
import asyncio

from actorrt import Client


class Counter:
    def __init__(self, start=0):
        self.n = start

    def increment(self, by=1):
        self.n += by
        return self.n

    async def slow_read(self):
        await asyncio.sleep(0.01)  # async methods run on the worker's event loop
        return self.n


def add_from_task(counter, by):
    """A task receives the handle and calls the actor itself."""
    return counter.increment(by).result()


def main() -> None:
    with Client(n_workers=2, threads_per_worker=1) as client:
        counter = client.submit(Counter, 10, actor=True).result()    # an Actor handle
        print("first call:", counter.increment().result())           # 11
        print("attribute read:", counter.n)                           # 11
        calls = [counter.increment() for _ in range(2)]               # ActorFutures, at once
        print("gathered:", client.gather(calls))                      # [12, 13]
        print("from a task:", client.submit(add_from_task, counter, 1).result())  # 14
        print("counter:", counter.slow_read().result())               # 14

        # A named actor can be found from any client or task, for as long as some
        # Future or handle holds it (here: ``creation``).
        creation = client.submit(Counter, actor=True, name="hits")
        hits = client.get_actor("hits")
        assert hits == creation.result()
        print("hits:", hits.increment(3).result())                    # 3


if __name__ == "__main__":
    main()
