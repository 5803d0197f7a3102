"""Every benchmark script runs with --quick and prints its comparison table.

Benchmarks are not tests: nothing here looks at the figures, only that each script
runs to the end (with and without dask.distributed installed) and prints a table.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
# Helpers (floors, the floors' sockets), the tools' workloads, a profiler, a tracer, a call counter:
# not comparisons.
NOT_SCRIPTS = {"common.py", "floors.py", "sockets.py", "task_workloads.py", "profile_core.py", "trace_path.py", "count_calls.py"}
SCRIPTS = sorted(p.name for p in BENCH_DIR.glob("*.py") if p.name not in NOT_SCRIPTS and not p.name.startswith("_"))

# Hides dask.distributed from a script as if it were not installed, then runs it.
_WITHOUT_DASK = """
import runpy, sys
for name in ("distributed", "dask"):
    sys.modules[name] = None   # import fails and find_spec says "absent"
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""


def _run(argv: list, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(argv, cwd=BENCH_DIR.parent, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _check_table(proc: subprocess.CompletedProcess, dask_expected: bool) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("workload") and line.rstrip().endswith("ratio")]
    assert headers, f"no table in the output:\n{proc.stdout}"
    rows = lines[headers[0] + 2:]
    assert rows and "|" in rows[0], f"table has no rows:\n{proc.stdout}"
    cells = [c.strip() for c in rows[0].split("|")]
    assert cells[1] != "-", f"no actorrt figure:\n{proc.stdout}"
    if not dask_expected:
        assert cells[2] == "-" and cells[3] == "n/a", f"dask column should be empty:\n{proc.stdout}"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_quick(script):
    from importlib.util import find_spec
    proc = _run([sys.executable, str(BENCH_DIR / script), "--quick"], timeout=220)
    _check_table(proc, dask_expected=find_spec("distributed") is not None)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_script_runs_without_dask():
    """With dask.distributed absent, the dask column is empty and nothing fails."""
    proc = _run([sys.executable, "-c", _WITHOUT_DASK, str(BENCH_DIR / "bench_core.py"), "--quick"],
                timeout=220)
    _check_table(proc, dask_expected=False)
    assert "# dask:" not in proc.stderr  # the harness never tried to start it


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_soak_runs_quick_without_dask():
    """bench_soak.py --quick: 3 intervals of 5 s, its per-interval table and PASS/FAIL lines."""
    proc = _run([sys.executable, str(BENCH_DIR / "bench_soak.py"), "--quick", "--no-dask"], timeout=80)
    _check_table(proc, dask_expected=False)
    assert proc.stdout.count("memory flat") == 1 and "throughput kept" in proc.stdout, proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_floors_run_quick():
    """floors.py --quick: a round trip for each answering side, with its time (the
    floor tables of bench_actors and bench_coordination come from the same function)."""
    proc = _run([sys.executable, str(BENCH_DIR / "floors.py"), "--quick"], timeout=80)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = {line.split("|")[0].strip(): line.split("|")[1].strip()
            for line in proc.stdout.splitlines() if line.startswith("thread ->")}
    for kind in ("loop", "lane", "thread"):
        for label in (f"thread -> {kind} -> thread", f"thread -> {kind} -> thread (polling)"):
            assert rows.get(label, "").endswith(("µs", "ms")), proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("workload", ["map", "tasks-from-tasks", "queue"])
def test_profile_core_reads_the_worker_processes(workload):
    """profile_core.py's CPU table counts the processes that run the tasks: under a
    nanny (the default) that is the nanny's child, whose pool thread is busy."""
    proc = _run([sys.executable, str(BENCH_DIR / "profile_core.py"), "--quick", "--profiler", "none",
                 "--workload", workload], timeout=80)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    pools = [line for line in proc.stdout.splitlines() if line.startswith("worker") and "(pool)" in line]
    assert pools, proc.stdout


def test_the_tasks_from_tasks_workload_counts_the_tasks_fib_runs():
    """The tasks-from-tasks workload (profile_core.py) divides by the tasks it ran:
    fib(k) is one task and those of fib(k-1) and fib(k-2) (bench_futures' 465 and
    1,973), and it makes up a count it cannot hit with one fib out of smaller ones."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import task_workloads as workloads
    finally:
        sys.path.remove(str(BENCH_DIR))
    assert [workloads.fib_tasks(k) for k in range(6)] == [1, 1, 3, 5, 9, 15]
    assert (workloads.fib_tasks(12), workloads.fib_tasks(15)) == (465, 1973)

    class Counting:
        """Stands for a client: counts what a fib(k) submitted would run."""
        def __init__(self):
            self.ran = 0

        def submit(self, fn, k, pure):
            self.ran += workloads.fib_tasks(k)
            return self

        def result(self):
            return None
    for n in (1, 2, 10, 1000):
        client = Counting()
        assert workloads.tasks_from_tasks(client, n) == client.ran == n


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_count_calls_counts_every_thread_and_compares(tmp_path):
    """count_calls.py: calls per task into the scheduler (the loop's thread), the
    workers' state machines and the task runs (their pool threads); and a --save file
    read back with --against prints both columns."""
    saved = tmp_path / "counts.json"
    proc = _run([sys.executable, str(BENCH_DIR / "count_calls.py"), "--quick", "--workload", "map",
                 "--save", str(saved)], timeout=100)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for module in ("scheduler/state.py", "worker/state.py", "worker/task.py"):
        assert f"\n{module} " in proc.stdout, proc.stdout
    proc = _run([sys.executable, str(BENCH_DIR / "count_calls.py"), "--quick", "--workload", "map",
                 "--against", str(saved)], timeout=100)
    assert proc.returncode == 0, proc.stderr
    assert "calls per task: before | now" in proc.stdout and "(against " in proc.stdout, proc.stdout
