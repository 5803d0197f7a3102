"""Runs a client hands this worker itself: the worker's side.

A client's thread that submits a lone task and waits for it may write the task here
directly, on a connection of its own, and read the answer there (client/direct.py).
The scheduler learns of the run from that client, not from us (scheduler/direct_runs.py):
its client relays our report, so the report is ordered with whatever else that client
says about the key. Here the run is an ordinary row of the state machine with no run
id; only where its report goes differs. The answer to the ask is one of

* ``["finished", Finished]`` / ``["erred", Erred]``: the report the scheduler would have
  had, for the client to relay;
* ``["declined", reason]``: nothing ran and nothing is kept here: no free thread, the
  key known here already, the worker paused or away from its scheduler; or the run was
  dropped (the scheduler freed or placed the key) before it ended.

A run that handed this worker's loop something (a submission, an event, a secede) is
answered only once the scheduler has answered a question asked after all of it:
relayed sooner, the report could reach the scheduler before what the task sent it
(a Future it returned, say), on another connection.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .. import runtime
from ..core import Reply, own_task
from ..core.errors import CommClosedError
from ..protocol import DIRECT_DECLINED, DIRECT_ERRED, DIRECT_FINISHED, ComputeTask, Erred, Finished

if TYPE_CHECKING:
    from .actor import Worker
    from .pool import Job
    from .task import TaskRun


class DirectAsks:
    """The asks to run a task here that wait for their run's end, by key."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        # key -> the ask to answer. Read by pool threads (one dict lookup), written by the loop.
        self.asks: dict[str, Reply] = {}

    # --- the loop ---------------------------------------------------------------------
    def accept(self, key: str, spec: list, name: str, reply: Reply) -> None:
        """Run ``key`` now, or decline at once and keep nothing."""
        reason = self._refusal(key)
        if reason is not None:
            reply.ok([DIRECT_DECLINED, reason])
            return
        self.asks[key] = reply
        w = self.worker
        w.carry_out(w.state.stimulus_compute([ComputeTask(key, spec, {}, name, None, None, {})]))

    def _refusal(self, key: str) -> str | None:
        w = self.worker
        pool = w.pool
        if not w.connected:
            return "the worker is not connected to its scheduler"
        if key in w.state.rows:
            return "the key is known here already"
        if pool.paused:
            return "the worker is paused (memory)"
        if pool.ready or pool.running >= pool.nthreads:
            return "no thread free"
        return None

    def report(self, report: Finished | Erred, quiet: bool) -> None:
        """The direct run of ``report.key`` ended: its report is the answer."""
        reply = self.asks.pop(report.key, None)
        if reply is not None:
            self._answer(reply, [DIRECT_FINISHED if type(report) is Finished else DIRECT_ERRED, report], quiet)

    def declined(self, key: str, why: str) -> bool:
        """The run of ``key`` was dropped before it ended (or asked to be placed anew)."""
        reply = self.asks.pop(key, None)
        if reply is None:
            return False
        reply.ok([DIRECT_DECLINED, why])
        return True

    def _answer(self, reply: Reply, answer: list, quiet: bool) -> None:
        if quiet:
            reply.ok(answer)
        else:
            own_task(self.worker, self._answer_after_scheduler(reply, answer))

    async def _answer_after_scheduler(self, reply: Reply, answer: list) -> None:
        try:
            await self.worker.host.ask(self.worker.scheduler, "identity")
        except (CommClosedError, OSError) as e:
            # The scheduler is gone: it will rerun the task; our value goes with it.
            reply.ok([DIRECT_DECLINED, f"the worker lost its scheduler: {e}"])
            return
        reply.ok(answer)

    # --- a pool thread --------------------------------------------------------------------
    def answer_from_thread(self, job: "Job", run: "TaskRun", report: Finished) -> Callable[[], None] | None:
        """Pool thread, ``run`` just ended quietly with ``report``: the answer, to send from
        this thread once the job is handed back (as Worker._report_from_thread), or None
        (not a direct run, or its connection takes no writes from threads). Sent, the
        job is settled: the loop need not wake for it (pool.TaskPool._thread_main)."""
        reply = self.asks.get(run.key)
        if reply is None or reply.send_from_thread is None:
            return None
        run.reported = report
        return lambda: self._send_from_thread(job, reply, report)

    def _send_from_thread(self, job: "Job", reply: Reply, report: Finished) -> None:
        if reply.ok_from_thread([DIRECT_FINISHED, report]):
            job.settled = True
        else:  # (queued behind other writes: the loop answers)
            loop = self.worker.host.loop
            assert loop is not None
            try:
                runtime.post(loop, self._answer_late, reply, report)
            except RuntimeError:
                pass  # the loop is closed: the worker is gone, and the connection with it

    def _answer_late(self, reply: Reply, report: Finished) -> None:
        reply.ok([DIRECT_FINISHED, report])

