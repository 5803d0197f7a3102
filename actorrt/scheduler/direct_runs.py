"""Tasks a client hands to a worker itself: the scheduler's side (pure state logic).

A thread that submits a lone task and waits for it at once (``submit(f, x).result()``)
may write the task straight to a worker it knows and read the answer there itself,
with no hop through this loop on the way (client/direct.py, worker/direct.py). The
scheduler still owns the task: it hears of it and of its outcome from the submitting
client, on the client's own connection, so in order with everything else that client
says about the key (its release, a dependent, a cancel). The worker says nothing of
such a run to the scheduler; what would have been its report travels to the client in
the answer, and the client relays it.

* :func:`direct_started`: the task is new and its worker known: it is
  'processing' there at once, and no Compute goes out (the client sent it). Else it is
  an ordinary submission; whatever the worker makes of it comes back as a stale run.
* :func:`direct_finished` / :func:`direct_erred`: the worker's report, relayed: taken as the
  worker's own report of run :data:`DIRECT_RUN`. A value nobody is waiting for there
  (the task was placed elsewhere meanwhile) is freed, as the worker cannot know.
* :func:`direct_declined`: the worker would not run it (no free slot, the key
  busy there), dropped it (the scheduler freed it), or could not be reached: placed as
  any task, unless something else has happened to it since.
* :func:`direct_complete`: a task's whole life at once: started, finished and released
  by its client before the client's batch of messages went out (the client folds the
  three messages into one: client/direct.py). A key nobody else had asked for is never
  held: its story and counts are recorded as its life would have left them, and its
  worker is told to free the value. Anything else is taken as the three messages.
"""
from __future__ import annotations

import time
from typing import Any

from ..protocol import Finished, TaskSpec, runs_alone
from .instructions import Free, Instruction, Report
from .state import SchedulerState

#: The run id of a run a client handed to a worker (the scheduler numbers its own from 1).
DIRECT_RUN = -1

#: The transitions of a lone task started, finished and released, in its story.
WHOLE_LIFE = (("released", "processing"), ("processing", "memory"), ("memory", "released"),
              ("released", "forgotten"))


def direct_started(state: SchedulerState, client: str, spec: TaskSpec, worker: str,
                   stimulus_id: str) -> list[Instruction]:
    """``client`` submitted ``spec`` and sent it to ``worker`` to run now."""
    ws = state.workers.get(worker)
    if ws is None or spec.key in state.tasks or not runs_alone(spec):
        # Not a lone new task on a live worker: an ordinary submission. A run the
        # worker makes of it anyway is reported as stale and freed.
        return state.stimulus_update_graph(client, [spec], [spec.key], stimulus_id)
    ts = state._add_task(spec, next(state._generation))
    assert ts is not None
    ts.who_wants = state.wanters.plus(ts.who_wants, client)
    state._story(ts, "released", "processing", stimulus_id)
    state.placement.occupy(ws, ts)
    ts.state = "processing"
    ts.processing_on = ws
    ts.run_id = DIRECT_RUN
    return state._flush()


def direct_finished(state: SchedulerState, client: str, worker: str, key: str, nbytes: int, typ: str | None,
                    stimulus_id: str, duration: float | None = None) -> list[Instruction]:
    """The worker's report that the run ``client`` handed it finished, relayed. The
    client knows already: it is not told again."""
    out = _not_to(client, key, state.stimulus_task_finished(worker, key, nbytes, typ, stimulus_id,
                                                            duration, DIRECT_RUN))
    ts, ws = state.tasks.get(key), state.workers.get(worker)
    if ts is not None and ws is not None and ws not in ts.who_has and ts.processing_on is not ws \
            and not any(type(i) is Free and i.worker == worker for i in out):
        # Placed elsewhere meanwhile (or done there): the worker keeps a value the
        # scheduler does not count, and only the scheduler can tell it to let go.
        out.append(Free(worker, [key]))
    return out


def direct_erred(state: SchedulerState, client: str, worker: str, key: str, exception: Any,
                 traceback: str | None, stimulus_id: str) -> list[Instruction]:
    """The worker's report that the run ``client`` handed it raised, relayed."""
    return _not_to(client, key, state.stimulus_task_erred(worker, key, exception, traceback, stimulus_id,
                                                          DIRECT_RUN))


def direct_declined(state: SchedulerState, worker: str, key: str, stimulus_id: str) -> list[Instruction]:
    """The run handed to ``worker`` will not happen there: place the task anew."""
    ts = state.tasks.get(key)
    if ts is None or ts.run_id != DIRECT_RUN:
        return []  # (placed by the scheduler since: its own run stands)
    return state.stimulus_reschedule(worker, key, stimulus_id)


def direct_complete(state: SchedulerState, client: str, lives: list[tuple[TaskSpec, str, Finished]],
                    stimulus_id: str) -> list[Instruction]:
    """``client`` started each ``(spec, worker, finished)`` on ``worker``, the run
    finished so, and ``client`` released the key: in that order, and nothing else this
    client said came between (it folded the three messages into one).

    A lone task of a new key on a live worker has nothing to wait for, nobody else to
    tell and no worker slot left to give back by the end: it never enters the task
    table. What its life would have left stays: four story entries (what plugins and
    ``client.story`` see), the finished count, its run time in the mean, and the Free
    of its value. Any other task goes through the three steps it stands for."""
    out: list[Instruction] = []
    frees: dict[str, list[str]] = {}
    tasks, workers = state.tasks, state.workers
    for spec, worker, done in lives:
        key = spec.key
        if worker not in workers or key in tasks or not runs_alone(spec):
            out += direct_started(state, client, spec, worker, stimulus_id)
            out += direct_finished(state, client, worker, key, done.nbytes, done.type, stimulus_id, done.duration)
            out += state.stimulus_release_keys(client, [key], stimulus_id)
            continue
        _record_life(state, key, done.duration, stimulus_id)
        frees.setdefault(worker, []).append(key)
    if frees:
        state._run({}, stimulus_id)  # (a changed run-time mean may resize workers' capacity)
        out += state._flush()
        out += [Free(worker, keys) for worker, keys in frees.items()]
    return out


def _record_life(state: SchedulerState, key: str, duration: float | None, stimulus_id: str) -> None:
    """What a lone task's start, finish and release would have left in ``state``.
    (The count of unfinished work went up and down again: it is not touched.)"""
    now = time.time()
    append = state.log.append
    for start, finish in WHOLE_LIFE:
        append((key, start, finish, stimulus_id, now))
    state.finished_total += 1
    if duration is not None:
        state.placement.observe_duration(duration)


def _not_to(client: str, key: str, out: list[Instruction]) -> list[Instruction]:
    """``out`` without the report of ``key`` to ``client`` (which told us)."""
    return [i for i in out if not (type(i) is Report and i.client == client and i.key == key)]
