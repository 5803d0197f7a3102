"""Abstract resources and ``workers=`` by name or host.

First the pure logic (protocol checks, placement, the scheduler's state machine fed
stimuli: no sockets, no sleeps), then in-process clusters whose tasks block on gates,
then real worker processes over TCP started through the CLI and its nanny.
"""
from __future__ import annotations

import logging
import threading

import pytest

from actorrt import Client
from actorrt.client.arguments import check_resources
from actorrt.core import Pickled
from actorrt.core.errors import BadMessageError
from actorrt.deploy.local import format_resources, parse_resources
from actorrt.protocol import decode_resources, decode_tasks
from actorrt.scheduler.instructions import Compute, Report
from actorrt.scheduler.placement import Placement
from actorrt.core.comm import host_of
from actorrt.scheduler.resources import why_unrunnable
from actorrt.scheduler.state import SchedulerState, TaskSpec, TaskState
from actorrt.testing import gen_cluster, poll_for, wait_until
from actorrt.worker import start_worker

GPU = {"GPU": 1.0}


# --- the wire and the arguments ---------------------------------------------------------
def _spec():
    return ["k", [Pickled.dumps(len), None], [], "len", 0, 0, None, False, False]


def test_task_specs_carry_resources_and_need_all_ten_fields():
    [plain] = decode_tasks([_spec() + [None]])
    assert plain.resources is None
    [new] = decode_tasks([_spec() + [{"GPU": 1, "MEM": 2.5}]])
    assert new.resources == {"GPU": 1, "MEM": 2.5}
    with pytest.raises(BadMessageError, match="a list \\[key, spec.*resources\\]"):
        decode_tasks([_spec()])


@pytest.mark.parametrize("bad, match", [
    (["GPU"], "resources must be None or a dict"),
    ({"GPU": -1}, "resources must be None or a dict"),
    ({"GPU": float("nan")}, "resources must be None or a dict"),
    ({"GPU": True}, "resources must be None or a dict"),
    ({1: 1}, "resources must be None or a dict"),
])
def test_a_task_with_bad_resources_is_refused_naming_the_field(bad, match):
    with pytest.raises(BadMessageError, match=f"key 'k'.*{match}"):
        decode_tasks([_spec() + [bad]])


def test_a_worker_declaring_bad_resources_is_refused_naming_the_item():
    assert decode_resources("op", None) == {}
    assert decode_resources("op", {"GPU": 2}) == {"GPU": 2.0}
    with pytest.raises(BadMessageError, match=r"'resources'\['GPU'\] must be a finite number >= 0"):
        decode_resources("op", {"GPU": -2})
    with pytest.raises(BadMessageError, match="'resources' key must be a non-empty str"):
        decode_resources("op", {"": 2})
    with pytest.raises(BadMessageError, match="'resources' must be None or a dict"):
        decode_resources("op", [("GPU", 2)])


def test_client_side_check_and_the_cli_text():
    assert check_resources(None) is None and check_resources({}) is None
    assert check_resources({"GPU": 1}) == {"GPU": 1.0}
    assert parse_resources("GPU=2, MEM=64e9") == {"GPU": 2.0, "MEM": 64e9}
    assert parse_resources(format_resources({"GPU": 0.5, "MEM": 6.4e10})) == {"GPU": 0.5, "MEM": 6.4e10}
    for text, match in [("GPU", "not NAME=AMOUNT"), ("GPU=x", "not NAME=AMOUNT"),
                        ("GPU=-1", "finite number >= 0"), ("=1", "must be non-empty")]:
        with pytest.raises(ValueError, match=match):
            parse_resources(text)


def test_host_of_an_address():
    assert host_of("tcp://127.0.0.1:8786") == "127.0.0.1"
    assert host_of("tls://[::1]:8786") == "::1"
    assert host_of("inproc://abc/1") is None and host_of("w0") is None


