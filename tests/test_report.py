"""performance_report and its HTML (diagnostics/report.py): rendered text, escaping,
a self-contained file, and the context manager with sync and async clients."""
import re

import pytest

import actorrt
from actorrt import Client, performance_report
from actorrt.diagnostics.report import colour, function_summary, render_report, task_stream_svg
from actorrt.testing import gen_cluster

EVIL = '<script>alert("k")</script>&'


def rec(key, name, start, stop, status="OK", action="compute", worker="tcp://w:1", thread=1, **extra):
    ss = {"action": action, "start": start, "stop": stop, **extra}
    return {"key": key, "name": name, "worker": worker, "thread": thread if action == "compute" else None,
            "status": status, "nbytes": 10, "type": "int", "startstops": [ss]}


RECORDS = [rec("inc-1", "inc", 0.0, 1.0), rec("inc-2", "inc", 1.0, 2.0), rec(EVIL, EVIL, 0.5, 0.75, status="error"),
           rec("inc-1", "inc", 2.0, 2.5, action="transfer", source="tcp://v:2"),
           rec("x", "x", 3.0, 3.5, action="disk-write")]


def assert_self_contained(page):
    assert "<script" not in page.replace("&lt;script", "")
    assert not re.search(r'\b(src|href)\s*=', page)          # nothing loaded from anywhere
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_report_escapes_keys_and_is_self_contained():
    page = render_report(RECORDS, start=0.0, stop=4.0, figures_before={"tcp://w:1": {"cpu": 5.0, "rss": 1000}},
                         figures_after={"tcp://w:1": {"cpu": 50.0, "rss": 2000, "nthreads": 2}})
    assert EVIL not in page and "&lt;script&gt;alert(&quot;k&quot;)&lt;/script&gt;&amp;" in page
    assert_self_contained(page)
    assert page.count('<rect class="run"') == 5
    assert "#d62728" in page                                  # the erred run is red
    assert "from tcp://v:2" in page                           # a transfer's hover names its source
    assert "50%" in page and "no profile was collected" in page


def test_profile_section_and_empty_report():
    page = render_report([], start=0.0, stop=1.0, profile_svg="<svg id='flame'></svg>")
    assert "<svg id='flame'></svg>" in page and "no task ran in this interval" in page


def test_function_summary():
    rows = {(r["action"], r["name"]): r for r in function_summary(RECORDS)}
    assert rows[("compute", "inc")]["count"] == 2 and rows[("compute", "inc")]["total"] == 2.0
    assert rows[("compute", "inc")]["mean"] == 1.0
    assert rows[("compute", EVIL)]["errors"] == 1
    assert rows[("transfer", "transfer")]["nbytes"] == 10


def test_many_records_are_capped():
    many = [rec(f"t-{i}", "t", i, i + 0.5) for i in range(30)]
    svg = task_stream_svg(many, max_rects=10)
    assert svg.count("<rect") == 10 and "20 earlier pieces left out" in svg


def test_colours_are_stable_and_never_the_error_red():
    assert colour("inc") == colour("inc")
    hues = [int(colour(f"f{i}")[4:].split(",")[0]) for i in range(200)]
    assert all(30 <= h < 330 for h in hues)


def inc(x):
    return x + 1


def test_performance_report_sync(tmp_path):
    path = tmp_path / "report.html"
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        c.submit(inc, 100).result()  # before the block: not in the report
        with performance_report(filename=str(path)):
            c.gather(c.map(inc, range(8)))
    page = path.read_text()
    assert page.count('<rect class="run"') == 8
    assert_self_contained(page)
    assert "8 task runs, 0 erred" in page
    with pytest.raises(TypeError, match="filename"):
        performance_report(filename=5)
    for option in ({"mode": "cdn"}, {"storage_options": {"anon": True}}, {"stacklevel": 2}):
        with pytest.raises(ValueError, match=rf"\({next(iter(option))}=\.\.\.\) is not supported"):
            performance_report(**option)


@gen_cluster(n_workers=1, threads_per_worker=1)
async def test_performance_report_async(c, lc, tmp_path):
    path = tmp_path / "report.html"
    async with performance_report(filename=str(path), client=c):
        await actorrt.wait([c.submit(inc, 1), c.submit(inc, 2)])
    assert path.read_text().count('<rect class="run"') == 2


def spin_for_a_while(seconds):
    import time
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


def test_performance_report_carries_the_profile_of_the_block(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTORRT_PROFILE_INTERVAL", raising=False)  # (the default: on)
    path = tmp_path / "report.html"
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        with performance_report(filename=str(path)):
            c.gather(c.map(spin_for_a_while, [0.3, 0.3]))
    page = path.read_text()
    assert '<svg class="flame"' in page and "spin_for_a_while" in page  # the sampled function
    assert "no profile" not in page
    assert_self_contained(page)
