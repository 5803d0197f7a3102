"""A cluster across machines, as the README deploys it, on a LAN of network namespaces.

Every "machine" is a Linux network namespace with its own IPv4 address on a private
bridge (tests/netns.py). Each runs what a real machine would run:

* the scheduler: ``python -m actorrt.deploy.cli scheduler --host 0.0.0.0 --port 8786``
  (= ``actorrt-scheduler``) with ``ACTORRT_SECRET`` set;
* each worker: ``python -m actorrt.deploy.cli worker tcp://SCHEDULER_IP:8786 --nthreads 1
  --name wN`` (= ``actorrt-worker``), no ``--host``;
* the client: a Python process in a client namespace doing
  ``Client("tcp://SCHEDULER_IP:8786")`` (the secret from ``ACTORRT_SECRET``). The
  client side of each scenario is a ``client_*`` function below, run as
  ``python -c "import test_multihost; test_multihost.client_main()" SCENARIO ARGS``; it
  reports to the test as JSON lines on stdout and, where the test must act in the
  middle (kill a worker, cut a link), waits for a word on stdin.

All processes get ``ACTORRT_HEARTBEAT_TIMEOUT=3``. The pytest process itself stays in the
root namespace, which has no route to the LAN. Skipped unless Linux, root and
``ip netns`` work.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
import traceback

import netns
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PORT = 8786
HEARTBEAT_TIMEOUT = 3.0
MARK = "@@multihost "  # prefix of the client processes' report lines
NODE = os.environ.get("MULTIHOST_NODE", "")  # which "machine" this process is (set per process)
KEEP = object()


# --- run on the workers --------------------------------------------------------------------

def slow_inc(x):
    time.sleep(0.005)
    return x + 1, NODE


def inc(x):
    return x + 1


def node():
    return NODE


def produce(queue_name, n):
    from actorrt import Queue
    q = Queue(queue_name)
    for i in range(n):
        q.put(i)
    return NODE


def consume(queue_name, n):
    from actorrt import Queue
    q = Queue(queue_name)
    return [q.get(timeout=30) for _ in range(n)], NODE


def locked_increment(lock_name, var_name):
    """Read-modify-write of a Variable under a Lock: lost updates if the lock does not hold."""
    from actorrt import Lock, Variable
    with Lock(lock_name):
        v = Variable(var_name)
        x = v.get(timeout=30)
        time.sleep(0.02)
        v.set(x + 1)
    return NODE


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def where(self):
        return NODE


def bump(counter, times):
    """A task calling an actor that lives on another worker."""
    return [counter.increment().result(timeout=30) for _ in range(times)], NODE


def make_array(nbytes, seed):
    import numpy as np
    return np.random.default_rng(seed).random(nbytes // 8)


def digest(arr):
    return hashlib.sha256(arr.tobytes()).hexdigest(), int(arr.nbytes), NODE


def slow_sum(values, delay, event_name):
    """Signals that it started, then holds its worker for ``delay`` s."""
    from actorrt import Event
    Event(event_name).set()
    time.sleep(delay)
    return sum(values), NODE


# --- run in the client namespace -----------------------------------------------------------

def _emit(event, **data):
    print(MARK + json.dumps({"event": event, **data}), flush=True)


def _await(word):
    line = sys.stdin.readline().strip()
    if line != word:
        raise RuntimeError(f"expected {word!r} from the test, got {line!r}")


def _connect(address, n_workers):
    from actorrt import Client
    client = Client(address, timeout=20)
    client.wait_for_workers(n_workers, timeout=30)
    return client


def _by_name(client):
    """{worker name: address} and the scheduler_info it came from."""
    info = client.scheduler_info()
    return {w["name"]: a for a, w in info["workers"].items()}, info


def _gather(client, futures, timeout=30):
    from actorrt import wait
    wait(futures, timeout=timeout)
    return client.gather(futures)


def client_map(address):
    with _connect(address, 2) as c:
        _, info = _by_name(c)
        results = _gather(c, c.map(slow_inc, range(200)))
        return {
            "scheduler_address": info["address"],
            "workers": {a: {"name": w["name"], "host": w["host"]} for a, w in info["workers"].items()},
            "values": [v for v, _ in results],
            "nodes": sorted({n for _, n in results}),
            "per_node": {n: sum(1 for _, m in results if m == n) for n in {m for _, m in results}},
        }


def client_coordination(address, tag):
    from actorrt import Variable
    with _connect(address, 2) as c:
        names, _ = _by_name(c)
        a1, a2 = names["w1"], names["w2"]
        out = {}
        # A queue fed by a task on w1 and drained by a task on w2.
        cons = c.submit(consume, f"q-{tag}", 20, workers=[a2], pure=False)
        prod = c.submit(produce, f"q-{tag}", 20, workers=[a1], pure=False)
        out["queue_items"], out["consumer_node"] = cons.result(timeout=30)
        out["producer_node"] = prod.result(timeout=30)
        # A counter in a Variable, incremented under a Lock by tasks on both workers.
        Variable(f"v-{tag}").set(0)
        fs = [c.submit(locked_increment, f"l-{tag}", f"v-{tag}", workers=[a1 if i % 2 else a2], pure=False)
              for i in range(10)]
        out["lock_nodes"] = sorted(set(_gather(c, fs)))
        out["variable"] = Variable(f"v-{tag}").get(timeout=10)
        # An actor on w1, called from the client and from a task on w2.
        counter = c.submit(Counter, actor=True, workers=[a1]).result(timeout=30)
        out["actor_node"] = counter.where().result(timeout=10)
        out["client_call"] = counter.increment().result(timeout=10)
        out["task_calls"], out["task_node"] = c.submit(bump, counter, 5, workers=[a2], pure=False).result(timeout=30)
        out["client_call_after"] = counter.increment().result(timeout=10)
        return out


def client_big(address, nbytes, seed):
    import numpy as np
    with _connect(address, 2) as c:
        names, _ = _by_name(c)
        a1, a2 = names["w1"], names["w2"]
        t0 = time.monotonic()
        arr = c.submit(make_array, nbytes, seed, workers=[a1], pure=False)
        d = c.submit(digest, arr, workers=[a2], pure=False)
        remote_sha, remote_nbytes, digest_node = d.result(timeout=40)
        t1 = time.monotonic()
        held_by = sorted(c.who_has([arr]).get(arr.key, []))
        local = arr.result(timeout=40)
        t2 = time.monotonic()
        expected = np.random.default_rng(seed).random(nbytes // 8)
        return {
            "expected_sha": hashlib.sha256(expected.tobytes()).hexdigest(),
            "remote_sha": remote_sha, "remote_nbytes": remote_nbytes, "digest_node": digest_node,
            "gathered_sha": hashlib.sha256(local.tobytes()).hexdigest(), "gathered_nbytes": int(local.nbytes),
            "held_by": held_by, "w1": a1, "w2": a2,
            "transfer_s": round(t1 - t0, 3), "gather_s": round(t2 - t1, 3),
        }


def _doomed_work(c, victim, event_name):
    """20 results held on ``victim`` and a sum of them running there (2 s)."""
    from actorrt import Event
    xs = c.map(inc, range(20), workers=[victim], allow_other_workers=True)
    _gather(c, xs)
    who = c.who_has(xs)
    total = c.submit(slow_sum, xs, 2.0, event_name, workers=[victim], allow_other_workers=True, pure=False)
    if not Event(event_name).wait(timeout=30):
        raise RuntimeError("slow_sum never started")
    only_on_victim = sum(1 for f in xs if who.get(f.key) == [victim])
    return xs, total, only_on_victim


def client_kill(address, tag):
    with _connect(address, 2) as c:
        names, info = _by_name(c)
        victim = names["k1"]
        xs, total, only_on_victim = _doomed_work(c, victim, f"e-{tag}")
        _emit("holding", victim=victim, pid=info["workers"][victim]["pid"], only_on_victim=only_on_victim)
        _await("killed")
        t0 = time.monotonic()
        value, ran_on = total.result(timeout=40)
        again = _gather(c, xs)
        deadline = time.monotonic() + 10
        while victim in c.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        names_after, _ = _by_name(c)
        return {"total": value, "ran_on": ran_on, "recomputed": again, "after_kill_s": round(time.monotonic() - t0, 3),
                "workers_after": sorted(names_after), "only_on_victim": only_on_victim}


def client_partition(address, tag, drop_deadline):
    with _connect(address, 2) as c:
        names, _ = _by_name(c)
        victim = names["p1"]
        xs, total, only_on_victim = _doomed_work(c, victim, f"e-{tag}")
        _emit("ready", victim=victim, only_on_victim=only_on_victim)
        _await("down")
        deadline = time.monotonic() + drop_deadline
        dropped_at = None
        while time.monotonic() < deadline:
            if victim not in c.scheduler_info()["workers"]:
                dropped_at = time.time()
                break
            time.sleep(0.1)
        t0 = time.monotonic()
        value, ran_on = total.result(timeout=40)
        again = _gather(c, xs)
        _emit("dropped", dropped_at=dropped_at, total=value, ran_on=ran_on, recomputed=again,
              finish_s=round(time.monotonic() - t0, 3), workers=sorted(_by_name(c)[0]))
        _await("up")
        t_up = time.monotonic()
        rejoined_s = None
        while time.monotonic() - t_up < 30:  # healed: the partitioned worker comes back
            if "p1" in _by_name(c)[0]:
                rejoined_s = round(time.monotonic() - t_up, 3)
                break
            time.sleep(0.1)
        names_after, _ = _by_name(c)
        after = [v for v, _ in _gather(c, c.map(slow_inc, range(1000, 1050)))]
        on_p1 = None
        if "p1" in names_after:  # and it works again, empty but usable
            on_p1 = _gather(c, [c.submit(slow_inc, 7, workers=[names_after["p1"]], pure=False)])[0]
        return {"after_values": after, "workers_after": sorted(names_after), "rejoined_s": rejoined_s,
                "on_p1": on_p1}


def client_refused(address):
    """Try to connect (with whatever secret the environment has); how it was refused."""
    from actorrt import Client
    t0 = time.monotonic()
    try:
        client = Client(address, timeout=5, set_as_default=False)
    except BaseException as e:  # noqa: BLE001 - the point is to report what it was
        return {"refused": True, "type": type(e).__name__, "mro": [k.__name__ for k in type(e).__mro__],
                "message": str(e), "cause": repr(e.__cause__), "elapsed": round(time.monotonic() - t0, 3)}
    client.close()
    return {"refused": False, "elapsed": round(time.monotonic() - t0, 3)}


def _watchdog(budget):
    """After ``budget`` s, report where every thread is and exit: a hung client fails the
    test quickly and says where it hung, instead of running into pytest's timeout."""
    import threading

    def expire():
        stacks = "\n".join(f"--- thread {t}:\n{''.join(traceback.format_stack(f))}"
                           for t, f in sys._current_frames().items())
        _emit("error", error=f"the client scenario did not finish within {budget} s; its threads:\n{stacks}")
        os._exit(3)
    timer = threading.Timer(budget, expire)
    timer.daemon = True
    timer.start()


