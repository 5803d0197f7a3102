"""The web dashboard: endpoints, live pushes, escaping, ports, exposure, clean close."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from actorrt import Client, LocalCluster
from actorrt.dashboard import DASHBOARD_ID, parse_dashboard_address, start_dashboard
from actorrt.dashboard.address import DashboardAddress, check_exposure, is_loopback
from actorrt.dashboard.page import human_bytes, human_duration
from actorrt.dashboard.status import status
from actorrt.deploy.local import start_scheduler
from actorrt.scheduler.state import SchedulerState, TaskSpec
from actorrt.testing import gen_cluster, poll_for, stop_processes, wait_until

LOCAL = {"dashboard_address": "127.0.0.1:0"}
gate = threading.Event()  # in-process workers: tasks wait on it to stay "processing"


def inc(x):
    return x + 1


def wait_for_gate(x):
    assert gate.wait(20)
    return x


def boom(x):
    raise ValueError("boom")


def base_url(link):
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status"), link
    return link[: -len("/status")]


def port_of(link):
    return int(base_url(link).rsplit(":", 1)[1])


async def fetch(url, **kwargs):
    http = AsyncHTTPClient(force_instance=True)
    try:
        return await http.fetch(url, raise_error=False, **kwargs)
    finally:
        http.close()


async def fetch_json(url):
    response = await fetch(url)
    assert response.code == 200, (response.code, response.body)
    return json.loads(response.body)


def get(url, headers=None):
    """(status code, body) of a GET from this (non-loop) thread."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sockets_open():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# --- the JSON API ----------------------------------------------------------------------
@gen_cluster(**LOCAL)
async def test_status_reflects_workers_tasks_and_clients(c, lc):
    gate.clear()
    url = base_url(lc.dashboard_link) + "/api/status"
    done = c.map(inc, range(5))
    await c.gather(done)
    blocked = c.submit(wait_for_gate, 1)
    failed = c.submit(boom, 1)
    with pytest.raises(ValueError):
        await failed
    await poll_for(lambda: lc.scheduler.state.tasks[blocked.key].state == "processing")
    s = await fetch_json(url)
    assert s["scheduler"] == lc.scheduler_address
    assert sorted(w["address"] for w in s["workers"]) == lc.worker_addresses()
    assert [w["nthreads"] for w in s["workers"]] == [1, 1]
    assert sum(w["processing"] for w in s["workers"]) == 1
    assert sum(w["keys"] for w in s["workers"]) == 5
    assert all(w["bytes"] > 0 for w in s["workers"] if w["keys"])
    assert s["tasks"]["total"] == 7
    assert s["tasks"]["by_state"] == {"released": 0, "waiting": 0, "queued": 0, "processing": 1,
                                      "memory": 5, "erred": 1}
    assert s["by_name"] == {"inc": {"memory": 5}, "wait_for_gate": {"processing": 1}, "boom": {"erred": 1}}
    assert s["totals"] == {"finished": 5, "erred": 1, "cancelled": 0}
    assert s["clients"] == [c.id]
    assert s["names_omitted"] == 0 and s["uptime"] >= 0
    gate.set()
    assert await blocked == 1
    for f in [*done, failed]:  # (explicitly: the exception's traceback may keep `failed` alive)
        f.release()
    await poll_for(lambda: len(lc.scheduler.state.tasks) == 1)
    s = await fetch_json(url)
    assert s["tasks"]["total"] == 1 and s["by_name"] == {"wait_for_gate": {"memory": 1}}
    assert s["totals"] == {"finished": 6, "erred": 1, "cancelled": 0}  # since start: releases do not lower them


@gen_cluster(**LOCAL)
async def test_story_of_a_key_and_of_an_unknown_key(c, lc):
    base = base_url(lc.dashboard_link)
    key = "odd/key (1) <b>&"
    future = c.submit(inc, 1, key=key)
    assert await future == 2
    story = await fetch_json(f"{base}/api/story/{quote(key, safe='')}")
    assert story["key"] == key and story["state"] == "memory"
    assert [(t["start"], t["finish"]) for t in story["transitions"]] == [
        ("released", "waiting"), ("waiting", "queued"), ("queued", "processing"), ("processing", "memory")]
    assert all(isinstance(t["stimulus_id"], str) and t["time"] > 0 for t in story["transitions"])
    missing = await fetch(f"{base}/api/story/nope")
    assert missing.code == 404 and "no task with key 'nope'" in json.loads(missing.body)["error"]