# --- placement ---------------------------------------------------------------------------
def task(key, resources=None, workers=None, allow_other_workers=False, priority=0):
    ts = TaskState(key, f"spec-{key}", key)
    ts.state, ts.priority = "queued", (priority,)
    ts.resources = resources
    ts.workers = set(workers) if workers is not None else None
    ts.allow_other_workers = allow_other_workers
    return ts


def check(ok, message):
    assert ok, message


def take_next(p):
    placed = p.next_placement()
    if placed is not None:
        ts, ws = placed
        p.occupy(ws, ts)
        ts.state, ts.processing_on = "processing", ws
    return placed


def test_a_task_with_resources_goes_only_where_they_are_free_and_holds_them():
    p = Placement(2.0)
    p.add_worker("w0", 4)
    p.add_worker("w1", 1, resources={"GPU": 1})
    a, b, plain = task("a", GPU), task("b", GPU), task("plain")
    for ts in (a, b, plain):
        p.enqueue(ts)
    placed = [take_next(p) for _ in range(3)]
    assert placed[0][0] is a and placed[0][1].address == "w1"
    # b waits (held, not parked: w1 could run it once free); the plain task goes on.
    assert placed[1][0] is plain and placed[2] is None
    assert b in p.held and b not in p.unrunnable
    assert p.workers["w1"].used_resources == {"GPU": 1.0}
    p.validate(check)
    p.vacate(p.workers["w1"], a)
    a.state, a.processing_on = "memory", None
    assert p.workers["w1"].used_resources == {}
    assert take_next(p) == (b, p.workers["w1"])
    p.validate(check)


def test_fractions_share_a_worker_and_a_held_bucket_tries_only_its_head():
    p = Placement(2.0)
    p.add_worker("w0", 4, resources={"GPU": 1})  # threads to spare: the GPU is what runs out
    half = [task(f"h{i}", {"GPU": 0.5}, priority=i) for i in range(4)]
    for ts in half:
        p.enqueue(ts)
    assert [take_next(p)[0] for _ in range(2)] == half[:2]
    assert take_next(p) is None and p.held == set(half[2:])
    assert len(p._buckets) == 1  # one signature, one bucket: only its head is tried
    p.vacate(p.workers["w0"], half[0])
    half[0].state, half[0].processing_on = "memory", None
    assert take_next(p)[0] is half[2] and take_next(p) is None
    p.validate(check)


def test_resources_stay_strict_with_allow_other_workers():
    p = Placement(2.0)
    p.add_worker("w0", 1)
    p.add_worker("w1", 1, resources={"GPU": 1})
    assert p.choose(task("t", GPU, workers=["w0"], allow_other_workers=True)).address == "w1"
    assert p.choose(task("t", GPU, workers=["w0"])) is None


def test_workers_by_name_and_by_host():
    p = Placement(2.0)
    p.add_worker("tcp://10.0.0.5:4001", 1, name="alpha")
    p.add_worker("tcp://10.0.0.5:4002", 1, name="beta")
    p.add_worker("tcp://10.0.0.6:4001", 1, name="gamma")
    assert p.choose(task("t", workers=["gamma"])).address == "tcp://10.0.0.6:4001"
    assert p.choose(task("t", workers=["beta"])).address == "tcp://10.0.0.5:4002"
    assert {ws.address for ws in p._present(["10.0.0.5"])} == {"tcp://10.0.0.5:4001", "tcp://10.0.0.5:4002"}
    assert p.choose(task("t", workers=["10.0.0.7"])) is None
    assert not p.pinned_workers_gone(task("t", workers=["10.0.0.6"]))
    p.remove_worker("tcp://10.0.0.6:4001")
    assert p.pinned_workers_gone(task("t", workers=["gamma"]))


