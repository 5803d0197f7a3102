"""A shared counter kept in a Variable, updated by many tasks under a Lock.

Each of 20 tasks adds one to the counter 10 times with a read-modify-write. Without
the lock, concurrent updates would overwrite each other; with it the total is exact.
A Semaphore caps how many tasks talk to a (pretend) fragile service at once.
"""
from actorrt import Client, Lock, Semaphore, Variable


def add_ten(_):
    counter, lock = Variable("counter"), Lock("counter")
    for _ in range(10):
        with lock:
            counter.set(counter.get() + 1)
    with Semaphore(max_leases=2, name="fragile-service"):
        pass  # at most two tasks in here at any moment
    return 10


def main():
    with Client(n_workers=2, threads_per_worker=2) as client:
        Variable("counter").set(0)
        added = sum(client.gather(client.map(add_ten, range(20), pure=False)))
        total = Variable("counter").get()
        print(f"counter = {total} (expected {added})")
        assert total == added == 200


if __name__ == "__main__":
    main()