def client_main():
    scenario, kwargs = sys.argv[1], json.loads(sys.argv[2])
    _watchdog(kwargs.pop("budget"))
    try:
        result = globals()[f"client_{scenario}"](**kwargs)
    except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
        _emit("error", error=traceback.format_exc())
        sys.exit(1)
    _emit("result", **result)


# --- the harness -------------------------------------------------------------------------

class ClientRun:
    """A client scenario running in the client namespace."""

    def __init__(self, deployment, scenario, env, kwargs, budget):
        self.d = deployment
        self.deadline = time.monotonic() + budget + 10  # its watchdog fires at budget
        ns = deployment.lan.namespaces["client"]
        self.proc = ns.run([sys.executable, "-c", "import test_multihost; test_multihost.client_main()",
                            scenario, json.dumps({**kwargs, "budget": budget})], env, stdin=True,
                           label=f"client:{scenario}")
        deployment.procs.append(self.proc)
        self.seen = 0

    def expect(self, event, timeout=None):
        timeout = self.deadline - time.monotonic() if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                i, line = self.proc.wait_for_line(lambda s: s.startswith(MARK), max(0.0, deadline - time.monotonic()),
                                                  start=self.seen)
            except TimeoutError as e:
                raise AssertionError(f"waiting for {event!r} from the client: {e}\n{self.d.describe()}") from None
            self.seen = i + 1
            msg = json.loads(line[len(MARK):])
            if msg["event"] == event:
                return msg
            if msg["event"] == "error":
                raise AssertionError(f"the client failed:\n{msg['error']}\n{self.d.describe()}")

    def send(self, word):
        self.proc.send_line(word)

    def finish(self, timeout=None):
        """The scenario's result; the client process must then exit 0 by itself."""
        result = self.expect("result", timeout)
        try:
            rc = self.proc.wait(15)
        except Exception:  # noqa: BLE001
            rc = None
        if rc != 0:
            raise AssertionError(f"the client process did not exit cleanly after its result (exit {rc})\n"
                                 f"{self.d.describe()}")
        return result


