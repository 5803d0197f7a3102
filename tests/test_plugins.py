"""Worker and scheduler plugins, register_worker_callbacks, upload_file
(dask.distributed's ``distributed.diagnostics.plugin`` as the specification)."""
import asyncio
import os
import zipfile

import pytest

import actorrt
from actorrt import Client, LocalCluster, NannyPlugin, SchedulerPlugin, UploadFile, WorkerPlugin
from actorrt.testing import gen_cluster, wait_until

# In-process workers share this process: plugins (pickled by reference, this module
# is importable) record what happened here.
EVENTS = []


def inc(x):
    return x + 1


class Recorder(WorkerPlugin):
    def __init__(self, tag="r"):
        self.tag = tag

    def setup(self, worker):
        EVENTS.append(("setup", self.tag, worker.address))
        worker.plugin_tag = self.tag

    def teardown(self, worker):
        EVENTS.append(("teardown", self.tag, worker.address))


class AsyncRecorder(WorkerPlugin):
    async def setup(self, worker):
        await asyncio.sleep(0)
        worker.async_setup = True

    async def teardown(self, worker):
        await asyncio.sleep(0)
        EVENTS.append(("async-teardown", worker.address))


class Transitions(WorkerPlugin):
    def setup(self, worker):
        self.seen = worker.seen_transitions = []

    def transition(self, key, start, finish, **kwargs):
        self.seen.append((key, start, finish))


class Failing(WorkerPlugin):
    def setup(self, worker):
        raise KeyError("no such setting")


class Watcher(SchedulerPlugin):
    def __init__(self):
        self.events = []

    async def start(self, scheduler):
        self.events.append("start")

    async def close(self):
        EVENTS.append("scheduler-plugin-closed")

    def add_worker(self, scheduler, worker):
        self.events.append(("add", worker))

    def remove_worker(self, scheduler, worker, **kwargs):
        self.events.append(("remove", worker))

    def transition(self, key, start, finish, *args, **kwargs):
        self.events.append((key, start, finish))


class FailingStart(SchedulerPlugin):
    def start(self, scheduler):
        raise RuntimeError("cannot start")


def plugin_events(name, dask_scheduler=None):
    return dask_scheduler.plugins.plugins[name].events


@pytest.fixture(autouse=True)
def clear_events():
    EVENTS.clear()


def test_exported_like_dask():
    assert actorrt.WorkerPlugin is WorkerPlugin
    from actorrt.diagnostics.plugin import SchedulerPlugin as S, UploadFile as U
    assert S is SchedulerPlugin and U is UploadFile


# --- worker plugins ------------------------------------------------------------------
def test_worker_plugin_on_current_and_later_workers(client):
    out = client.register_plugin(Recorder("a"), name="rec")
    assert out == {a: {"status": "OK"} for a in client.nthreads()}
    assert client.run(lambda dask_worker: dask_worker.plugin_tag) == {a: "a" for a in client.nthreads()}
    client.cluster.scale(3)
    client.wait_for_workers(3)
    wait_until(lambda: len([e for e in EVENTS if e[0] == "setup"]) == 3)
    assert set(client.run(lambda dask_worker: dask_worker.plugin_tag).values()) == {"a"}


def test_registering_a_name_again_replaces_it(client):
    client.register_plugin(Recorder("old"), name="rec")
    EVENTS.clear()
    client.register_plugin(Recorder("new"), name="rec")
    workers = sorted(client.nthreads())
    assert sorted(e for e in EVENTS if e[0] == "teardown") == [("teardown", "old", w) for w in workers]
    assert sorted(e for e in EVENTS if e[0] == "setup") == [("setup", "new", w) for w in workers]
    for w in workers:  # torn down before the new one is set up
        assert EVENTS.index(("teardown", "old", w)) < EVENTS.index(("setup", "new", w))
    # idempotent keeps the one there
    client.register_plugin(Recorder("third"), name="rec", idempotent=True)
    assert set(client.run(lambda dask_worker: dask_worker.plugin_tag).values()) == {"new"}


