"""A task's report leaves from the thread that ran it (Worker._report_from_thread), over
real worker processes: the scheduler and the client hear without the worker's loop
waking first, and any message that follows the report (a peer's fetch, a client's
``run``) finds the value there, even before the loop was woken to store it."""
import socket
import threading

import pytest

from loop_gates import hold_this_workers_loop, while_held

pytestmark = pytest.mark.timeout(90)


def hold_the_loop_then_return(port):
    """Hold this worker's event loop (until the test lets go), then return."""
    hold_this_workers_loop(port)
    return "done"


def test_a_tasks_result_does_not_wait_for_its_workers_loop(pclient):
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(30)
        future = pclient.submit(hold_the_loop_then_return, gate.getsockname()[1], pure=False)

        def done_while_held():
            assert future.result(timeout=20) == "done"
        while_held(gate, lambda: future.result(timeout=5), done_while_held)
    assert pclient.submit(len, "four", pure=False).result(timeout=20) == 4


def stall_hand_backs(dask_worker):
    """From now on a pool thread that has sent its task's report waits for the test's
    go before it wakes the loop for the job: as if it lost the interpreter lock there."""
    go = dask_worker._test_go = threading.Event()
    completions = dask_worker.pool._completions
    wake = completions.wake

    def stalled_wake():
        go.wait(60)
        return wake()
    completions.wake = stalled_wake


def let_hand_backs_go(dask_worker):
    dask_worker._test_go.set()
    del dask_worker.pool._completions.wake  # (the class's own again)


def counted(path, x):
    with open(path, "a") as f:
        f.write("run\n")
    return x * 10


def test_a_peer_gets_a_value_its_workers_loop_has_not_stored_yet(pclient, tmp_path):
    a, b = sorted(pclient.scheduler_info()["workers"])
    runs = tmp_path / "runs"
    pclient.run(stall_hand_backs, workers=[a])
    try:
        x = pclient.submit(counted, str(runs), 4, workers=[a], pure=False)
        # Its report came from its thread; a's loop has not been woken for the job.
        assert x.result(timeout=20) == 40
        # A message to a that follows the report finds the value there (taken back first).
        assert pclient.run(lambda dask_worker, key=x.key: key in dask_worker.data, workers=[a]) == {a: True}
        y = pclient.submit(lambda v: v + 1, x, workers=[b], pure=False)
        # b asks a for x: a's loop takes the finished job back first, and answers.
        assert y.result(timeout=20) == 41
    finally:
        pclient.run(let_hand_backs_go, workers=[a])
    assert runs.read_text() == "run\n"  # never lost, never computed again
    assert pclient.submit(lambda: 1, workers=[a], pure=False).result(timeout=20) == 1