def test_why_unrunnable_names_the_resource():
    p = Placement(2.0)
    ws = p.add_worker("w0", 1, resources={"GPU": 1, "MEM": 4})
    assert "no worker has resource 'TPU'" in why_unrunnable({"TPU": 1}, [ws])
    assert "no worker has enough of resource 'GPU' (the task asks for 2, the most a worker declares is 1)" \
        in why_unrunnable({"GPU": 2}, [ws])
    assert why_unrunnable({"GPU": 1}, [ws]) is None
    other = p.add_worker("w1", 1, resources={"TPU": 1})
    assert "no single worker has all" in why_unrunnable({"GPU": 1, "TPU": 1}, [ws, other])


# --- the state machine -----------------------------------------------------------------------
def make(*workers, saturation=2.0):
    """``workers``: (address, nthreads, name, resources) each."""
    s = SchedulerState(saturation=saturation, validate=True)
    s.stimulus_add_client("c")
    for address, nthreads, name, resources in workers:
        s.stimulus_add_worker(address, nthreads, "add", name, resources)
    return s


def submit(s, key, resources=None, workers=None, allow_other_workers=False):
    return s.stimulus_update_graph(
        "c", [TaskSpec(key, f"spec-{key}", (), workers=workers, allow_other_workers=allow_other_workers,
                       resources=resources)], [key], f"submit-{key}")


def computes(out):
    return [(i.key, i.worker) for i in out if isinstance(i, Compute)]


def unrunnable(out):
    return [(i.key, i.info["reason"]) for i in out if isinstance(i, Report) and i.status == "unrunnable"]


def test_the_second_gpu_task_starts_when_the_first_finishes_or_fails():
    s = make(("cpu", 4, "cpu", None), ("gpu", 4, "gpu", {"GPU": 1}))
    assert computes(submit(s, "a", GPU)) == [("a", "gpu")]
    assert computes(submit(s, "b", GPU)) == []
    assert computes(submit(s, "c", GPU)) == []
    assert computes(submit(s, "plain")) == [("plain", "cpu")]  # unrestricted work is not held up
    assert s.tasks["b"].state == "queued"
    assert computes(s.stimulus_task_finished("gpu", "a", 8, "int", "done-a")) == [("b", "gpu")]
    out = s.stimulus_task_erred("gpu", "b", Exception("boom"), None, "err-b")
    assert computes(out) == [("c", "gpu")]
    assert s.workers["gpu"].used_resources == GPU


def test_cancel_and_release_give_resources_back():
    s = make(("gpu", 2, "gpu", {"GPU": 1}))
    submit(s, "a", GPU)
    submit(s, "b", GPU)
    assert computes(s.stimulus_cancel(["a"], None, "cancel-a")) == [("b", "gpu")]
    assert computes(s.stimulus_release_keys("c", ["b"], "release-b")) == []
    assert s.workers["gpu"].used_resources == {}
    assert computes(submit(s, "d", GPU)) == [("d", "gpu")]


def test_a_request_no_worker_can_meet_waits_says_why_and_runs_when_one_joins():
    s = make(("w0", 1, "w0", {"GPU": 1}))
    out = submit(s, "t", {"GPU": 2})
    assert computes(out) == []
    [(key, reason)] = unrunnable(out)
    assert key == "t" and "resource 'GPU'" in reason
    assert s.tasks["t"].state == "queued"
    out = s.stimulus_add_worker("w1", 1, "add-w1", "w1", {"GPU": 4})
    assert computes(out) == [("t", "w1")]


def test_cancelling_a_task_no_worker_can_run_frees_it():
    s = make(("w0", 1, "w0", None))
    assert unrunnable(submit(s, "t", {"TPU": 1}))
    s.stimulus_cancel(["t"], None, "cancel")
    assert "t" not in s.tasks and not s.placement.unrunnable
    s.validate()