class Deployment:
    """One scheduler and its workers, each in its own namespace, started as the README says."""

    def __init__(self, lan, prefix=""):
        self.lan, self.prefix = lan, prefix
        self.secret = secrets.token_hex(16)
        self.procs = []
        self.workers = {}
        self.scheduler_ns = self.scheduler = None
        self.printed_address = None  # what the scheduler printed
        self.address = None  # what workers and clients dial

    def env(self, node, secret=KEEP):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, REPO, os.environ.get("PYTHONPATH")) if p)
        env["ACTORRT_HEARTBEAT_TIMEOUT"] = str(HEARTBEAT_TIMEOUT)
        env["PYTHONUNBUFFERED"] = "1"
        env["MULTIHOST_NODE"] = node
        env.pop("ACTORRT_SECRET", None)
        secret = self.secret if secret is KEEP else secret
        if secret is not None:
            env["ACTORRT_SECRET"] = secret
        return env

    def start_scheduler(self, tag="sched"):
        ns = self.scheduler_ns = self.lan.add(self.prefix + tag)
        self.scheduler = ns.run([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--host", "0.0.0.0",
                                 "--port", str(PORT)], self.env(tag), label=self.prefix + tag)
        self.procs.append(self.scheduler)
        self.address = f"tcp://{ns.ip}:{PORT}"
        _, line = self.scheduler.wait_for_line("actorrt scheduler at ", timeout=30)
        self.printed_address = line.split(" at ", 1)[1].strip()

    def start_worker(self, tag, *flags):
        ns = self.lan.add(self.prefix + tag)
        proc = ns.run([sys.executable, "-m", "actorrt.deploy.cli", "worker", self.address, "--nthreads", "1",
                       "--name", tag, *flags], self.env(tag), label=self.prefix + tag)
        self.procs.append(proc)
        self.workers[tag] = (ns, proc)
        return proc

    def client(self, scenario, secret=KEEP, budget=30, **kwargs):
        """Run ``client_{scenario}(**kwargs)`` in the client namespace, given ``budget`` s."""
        return ClientRun(self, scenario, self.env("client", secret), kwargs, budget)

    def describe(self):
        ips = ", ".join(f"{ns.tag}={ns.ip}" for ns in self.lan.namespaces.values())
        return (f"scheduler printed: {self.printed_address!r}; dialled at {self.address}; namespaces: {ips}\n"
                + "\n".join(f"--- {p.label} (pid {p.pid}, exit {p.poll()}):\n{p.tail(30)}" for p in self.procs))

    def close(self):
        self.lan.stop(self.procs)


