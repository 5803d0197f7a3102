"""The dashboard in a real browser (headless Chromium, tests/browser.py) during a real
workload: every page loads without JavaScript errors and shows what the workload made.

Screenshots go to $ACTORRT_SCREENSHOTS (or a temp directory): a test artifact.
Skipped, with the reason, where Chromium, chromedriver or selenium is missing.
"""
import threading

import pytest
from browser import chromium, missing

from actorrt import Client, Event, Lock, Pub, Queue, Semaphore, Sub, Variable, as_completed, get_client

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

gate = threading.Event()  # in-process workers: tasks wait on it to stay running
sums_gate = threading.Event()  # the same for the sums of the dynamic reduction


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def held(x):
    assert gate.wait(30)
    return x


def held_add(a, b):
    assert sums_gate.wait(30)
    return a + b


def via_worker_client(x):
    return get_client().submit(inc, x).result()


def boom(x):
    raise ValueError(f"boom {x}")


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def fail(self):
        raise RuntimeError("counter refused")


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def dash():
    """A client on an in-process cluster with its dashboard, and the dashboard's root URL."""
    gate.clear()
    with Client(processes=False, n_workers=2, threads_per_worker=2, dashboard_address="127.0.0.1:0") as c:
        sums_gate.clear()
        try:
            yield c, c.dashboard_link[: -len("/status")]
        finally:
            gate.set()  # (before closing: held tasks must not keep the workers' threads)
            sums_gate.set()


def load(browser, url, name):
    """Open ``url``, wait for its first push, save a screenshot, and return its errors."""
    browser.errors()  # (drop what earlier pages logged)
    browser.open(url)
    browser.wait_live()
    browser.screenshot(name)
    return browser.errors()


def test_every_page_loads_without_errors(browser, dash):
    c, base = dash
    assert sum(c.gather(c.map(inc, range(20)))) == 210
    failed = c.submit(boom, 1)
    with pytest.raises(ValueError):
        failed.result()
    c.log_event("my-topic", {"step": 1})
    counter = c.submit(Counter, actor=True).result()
    assert counter.incr().result() == 1
    Queue("jobs").put(1)
    pages = ["status", "graph", "events", "actors", "coordination", f"task/{failed.key}"]
    for page in pages:
        assert load(browser, f"{base}/{page}", page.split("/")[0]) == [], page
    assert "ValueError: boom 1" in browser.text("#exception")
    browser.open(f"{base}/events")
    browser.wait(lambda: '{"step":1}' in browser.text("#events"), what="the logged event's message")
    assert "my-topic" in browser.text("#events")
    browser.wait(lambda: "add-worker" in browser.text("#events"), what="the workers joining")
    assert browser.errors() == []


def test_status_page_shows_progress_workers_and_user_clients_only(browser, dash):
    c, base = dash
    assert c.submit(via_worker_client, 1).result() == 2
    held_results = c.map(inc, range(5))
    c.gather(held_results)
    browser.open(f"{base}/status")
    browser.wait_live()
    browser.wait(lambda: "inc" in browser.text("#names"), what="the inc row")
    cards = browser.text("#summary").split("\n")
    assert cards[cards.index("clients") - 1] == "1"  # the task's worker client is not a user's
    assert len(browser.css("#workers tbody tr")) == 2
    assert browser.errors() == []


def test_graph_page_grows_with_a_running_reduction(browser, dash):
    c, base = dash
    leaves = c.map(held, range(16))
    browser.open(f"{base}/graph")
    browser.wait_live()
    browser.wait(lambda: len(browser.css("#graph circle.node")) == 16, what="the 16 leaves")
    layer = leaves
    while len(layer) > 1:  # a tree reduction, submitted while the leaves run
        layer = [c.submit(add, a, b) for a, b in zip(layer[::2], layer[1::2])]
    browser.wait(lambda: len(browser.css("#graph circle.node")) == 31, what="the whole tree")
    browser.wait(lambda: len(browser.css("#graph line.edge")) == 30, what="the tree's edges")
    assert browser.css("#graph circle.s-processing"), "the running leaves are drawn as processing"
    browser.screenshot("graph-reduction")
    gate.set()
    assert layer[0].result() == sum(range(16))
    browser.wait(lambda: not browser.css("#graph circle.s-processing") and browser.css("#graph circle.s-memory"),
                 what="the finished tasks in memory")
    assert browser.errors() == []