def test_losing_the_gpu_worker_moves_its_task_and_parks_what_waited():
    s = make(("cpu", 1, "cpu", None), ("gpu", 1, "gpu", {"GPU": 1}))
    submit(s, "a", GPU)
    submit(s, "b", GPU)
    out = s.stimulus_remove_worker("gpu", "lost")
    assert computes(out) == []
    assert {k for k, _ in unrunnable(out)} == {"a", "b"}
    assert s.tasks["a"].state == s.tasks["b"].state == "queued"
    out = s.stimulus_add_worker("gpu2", 1, "add", "gpu2", {"GPU": 1})
    assert len(computes(out)) == 1  # one at a time again
    s.validate()


def test_workers_by_name_or_host_wait_for_a_worker_that_joins_later():
    s = make(("tcp://10.0.0.5:4001", 1, "alpha", None))
    assert computes(submit(s, "by-name", workers=["alpha"])) == [("by-name", "tcp://10.0.0.5:4001")]
    assert computes(submit(s, "by-host", workers=["10.0.0.5"])) == [("by-host", "tcp://10.0.0.5:4001")]
    out = submit(s, "later", workers=["10.0.0.9"])
    assert computes(out) == [] and unrunnable(out) == []  # a restriction, not a resource: no report
    out = s.stimulus_add_worker("tcp://10.0.0.9:5000", 1, "add", "zeta", None)
    assert computes(out) == [("later", "tcp://10.0.0.9:5000")]
    out = submit(s, "named-later", workers=["omega"])
    assert computes(out) == []
    assert computes(s.stimulus_add_worker("tcp://10.0.0.8:1", 1, "add", "omega", None)) == \
        [("named-later", "tcp://10.0.0.8:1")]


def test_an_actor_asking_for_resources_takes_them_while_it_is_built():
    s = make(("cpu", 1, "cpu", None), ("gpu", 1, "gpu", {"GPU": 1}))
    out = s.stimulus_update_graph("c", [TaskSpec("act", "spec", (), actor=True, resources=GPU)], ["act"], "s")
    assert computes(out) == [("act", "gpu")]
    out = s.stimulus_update_graph("c", [TaskSpec("act2", "spec", (), actor=True, resources=GPU)], ["act2"], "s")
    assert computes(out) == [] and s.tasks["act2"].state == "queued"
    assert computes(s.stimulus_task_finished("gpu", "act", 8, "Counter", "built")) == [("act2", "gpu")]


# --- in-process clusters ---------------------------------------------------------------------
GATES: dict[str, threading.Event] = {}
STARTED: list[str] = []


def gated(name):
    STARTED.append(name)
    assert GATES[name].wait(20), f"gate {name} never opened"
    return name


@gen_cluster(n_workers=1, threads_per_worker=2, resources={"GPU": 1})
async def test_one_gpu_runs_one_gpu_task_at_a_time(client, cluster):
    GATES.clear()
    STARTED.clear()
    GATES.update(first=threading.Event(), second=threading.Event())
    state = cluster.scheduler.state
    first = client.submit(gated, "first", resources=GPU, key="first")
    await poll_for(lambda: STARTED == ["first"])
    second = client.submit(gated, "second", resources=GPU, key="second")
    # The worker has a free thread, but not a free GPU: held by the scheduler.
    assert await client.submit(lambda: 1, pure=False) == 1
    assert state.tasks["second"].state == "queued" and STARTED == ["first"]
    [ws] = state.workers.values()
    assert ws.used_resources == GPU and ws.resources == GPU
    GATES["second"].set()  # (the first's gate still shut: the second cannot have run)
    GATES["first"].set()
    assert await first == "first" and await second == "second"
    assert STARTED == ["first", "second"]
    await poll_for(lambda: not ws.used_resources)
    info = await client.scheduler_info()
    [w] = info["workers"].values()
    assert w["resources"] == GPU


