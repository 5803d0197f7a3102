"""Record a run: its task stream, and a self-contained HTML report to share.

Run as a script: ``python examples/performance_report.py [report.html]``. The report
opens in any browser, offline.
"""
import sys
import time

from actorrt import Client, get_task_stream, performance_report


def load(i):
    time.sleep(0.01)  # stands in for reading a file
    return list(range(i, i + 1000))


def process(part):
    return sum(x * x for x in part)


def combine(*totals):
    return sum(totals)


def main(filename="performance-report.html"):
    with Client(n_workers=2, threads_per_worker=2, dashboard_address=None) as client:
        with performance_report(filename=filename), get_task_stream() as ts:
            parts = client.map(load, range(20))
            totals = client.map(process, parts)
            result = client.submit(combine, *totals).result()
        runs = [r for r in ts.data if r["startstops"][0]["action"] == "compute"]
        by_name = {}
        for r in runs:
            by_name[r["name"]] = by_name.get(r["name"], 0) + 1
        print("result =", result)
        print("task runs:", ", ".join(f"{name} {n}" for name, n in sorted(by_name.items())))
        print("report written to", filename)
        assert by_name == {"load": 20, "process": 20, "combine": 1}


if __name__ == "__main__":
    main(*sys.argv[1:])
