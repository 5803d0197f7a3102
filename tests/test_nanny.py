"""The nanny: a worker process restarted when it dies, grows past its memory or is asked
to; stopped with its nanny, never orphaned; and the CLI flags that configure it."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from actorrt import CancelledError, Client, KilledWorker, LocalCluster
from actorrt.core import ActorRef
from actorrt.deploy import cli
from actorrt.deploy.nanny import MAX_EARLY_RESTARTS, RESTART_EXIT_CODE, Exit, after_exit, describe_exit, exit_status
from actorrt.protocol import WORKER_ID
from actorrt.testing import wait_until
from actorrt.worker.memory import MemorySettings, process_rss, spill_space, system_memory

LINUX = sys.platform.startswith("linux")
needs_rss = pytest.mark.skipif(process_rss() is None, reason="this system's process memory cannot be read "
                                                             "(no /proc, no psutil): the nanny cannot watch it")


def inc(x):
    return x + 1


def make_bytes(n):
    return b"x" * n  # above the inline size: the client holds a key, the worker the value


def hog(n):
    """Make ``n`` bytes resident (``b"x" * n`` writes every page) and hold them."""
    data = b"x" * n
    time.sleep(60)  # killed long before this ends
    return len(data)


def close_worker(address, dask_scheduler):
    """As the scheduler: tell a worker to close (it leaves for good, exit code 0)."""
    dask_scheduler.host.tell(ActorRef(address, WORKER_ID), "close")


def alive(pid):
    """True while process ``pid`` exists and is not a zombie (an orphaned zombie may wait
    long for a reaper in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def by_name(cluster):
    """``{name: (address, pid)}`` of the workers registered now."""
    return {i["name"]: (a, i["pid"]) for a, i in dict(cluster.scheduler.worker_info).items()}


def _cluster(n=2, **kwargs):
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, **kwargs)


# --- the decision after a worker process ends (no processes) ----------------------------------

@pytest.mark.parametrize("code, registered, stopping, early, expected", [
    (-9, True, False, 0, None),                 # killed: restart
    (1, True, False, 0, None),                  # crashed: restart
    (RESTART_EXIT_CODE, True, False, 0, None),  # asked to: restart
    (0, True, False, 0, 0),                     # closed by its scheduler / gave up on it: done
    (1, False, False, 1, 1),                    # never registered: an error, not a loop
    (-9, False, False, 1, None),                # killed while starting: once more
    (-9, False, False, MAX_EARLY_RESTARTS, None),
    (-9, False, False, MAX_EARLY_RESTARTS + 1, 137),  # killed as it starts, every time: give up
    (0, False, False, 1, 0),
    (-15, True, True, 0, 0),                    # the nanny was told to stop
    (RESTART_EXIT_CODE, True, True, 0, 0),
])
def test_after_exit(code, registered, stopping, early, expected):
    assert after_exit(Exit(pid=1, code=code, registered=registered), stopping, early) == expected


def test_exit_descriptions():
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(RESTART_EXIT_CODE) == "asked to restart"
    assert describe_exit(3) == "exited with code 3"
    assert exit_status(-15) == 143 and exit_status(2) == 2


# --- CLI flags -------------------------------------------------------------------------------

def _worker_args(*flags):
    parser = argparse.ArgumentParser()
    cli._worker_args(parser)
    return parser.parse_args(["tcp://127.0.0.1:1", *flags])


def test_worker_flags_defaults():
    args = _worker_args()
    assert args.nanny is True
    assert args.memory_limit == system_memory()  # "auto": all of it for one worker
    assert args.local_directory is None
    assert cli._memory_settings(args) == MemorySettings()


def test_worker_flags_parsed():
    args = _worker_args("--no-nanny", "--memory-limit", "2GiB", "--local-directory", "/tmp/x",
                        "--memory-target-fraction", "0.5", "--memory-spill-fraction", "false",
                        "--memory-pause-fraction", "0.9", "--memory-terminate-fraction", "False")
    assert args.nanny is False and args.memory_limit == 2 * 2**30 and args.local_directory == "/tmp/x"
    assert cli._memory_settings(args) == MemorySettings(target=0.5, spill=None, pause=0.9, terminate=None)
    assert _worker_args("--memory-limit", "0").memory_limit is None
    assert _worker_args("--memory-limit", "0.5").memory_limit == system_memory() // 2  # a fraction, as dask
    assert _worker_args("--memory-limit", "1e8").memory_limit == 10**8
    assert _worker_args("--memory-limit", "123B").memory_limit == 123
    assert _worker_args("--nanny").nanny is True


