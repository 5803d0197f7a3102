"""Make the dashboard screenshots of docs/dashboard.md (docs/images/dashboard-*.png).

Runs a small workload on an in-process cluster (a tree reduction held half-way, a
failed task, an actor, named queue/lock/semaphore/event/variable/topic, a logged
event), opens each page in headless Chromium (tests/browser.py, the browser tests'
fixture) and saves what it shows. From the repository root, with Debian's chromium
and chromium-driver installed: ``python docs/make_screenshots.py [directory]``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import chromium, missing  # noqa: E402

# The browser tests' task functions: importable, so tasks pickle them by reference.
from test_dashboard_browser import Counter, add, gate, held as load  # noqa: E402

from actorrt import Client, Event, Lock, Pub, Queue, Semaphore, Sub, Variable  # noqa: E402


def parse(text: str) -> int:
    return int(text)


def main(out: Path) -> None:
    reason = missing()
    if reason is not None:
        raise SystemExit(f"cannot make screenshots: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    with Client(processes=False, n_workers=2, threads_per_worker=2, dashboard_address="127.0.0.1:0") as c, \
            chromium(width=1200, height=760) as browser:
        base = c.dashboard_link[: -len("/status")]
        gate.clear()
        done = c.map(parse, [str(i) for i in range(40)])
        c.gather(done)
        failed = c.submit(parse, "not a number")
        leaves = c.map(load, range(16))
        layer = leaves
        while len(layer) > 1:
            layer = [c.submit(add, a, b) for a, b in zip(layer[::2], layer[1::2])]
        counter = c.submit(Counter, actor=True).result()
        for _ in range(5):
            counter.incr().result()
        q = Queue("jobs")
        for i in range(3):
            q.put(i)
        lock = Lock("database")
        lock.acquire()
        Semaphore(max_leases=4, name="downloads").acquire()
        Event("ready").set()
        Variable("config").set({"retries": 3})
        sub = Sub("news")
        Pub("news")
        c.log_event("progress", {"stage": "load", "done": 40})

        def shoot(page: str, name: str, ready: str) -> None:
            browser.open(f"{base}/{page}")
            browser.wait_live()
            browser.wait(lambda: browser.css(ready), what=ready)
            path = browser.screenshot(f"dashboard-{name}", out)
            print("wrote", os.path.relpath(path, ROOT))

        shoot("status", "status", "#erred a.key")
        shoot("graph", "graph", "#graph circle.s-waiting")
        shoot("actors", "actors", "#actors tbody tr")
        browser.wait(lambda: browser.css("#actors tbody tr td") and
                     browser.css("#actors tbody tr td")[6].text == "5", what="the calls")
        browser.screenshot("dashboard-actors", out)
        shoot("coordination", "coordination", "#coordination tbody tr")
        shoot("events", "events", "#events tbody tr")
        try:
            failed.result()
        except ValueError:
            pass
        shoot(f"task/{failed.key}", "task", "#failure:not([hidden])")
        gate.set()
        assert layer[0].result() == sum(range(16))
        lock.release()
        del sub


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