@gen_cluster(**LOCAL)
async def test_health_page_assets_and_unknown_paths(c, lc):
    base = base_url(lc.dashboard_link)
    health = await fetch(base + "/health")
    assert (health.code, health.body) == (200, b"ok")
    for path in ("/", "/status", "/graph", "/events", "/actors", "/coordination"):
        page = await fetch(base + path)
        assert page.code == 200 and b"<h1>actorrt</h1>" in page.body, path
        assert b'href="task-stream"' in page.body and b'href="profile"' in page.body  # the nav
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("common", "status", "task", "graph", "events", "actors", "coordination"):
        js = await fetch(f"{base}/static/{name}.js")
        assert js.code == 200 and js.headers["Content-Type"].startswith("application/javascript")
        assert b"textContent" in js.body and b"innerHTML" not in js.body, name
    assert (await fetch(base + "/dashboard.css")).code == 200
    icon = await fetch(base + "/favicon.ico")
    assert icon.code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    assert (await fetch(base + "/static/nothing.js")).code == 404
    assert (await fetch(base + "/nothing/here")).code == 404


@gen_cluster(**LOCAL)
async def test_html_escapes_task_and_worker_names(c, lc):
    def evil(x):
        return x
    evil.__name__ = "<script>alert(1)</script>"
    future = c.submit(evil, 1)
    assert await future == 1
    body = (await fetch(base_url(lc.dashboard_link) + "/status")).body.decode()
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert body.count("<script") == 2  # only the page's own script tags


@gen_cluster(**LOCAL)
async def test_requests_for_other_host_names_are_refused_on_loopback(c, lc):
    base = base_url(lc.dashboard_link)
    port = port_of(lc.dashboard_link)
    # A page elsewhere that points a DNS name at 127.0.0.1 (DNS rebinding) sends its name.
    rebound = await fetch(base + "/api/status", headers={"Host": f"attacker.example:{port}"})
    assert rebound.code == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert (await fetch(base + "/health", headers={"Host": host})).code == 200


# --- the websocket ---------------------------------------------------------------------
@gen_cluster(**LOCAL)
async def test_websocket_pushes_status_after_a_task_finishes(c, lc):
    dashboard = lc.scheduler_host.actors[DASHBOARD_ID]
    dashboard.interval = 0.05
    assert dashboard._timer is None  # nobody is watching: nothing runs
    ws_url = base_url(lc.dashboard_link).replace("http://", "ws://") + "/ws"
    ws = await websocket_connect(ws_url)
    try:
        first = json.loads(await asyncio.wait_for(ws.read_message(), 10))["data"]
        assert first["totals"]["finished"] == 0 and len(first["workers"]) == 2
        assert dashboard._timer is not None
        future = c.submit(inc, 41)
        assert await future == 42

        async def until_finished():
            while True:
                msg = json.loads(await ws.read_message())["data"]
                if msg["totals"]["finished"] == 1:
                    return msg
        msg = await asyncio.wait_for(until_finished(), 10)
        assert msg["by_name"] == {"inc": {"memory": 1}}
    finally:
        ws.close()
    await poll_for(lambda: not dashboard.sockets)
    assert dashboard._timer is None  # the last page closed: the pushes stopped


@gen_cluster(**LOCAL)
async def test_a_slow_reader_is_skipped_not_queued(c, lc):
    dashboard = lc.scheduler_host.actors[DASHBOARD_ID]
    ws = await websocket_connect(base_url(lc.dashboard_link).replace("http://", "ws://") + "/ws")
    try:
        await asyncio.wait_for(ws.read_message(), 10)
        (server_side,) = dashboard.sockets
        pending = server_side._pending = asyncio.get_running_loop().create_future()
        server_side.push("{}")  # the previous push has not left: this one is dropped
        assert server_side._pending is pending
        pending.set_result(None)
    finally:
        ws.close()


# --- ports, exposure, disabling -----------------------------------------------------------
def test_busy_port_falls_back_to_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with LocalCluster(1, 1, processes=False, dashboard_address=f"127.0.0.1:{busy}") as lc:
            assert port_of(lc.dashboard_link) != busy
            assert get(base_url(lc.dashboard_link) + "/health") == (200, "ok")