@pytest.mark.parametrize("flags, message", [
    (["--memory-limit", "lots"], "--memory-limit: cannot read 'lots' as a size"),
    (["--memory-limit", "-1"], "--memory-limit: memory_limit must be at least 0"),
    (["--memory-limit", "4 parsecs"], "unknown unit 'parsecs'"),
    (["--memory-terminate-fraction", "2"], "--memory-terminate-fraction: expected a fraction in (0, 1]"),
    (["--memory-pause-fraction", "often"], "--memory-pause-fraction: expected a fraction"),
])
def test_bad_worker_flags_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["worker", "tcp://127.0.0.1:1", *flags])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_local_directory_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit) as info:
        cli.main(["worker", "tcp://127.0.0.1:1", "--local-directory", str(path)])
    assert info.value.code == 2 and "is not a directory" in capsys.readouterr().err


def test_local_cluster_memory_options():
    with pytest.raises(ValueError, match="memory_limit='lots'.*cannot read 'lots'"):
        LocalCluster(n_workers=1, memory_limit="lots")
    with pytest.raises(ValueError, match="terminate fraction"):
        LocalCluster(n_workers=1, memory_terminate_fraction=1.5)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                      memory_pause_fraction=False) as cluster:
        assert cluster.memory_limit == system_memory() // 2  # "auto": shared among the workers
        assert cluster.memory.pause is None and not cluster.nanny  # (in-process: no nanny)
        for host, worker in cluster.workers.values():
            assert worker.memory_limit == cluster.memory_limit and worker.memory.pause is None
    with Client(n_workers=1, threads_per_worker=1, processes=False, memory_limit="1GiB",
                local_directory="/tmp", dashboard_address=None, set_as_default=False) as client:
        assert client.cluster.memory_limit == 2**30 and client.cluster.local_directory == "/tmp"
    with Client(n_workers=1, threads_per_worker=1, processes=False, memory_limit=None,
                dashboard_address=None, set_as_default=False) as client:
        assert client.cluster.memory_limit is None  # (None is "no limit", not "the default")


def test_process_workers_get_the_memory_flags():
    with _cluster(1, memory_limit="300MB", memory_spill_fraction=False) as cluster:
        flags = cluster._worker_flags()
        assert flags[:2] == ["--memory-limit", "300000000B"]
        assert "--no-nanny" not in flags and ["--memory-spill-fraction", "false"] == \
            flags[flags.index("--memory-spill-fraction"):][:2]
        with Client(cluster, set_as_default=False) as client:
            got = client.run(lambda dask_worker: (dask_worker.memory_limit, dask_worker.memory.spill,
                                                  dask_worker.nanny))
            assert list(got.values()) == [(300_000_000, None, True)]


# --- restarts on death ---------------------------------------------------------------------------

def test_killed_worker_is_restarted_and_a_held_future_recomputes():
    with _cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        x = client.submit(make_bytes, 10_000)
        assert len(x.result()) == 10_000
        [holder] = client.who_has([x])[x.key]
        before = by_name(cluster)
        name = next(n for n, (a, _) in before.items() if a == holder)
        nannies = dict(cluster.workers)
        assert all(info["nanny"] for info in cluster.scheduler.worker_info.values())
        os.kill(before[name][1], signal.SIGKILL)
        # A new worker of the same name registers: a new address and pid, the same nanny.
        wait_until(lambda: name in by_name(cluster) and by_name(cluster)[name][0] != holder, timeout=20)
        after = by_name(cluster)
        assert after[name][1] != before[name][1]
        assert cluster.workers == nannies and all(p.poll() is None for p in nannies.values())
        other = next(n for n in before if n != name)
        assert after[other] == before[other]  # only the killed one
        # The value lived only on the killed worker: it is recomputed from its task.
        assert client.submit(len, x).result(timeout=20) == 10_000
        wait_until(lambda: client.who_has([x])[x.key] not in ([], [holder]), timeout=20)


def test_task_that_crashes_its_worker_ends_in_killed_worker_and_the_worker_comes_back():
    with _cluster(2, allowed_failures=0) as cluster, Client(cluster, set_as_default=False) as client:
        before = by_name(cluster)
        f = client.submit(os._exit, 3)
        with pytest.raises(KilledWorker, match="_exit"):
            f.result(timeout=20)
        wait_until(lambda: len(by_name(cluster)) == 2 and by_name(cluster) != before, timeout=20)
        assert set(by_name(cluster)) == set(before)
        assert client.submit(inc, 1).result(timeout=20) == 2


