"""benchmarks/trace_path.py: the step-by-step timing of one round trip.

The analysis is fed made-up events (its rules: a round trip starts at its first probe,
steps taken by too few round trips are left out, a label met twice is told apart, a
step into another process or thread is a hand-off); then the script runs for real, its
probes in the worker processes too, and its table names the steps a task's round trip
takes in each process.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import trace_path as tp  # noqa: E402


def _trip(start_ns: int, *steps: tuple[int, str, str]) -> list[tp.Event]:
    """One round trip's events: ``(µs after the start, label, where)``."""
    return [tp.Event(start_ns + us * 1000, label, where) for us, label, where in steps]


def _round_trips(n: int, with_rare_step_every: int = 0) -> list[tp.Event]:
    events = []
    for i in range(n):
        steps = [(0, "send", "c/main"), (10, "read", "w/loop"), (15, "run", "w/pool"),
                 (40, "read", "c/loop"), (45, "read", "c/loop")]
        if with_rare_step_every and i % with_rare_step_every == 0:
            steps.insert(3, (20, "rare", "w/pool"))
        events.extend(_trip(i * 1_000_000, *steps))
    return events


def test_round_trips_start_at_the_first_probe_and_skip_the_warmup():
    events = [tp.Event(1, "before anything", "c/main")] + _round_trips(10)
    trips = tp.split_round_trips(events, "send", warmup=0.2)
    assert len(trips) == 8
    assert all(trip[0].label == "send" and len(trip) == 5 for trip in trips)


def test_steps_in_order_with_handoffs_and_repeated_labels_told_apart():
    trips = tp.split_round_trips(_round_trips(10), "send", warmup=0)
    found = tp.steps(trips)
    assert [(s.end, s.handoff, s.median_us) for s in found] == [
        ("read @ w/loop", True, 10.0),
        ("run @ w/pool", True, 5.0),
        ("read @ c/loop", True, 25.0),
        ("read @ c/loop #2", False, 5.0),
    ]


def test_a_step_few_round_trips_take_is_left_out():
    trips = tp.split_round_trips(_round_trips(10, with_rare_step_every=5), "send", warmup=0)
    ends = [s.end for s in tp.steps(trips, common=0.8)]
    assert "rare @ w/pool" not in ends
    assert "read @ c/loop" in ends  # (its 8 plain trips' step from "run" is still common enough)


def test_a_probe_is_module_colon_class_dot_method():
    assert tp.parse_probe("actorrt.core.host:Host._dispatch") == ("actorrt.core.host", "Host._dispatch", False)
    assert tp.parse_probe("actorrt.core.host:Host._dispatch+") == ("actorrt.core.host", "Host._dispatch", True)
    for bad in ("actorrt.core.host", "actorrt.core.host:_dispatch", ":Host._dispatch", "m:A.b.c"):
        with pytest.raises(argparse.ArgumentTypeError, match="module:Class.method"):
            tp.parse_probe(bad)


def test_every_probe_names_a_function_that_exists():
    """A probe that names a renamed function would fail the workers at start-up."""
    import importlib
    for probes in tp.PROBES.values():
        for module, qualname, _ in probes:
            cls, name = qualname.split(".")
            assert callable(getattr(getattr(importlib.import_module(module), cls), name)), qualname


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_script_traces_a_task_round_trip_through_every_process():
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "trace_path.py"), "--quick"],
                          cwd=BENCH_DIR.parent, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          capture_output=True, text=True, timeout=110, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    assert "untraced median" in out and "hand-offs" in out, out
    lines = out.splitlines()
    # The worker processes' probes report too (the task runs on a worker's pool thread),
    # and the answer comes back to this process, where the round trip ends in the
    # submitting thread (which reads it itself off its own connection: client/direct.py).
    assert any("TaskRun.__call__" in line and "@ worker-" in line for line in lines), out
    steps = [line.split("|")[0].strip() for line in lines if " @ " in line and "|" in line]
    last_on_worker = max(i for i, step in enumerate(steps) if "@ worker-" in step)
    assert "@ client/" in steps[last_on_worker + 1], out
    assert steps[-1].endswith("@ client/MainThread"), out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_script_traces_a_tasks_queue_get_to_the_scheduler_and_back():
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "trace_path.py"), "--quick", "--path", "queue-get"],
                          cwd=BENCH_DIR.parent, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          capture_output=True, text=True, timeout=110, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    steps = [line.split("|")[0].strip() for line in proc.stdout.splitlines() if " @ " in line and "|" in line]
    # The get leaves the task's thread on a worker, is served by the queue on the
    # scheduler (this process), and ends back in that thread.
    assert any(step.startswith(">> TCPComm._read_ready @ client/") for step in steps), proc.stdout
    assert any("QueueActor.handle_get @ client/" in step for step in steps), proc.stdout
    assert "Queue.get returns @ worker-" in steps[-1], proc.stdout


def test_where_the_path_varies_the_usual_variant_is_listed():
    """Two trips in three read a message alone, one reads two at once: the default lists
    the usual one's steps."""
    events = []
    for i in range(9):
        steps = [(0, "send", "c/main"), (10, "read", "w/loop")]
        if i % 3 == 0:
            steps.append((12, "read", "w/loop"))  # a second message in the same wake-up
        steps.append((30, "run", "w/pool"))
        events.extend(_trip(i * 1_000_000, *steps))
    found = tp.steps(tp.split_round_trips(events, "send", warmup=0))
    assert [(s.start, s.end, s.median_us) for s in found] == [
        ("send @ c/main", "read @ w/loop", 10.0),
        ("read @ w/loop", "run @ w/pool", 20.0),
    ]