def test_default_dashboard_works_when_8787_is_taken():
    """Another test run (or a dask cluster) holds 8787: the default falls back quietly."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as the dashboard does)
    try:
        holder.bind(("127.0.0.1", 8787))
        holder.listen()
        held = True
    except OSError:  # someone else holds it already (and may let it go at any time)
        held = False
    try:
        with Client(n_workers=1, threads_per_worker=1, processes=False, set_as_default=False) as c:
            link = c.dashboard_link
            assert port_of(link) != 8787 or not held
            assert c.submit(inc, 1).result() == 2
            assert get(base_url(link) + "/health") == (200, "ok")
    finally:
        holder.close()


def test_disabled_with_none():
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                set_as_default=False) as c:
        assert c.dashboard_link is None and c.cluster.dashboard_link is None
        assert DASHBOARD_ID not in c.cluster.scheduler_host.actors
        assert c.scheduler_info()["services"] == {}


def test_bad_dashboard_address_is_refused_before_anything_starts():
    threads = set(threading.enumerate())
    with pytest.raises(ValueError, match="port must be a number"):
        LocalCluster(1, 1, processes=False, dashboard_address="127.0.0.1:http")
    with pytest.raises(TypeError, match="dashboard_address must be"):
        LocalCluster(1, 1, processes=False, dashboard_address=1.5)
    assert not [t for t in threading.enumerate() if t not in threads and t.is_alive()]


def test_parse_dashboard_address():
    assert parse_dashboard_address(":8787") == DashboardAddress("127.0.0.1", 8787)
    assert parse_dashboard_address("8787") == parse_dashboard_address(8787) == ("127.0.0.1", 8787)
    assert parse_dashboard_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_dashboard_address("[::1]:80") == ("::1", 80)
    assert parse_dashboard_address("http://localhost:1") == ("localhost", 1)
    for bad in ("host:", "host:99999", "a:b", "-1"):
        with pytest.raises(ValueError, match="port must be a number"):
            parse_dashboard_address(bad)
    with pytest.raises(TypeError):
        parse_dashboard_address(True)


def test_exposure_needs_a_secret_off_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    check_exposure(DashboardAddress("127.0.0.1", 0), secret_configured=False)
    check_exposure(DashboardAddress("0.0.0.0", 0), secret_configured=True)
    with pytest.raises(ValueError, match="without a cluster secret"):
        check_exposure(DashboardAddress("0.0.0.0", 0), secret_configured=False)


def test_start_scheduler_refuses_an_open_dashboard_without_secret_and_closes():
    async def main():
        before = sockets_open()
        with pytest.raises(ValueError, match="without a cluster secret"):
            await start_scheduler("tcp://127.0.0.1:0", dashboard_address="0.0.0.0:0")
        await poll_for(lambda: sockets_open() <= before)
        # With a secret, an interface asked for by name is served (and linked by name).
        host, scheduler = await start_scheduler("tcp://127.0.0.1:0", secret=b"s",
                                                dashboard_address="0.0.0.0:0")
        try:
            assert scheduler.dashboard_link.startswith("http://127.0.0.1:")
            dashboard = host.actors[DASHBOARD_ID]
            assert not dashboard.loopback_only
            assert dashboard._sock.getsockname()[0] == "0.0.0.0"
        finally:
            await host.close()  # without close_dashboard: the actor's stop still closes it
        await poll_for(lambda: sockets_open() <= before)
    asyncio.run(main())


def test_start_scheduler_has_no_dashboard_unless_asked():
    async def main():
        host, scheduler = await start_scheduler("inproc://")
        assert scheduler.dashboard_link is None and DASHBOARD_ID not in host.actors
        assert start_dashboard(scheduler, None, secret_configured=False) is None
        await host.close()
    asyncio.run(main())


# --- closing -------------------------------------------------------------------------------
def test_close_ends_websockets_connections_and_the_listener():
    async def main():
        before = sockets_open()
        lc = await LocalCluster(1, 1, processes=False, asynchronous=True, **LOCAL)
        port = port_of(lc.dashboard_link)
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/ws")
        await ws.read_message()
        # An idle keep-alive HTTP connection, as a browser leaves one.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await lc._close_async()
        assert await asyncio.wait_for(ws.read_message(), 5) is None
        assert ws.close_code == 1001
        ws.close()  # (the server closed it; this releases the client's side)
        assert await asyncio.wait_for(reader.read(), 5) in (b"ok", b"")  # then EOF
        writer.close()
        await writer.wait_closed()
        assert refused(port)
        await poll_for(lambda: sockets_open() <= before)
    asyncio.run(main())


@pytest.mark.parametrize("processes", [False, True])
def test_nothing_listens_after_the_client_closes(processes):
    before = sockets_open()
    c = Client(n_workers=1, threads_per_worker=1, processes=processes, set_as_default=False, **LOCAL)
    port = port_of(c.dashboard_link)
    assert c.submit(inc, 1).result() == 2
    assert get(f"http://127.0.0.1:{port}/health") == (200, "ok")
    c.close()
    assert refused(port)
    wait_until(lambda: sockets_open() <= before)


# --- the link, near and far ------------------------------------------------------------------
def test_dashboard_link_of_a_client_connected_by_address(pclient):
    link = pclient.dashboard_link
    assert get(base_url(link) + "/health") == (200, "ok")
    with Client(pclient.scheduler.address, secret=pclient.cluster.secret, set_as_default=False) as c:
        assert c.cluster is None
        assert c.dashboard_link == link  # asked of the scheduler
        assert c.scheduler_info()["services"] == {"dashboard": port_of(link)}


def test_status_over_worker_processes(pclient):
    assert pclient.submit(inc, 1).result() == 2
    s = json.loads(get(base_url(pclient.dashboard_link) + "/api/status")[1])
    assert len(s["workers"]) == 2 and all(w["pid"] != os.getpid() for w in s["workers"])
    assert s["scheduler"].startswith("tcp://127.0.0.1:")
    assert s["totals"]["finished"] >= 1 and pclient.id in s["clients"]


@gen_cluster(**LOCAL)
async def test_async_client_by_address_learns_the_link_from_scheduler_info(c, lc):
    async with Client(lc.scheduler_address, asynchronous=True, secret=lc.secret,
                      set_as_default=False) as other:
        assert other.dashboard_link is None  # an async client cannot block to ask
        info = await other.scheduler_info()
        assert info["services"] == {"dashboard": port_of(lc.dashboard_link)}
        assert other.dashboard_link == lc.dashboard_link


def test_tornado_web_is_loaded_only_when_a_browser_comes():
    code = """if True:
        import sys, urllib.request
        from actorrt import Client
        with Client(n_workers=1, threads_per_worker=1, processes=False,
                    dashboard_address="127.0.0.1:0") as c:
            assert "tornado.web" not in sys.modules
            base = c.dashboard_link[:-len("/status")]
            assert urllib.request.urlopen(base + "/health", timeout=10).read() == b"ok"
            assert "tornado.web" in sys.modules
        print("ok")
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- pieces without sockets ------------------------------------------------------------------
class _Stub:
    def __init__(self, state):
        self.state = state
        self.worker_info = {}
        self.client_refs = {}
        self.host = type("H", (), {"address": "inproc://x"})()


