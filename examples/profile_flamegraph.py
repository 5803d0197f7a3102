"""Where does the time go? Profile CPU-bound tasks and write a flame graph.

The workers sample the stacks of the threads running tasks (every 10 ms by default);
``client.profile`` merges the samples into one call tree and, with ``filename=``,
writes a self-contained flame-graph page to open in a browser, offline.

    python examples/profile_flamegraph.py [profile.html]
"""
import sys
import time

from actorrt import Client


def is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def count_primes(start, stop):
    return sum(1 for n in range(start, stop) if is_prime(n))


def slow_fib(n):
    return n if n < 2 else slow_fib(n - 1) + slow_fib(n - 2)


def main(filename):
    with Client(n_workers=2, threads_per_worker=1) as client:
        start = time.time()
        primes = client.map(count_primes, range(0, 400_000, 50_000), range(50_000, 450_000, 50_000))
        fibs = client.map(slow_fib, [27, 28, 29, 30])
        print("primes below 400,000:", sum(client.gather(primes)))
        print("fib(27..30):", client.gather(fibs))

        tree = client.profile(start=start, filename=filename)
        print(f"{tree['count']} samples; flame graph written to {filename}")
        for child in sorted(tree["children"].values(), key=lambda c: -c["count"]):
            d = child["description"]
            print(f"  {d['name']:<14} {100 * child['count'] / tree['count']:5.1f}%  line {d['line_number']}")
        fib_only = client.profile(key="slow_fib", start=start)
        print(f"slow_fib alone: {fib_only['count']} samples")
        assert tree["count"] > 0 and fib_only["count"] <= tree["count"]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "profile.html")