def _fail_on(problems, d):
    assert not problems, "\n".join(["", *problems, "", d.describe()])


@pytest.fixture(scope="module")
def lan():
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.sweep_stale()
    the_lan = netns.Lan()
    try:
        the_lan.add("client")
        yield the_lan
    finally:
        the_lan.close()


@pytest.fixture(scope="module")
def cluster(lan):
    """The shared cluster: a scheduler and workers w1, w2 (for the scenarios that leave it whole)."""
    d = Deployment(lan)
    try:
        d.start_scheduler()
        d.start_worker("w1")
        d.start_worker("w2")
        yield d
    finally:
        d.close()


@pytest.fixture
def own_cluster(lan, request):
    """A scheduler and two workers for one test that breaks them."""
    d = Deployment(lan, prefix=request.node.name.split("_")[1][:4] + "-")
    try:
        d.start_scheduler()
        yield d
    finally:
        d.close()


# --- the scenarios -----------------------------------------------------------------------

def test_map_across_machines_and_advertised_addresses(cluster):
    r = cluster.client("map", address=cluster.address).finish()
    ips = {tag: ns.ip for tag, (ns, _) in cluster.workers.items()}
    problems = []
    if r["values"] != list(range(1, 201)):
        problems.append(f"map results wrong: {r['values'][:10]}...")
    if r["nodes"] != ["w1", "w2"]:
        problems.append(f"the 200 tasks ran on {r['per_node']}, not on both workers")
    got = {w["name"]: w["host"] for w in r["workers"].values()}
    if got != ips:
        problems.append(f"workers advertise {sorted(r['workers'])} (hosts by name {got}); "
                        f"expected their namespaces' IPs {ips}")
    if r["scheduler_address"] != cluster.address:
        problems.append(f"scheduler_info()['address'] is {r['scheduler_address']!r}, expected {cluster.address!r}")
    if cluster.printed_address != cluster.address:
        problems.append(f"the scheduler printed {cluster.printed_address!r}, expected {cluster.address!r}")
    _fail_on(problems, cluster)


