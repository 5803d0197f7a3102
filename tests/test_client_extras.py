"""The rest of dask's Client API: get_executor, start, replaying tasks locally,
dump_cluster_state, benchmark_hardware, Reschedule, the new exported names, and
Jupyter's displays (the widget path by faking the notebook detection)."""
import concurrent.futures as cf
import gzip
import json
import threading

import msgpack
import pytest

import actorrt
from actorrt import (BaseActorFuture, Client, ClosedClientError, Reschedule, default_client,
                     ensure_default_client, local_client, temp_default_client)
from actorrt.client import progress as progress_mod
from actorrt.client import progress_widget
from actorrt.testing import gen_cluster, wait_until

_gate = threading.Event()


def inc(x):
    return x + 1


def dec(x):
    return x - 1


def div(a, b):
    return a / b


def wait_gate():
    _gate.wait(10)
    return "ran"


_tries = {"n": 0}


def reschedule_once():
    _tries["n"] += 1
    if _tries["n"] == 1:
        raise Reschedule()
    return _tries["n"]


def uses_local_client(x):
    with local_client() as c:
        return c.submit(inc, x).result()


class Counter:
    def inc(self):
        return 1


@pytest.fixture(scope="module")
def client():
    with Client(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None) as c:
        yield c


def test_executor_futures_are_concurrent_futures(client):
    with client.get_executor(pure=False) as ex:
        fs = [ex.submit(inc, i) for i in range(5)]
        done, not_done = cf.wait(fs, timeout=10)
        assert not not_done and all(isinstance(f, cf.Future) for f in fs)
        assert sorted(f.result() for f in cf.as_completed(fs)) == [1, 2, 3, 4, 5]
        assert list(ex.map(inc, range(3))) == [1, 2, 3]
        bad = ex.submit(div, 1, 0)
        with pytest.raises(ZeroDivisionError):
            bad.result(10)
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(inc, 1)


def test_cancelling_an_executor_future_cancels_the_task(client):
    _gate.clear()
    ex = client.get_executor()
    f = ex.submit(wait_gate)
    assert f.cancel() and f.cancelled()
    # the task is gone from the scheduler before its gate opens: the cancel reached it
    wait_until(lambda: not any(k.startswith("wait_gate") for k in client.cluster.scheduler.state.tasks))
    _gate.set()
    ex.shutdown()


def test_start_is_a_no_op_on_a_running_client_and_refused_when_closed(client):
    assert client.start() is None and client.status == "running"
    c = Client(client.cluster, set_as_default=False)
    c.close()
    with pytest.raises(ClosedClientError):
        c.start()
    with pytest.raises(RuntimeError):  # (the old type still catches it)
        c.submit(inc, 1).result()


def test_recreate_error_locally_raises_here_with_gathered_inputs(client):
    x = client.submit(inc, -1)
    bad = client.submit(div, 1, x)
    downstream = client.submit(inc, bad)
    with pytest.raises(ZeroDivisionError):
        client.recreate_error_locally(bad)
    with pytest.raises(ZeroDivisionError):  # the input that failed first is replayed
        client.recreate_error_locally(downstream)
    ok = client.submit(div, 6, client.submit(inc, 1))
    assert client.recreate_task_locally(ok) == 3
    with pytest.raises(ValueError, match="did not fail"):
        client.recreate_error_locally(ok)
    with pytest.raises(TypeError, match="Future"):
        client.recreate_error_locally(42)


def test_reschedule_runs_the_task_again_and_is_no_error(client):
    _tries["n"] = 0
    assert client.submit(reschedule_once, pure=False).result(timeout=10) == 2


def test_dump_cluster_state_writes_both_sides(client, tmp_path):
    f = client.submit(inc, 1)
    f.result()
    path = client.dump_cluster_state(str(tmp_path / "dump"))
    with gzip.open(path) as fh:
        doc = msgpack.unpackb(fh.read())
    assert f.key in doc["scheduler"]["tasks"]
    assert any(f.key in w["data"] for w in doc["workers"].values())
    path = client.dump_cluster_state(str(tmp_path / "dump"), format="json")
    with open(path) as fh:
        assert json.load(fh)["scheduler"]["tasks"][f.key]["state"] == "memory"
    with pytest.raises(ValueError, match="format"):
        client.dump_cluster_state(str(tmp_path / "x"), format="xml")


def test_benchmark_hardware_has_dasks_shape(client):
    out = client.benchmark_hardware()
    assert set(out) == {"disk", "memory", "network"}
    for kind in out:
        assert out[kind] and all(v > 0 for v in out[kind].values())