@gen_cluster(n_workers=1)
async def test_a_task_asking_for_an_absent_resource_waits_warns_and_runs_when_it_joins(client, cluster, caplog):
    caplog.set_level(logging.WARNING, "actorrt.client")
    f = client.submit(lambda: "ran", resources={"TPU": 2}, pure=False)
    await poll_for(lambda: "no worker has resource 'TPU'" in caplog.text)
    assert f.status == "pending"
    host, _ = await start_worker(cluster.scheduler_address, address="inproc://", secret=cluster.secret,
                                 name="tpu", death_timeout=0, resources={"TPU": 2})
    try:
        assert await f == "ran"
        assert (await client.who_has(f))[f.key] == [host.address]
    finally:
        await host.close()


@gen_cluster(n_workers=1)
async def test_cancel_frees_a_task_no_worker_can_run(client, cluster):
    f = client.submit(lambda: 1, resources={"TPU": 1}, pure=False)
    await poll_for(lambda: [ts.key for ts in cluster.scheduler.state.placement.unrunnable] == [f.key])
    await client.cancel(f)
    await poll_for(lambda: f.key not in cluster.scheduler.state.tasks)
    assert await client.submit(lambda: 2, pure=False) == 2


@gen_cluster(n_workers=2)
async def test_workers_by_name(client, cluster):
    names = {info["name"]: address for address, info in (await client.scheduler_info())["workers"].items()}
    for name, address in names.items():
        f = client.submit(lambda x: x, name, workers=name)
        assert await f == name
        assert (await client.who_has(f))[f.key] == [address]


@gen_cluster(n_workers=1)
async def test_bad_resources_raise_at_the_call_and_the_cluster_runs_on(client, cluster):
    with pytest.raises(ValueError, match="amount of 'GPU' must be a finite number >= 0"):
        client.submit(lambda: 1, resources={"GPU": -1})
    with pytest.raises(TypeError, match="resources must be a dict"):
        client.map(lambda x: x, [1], resources="GPU=1")
    assert not cluster.scheduler.state.tasks
    assert await client.submit(lambda: 3, pure=False) == 3


# --- worker processes, over TCP, through the CLI and the nanny ---------------------------
def where_am_i():
    from actorrt import get_worker
    return get_worker().address


def test_worker_processes_declare_resources_and_take_workers_by_host_and_name():
    with Client(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1, "MEM": 2e9},
                dashboard_address=None) as c:
        workers = c.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(w["resources"] == {"GPU": 1.0, "MEM": 2e9} for w in workers.values())
        assert all(w["nanny"] for w in c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_info).values())
        # Two GPU tasks per worker would need 2 GPUs: each worker runs at most one at a time.
        futures = c.map(lambda i: i, range(6), resources={"GPU": 1})
        assert c.gather(futures) == list(range(6))
        assert set(c.gather([c.submit(where_am_i, pure=False, workers="127.0.0.1") for _ in range(4)])) <= set(workers)
        address, info = next(iter(workers.items()))
        assert c.submit(where_am_i, pure=False, workers=info["name"]).result() == address
        f = c.submit(where_am_i, pure=False, resources={"GPU": 2})
        wait_until(lambda: f.key in c.run_on_scheduler(
            lambda dask_scheduler: [ts.key for ts in dask_scheduler.state.placement.unrunnable]))
        c.cancel(f)


def test_cli_worker_refuses_bad_resources(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "actorrt.deploy.cli", "worker", "tcp://127.0.0.1:1",
                           "--resources", "GPU=lots"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--resources: 'GPU=lots' is not NAME=AMOUNT" in proc.stderr


def test_scatter_takes_workers_by_name_and_by_host(client, pclient):
    info = client.scheduler_info()["workers"]
    address = sorted(info)[0]
    [f] = client.scatter([41], workers=[str(info[address]["name"])])
    assert client.who_has(f)[f.key] == [address]
    [g] = pclient.scatter([42], workers="127.0.0.1")  # the host of every worker there
    assert pclient.who_has(g)[g.key][0].startswith("tcp://127.0.0.1:") and g.result() == 42