def test_queue_lock_variable_and_actor_across_machines(cluster):
    r = cluster.client("coordination", address=cluster.address, tag=secrets.token_hex(4)).finish()
    problems = []
    expect = {"queue_items": list(range(20)), "producer_node": "w1", "consumer_node": "w2",
              "lock_nodes": ["w1", "w2"], "variable": 10, "actor_node": "w1", "client_call": 1,
              "task_calls": [2, 3, 4, 5, 6], "task_node": "w2", "client_call_after": 7}
    for k, v in expect.items():
        if r.get(k) != v:
            problems.append(f"{k}: got {r.get(k)!r}, expected {v!r}")
    _fail_on(problems, cluster)


def test_50mb_array_moves_between_machines(cluster):
    r = cluster.client("big", address=cluster.address, nbytes=50 * 2**20, seed=213).finish()
    problems = []
    if r["w1"] not in r["held_by"]:
        problems.append(f"the array is held by {r['held_by']}, not by w1 {r['w1']} that made it")
    if r["digest_node"] != "w2":
        problems.append(f"the digest ran on {r['digest_node']}, not w2")
    if (r["remote_sha"], r["remote_nbytes"]) != (r["expected_sha"], 50 * 2**20):
        problems.append(f"w2 saw {r['remote_nbytes']} bytes with sha256 {r['remote_sha']}, "
                        f"expected {50 * 2**20} with {r['expected_sha']}")
    if (r["gathered_sha"], r["gathered_nbytes"]) != (r["expected_sha"], 50 * 2**20):
        problems.append(f"the client gathered {r['gathered_nbytes']} bytes with sha256 {r['gathered_sha']}")
    _fail_on(problems, cluster)
    print(f"50 MB: made on w1 and digested on w2 in {r['transfer_s']} s, gathered in {r['gather_s']} s")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killed_worker_work_finishes_elsewhere(own_cluster):
    d = own_cluster
    doomed = d.start_worker("k1", "--no-nanny")  # the process we kill is the worker, and stays dead
    d.start_worker("k2")
    run = d.client("kill", address=d.address, tag=secrets.token_hex(4), budget=60)
    msg = run.expect("holding")
    problems = []
    if msg["pid"] != doomed.pid:
        problems.append(f"harness: the scheduler says k1 is pid {msg['pid']}, we started pid {doomed.pid}")
    if msg["only_on_victim"] == 0:
        problems.append("harness: no result was held only by k1 when it was killed")
    doomed.kill()  # SIGKILL, in its namespace
    doomed.wait(10)
    run.send("killed")
    r = run.finish()
    if r["total"] != sum(range(1, 21)):
        problems.append(f"the dependent sum is {r['total']}, expected {sum(range(1, 21))}")
    if r["ran_on"] != "k2":
        problems.append(f"the dependent sum finished on {r['ran_on']!r}, not k2")
    if r["recomputed"] != list(range(1, 21)):
        problems.append(f"the results lost with k1 came back as {r['recomputed']}")
    if r["workers_after"] != ["k2"]:
        problems.append(f"workers after the kill: {r['workers_after']}, expected ['k2']")
    _fail_on(problems, d)
    print(f"kill: {r['only_on_victim']} results held only by k1; the work finished {r['after_kill_s']} s after")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_silent_partition_drops_worker_and_it_rejoins_when_healed(own_cluster, lan):
    d = own_cluster
    cut = d.start_worker("p1")
    d.start_worker("p2")
    cut_ns = d.workers["p1"][0]
    limit = HEARTBEAT_TIMEOUT + 2
    run = d.client("partition", address=d.address, tag=secrets.token_hex(4), drop_deadline=limit + 10,
                   budget=60)
    run.expect("ready")
    problems = []
    t_down = time.time()
    lan.link_down(cut_ns)
    try:
        run.send("down")
        msg = run.expect("dropped")
    finally:
        lan.link_up(cut_ns)
    t_up = time.time()
    exited_before_up = cut.poll() is not None
    if msg["dropped_at"] is None:
        problems.append(f"the scheduler still listed p1 {limit + 10} s after its link went down")
    elif msg["dropped_at"] - t_down > limit:
        problems.append(f"the scheduler dropped p1 {msg['dropped_at'] - t_down:.1f} s after its link went down "
                        f"(limit {limit} s with ACTORRT_HEARTBEAT_TIMEOUT={HEARTBEAT_TIMEOUT:g})")
    if (msg["total"], msg["ran_on"]) != (sum(range(1, 21)), "p2"):
        problems.append(f"the sum that was running on p1 gave {msg['total']} on {msg['ran_on']!r}, "
                        f"expected {sum(range(1, 21))} on p2")
    if msg["recomputed"] != list(range(1, 21)):
        problems.append(f"the results held by p1 came back as {msg['recomputed']}")
    run.send("up")
    r = run.finish()
    if r["after_values"] != list(range(1001, 1051)):
        problems.append(f"new tasks after the link came back: {r['after_values']}")
    if exited_before_up or cut.poll() is not None:
        problems.append(f"the partitioned worker p1 exited (code {cut.returncode}) instead of rejoining "
                        "within its death timeout")
    if r["rejoined_s"] is None or r["workers_after"] != ["p1", "p2"]:
        problems.append(f"p1 did not rejoin within 30 s of the link coming back: workers {r['workers_after']}")
    elif r["on_p1"] != [8, "p1"]:
        problems.append(f"a task placed on the rejoined p1 gave {r['on_p1']}")
    _fail_on(problems, d)
    print(f"partition: dropped {msg['dropped_at'] - t_down:.2f} s after the link went down; sum finished "
          f"{msg['finish_s']} s after that; p1 rejoined {r['rejoined_s']} s after the link came back "
          f"(up at {t_up - t_down:.1f} s)")


