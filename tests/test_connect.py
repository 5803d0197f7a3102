"""Connecting to a running cluster by address: the per-user secret file
(core/secret_file.py) and addresses without a scheme."""
import json
import os
import stat
import subprocess
import sys

import pytest

from actorrt import Client, LocalCluster
from actorrt.core import secret_file
from actorrt.core.addresses import is_host_port, with_default_scheme, worker_entry
from actorrt.core.errors import AuthenticationError
from actorrt.testing import stop_processes


def inc(x):
    return x + 1


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    """A private XDG_RUNTIME_DIR of the test's own, also for the processes it starts."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    monkeypatch.delenv("ACTORRT_SECRET", raising=False)
    return d


def _file_of(address):
    return os.path.join(secret_file.secret_directory(create=True), secret_file.address_key(address))


# --- pure pieces -------------------------------------------------------------
def test_address_key_is_one_for_every_loopback_name():
    keys = {secret_file.address_key(a) for a in
            ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786")}
    assert keys == {"tcp-loopback-8786.secret"}
    assert secret_file.address_key("tls://10.0.0.1:8786") == "tls-10.0.0.1-8786.secret"
    assert secret_file.address_key("inproc://x") is None
    assert secret_file.address_key("nonsense") is None


def test_scheme_less_addresses_mean_tcp():
    assert with_default_scheme("127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert with_default_scheme("localhost:8786") == "tcp://localhost:8786"
    assert with_default_scheme("tls://10.0.0.1:1") == "tls://10.0.0.1:1"
    assert is_host_port("[::1]:1") and not is_host_port("::1") and not is_host_port("worker-3")
    assert worker_entry("10.0.0.2:40123") == "tcp://10.0.0.2:40123"
    assert worker_entry("10.0.0.2") == "10.0.0.2" and worker_entry("my-worker") == "my-worker"


def test_publish_lookup_withdraw(runtime_dir):
    address = "tcp://127.0.0.1:1"
    path = secret_file.publish(address, b"k" * 32)
    assert path == str(runtime_dir / "actorrt" / "tcp-loopback-1.secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert secret_file.lookup("tcp://localhost:1") == b"k" * 32
    secret_file.withdraw(address)
    assert not os.path.exists(path)
    assert secret_file.lookup(address) is None


def _write(path, record, mode=0o600):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)
    os.chmod(path, mode)


def test_a_stale_file_of_a_dead_scheduler_is_removed_and_ignored(runtime_dir):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = str(runtime_dir / "actorrt" / "tcp-loopback-2.secret")
    _write(path, {"address": "tcp://127.0.0.1:2", "pid": dead.pid, "started": None, "secret": "00" * 32})
    assert secret_file.lookup("tcp://127.0.0.1:2") is None
    assert not os.path.exists(path)


def test_a_reused_pid_is_told_apart_by_its_start_time(runtime_dir):
    path = str(runtime_dir / "actorrt" / "tcp-loopback-3.secret")
    _write(path, {"address": "tcp://127.0.0.1:3", "pid": os.getpid(), "started": -1, "secret": "00" * 32})
    assert secret_file.lookup("tcp://127.0.0.1:3") is None


def test_a_file_others_can_read_is_ignored(runtime_dir, caplog):
    path = str(runtime_dir / "actorrt" / "tcp-loopback-4.secret")
    _write(path, {"pid": os.getpid(), "started": None, "secret": "00" * 32}, mode=0o644)
    assert secret_file.lookup("tcp://127.0.0.1:4") is None
    assert "mode 0600" in caplog.text


# --- same process ------------------------------------------------------------------
def test_client_by_address_to_a_cluster_in_this_process(runtime_dir):
    with LocalCluster(n_workers=1, processes=True, nanny=False, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        path = _file_of(address)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with Client(address, set_as_default=False) as client:
            assert client.submit(inc, 1).result() == 2
        port = address.rsplit(":", 1)[1]
        with Client(f"localhost:{port}", set_as_default=False) as client:  # no scheme, another name
            assert client.scheduler.address == f"tcp://localhost:{port}"
            assert client.submit(inc, 2).result() == 3
            worker = client.run(os.getpid)
            bare = next(iter(worker)).split("://", 1)[1]
            assert list(client.run(os.getpid, workers=[bare])) == list(worker)
            assert client.submit(inc, 3, workers=bare).result() == 4
        with pytest.raises(AuthenticationError):
            Client(address, secret="wrong", timeout=2, set_as_default=False)
    assert not os.path.exists(path)


def test_get_client_of_another_scheduler_connects_there(runtime_dir):
    from actorrt import get_client
    with LocalCluster(n_workers=0, processes=True, nanny=False, dashboard_address=None) as here, \
            LocalCluster(n_workers=0, processes=True, nanny=False, dashboard_address=None) as there, \
            Client(here) as default:
        assert get_client() is default and get_client(here.scheduler_address) is default
        other = get_client(there.scheduler_address, timeout=10)  # (the default is connected elsewhere)
        try:
            assert other is not default and other.scheduler.address == there.scheduler_address
        finally:
            other.close()


def test_an_explicit_secret_wins_over_the_file(runtime_dir, monkeypatch):
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("ACTORRT_SECRET", "not-it")
        with pytest.raises(AuthenticationError):
            Client(cluster.scheduler_address, timeout=2, set_as_default=False)


def test_a_cluster_given_a_secret_publishes_nothing(runtime_dir):
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None, secret=b"s" * 32) as cluster:
        assert not os.path.exists(_file_of(cluster.scheduler_address))
        assert secret_file.lookup(cluster.scheduler_address) is None


# --- other processes -----------------------------------------------------------------
def _start(cmd):
    env = {k: v for k, v in os.environ.items() if k != "ACTORRT_SECRET"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_scheduler_in_another_process_found_by_address(runtime_dir):
    sched = _start([sys.executable, "-m", "actorrt.deploy.cli", "scheduler", "--port", "0",
                    "--dashboard-address", "none"])
    procs = [sched]
    try:
        line = sched.stdout.readline()
        assert "actorrt scheduler at tcp://" in line, line
        address = line.split(" at ")[1].strip()
        path = _file_of(address)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        bare = address.split("://", 1)[1]
        procs.append(_start([sys.executable, "-m", "actorrt.deploy.cli", "worker", bare, "--no-nanny"]))
        with Client(bare, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=30)
            assert client.submit(inc, 10).result() == 11
        with pytest.raises(AuthenticationError):
            Client(address, secret="wrong", timeout=2, set_as_default=False)
    finally:
        stop_processes(procs)
    assert sched.returncode == 0
    assert not os.path.exists(path)
