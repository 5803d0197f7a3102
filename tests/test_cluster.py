"""Clusters: start, scale, close cleanly, survive a dying worker, the CLI."""
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from actorrt import Client, KilledWorker, LocalCluster
from actorrt.testing import stop_processes, wait_until


def inc(x):
    return x + 1


def wait_for_file(path):
    """A task held until the test creates ``path`` (a gate across processes)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return os.getpid()


def crash():
    os._exit(1)


def sockets_open():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.mark.parametrize("processes", [False, True])
def test_close_leaves_no_processes_threads_or_sockets(processes):
    threads_before = set(threading.enumerate())
    socks_before = sockets_open()
    client = Client(n_workers=2, threads_per_worker=1, processes=processes)
    assert client.submit(inc, 1).result() == 2
    procs = [p for p in client.cluster.workers.values() if isinstance(p, subprocess.Popen)]
    assert len(procs) == (2 if processes else 0)
    client.close()
    assert all(p.poll() is not None for p in procs)
    wait_until(lambda: not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()])
    wait_until(lambda: sockets_open() <= socks_before)


def test_local_cluster_scale_and_start_worker():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster) as client:
            assert len(client.nthreads()) == 1
            cluster.scale(3)
            wait_until(lambda: len(client.nthreads()) == 3)
            cluster.start_worker(ncores=2)
            wait_until(lambda: len(client.nthreads()) == 4)
            assert sorted(client.nthreads().values()) == [1, 1, 1, 2]
            cluster.scale(1)
            wait_until(lambda: len(client.nthreads()) == 1)
            assert client.gather(client.map(inc, range(20))) == list(range(1, 21))
            assert client.cluster is cluster


def test_task_reruns_elsewhere_when_its_worker_dies(tmp_path):
    flag = str(tmp_path / "go")
    with Client(n_workers=2, threads_per_worker=1) as client:
        state = client.cluster.scheduler.state
        f = client.submit(wait_for_file, flag)
        wait_until(lambda: f.key in state.tasks and state.tasks[f.key].state == "processing", timeout=10)
        victim = state.tasks[f.key].processing_on.address
        pid = client.cluster.scheduler.worker_info[victim]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: victim not in state.workers, timeout=10)
        open(flag, "w").close()
        assert f.result(timeout=20) != pid
        assert client.submit(inc, 1).result() == 2


def test_task_that_kills_workers_fails_with_killed_worker():
    with Client(n_workers=2, threads_per_worker=1, allowed_failures=0) as client:
        f = client.submit(crash)
        with pytest.raises(KilledWorker, match="crash"):
            f.result(timeout=20)
        assert client.submit(inc, 1).result() == 2  # the other worker is still serving


def test_recompute_lost_result_after_worker_death():
    with Client(n_workers=2, threads_per_worker=1) as client:
        futures = client.map(inc, range(20))
        client.gather(futures)
        info = client.cluster.scheduler.worker_info
        victim = sorted(info)[0]
        os.kill(info[victim]["pid"], signal.SIGKILL)
        wait_until(lambda: victim not in client.cluster.scheduler.state.workers, timeout=10)
        assert client.gather(futures) == list(range(1, 21))


def _start(cmd, env):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_cli_scheduler_and_worker(tmp_path):
    env = {**os.environ, "ACTORRT_SECRET": "s3cret"}
    sched = _start([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0"], env)
    workers = []
    try:
        line = sched.stdout.readline()
        assert "actorrt scheduler at tcp://" in line, line
        address = line.split(" at ")[1].strip()
        workers = [_start([sys.executable, "-m", "actorrt.deploy.cli", "worker", address,
                           "--nthreads", "2"], env) for _ in range(2)]
        with Client(address, secret="s3cret", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=20)
            assert sorted(client.nthreads().values()) == [2, 2]
            assert client.submit(inc, 1).result() == 2
        with pytest.raises(Exception, match="authentication|connect"):
            Client(address, secret="wrong", timeout=2)
    finally:
        stop_processes([sched, *workers])
    assert sched.returncode == 0


def test_demo_command_runs():
    out = subprocess.run([sys.executable, "-m", "actorrt.deploy.cli", "demo", "--n", "200"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "z = add(inc(1), inc(inc(1))) = 5" in out.stdout
    assert "map: 200 tasks" in out.stdout


def test_worker_dialling_scheduler_by_another_name_exits_when_it_dies():
    """The scheduler announces 127.0.0.1; the worker dialled localhost. When the scheduler
    goes, the worker must still notice and, once its death timeout passes without the
    scheduler coming back, exit (no process left behind)."""
    env = {**os.environ, "ACTORRT_SECRET": "s3cret"}
    sched = _start([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
                    "--dashboard-address", "none"], env)
    worker = None
    try:
        line = sched.stdout.readline()
        port = line.strip().rsplit(":", 1)[1]
        worker = _start([sys.executable, "-m", "actorrt.deploy.cli", "worker",
                         f"tcp://localhost:{port}", "--death-timeout", "1"], env)
        with Client(f"tcp://127.0.0.1:{port}", secret="s3cret", set_as_default=False) as client:
            client.wait_for_workers(1, timeout=20)
        sched.send_signal(signal.SIGKILL)
        assert worker.wait(20) == 0  # (its nanny too: a worker that gave up is not restarted)
    finally:
        for p in [sched, worker]:
            if p is not None:
                if p.poll() is None:
                    p.kill()
                p.wait()
                p.stdout.close()


def test_worker_process_that_never_registers_times_out_and_is_killed():
    """A worker stuck at start (here: it never reaches the scheduler) fails the start
    within the deadline, and neither it nor the cluster is left running."""
    threads_before = set(threading.enumerate())
    stuck = {"PYTHONSTARTUP": "", "ACTORRT_TEST_STALL": "1"}
    with pytest.raises(TimeoutError, match="did not register"):
        LocalCluster(n_workers=1, processes=True, worker_start_timeout=0.5,
                     dashboard_address=None,
                     worker_env={**stuck, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "stall")})
    wait_until(lambda: not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()])


def test_workers_on_distinct_addresses_fetch_from_each_other():
    """As on separate machines: each worker listens on its own address (127.0.0.2 and
    127.0.0.3, which need the cluster secret) and inputs move directly between them."""
    env = {**os.environ, "ACTORRT_SECRET": "s3cret"}
    sched = _start([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
                    "--dashboard-address", "none"], env)
    workers = []
    try:
        address = sched.stdout.readline().split(" at ")[1].strip()
        workers = [_start([sys.executable, "-m", "actorrt.deploy.cli", "worker", address,
                           "--host", host], env) for host in ("127.0.0.2", "127.0.0.3")]
        with Client(address, secret="s3cret", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=20)
            w2, w3 = sorted(client.nthreads())
            assert w2.startswith("tcp://127.0.0.2:") and w3.startswith("tcp://127.0.0.3:")
            a = client.submit(inc, 1, workers=[w2])
            b = client.submit(inc, 2, workers=[w3])
            total = client.submit(sum, [a, b], workers=[w3])
            assert total.result(timeout=20) == 5
    finally:
        stop_processes([sched, *workers])


# --- a cluster that cannot start --------------------------------------------------------
def test_local_cluster_that_fails_to_start_leaves_nothing_behind():
    # A worker process that dies at start (here: Python cannot find its standard library) fails the
    # cluster's start; its loop thread, scheduler host and other workers must go too.
    import threading

    from actorrt import LocalCluster
    from actorrt.testing import _check_threads
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="exited with code"):
        LocalCluster(1, 1, processes=True, dashboard_address=None,
                     worker_env={"PYTHONHOME": "/nonexistent-python-home"})
    _check_threads(before)


def test_async_local_cluster_that_fails_to_start_closes_its_scheduler():
    from actorrt import LocalCluster

    async def main():
        lc = LocalCluster(1, 1, processes=True, asynchronous=True, dashboard_address=None,
                          worker_env={"PYTHONHOME": "/nonexistent-python-home"})
        with pytest.raises(RuntimeError, match="exited with code"):
            await lc
        assert lc.scheduler_host is not None and lc.scheduler_host.status == "closed"
        assert lc.status == "closed"
    asyncio.run(main())