def test_unregister_tears_down_and_later_workers_do_not_get_it(client):
    client.register_plugin(Recorder("x"), name="rec")
    client.unregister_worker_plugin("rec")
    assert sorted(e[0] for e in EVENTS) == ["setup", "setup", "teardown", "teardown"]
    client.cluster.scale(3)
    client.wait_for_workers(3)
    assert client.submit(inc, 1).result() == 2
    assert len([e for e in EVENTS if e[0] == "setup"]) == 2
    with pytest.raises(ValueError, match="no worker plugin named 'rec'"):
        client.unregister_worker_plugin("rec")


def test_a_failing_setup_raises_its_exception_and_the_workers_go_on(client):
    with pytest.raises(KeyError, match="no such setting"):
        client.register_plugin(Failing(), name="bad")
    assert client.submit(inc, 1).result() == 2
    client.unregister_worker_plugin("bad")


def test_coroutine_hooks_and_teardown_on_close(client):
    client.register_plugin(AsyncRecorder(), name="async")
    assert set(client.run(lambda dask_worker: dask_worker.async_setup).values()) == {True}
    client.unregister_worker_plugin("async")
    assert len(EVENTS) == 2
    client.register_plugin(Recorder("closing"), name="rec")
    client.cluster.scale(1)
    wait_until(lambda: any(e[0] == "teardown" for e in EVENTS))


def test_transition_hook_and_no_cost_without_it(client):
    states = lambda dask_worker: type(dask_worker.state.log).__name__  # noqa: E731
    client.register_plugin(Recorder(), name="rec")  # no transition hook: nothing watched
    assert set(client.run(states).values()) == {"deque"}
    client.register_plugin(Transitions(), name="tr")
    assert set(client.run(states).values()) == {"NotifyingLog"}
    client.submit(inc, 1, key="watched").result()
    seen = [t for ts in client.run(lambda dask_worker: dask_worker.seen_transitions).values() for t in ts]
    assert ("watched", "executing", "memory") in seen
    client.unregister_worker_plugin("tr")
    assert set(client.run(states).values()) == {"deque"}  # (the plain type again)


def test_register_worker_callbacks(client):
    def setup(dask_worker):
        dask_worker.called_back = True
    client.register_worker_callbacks(setup=setup)
    assert set(client.run(lambda dask_worker: dask_worker.called_back).values()) == {True}
    client.cluster.scale(3)
    client.wait_for_workers(3)
    wait_until(lambda: len(client.run(lambda dask_worker: getattr(dask_worker, "called_back", False))) == 3
               and all(client.run(lambda dask_worker: getattr(dask_worker, "called_back", False)).values()))


@pytest.mark.parametrize("plugin, name, error, match", [
    (Recorder, None, TypeError, "not the class"),
    (object(), None, TypeError, "WorkerPlugin or a SchedulerPlugin"),
    (NannyPlugin(), None, ValueError, "nanny plugins are not supported"),
    (Recorder(), 5, TypeError, "plugin name"),
    (Recorder(), "", TypeError, "plugin name"),
])
def test_bad_registrations_change_nothing(client, plugin, name, error, match):
    with pytest.raises(error, match=match):
        client.register_plugin(plugin, name=name)
    assert EVENTS == []
    assert client.run_on_scheduler(lambda dask_scheduler: dict(dask_scheduler.plugins.worker_plugins)) == {}
    with pytest.raises(TypeError, match="callable"):
        client.register_worker_callbacks(setup=5)
    assert client.submit(inc, 1).result() == 2


# --- scheduler plugins ---------------------------------------------------------------
def test_scheduler_plugin_hooks(client):
    client.register_plugin(Watcher(), name="watch")
    client.submit(inc, 1, key="k").result()
    client.cluster.scale(3)
    client.wait_for_workers(3)
    events = client.run_on_scheduler(plugin_events, "watch")
    assert events[0] == "start"
    assert ("k", "processing", "memory") in events
    assert [e[0] for e in events if e[0] in ("add", "remove")] == ["add"]
    client.cluster.scale(2)
    wait_until(lambda: any(e[0] == "remove" for e in client.run_on_scheduler(plugin_events, "watch")))
    client.unregister_scheduler_plugin("watch")
    assert EVENTS == ["scheduler-plugin-closed"]
    assert client.run_on_scheduler(lambda dask_scheduler: type(dask_scheduler.state.log).__name__) == "deque"
    with pytest.raises(ValueError, match="no scheduler plugin"):
        client.unregister_scheduler_plugin("watch")