def _is_auth_refusal(r):
    if r.get("mro") is None:
        return False
    if "AuthenticationError" in r["mro"]:
        return True
    named = "authenticat" in (r["message"] + r["cause"]).lower()
    return named and ("CommClosedError" in r["mro"] or "OSError" in r["mro"])


def test_clients_without_or_with_wrong_secret_are_refused(cluster):
    problems = []
    for label, secret in [("no secret", None), ("wrong secret", secrets.token_hex(16))]:
        r = cluster.client("refused", secret=secret, address=cluster.address, budget=12).finish()
        if not r["refused"]:
            problems.append(f"a client with {label} connected")
        elif not _is_auth_refusal(r):
            problems.append(f"a client with {label} was refused without naming authentication: "
                            f"{r['type']}: {r['message']} (cause {r['cause']})")
        elif r["elapsed"] > 10:
            problems.append(f"a client with {label} took {r['elapsed']} s to be refused")
        print(f"{label}: {r.get('type')}: {r.get('message')} ({r['elapsed']} s)")
    r = cluster.client("map", address=cluster.address, budget=25).finish()
    if r["values"] != list(range(1, 201)) or len(r["workers"]) != 2:
        problems.append(f"after the refusals the right client got {r['values'][:5]}... from {r['workers']}")
    _fail_on(problems, cluster)