def test_graph_page_grows_during_a_dynamic_reduction(browser, dash):
    """examples/dynamic_reduction.py: sums submitted as inputs finish (as_completed)."""
    c, base = dash
    inputs = c.map(held, range(8))
    browser.open(f"{base}/graph")
    browser.wait_live()
    browser.wait(lambda: len(browser.css("#graph circle.node")) == 8, what="the 8 inputs")

    def reduce() -> int:
        seq = as_completed(inputs)
        while seq.count() > 1:
            a, b = next(seq), next(seq)
            seq.add(c.submit(held_add, a, b))
        return next(seq).result()
    result: list = []
    reducer = threading.Thread(target=lambda: result.append(reduce()))
    reducer.start()
    try:
        gate.set()  # the inputs finish; their sums are submitted and wait on sums_gate
        browser.wait(lambda: len(browser.css("#graph circle.node")) >= 12, what="the sums joining the graph")
        browser.wait(lambda: browser.css("#graph line.edge"), what="the sums' edges")
        browser.screenshot("graph-dynamic-reduction")
    finally:
        sums_gate.set()
        reducer.join(30)
    assert result == [sum(range(8))]
    assert browser.errors() == []


def test_clicking_a_failed_key_shows_its_exception(browser, dash):
    c, base = dash
    failed = c.submit(boom, 7)
    with pytest.raises(ValueError):
        failed.result()
    browser.open(f"{base}/status")
    browser.wait_live()
    link = browser.wait(lambda: browser.css("#erred a.key"), what="the failed key's link")[0]
    assert link.text == failed.key
    link.click()
    browser.wait(lambda: "ValueError: boom 7" in browser.text("#exception"), what="the exception")
    assert "raise ValueError" in browser.text("#traceback")
    assert "erred" in browser.text("#task-facts")
    browser.wait(lambda: "processing" in browser.text("#story"), what="the story")
    browser.screenshot("task-failed")
    assert browser.errors() == []


def test_actors_and_coordination_pages_list_what_the_workload_made(browser, dash):
    c, base = dash
    counter = c.submit(Counter, actor=True).result()
    for i in range(3):
        assert counter.incr().result() == i + 1
    with pytest.raises(RuntimeError):
        counter.fail().result()
    q = Queue("jobs")
    for i in range(3):
        q.put(i)
    lock = Lock("resource")
    assert lock.acquire()
    Semaphore(max_leases=2, name="slots").acquire()
    Event("ready").set()
    Variable("config").set({"x": 1})
    sub = Sub("news")
    Pub("news")
    try:
        browser.open(f"{base}/actors")
        browser.wait_live()
        row = browser.wait(lambda: [r for r in browser.css("#actors tbody tr") if "Counter" in r.text],
                           what="the Counter actor")[0]
        browser.wait(lambda: "RuntimeError: counter refused" in browser.text("#actors"), what="its last error")
        cells = [td.text for td in browser.css("#actors tbody tr")[0].find_elements("css selector", "td")]
        assert cells[1] == "Counter" and cells[3] == "memory" and cells[6] == "4", cells
        del row
        browser.screenshot("actors")
        browser.open(f"{base}/coordination")
        browser.wait_live()
        browser.wait(lambda: "news" in browser.text("#coordination"), what="the topic")
        text = browser.text("#coordination")
        for expected in ("queue jobs 3", "lock resource", "semaphore slots 1", "event ready",
                         "variable config", "pubsub news 1 subscribers"):
            assert expected in text, (expected, text)
        browser.screenshot("coordination")
        assert browser.errors() == []
    finally:
        lock.release()
        del sub


def test_task_stream_page_draws_the_runs_of_the_running_function(browser, dash):
    c, base = dash
    assert c.gather(c.map(inc, range(30))) == list(range(1, 31))
    failed = c.submit(boom, 2)
    with pytest.raises(ValueError):
        failed.result()
    browser.errors()
    browser.open(f"{base}/task-stream")

    def titles():
        return [t.get_attribute("textContent") for t in browser.css("#ts rect.run title")]
    browser.wait(lambda: sum(t.startswith("inc-") for t in titles()) == 30, what="the 30 runs of inc")
    assert any(t.startswith(failed.key) for t in titles())  # the erred run, drawn too
    assert len(browser.css("#ts rect.run[fill='#d62728']")) == 1  # in red
    browser.screenshot("task-stream")
    assert browser.errors() == []


def spin(seconds):
    import time
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return seconds


def test_profile_page_draws_the_flame_graph_of_the_work(browser, monkeypatch):
    monkeypatch.delenv("ACTORRT_PROFILE_INTERVAL", raising=False)  # (the default: on)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as c:
        base = c.dashboard_link[: -len("/status")]
        assert c.gather(c.map(spin, [0.3, 0.3, 0.3])) == [0.3, 0.3, 0.3]
        browser.errors()
        browser.open(f"{base}/profile")
        browser.wait(lambda: browser.css("#flame svg.flame"), what="the flame graph")
        assert "spin" in browser.text("#names")  # the sampled task, offered as a choice
        browser.screenshot("profile")
        assert browser.errors() == []