# --- restarts on memory ----------------------------------------------------------------------------

@needs_rss
def test_worker_past_its_memory_limit_is_killed_and_restarted(capfd):
    limit = 200 * 2**20
    with _cluster(2, memory_limit=limit, allowed_failures=0, memory_pause_fraction=False,
                  memory_spill_fraction=False, memory_target_fraction=False) as cluster, \
            Client(cluster, set_as_default=False) as client:
        before = by_name(cluster)
        victim, bystander = sorted(before)
        address = before[victim][0]
        f = client.submit(hog, 3 * limit, workers=[address], pure=False)
        with pytest.raises(KilledWorker, match="hog"):
            f.result(timeout=30)
        wait_until(lambda: victim in by_name(cluster) and by_name(cluster)[victim][0] != address, timeout=20)
        assert by_name(cluster)[bystander] == before[bystander]  # it killed only its own worker
        assert client.submit(inc, 1).result(timeout=20) == 2
    err = capfd.readouterr().err
    assert f"worker {address} (name '{victim}', pid {before[victim][1]}) uses" in err, err
    assert "of its memory limit 200.00 MiB: killing it" in err


@needs_rss
def test_worker_that_starts_past_its_memory_limit_is_warned_about_not_restarted(capfd):
    # Far below what a fresh worker process uses: restarting it would be a loop.
    with _cluster(1, memory_limit="5MB", memory_pause_fraction=False, memory_spill_fraction=False,
                  memory_target_fraction=False) as cluster, Client(cluster, set_as_default=False) as client:
        [(address, pid)] = by_name(cluster).values()
        seen = []
        # The nanny warns at its first sample and stops watching for memory after it.
        wait_until(lambda: seen.append(capfd.readouterr().err) or "just after starting" in "".join(seen),
                   timeout=20)
        assert client.submit(inc, 1).result(timeout=20) == 2
        assert list(by_name(cluster).values()) == [(address, pid)]
    assert "give it a larger --memory-limit" in "".join(seen)


# --- restarts on request ---------------------------------------------------------------------------

def test_client_restart_through_nannies_with_only_the_scheduler_address():
    with _cluster(2) as cluster, \
            Client(cluster.scheduler_address, secret=cluster.secret, set_as_default=False) as client:
        f = client.submit(inc, 1)
        assert f.result() == 2
        before = by_name(cluster)
        nannies = dict(cluster.workers)
        client.restart(timeout=30)
        assert f.cancelled()
        with pytest.raises(CancelledError, match="restart"):
            f.result()
        after = by_name(cluster)  # every worker is back when restart returns
        assert set(after) == set(before)
        assert all(after[n][0] != before[n][0] and after[n][1] != before[n][1] for n in before)
        assert cluster.workers == nannies and all(p.poll() is None for p in nannies.values())
        assert client.submit(inc, 2).result(timeout=20) == 3


def test_restart_without_waiting_for_workers_returns_before_they_are_back():
    with _cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        f = client.submit(inc, 1)
        assert f.result() == 2
        before = by_name(cluster)
        client.restart(timeout=30, wait_for_workers=False)
        assert f.cancelled()
        # Told, not waited for: a new worker process takes far longer to start than the
        # reply took to come back.
        now = by_name(cluster)
        assert any(now.get(n, (None,))[0] in (None, before[n][0]) for n in before)
        wait_until(lambda: set(by_name(cluster)) == set(before)
                   and all(by_name(cluster)[n][0] != before[n][0] for n in before), timeout=30)
        assert client.submit(inc, 2).result(timeout=20) == 3


def test_restart_workers_restarts_only_those_named():
    with _cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        x = client.submit(make_bytes, 10_000, pure=False)
        x.result()
        [holder] = client.who_has([x])[x.key]
        before = by_name(cluster)
        name = next(n for n, (a, _) in before.items() if a == holder)
        assert client.restart_workers([name], timeout=30) == {holder: "OK"}
        after = by_name(cluster)
        assert after[name][0] != holder
        other = next(n for n in before if n != name)
        assert after[other] == before[other]
        assert not x.cancelled() and client.submit(len, x).result(timeout=20) == 10_000  # recomputed
        # By address too; a name that is no worker's is refused before anything restarts.
        assert client.restart_workers([after[name][0]]) == {after[name][0]: "OK"}
        with pytest.raises(ValueError, match="no worker 'nope'"):
            client.restart_workers(["nope"])


