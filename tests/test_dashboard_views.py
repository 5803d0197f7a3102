"""The data behind each dashboard page (pure functions over the scheduler's state),
then the JSON endpoints and websocket subscriptions that serve them."""
import asyncio
import json
from urllib.parse import quote

import pytest
from tornado.websocket import websocket_connect

from actorrt import Event, Lock, Queue, Sub, Variable
from actorrt.coordination.event import EventActor
from actorrt.coordination.lock import LockTable
from actorrt.coordination.queue import QueueActor
from actorrt.coordination.semaphore import SemaphoreActor
from actorrt.core import ActorRef, Pickled
from actorrt.dashboard import DASHBOARD_ID
from actorrt.dashboard.actor_view import ActorStats
from actorrt.dashboard.event_view import describe_message
from actorrt.dashboard.graph_view import diff, graph
from actorrt.dashboard.status import user_clients
from actorrt.dashboard.task_view import MAX_KEY_LENGTH, BadKey, check_key, failure
from actorrt.scheduler.events import EventLog
from actorrt.scheduler.state import SchedulerState, TaskSpec
from actorrt.scheduler.task_state import TaskState
from actorrt.testing import gen_cluster, poll_for
from dashboard_http import dashboard_root as base_url, fetch

LOCAL = {"dashboard_address": "127.0.0.1:0"}


class _Scheduler:
    """What the views read of a Scheduler."""

    def __init__(self, state):
        self.state = state
        self.worker_info = {}
        self.client_refs = {}
        self.host = type("Host", (), {"address": "tcp://10.0.0.9:8786"})()

    def memory_of(self, address):
        return {"managed": 0, "spilled": 0, "rss": None, "limit": None, "paused": False}

    def usage_of(self, address):
        return {"cpu": None, "sent_per_s": None, "received_per_s": None}


def _chain_state(n):
    """A state holding a chain t0 <- t1 <- ... of n tasks, named by parity."""
    state = SchedulerState()
    state.stimulus_add_worker("tcp://10.0.0.1:1", 1, "w")
    specs = [TaskSpec(f"t{i}", "s", (f"t{i - 1}",) if i else (), name=f"n{i % 2}") for i in range(n)]
    state.stimulus_update_graph("c", specs, [s.key for s in specs], "g")
    return state


# --- pure views -------------------------------------------------------------------------
def test_check_key_refuses_empty_and_overlong_keys():
    assert check_key("x" * MAX_KEY_LENGTH) == "x" * MAX_KEY_LENGTH
    with pytest.raises(BadKey, match="names no key"):
        check_key("")
    with pytest.raises(BadKey, match=f"at most {MAX_KEY_LENGTH} characters; this one has {MAX_KEY_LENGTH + 1}"):
        check_key("x" * (MAX_KEY_LENGTH + 1))


def test_failure_text_never_unpickles():
    ts = TaskState("k", None, "f")
    ts.exception, ts.traceback = RuntimeError("worker lost"), None
    assert failure(ts) == ("RuntimeError: worker lost", None)
    ts.exception = Pickled.dumps(ValueError("x"))
    ts.traceback = "Traceback (most recent call last):\n  File ...\nValueError: x\n\n"
    assert failure(ts) == ("ValueError: x", ts.traceback)
    ts.traceback = None
    assert "not described" in failure(ts)[0]


def test_graph_nodes_and_edges_then_grouped_by_name():
    s = _Scheduler(_chain_state(5))
    g = graph(s)
    assert not g["grouped"] and set(g["nodes"]) == {f"t{i}" for i in range(5)}
    assert g["nodes"]["t1"][0] == "n1"
    assert sorted(g["edges"]) == [[f"t{i}", f"t{i + 1}"] for i in range(4)]
    g = graph(s, max_nodes=4)
    assert g["grouped"] and set(g["nodes"]) == {"n0", "n1"}
    assert g["nodes"]["n0"][0] == "n0 (3)" and sum(g["counts"]["n0"].values()) == 3
    assert g["edges"] == [["n0", "n1"], ["n1", "n0"]]


def test_graph_diff_sends_only_what_changed():
    state = _chain_state(3)
    s, seen = _Scheduler(state), {}
    first = diff(graph(s), seen)
    assert first["reset"] and len(first["nodes"]) == 3
    assert diff(graph(s), seen) == {"reset": False, "grouped": False, "nodes": {}, "removed": [],
                                    "edges": [], "counts": {}}
    state.stimulus_update_graph("c", [TaskSpec("t3", "s", ("t2",), name="n1")], ["t3"], "g2")
    change = diff(graph(s), seen)
    assert not change["reset"] and "t3" in change["nodes"] and change["edges"] == [["t2", "t3"]]
    state.stimulus_release_keys("c", ["t3"], "r")
    assert "t3" in diff(graph(s), seen)["removed"]
    assert diff(graph(s, max_nodes=1), seen)["reset"]  # grouping changed: everything again


