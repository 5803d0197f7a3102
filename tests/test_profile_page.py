"""The dashboard's profile page and its JSON, over HTTP against running clusters."""
import json
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from actorrt import Client, get_worker
from actorrt.dashboard.page import CONTENT_SECURITY_POLICY
from actorrt.dashboard.profile_page import BadQuery, hot_frames, parse_query
from actorrt.diagnostics.profile import KEEP_SECONDS, add_path, new_tree
from actorrt.testing import gen_cluster
from dashboard_http import dashboard_root as base_of, fetch


@pytest.fixture(autouse=True)
def _profiler_on(monkeypatch):
    """Whatever the environment says, these tests sample at the default 10 ms."""
    monkeypatch.setenv("ACTORRT_PROFILE_INTERVAL", "0.01")


LOCAL = {"dashboard_address": "127.0.0.1:0"}


def spin_for_profile(samples=3):
    """CPU-bound until this worker's sampler has seen it ``samples`` times (or 20 s)."""
    profiler = get_worker().profiler
    seen, deadline, total = profiler.history.samples, time.monotonic() + 20, 0
    while profiler.history.samples < seen + samples and time.monotonic() < deadline:
        total += sum(i * i for i in range(1000))
    return total


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@gen_cluster(**LOCAL)
async def test_api_profile_merges_the_workers_trees(c, lc):
    await c.gather(c.map(spin_for_profile, [3, 4]))
    base = base_of(lc.dashboard_link)
    r = await fetch(base + "/api/profile")
    assert r.code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = json.loads(r.body)
    assert body["workers"] == 2 and body["answered"] == 2 and body["seconds"] == 60
    assert "spin_for_profile" in body["names"] and body["tree"]["count"] >= 7
    outer = [ch for ch in body["tree"]["children"].values() if ch["description"]["name"] == "spin_for_profile"]
    assert sum(ch["count"] for ch in outer) * 2 > body["tree"]["count"]  # (most: some may be unpickling)
    only = json.loads((await fetch(base + "/api/profile?key=nothing_like_it&seconds=600")).body)
    assert only["tree"]["count"] == 0 and only["key"] == "nothing_like_it"


@gen_cluster(**LOCAL)
async def test_profile_page_draws_the_graph_without_script(c, lc):
    await c.submit(spin_for_profile, 3)
    base = base_of(lc.dashboard_link)
    r = await fetch(base + "/profile?key=spin_for_profile&seconds=300")
    page = r.body.decode()
    assert r.code == 200 and r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "<svg" in page and "spin_for_profile" in page and "<script" not in page
    assert 'href="profile?key=spin_for_profile&amp;seconds=10"' in page
    css = await fetch(base + "/profile.css")
    assert css.code == 200 and b"svg.flame" in css.body


@gen_cluster(**LOCAL)
async def test_profile_page_escapes_function_and_task_names(c, lc):
    evil = "<img src=x onerror=alert(1)>"

    def task():
        return spin_for_profile(3)
    task.__code__ = task.__code__.replace(co_name=evil)  # the frame's name, sampled
    task.__name__ = evil  # the task's name, listed as a link
    await c.submit(task)
    page = (await fetch(base_of(lc.dashboard_link) + "/profile")).body.decode()
    assert "<img" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") >= 3


@gen_cluster(**LOCAL)
async def test_bad_queries_get_400_naming_the_problem(c, lc):
    base = base_of(lc.dashboard_link)
    for query, match in [("seconds=abc", "seconds must be a whole number"),
                         ("seconds=0", "seconds must be from 1"),
                         (f"seconds={KEEP_SECONDS + 1}", "seconds must be from 1"),
                         ("key=" + quote("k" * 2000), "at most 1000")]:
        for path in ("/api/profile", "/profile"):
            r = await fetch(f"{base}{path}?{query}")
            assert r.code == 400 and match in json.loads(r.body)["error"], (path, query, r.body)
    assert (await fetch(base + "/health")).code == 200


def test_profile_page_over_worker_processes():
    # (its own cluster: the worker processes inherit the autouse fixture's setting)
    with Client(n_workers=2, threads_per_worker=1, processes=True) as pclient:
        _profile_page_over(pclient)


def _profile_page_over(pclient):
    pclient.submit(spin_for_profile, 3).result()
    code, body = get(base_of(pclient.dashboard_link) + "/api/profile?key=spin_for_profile")
    assert code == 200
    got = json.loads(body)
    assert got["answered"] == got["workers"] == 2 and got["tree"]["count"] >= 3


def test_parse_query():
    assert parse_query(None, None) == (None, 60)
    assert parse_query("", "10") == (None, 10)
    assert parse_query("inc", "600") == ("inc", 600)
    with pytest.raises(BadQuery, match="seconds"):
        parse_query(None, "1.5")


def test_hot_frames_ranks_lines_by_own_samples():
    tree = new_tree()
    a, b, c = ("a", "f.py", 1), ("b", "f.py", 2), ("c", "f.py", 3)
    for _ in range(3):
        add_path(tree, [a, b])
    add_path(tree, [a])
    add_path(tree, [c, b])
    assert hot_frames(tree) == [("b", "f.py:2", 4), ("a", "f.py:1", 1)]


def test_the_page_says_why_a_worker_is_missing():
    from actorrt.dashboard.profile_page import ASK_TIMEOUT, _missing_note
    assert _missing_note(0, []) == ""
    assert _missing_note(1, []) == f" (1 did not answer within {ASK_TIMEOUT:g} s)"
    gone = "CommClosedError: connection to tcp://10.0.0.2:1 lost"
    assert _missing_note(0, [gone]) == f" (1 could not be asked ({gone}))"  # not called a timeout
    assert "1 did not answer" in _missing_note(1, [gone, gone]) and "2 could not be asked" in _missing_note(1, [gone, gone])