def test_workers_without_nannies_cannot_be_restarted_through_them():
    with _cluster(1, nanny=False) as cluster, \
            Client(cluster.scheduler_address, secret=cluster.secret, set_as_default=False) as client:
        [(address, pid)] = by_name(cluster).values()
        assert cluster.scheduler.worker_info[address]["nanny"] is False
        with pytest.raises(RuntimeError, match="has no nanny"):
            client.restart_workers([address])
        [(got, error)] = client.restart_workers([address], raise_for_error=False).items()
        assert got == address and isinstance(error, RuntimeError) and "no nanny" in str(error)
        f = client.submit(inc, 1)
        f.result()
        # Neither nannies nor the cluster object: refused before anything changed.
        with pytest.raises(RuntimeError, match="no nanny.*cluster object|cluster object.*no nanny"):
            client.restart()
        assert not f.cancelled() and f.result() == 2
        assert by_name(cluster) == {"0": (address, pid)}


# --- actorrt-worker processes: nanny and worker -------------------------------------------------------

@pytest.fixture
def scheduler():
    """A scheduler (a LocalCluster without workers) that CLI workers join."""
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        yield cluster


def _cli_worker(cluster, *flags, secret=None, **popen):
    env = {**os.environ, "ACTORRT_SECRET": (secret or cluster.secret).hex()}
    return subprocess.Popen([sys.executable, "-m", "actorrt.deploy.cli", "worker", cluster.scheduler_address,
                             "--secret-from-env", "--quiet", *flags], env=env, stdin=subprocess.DEVNULL,
                            **popen)


def _one_worker(cluster, timeout=20):
    """The one worker registered with ``cluster``'s scheduler, once it has also told its
    nanny so (killed before that, it would count as a worker that never joined)."""
    wait_until(lambda: len(cluster.scheduler.worker_info) == 1, timeout=timeout)
    [(address, info)] = dict(cluster.scheduler.worker_info).items()
    _past_registration(cluster, address)
    return address, info


def _past_registration(cluster, address):
    """Two replies from the worker in a row. The scheduler hears of a registration a
    moment before the worker's start-up resumes and writes to its nanny's pipe; that
    step is already queued on the worker's loop when the first ask arrives, so it has
    run by the time the second one is answered."""
    async def ask_twice():
        for _ in range(2):
            await cluster.scheduler_host.ask(ActorRef(address, WORKER_ID), "identity")
    cluster._loop_runner.run(ask_twice, timeout=20)


def _reap(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_cli_worker_runs_under_a_nanny_unless_told_not_to(scheduler):
    nanny = _cli_worker(scheduler, "--name", "w")
    try:
        address, info = _one_worker(scheduler)
        assert info["nanny"] is True and info["name"] == "w" and info["pid"] != nanny.pid
        nanny.terminate()
        assert nanny.wait(20) == 0
        wait_until(lambda: not scheduler.scheduler.worker_info, timeout=10)
    finally:
        _reap(nanny)
    worker = _cli_worker(scheduler, "--no-nanny")
    try:
        address, info = _one_worker(scheduler)
        assert info["nanny"] is False and info["pid"] == worker.pid and info["name"] == ""
        os.kill(worker.pid, signal.SIGKILL)  # no nanny: it stays dead
        assert worker.wait(10) == -signal.SIGKILL
        wait_until(lambda: not scheduler.scheduler.worker_info, timeout=10)
    finally:
        _reap(worker)


def test_an_unnamed_nanny_worker_keeps_one_name_across_restarts(scheduler):
    nanny = _cli_worker(scheduler)
    try:
        address, info = _one_worker(scheduler)
        assert info["name"].endswith(f"-{nanny.pid}")
        os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: [i["name"] for a, i in dict(scheduler.scheduler.worker_info).items()
                            if a != address] == [info["name"]], timeout=20)
    finally:
        nanny.terminate()
        _reap(nanny)


def test_a_worker_closed_by_its_scheduler_is_not_restarted(scheduler):
    nanny = _cli_worker(scheduler)
    try:
        address, info = _one_worker(scheduler)
        with Client(scheduler, set_as_default=False) as client:
            client.run_on_scheduler(close_worker, address)
        assert nanny.wait(20) == 0  # the nanny is gone too: nothing is left to come back
        assert not alive(info["pid"])
        wait_until(lambda: not scheduler.scheduler.worker_info, timeout=10)
    finally:
        _reap(nanny)


def test_a_worker_that_cannot_join_ends_its_nanny_with_an_error(scheduler):
    nanny = _cli_worker(scheduler, secret=b"not the cluster's secret", stderr=subprocess.PIPE, text=True)
    try:
        _, err = nanny.communicate(timeout=40)
    finally:
        _reap(nanny)
    assert nanny.returncode == 1, err
    assert err.count("could not join the scheduler") == 1, err  # one attempt, no restart loop
    assert "starting a new one" not in err
    assert not scheduler.scheduler.worker_info