def test_event_log_since_returns_new_events_in_order_bounded():
    log = EventLog()
    for i in range(6):
        log.add("a" if i % 2 else "b", {"i": i})
    assert [e[3]["i"] for e in log.since(0, 100)] == list(range(6))
    assert [(e[0], e[1]) for e in log.since(4, 100)] == [(5, "b"), (6, "a")]
    assert [e[3]["i"] for e in log.since(0, 2)] == [4, 5]  # the newest, oldest first
    assert log.since(log.last_seq, 10) == []


def test_event_messages_are_shown_without_unpickling():
    assert describe_message(Pickled.dumps(object)).startswith("(a pickled message of ")
    assert describe_message({"action": "add-worker", 1: (2, None)}) == {"action": "add-worker", "1": [2, None]}


def test_coordination_summaries():
    q = QueueActor("jobs", maxsize=5)
    q.items.extend([1, 2])
    assert q.summary() == [{"kind": "queue", "name": "jobs", "size": 2, "maxsize": 5, "waiters": []}]
    assert LockTable().summary() == []
    e = EventActor("ready")
    e.flag = True
    assert e.summary() == [{"kind": "event", "name": "ready", "set": True, "waiters": []}]
    sem = SemaphoreActor("slots", max_leases=3)
    assert sem.summary()[0]["max_leases"] == 3 and sem.summary()[0]["size"] == 0


def test_actor_rates_from_two_answers():
    stats = ActorStats()
    stats.merge("a", {"calls": 10}, now=100.0)
    assert "a" not in stats.rates
    stats.merge("a", {"calls": 30}, now=102.0)
    assert stats.rates["a"] == 10.0 and stats.latest["a"]["calls"] == 30


def test_user_clients_leave_out_workers_clients():
    s = _Scheduler(_chain_state(0))
    s.state.clients |= {"user", "task-client", "unknown"}
    s.client_refs = {"user": ActorRef("tcp://10.0.0.9:5", "user"),
                     "task-client": ActorRef("tcp://10.0.0.1:1", "task-client")}
    assert user_clients(s) == ["unknown", "user"]


# --- endpoints ---------------------------------------------------------------------------
def inc(x):
    return x + 1


def boom(x):
    raise ValueError("boom")


@gen_cluster(**LOCAL)
async def test_task_endpoints_give_links_failures_400_and_404(c, lc):
    base = base_url(lc.dashboard_link)
    a = c.submit(inc, 1, key="a/b c")
    b = c.submit(inc, a, key="b")
    bad = c.submit(boom, b)
    with pytest.raises(ValueError):
        await bad
    info = json.loads((await fetch(f"{base}/api/task/{quote('a/b c', safe='')}")).body)
    assert info["state"] == "memory" and info["name"] == "inc" and info["type"] == "int"
    assert info["dependents"] == [{"key": "b", "state": "memory"}] and info["who_has"]
    info = json.loads((await fetch(f"{base}/api/task/{bad.key}")).body)
    assert info["exception"] == "ValueError: boom" and "raise ValueError" in info["traceback"]
    assert info["dependencies"] == [{"key": "b", "state": "memory"}]
    page = await fetch(f"{base}/task/{quote('a/b c', safe='')}")
    assert page.code == 200 and b'data-key="a/b c"' in page.body
    assert b'src="../static/task.js"' in page.body
    typed = await fetch(f"{base}/task/a/b%20c")  # a "/" left bare: the page is one level deeper
    assert typed.code == 200 and b'data-key="a/b c"' in typed.body and b'src="../../static/task.js"' in typed.body
    missing = await fetch(f"{base}/task/nope")
    assert missing.code == 404 and b"knows no task with key &#x27;nope&#x27;" in missing.body
    assert (await fetch(f"{base}/api/task/nope")).code == 404
    long = "k" * (MAX_KEY_LENGTH + 1)
    for path in (f"/task/{long}", f"/api/task/{long}"):
        response = await fetch(base + path)
        assert response.code == 400 and b"at most 1000 characters" in response.body


@gen_cluster(**LOCAL)
async def test_view_endpoints(c, lc):
    base = base_url(lc.dashboard_link)
    held = c.submit(inc, 1)
    assert await held == 2
    await c.log_event("mine", {"x": 1})
    await poll_for(lambda: lc.scheduler.get_events("mine"))  # (log_event is told, not asked)
    q = await Queue("jobs", client=c)
    await q.put(1)
    g = json.loads((await fetch(base + "/api/graph")).body)
    assert [n[0] for n in g["nodes"].values()] == ["inc"]
    ev = json.loads((await fetch(base + "/api/events")).body)
    assert {"mine", "workers"} <= set(ev["topics"]) and ev["last"] >= 3
    later = json.loads((await fetch(f"{base}/api/events?since={ev['last']}")).body)
    assert later["events"] == []
    assert (await fetch(base + "/api/events?since=x")).code == 400
    co = json.loads((await fetch(base + "/api/coordination")).body)
    assert {"kind": "queue", "name": "jobs", "size": 1, "maxsize": 0, "waiters": []} in co["primitives"]
    assert json.loads((await fetch(base + "/api/actors")).body) == {"actors": []}


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