def test_scheduler_plugin_failing_start_is_not_kept(client):
    with pytest.raises(RuntimeError, match="cannot start"):
        client.register_plugin(FailingStart(), name="fs")
    assert client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins.plugins)) == []
    assert client.submit(inc, 1).result() == 2


# --- process workers: plugins pickled, upload_file -----------------------------------------
@pytest.fixture(scope="module")
def procs():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


class SetsEnv(WorkerPlugin):
    name = "sets-env"

    def setup(self, worker):
        os.environ["PLUGGED"] = f"{worker.name}"


def getenv(name):
    return os.environ.get(name)


def test_process_workers_get_plugins_also_when_joining_later(procs):
    procs.register_plugin(SetsEnv())
    assert set(procs.run(getenv, "PLUGGED").values()) == {"0"}
    procs.cluster.scale(2)
    procs.wait_for_workers(2)
    wait_until(lambda: sorted(procs.run(getenv, "PLUGGED").values(), key=str) == ["0", "1"], timeout=20)
    procs.unregister_worker_plugin("sets-env")
    procs.cluster.scale(1)
    wait_until(lambda: len(procs.nthreads()) == 1, timeout=20)


def import_value(module):
    import importlib
    return importlib.import_module(module).VALUE


def read_upload(name):
    with open(os.path.join(UploadFile.directory(), name)) as f:
        return f.read()


def test_upload_file_py_reloaded_and_given_to_later_workers(procs, tmp_path):
    path = tmp_path / "uploaded_mod.py"
    path.write_text("VALUE = 1\n")
    procs.upload_file(str(path))
    assert procs.submit(import_value, "uploaded_mod", pure=False).result() == 1
    path.write_text("VALUE = 2\n")
    procs.upload_file(str(path))
    assert set(procs.run(import_value, "uploaded_mod").values()) == {2}
    procs.cluster.scale(2)
    procs.wait_for_workers(2)
    wait_until(lambda: list(procs.run(import_value, "uploaded_mod", on_error="ignore").values()) == [2, 2],
               timeout=20)
    procs.cluster.scale(1)
    wait_until(lambda: len(procs.nthreads()) == 1, timeout=20)


def test_upload_file_without_extension_is_placed_only(procs, tmp_path):
    path = tmp_path / "NOTES"
    path.write_text("hello")
    procs.upload_file(str(path))
    assert procs.submit(read_upload, "NOTES", pure=False).result() == "hello"


def _zip(path, value):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("zipped_pkg/__init__.py", f"VALUE = {value}\n")


def test_upload_zip_importable_and_reloaded(procs, tmp_path):
    path = tmp_path / "bundle.zip"
    _zip(path, 1)
    procs.upload_file(str(path))
    assert procs.submit(import_value, "zipped_pkg", pure=False).result() == 1
    _zip(path, 2)
    procs.upload_file(str(path))
    assert procs.submit(import_value, "zipped_pkg", pure=False).result() == 2


def test_upload_of_a_failing_module_raises_its_error(procs, tmp_path):
    path = tmp_path / "broken_upload.py"
    path.write_text("raise ValueError('broken on import')\n")
    with pytest.raises(ValueError, match="broken on import"):
        procs.upload_file(str(path))
    procs.unregister_worker_plugin("upload_file-broken_upload.py")
    assert procs.submit(inc, 1).result() == 2
    with pytest.raises(FileNotFoundError):
        procs.upload_file(str(tmp_path / "missing.py"))
    with pytest.raises(TypeError, match="filename"):
        procs.upload_file(5)



# --- the async face ------------------------------------------------------------------


@gen_cluster()
async def test_async_client_registers_and_unregisters(client, cluster):
    out = await client.register_plugin(Recorder("async-face"), name="rec")
    assert sorted(out) == sorted(cluster.scheduler.worker_info)
    await client.register_plugin(Watcher(), name="watch")
    assert "watch" in cluster.scheduler.plugins.plugins
    await client.unregister_scheduler_plugin("watch")
    await client.unregister_worker_plugin("rec")
    assert len([e for e in EVENTS if e[0] == "teardown"]) == 2
    with pytest.raises(KeyError, match="no such setting"):
        await client.register_plugin(Failing(), name="bad")