def test_sigterm_to_the_nanny_stops_both(scheduler):
    nanny = _cli_worker(scheduler)
    try:
        address, info = _one_worker(scheduler)
        nanny.send_signal(signal.SIGTERM)
        assert nanny.wait(20) == 0
        assert not alive(info["pid"])  # it waited for its worker
        wait_until(lambda: not scheduler.scheduler.worker_info, timeout=10)
    finally:
        _reap(nanny)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux-only; elsewhere the worker polls its "
                                      "parent once a second, which this test does not wait for")
def test_sigkill_to_the_nanny_takes_the_worker_down(scheduler):
    nanny = _cli_worker(scheduler)
    try:
        address, info = _one_worker(scheduler)
        nanny.kill()
        nanny.wait(10)
        wait_until(lambda: not alive(info["pid"]), timeout=10)
        wait_until(lambda: not scheduler.scheduler.worker_info, timeout=10)
    finally:
        _reap(nanny)


def test_the_nanny_removes_a_dead_workers_spill_directory(scheduler, tmp_path):
    nanny = _cli_worker(scheduler, "--local-directory", str(tmp_path))
    try:
        address, info = _one_worker(scheduler)
        space = spill_space(str(tmp_path))
        # As the spill store would lay it out (worker-<pid>-<random>); another pid's is kept.
        mine = os.path.join(space, f"worker-{info['pid']}-abc123")
        other = os.path.join(space, f"worker-{info['pid']}0-abc123")
        for d in (mine, other):
            os.makedirs(d)
            open(os.path.join(d, "spilled"), "wb").close()
        os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: len(scheduler.scheduler.worker_info) == 1
                   and address not in scheduler.scheduler.worker_info, timeout=20)
        assert not os.path.exists(mine) and os.path.exists(other)
    finally:
        nanny.terminate()
        _reap(nanny)


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def _parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not LINUX, reason="the first worker is forked from its nanny on Linux only; elsewhere "
                                      "every worker is a new interpreter")
def test_the_first_worker_is_a_copy_of_its_nanny_and_a_restarted_one_a_new_interpreter(scheduler):
    nanny = _cli_worker(scheduler, "--name", "w")
    try:
        address, info = _one_worker(scheduler)
        # Forked: the nanny's own command line, and no second interpreter start.
        assert _parent(info["pid"]) == nanny.pid and _cmdline(info["pid"]) == _cmdline(nanny.pid)
        os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: [a for a in dict(scheduler.scheduler.worker_info) if a != address], timeout=20)
        address, info = _one_worker(scheduler)
        assert _parent(info["pid"]) == nanny.pid and b"--no-nanny" in _cmdline(info["pid"])
    finally:
        nanny.terminate()
        _reap(nanny)


FORK_FIRST = """
import asyncio, os, signal, sys
from actorrt.deploy.nanny import Nanny, NannyLink, can_fork_first

# A restarted worker: a new interpreter, which registers and then closes for good.
SPAWNED = ("import os; from actorrt.deploy.nanny import NannyLink; link = NannyLink.from_environ(); "
           "print('spawned', link.nanny_pid == os.getppid(), flush=True); link.ready('tcp://b:1')")
nanny = Nanny([sys.executable, "-c", SPAWNED])
assert can_fork_first()
if not nanny.fork_first():  # the copy: the first worker
    link = NannyLink.from_environ()
    print("forked", link.nanny_pid == os.getppid(), link.orphaned(), os.read(0, 1) == b"", flush=True)
    link.ready("tcp://a:1")
    os.kill(os.getpid(), signal.SIGKILL)  # dies after it registered: the nanny starts another
print("nanny", asyncio.run(nanny.run()), nanny.restarts, flush=True)
"""


@pytest.mark.skipif(not LINUX, reason="the first worker is forked from its nanny on Linux only")
def test_a_forked_first_worker_is_linked_to_its_nanny_and_replaced_by_a_new_interpreter():
    out = subprocess.run([sys.executable, "-c", FORK_FIRST], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    # Its link names the nanny (not itself: it would take itself for an orphan and
    # leave), its stdin is empty as a spawned worker's; once it died, the nanny
    # started the command, whose worker registered and closed: status 0, one restart.
    assert out.stdout.splitlines() == ["forked True False True", "spawned True", "nanny 0 1"], out.stderr
