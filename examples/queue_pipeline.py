"""A pipeline of tasks joined by a Queue: producers feed work, consumers drain it.

Two producer tasks put numbers on a bounded Queue, so they pause when the consumers
fall behind; two consumer tasks take them until each meets a stop marker. Progress is
broadcast with Pub/Sub, and the client waits on an Event to start everything at once.
Every item is handled exactly once, whichever consumer takes it.
"""
from actorrt import Client, Event, Pub, Queue, Sub

STOP = None


def produce(first, n):
    Event("start").wait(timeout=30)
    work = Queue("work", maxsize=10)
    for i in range(first, first + n):
        work.put(i)           # waits while the queue holds 10 items
    return n


def consume(me):
    Event("start").wait(timeout=30)
    work, progress = Queue("work", maxsize=10), Pub("progress")
    done = []
    while (item := work.get(timeout=30)) is not STOP:
        done.append(item * item)
        if len(done) % 25 == 0:
            progress.put((me, len(done)))
    return done


def main():
    with Client(n_workers=2, threads_per_worker=2) as client:
        progress = Sub("progress")
        producers = client.map(produce, [0, 100], [100, 100], pure=False)
        consumers = client.map(consume, ["a", "b"], pure=False)
        Event("start").set()
        client.gather(producers)
        for _ in consumers:    # one stop marker per consumer, after all the work
            Queue("work", maxsize=10).put(STOP)
        results = client.gather(consumers)
        squares = sorted(x for r in results for x in r)
        assert squares == [i * i for i in range(200)], "an item was lost or handled twice"
        # Each consumer published a report every 25 items, before its task ended.
        reports = [progress.get(timeout=5) for r in results for _ in range(len(r) // 25)]
        print(f"{len(squares)} items, exactly once; split {[len(r) for r in results]}")
        print(f"progress reports: {reports}")


if __name__ == "__main__":
    main()