@gen_cluster(**LOCAL)
async def test_actors_endpoint_fetches_calls_from_workers_on_demand(c, lc):
    base = base_url(lc.dashboard_link)
    counter = await c.submit(Counter, actor=True)
    for _ in range(3):
        await counter.incr()
    first = json.loads((await fetch(base + "/api/actors")).body)["actors"]
    assert [(a["class"], a["state"]) for a in first] == [("Counter", "memory")]
    dashboard = lc.scheduler_host.actors[DASHBOARD_ID]
    await poll_for(lambda: dashboard.actor_stats.latest)  # the workers' answer arrived
    (row,) = json.loads((await fetch(base + "/api/actors")).body)["actors"]
    assert row["calls"] == 3 and row["in_flight"] == 0 and row["queued"] == 0 and row["restarts"] == 0
    assert row["worker"] in lc.worker_addresses()


@gen_cluster(**LOCAL)
async def test_coordination_holders_named(c, lc):
    base = base_url(lc.dashboard_link)
    lock = await Lock("res", client=c)
    assert await lock.acquire()
    await Event("go", client=c).set()
    await Variable("v", client=c).set(3)
    sub = await Sub("topic", client=c)
    rows = {(r["kind"], r["name"]): r for r in json.loads((await fetch(base + "/api/coordination")).body)["primitives"]}
    assert rows[("lock", "res")]["holders"] == [f"client {c.id}"]
    assert rows[("event", "go")]["set"] is True
    assert rows[("variable", "v")]["value"].endswith("bytes (pickled)")
    assert rows[("pubsub", "topic")]["subscribers"] == 1
    await lock.release()
    del sub


@gen_cluster(**LOCAL)
async def test_websocket_pages_push_incrementally_and_refuse_bad_requests(c, lc):
    base = base_url(lc.dashboard_link).replace("http://", "ws://")
    dashboard = lc.scheduler_host.actors[DASHBOARD_ID]
    dashboard.interval = 0.05
    ws = await websocket_connect(base + "/ws?page=graph")
    try:
        first = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        assert first["page"] == "graph" and first["data"]["reset"] and first["data"]["nodes"] == {}
        future = c.submit(inc, 1, key="one")
        assert await future == 2

        async def until_memory():
            while True:
                change = json.loads(await ws.read_message())["data"]
                assert not change["reset"]  # only what changed since
                if change["nodes"].get("one", [None, None])[1] == "memory":
                    return
        await asyncio.wait_for(until_memory(), 10)
    finally:
        ws.close()
    events = await websocket_connect(base + "/ws?page=events")
    try:
        first = json.loads(await asyncio.wait_for(events.read_message(), 10))["data"]
        assert any(e["topic"] == "workers" for e in first["events"])
        await c.log_event("later", {"said": ["hello", 1]})
        nxt = json.loads(await asyncio.wait_for(events.read_message(), 10))["data"]
        assert [e["topic"] for e in nxt["events"]] == ["later"]
        assert nxt["events"][0]["msg"] == {"said": ["hello", 1]}  # plain: shown as it is
        await c.log_event("later", ("a", "tuple"))  # (msgpack would bring it back a list)
        nxt = json.loads(await asyncio.wait_for(events.read_message(), 10))["data"]
        assert nxt["events"][0]["msg"].startswith("(a pickled message of ")  # never unpickled
    finally:
        events.close()
    task = await websocket_connect(base + "/ws?page=task&key=one")
    try:
        data = json.loads(await asyncio.wait_for(task.read_message(), 10))["data"]
        assert data["key"] == "one" and data["state"] == "memory" and data["transitions"]
    finally:
        task.close()
    from tornado.httpclient import HTTPClientError
    for query in ("page=nope", "page=task", "page=task&key=" + "k" * 1001):
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(f"{base}/ws?{query}")
        assert info.value.code == 400
    await poll_for(lambda: not dashboard.sockets)
    assert dashboard._timer is None