def test_status_keeps_the_most_populous_names():
    state = SchedulerState()
    specs = [TaskSpec(f"n{i}-{j}", "spec", (), name=f"n{i}") for i in range(5) for j in range(i + 1)]
    state.stimulus_update_graph("c", specs, [s.key for s in specs], "s1")  # no workers: all queued
    s = status(_Stub(state), started=0.0, max_names=2)
    assert s["by_name"] == {"n3": {"queued": 4}, "n4": {"queued": 5}}
    assert s["names_omitted"] == 3 and s["tasks"]["total"] == 15


def test_formatting():
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(3 << 40) == "3.0 TiB"
    assert human_duration(5) == "5s" and human_duration(65) == "1m 05s" and human_duration(3723) == "1h 02m 03s"



def test_cli_scheduler_serves_the_dashboard():
    cmd = [sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
           "--dashboard-address", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "actorrt scheduler at tcp://" in proc.stdout.readline()
        line = proc.stdout.readline()
        assert line.startswith("dashboard at http://127.0.0.1:"), line
        link = line.split(" at ", 1)[1].strip()
        assert get(base_url(link) + "/health") == (200, "ok")
    finally:
        stop_processes([proc])
    assert proc.returncode == 0
    assert refused(port_of(link))


def test_cli_refuses_an_open_dashboard_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "ACTORRT_SECRET"}
    out = subprocess.run([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
                          "--dashboard-address", "0.0.0.0:8787"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2 and "without a cluster secret" in out.stderr, out.stderr


def test_browser_fixture_says_what_is_missing(monkeypatch):
    import browser
    monkeypatch.setattr(browser, "CHROMEDRIVER", "/nonexistent/chromedriver")
    monkeypatch.setattr(browser, "CHROMIUM", sys.executable)  # (an executable file)
    reason = browser.missing()
    if reason is not None and "selenium" in reason:
        pytest.skip(reason)
    assert reason == "needs /nonexistent/chromedriver (apt-get install -y chromium-driver)"