def test_new_names_are_exported_and_work(client):
    assert issubclass(ClosedClientError, RuntimeError)
    assert issubclass(actorrt.ActorFuture, BaseActorFuture)
    counter = client.submit(Counter, actor=True).result()
    assert isinstance(counter.inc(), BaseActorFuture)
    other = Client(client.cluster, set_as_default=False)
    try:
        with temp_default_client(other):
            assert default_client() is other
        assert default_client() is client
        ensure_default_client(other)
        assert default_client() is other
        ensure_default_client(client)
    finally:
        other.close()
    assert client.submit(uses_local_client, 1).result() == 2


def test_html_reprs_escape_and_show_the_cluster(client):
    page = client._repr_html_()
    assert "Workers" in page and "Threads" in page and "Memory" in page and "Dashboard" in page
    page = client.cluster._repr_html_()
    assert "LocalCluster" in page and "Workers" in page
    f = client.submit(inc, 1, key="<script>x</script>")
    f.result()
    page = f._repr_html_()
    assert "&lt;script&gt;" in page and "<script>" not in page and "finished" in page


class FakeWidget:
    def __init__(self, *args, **kwargs):
        self.__dict__.update(kwargs)
        self.value = kwargs.get("value", 0)
        self.children = args[0] if args else []
        self.changes = 0

    def __setattr__(self, name, value):
        if name == "value":  # (each change of a real widget is a message to the browser)
            self.__dict__["changes"] = self.__dict__.get("changes", 0) + 1
        self.__dict__[name] = value


class FakeWidgets:
    IntProgress = HTML = HBox = VBox = FakeWidget


def _fake_widget_bars(monkeypatch):
    made = []

    def fake_show(tracker, loop, interval, multi=False):
        bar = progress_widget.WidgetBar(tracker, loop, interval, multi, widgets=FakeWidgets)
        tracker.on_change = bar.changed
        made.append(bar)
        return bar
    monkeypatch.setattr(progress_widget, "in_notebook", lambda: True)
    monkeypatch.setattr(progress_widget, "show", fake_show)
    return made


def test_progress_uses_a_widget_in_a_notebook(client, monkeypatch):
    made = _fake_widget_bars(monkeypatch)
    _gate.clear()
    fs = [client.submit(wait_gate, pure=False) for _ in range(2)]
    assert progress_mod.progress(fs) is None  # returned at once: the gate is still shut
    assert made and made[0].tracker.done == 0
    _gate.set()
    client.gather(fs)
    wait_until(lambda: made[0].tracker.done == 2 and made[0].bar.value == 2)
    assert "2 / 2" in made[0].label.value and made[0].bar.bar_style == "success"


def test_the_widget_redraws_at_most_every_interval_with_a_bar_per_name(client, monkeypatch):
    made = _fake_widget_bars(monkeypatch)
    fs = client.map(inc, range(300), pure=False) + client.map(dec, range(100), pure=False)
    progress_mod.progress(fs, interval=3600, multi=True)
    client.gather(fs)
    bar = made[0]
    wait_until(lambda: bar.bar.value == 400)
    assert bar.bar.changes <= 3  # drawn at the start and at the end: not once per future
    assert {name: row[0].value for name, row in bar.rows.items()} == {"": 400, "inc": 300, "dec": 100}


def test_progress_complete_false_leaves_out_what_is_done(client):
    import io
    done = client.submit(inc, 1)
    done.result()
    out = io.StringIO()
    progress_mod.progress([done, client.submit(inc, 2)], complete=False, file=out)
    assert "1/1 done" in out.getvalue()
    out = io.StringIO()
    assert progress_mod.progress([done], complete=False, file=out) is None and out.getvalue() == ""
    progress_mod.progress([done], file=out)
    assert "1/1 done" in out.getvalue()


def test_notebook_detection_needs_a_kernel(monkeypatch):
    import sys
    import types
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: None
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress_widget.in_notebook() is False
    fake.get_ipython = lambda: types.SimpleNamespace(kernel=None)
    assert progress_widget.in_notebook() is False


@gen_cluster(n_workers=1)
async def test_async_faces(client, cluster):
    assert await client.start() is client
    x = client.submit(div, 1, 0)
    with pytest.raises(ZeroDivisionError):
        await client.recreate_error_locally(x)
    with pytest.raises(ValueError, match="synchronous"):
        client.get_executor()
