"""The README's first example: a small dependency graph and a map on a local cluster."""
from actorrt import Client


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def main():
    with Client(n_workers=2, threads_per_worker=1) as client:
        x = client.submit(inc, 1)
        y = client.submit(inc, x)
        z = client.submit(add, x, y)
        print("z =", z.result(), z)
        total = sum(client.gather(client.map(inc, range(1000))))
        print("sum of map =", total)
        assert z.result() == 5 and total == sum(range(1, 1001))


if __name__ == "__main__":
    main()
