"""The coordination examples run as scripts, and the benchmark runs in --quick mode."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run(*argv, timeout=120):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.parametrize("name, expect", [("queue_pipeline.py", "200 items, exactly once"),
                                          ("lock_counter.py", "counter = 200")])
def test_example_runs(name, expect):
    out = run(os.path.join("examples", name))
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout


def test_benchmark_runs_quick():
    out = run(os.path.join("benchmarks", "bench_coordination.py"), "--quick", "--no-dask")
    assert out.returncode == 0, out.stderr
    assert "Queue task->task" in out.stdout and "Lock acquire+release (task)" in out.stdout