def test_progress_counts_cancelled_tasks_by_name():
    state = _chain_state(3)  # t0 <- t1 <- t2, none run yet
    state.stimulus_cancel(["t1"], "no longer needed", "cancel")  # t1 and its dependent t2
    assert state.cancelled_by_name == {"n1": 1, "n0": 1}
    from actorrt.dashboard.status import status
    s = status(_Scheduler(state), started=0.0)
    assert s["by_name"]["n1"]["cancelled"] == 1 and s["totals"]["cancelled"] == 2
    assert "cancelled" not in s["tasks"]["by_state"]  # not held any more


@gen_cluster(**LOCAL)
async def test_pauses_and_restarts_are_logged_events(c, lc):
    from actorrt.protocol import WorkerMemory
    scheduler = lc.scheduler
    worker = lc.worker_addresses()[0]
    # A worker's memory report saying it paused, then that it resumed (as monitor.py sends).
    scheduler._memory_reported(worker, WorkerMemory(0, 0, 0, 100, 1000, True))
    scheduler._memory_reported(worker, WorkerMemory(0, 0, 0, 100, 1000, False))
    actions = [(m["action"], m["worker"]) for _, m in scheduler.get_events("workers") if m["action"] != "add-worker"]
    assert actions == [("pause", worker), ("resume", worker)]
    held = c.submit(inc, 1)
    assert await held == 2
    await c.restart()
    (restart,) = [m for _, m in scheduler.get_events("cluster")]
    assert restart["action"] == "restart" and restart["tasks"] >= 1


class _Page:
    """A websocket as the dashboard sees it, that can be told to be busy (a slow reader)."""

    def __init__(self, page):
        self.page, self.key, self.seen = page, None, {}
        self.busy = False
        self.pushed = []
        self.ws_connection = None

    def ready(self):
        return not self.busy

    def push(self, text):
        self.pushed.append(json.loads(text)["data"])

    def close(self, code=None, reason=None):
        pass


@gen_cluster(**LOCAL)
async def test_a_busy_page_gets_the_changes_it_missed_in_its_next_push(c, lc):
    base = base_url(lc.dashboard_link)
    assert (await fetch(base + "/health")).code == 200  # (the web layer starts)
    dashboard = lc.scheduler_host.actors[DASHBOARD_ID]
    graph_page, events_page = _Page("graph"), _Page("events")
    for page in (graph_page, events_page):
        dashboard.socket_opened(page)
    assert graph_page.pushed[0]["reset"] and events_page.pushed[0]["events"]
    graph_page.busy = events_page.busy = True
    first = c.submit(inc, 1, key="first")
    assert await first == 2
    await c.log_event("t", 1)
    dashboard._push_all()  # busy: nothing is built for them, nothing queued
    assert len(graph_page.pushed) == len(events_page.pushed) == 1
    second = c.submit(inc, 2, key="second")
    assert await second == 3
    await c.log_event("t", 2)
    await poll_for(lambda: len(lc.scheduler.get_events("t")) == 2)  # (log_event is told, not asked)
    graph_page.busy = events_page.busy = False
    dashboard._push_all()
    change = graph_page.pushed[-1]
    assert not change["reset"] and set(change["nodes"]) == {"first", "second"}
    assert [e["topic"] for e in events_page.pushed[-1]["events"]] == ["t", "t"]
    dashboard._push_all()  # nothing new since: nothing sent
    assert len(graph_page.pushed) == len(events_page.pushed) == 2
    for page in (graph_page, events_page):
        dashboard.socket_closed(page)
    assert dashboard._timer is None


def _snapshot(**worker_extra):
    worker = {"address": "tcp://w:1", "name": "0", "status": "running", "nthreads": 2, "processing": 1,
              "keys": 3, "bytes": 1024, "spilled": 0, "rss": 2 << 20, "limit": 4 << 20, **worker_extra}
    return {"scheduler": "tcp://s:1", "uptime": 5, "workers": [worker],
            "tasks": {"total": 1, "by_state": {"processing": 1}}, "by_name": {"f": {"processing": 1}},
            "names_omitted": 0, "erred_keys": [{"key": "a/<b>", "name": "a"}], "clients": ["c"],
            "totals": {"finished": 0, "erred": 0, "cancelled": 0}}


def test_status_page_shows_worker_cpu_and_rates_or_a_dash():
    from actorrt.dashboard.page import render_page
    with_figures = render_page(_snapshot(cpu=12.4, sent_per_s=2048, received_per_s=0))
    assert "<td>12 %</td><td>2.0 KiB/s</td><td>0 B/s</td>" in with_figures
    assert "<b>12 %</b><span>CPU</span>" in with_figures
    without = render_page(_snapshot())
    assert "<td>–</td><td>–</td><td>–</td>" in without and "<b>–</b><span>CPU</span>" in without
    assert '<meter min="0" max="4194304"' in without  # memory against the limit
    # The failed key links to its page, escaped for the path and for the HTML.
    assert 'href="task/a%2F%3Cb%3E">a/&lt;b&gt;</a>' in without
