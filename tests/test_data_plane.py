"""Bulk data between hosts: values of every size, worker to worker and client to worker,
over both transports; values that cannot move; a holder that dies mid-transfer."""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading

import numpy as np
import pytest

from actorrt import Client, wait
from actorrt.core import Actor, Host, Pickled
from actorrt.core.tcp import TCPComm
from actorrt.core.errors import CommClosedError, SerializationError
from actorrt.core.framing import LARGE_FRAME_BYTES, MMAP_MIN_BYTES, STAGE_BYTES
from actorrt.testing import gen_cluster, poll_for

# Values around each threshold the transport has (see actorrt/core/framing.py).
SIZES = [0, 1, LARGE_FRAME_BYTES - 1, LARGE_FRAME_BYTES + 1, STAGE_BYTES + 1, MMAP_MIN_BYTES + 1,
         8 * MMAP_MIN_BYTES]


def pattern(nbytes: int) -> np.ndarray:
    """A byte array whose content shows any shift, cut or reuse of memory."""
    return (np.arange(nbytes, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8)


def checksum(a) -> tuple:
    a = np.asarray(a)
    return (a.nbytes, int(a.astype(np.uint64).sum()), int(a[-1]) if a.size else None)


def make_bytes(nbytes: int) -> bytes:
    return pattern(nbytes).tobytes()


def bytes_checksum(b: bytes) -> tuple:
    return checksum(np.frombuffer(b, dtype=np.uint8))


@pytest.fixture(scope="module")
def tcp_client():
    """Two worker processes over TCP: every transfer crosses a real socket."""
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        yield c


def _workers(client):
    return sorted(client.scheduler_info()["workers"])


# --- every size, both directions, both transports ---------------------------------

@pytest.mark.parametrize("nbytes", SIZES)
def test_sizes_between_processes(tcp_client, nbytes):
    a, b = _workers(tcp_client)
    x = tcp_client.submit(pattern, nbytes, workers=[a], pure=False)
    y = tcp_client.submit(checksum, x, workers=[b], pure=False)          # worker -> worker
    assert y.result() == checksum(pattern(nbytes))
    got = x.result()                                                     # worker -> client
    assert checksum(got) == checksum(pattern(nbytes)) and got.flags.writeable
    s = tcp_client.scatter(pattern(nbytes), workers=[b], hash=False)     # client -> worker
    assert tcp_client.submit(checksum, s, workers=[a], pure=False).result() == checksum(pattern(nbytes))
    raw = tcp_client.submit(make_bytes, nbytes, workers=[a], pure=False)  # bytes travel out of band too
    assert tcp_client.submit(bytes_checksum, raw, workers=[b], pure=False).result() == \
        bytes_checksum(make_bytes(nbytes))


@pytest.mark.parametrize("nbytes", [0, 1, LARGE_FRAME_BYTES + 1, MMAP_MIN_BYTES + 1])
@gen_cluster()
async def test_sizes_in_process(c, lc, nbytes):
    a, b = lc.worker_addresses()
    x = c.submit(pattern, nbytes, workers=[a], pure=False)
    y = c.submit(checksum, x, workers=[b], pure=False)
    assert await y == checksum(pattern(nbytes))
    assert checksum(await x) == checksum(pattern(nbytes))
    s = await c.scatter(pattern(nbytes), workers=[b], hash=False)
    assert checksum(await s) == checksum(pattern(nbytes))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_value_over_one_and_a_half_gib_moves_everywhere():
    # The old transport refused any message over 1 GiB and retried the fetch 20 times.
    nbytes = 3 * (1 << 29) + 12345  # 1.5 GiB and change: no power of two hides a cut
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        a, b = _workers(c)
        x = c.submit(np.ones, nbytes, dtype=np.uint8, workers=[a], pure=False)
        assert c.submit(np.sum, x, workers=[b], pure=False).result() == nbytes
        got = x.result()
        assert got.nbytes == nbytes and got[-1] == 1 and got.flags.writeable
        del got
        s = c.scatter(np.ones(nbytes, dtype=np.uint8), workers=[b], hash=False)
        assert c.submit(np.sum, s, workers=[a], pure=False).result() == nbytes
        info = c.scheduler_info()["workers"]
        assert info[b]["memory"]["managed"] >= nbytes  # stored values are accounted by size


def test_scheduler_info_accounts_each_workers_values(tcp_client):
    a, b = _workers(tcp_client)
    before = tcp_client.scheduler_info()["workers"][a]["memory"]["managed"]
    x = tcp_client.submit(np.zeros, 1 << 20, workers=[a], pure=False)
    wait(x)
    after = tcp_client.scheduler_info()["workers"][a]["memory"]["managed"]
    assert after - before == 8 << 20
    del x


# --- values that cannot move --------------------------------------------------------

def _refuse_to_load():
    raise ValueError("this value cannot be loaded here")


class Unloadable:
    """Pickles fine, fails to unpickle: a value whose class is missing on the consumer."""

    def __reduce__(self):
        return (_refuse_to_load, ())


class Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()


def identity(x):
    return x


@pytest.mark.parametrize("make,error,match", [
    (Unloadable, ValueError, "cannot be loaded here"),
    (Unpicklable, SerializationError, "cannot pickle result of"),
], ids=["fails-to-unpickle-on-consumer", "fails-to-pickle-on-holder"])
@gen_cluster(timeout=20)
async def test_an_input_that_cannot_move_errs_its_dependent(c, lc, make, error, match):
    a, b = lc.worker_addresses()
    x = c.submit(make, workers=[a], pure=False)
    await wait(x)
    y = c.submit(identity, x, workers=[b], pure=False)
    with pytest.raises(error, match=match):
        await y
    # The scheduler stopped asking: a handful of transitions, not a loop.
    state = lc.scheduler.state
    assert len(state.story(y.key)) < 10 and len(state.story(x.key)) < 10
    assert x.status == "finished"  # the value itself is fine where it is
    assert await c.submit(identity, 5, workers=[b], pure=False) == 5  # the cluster goes on


def test_an_input_that_cannot_move_between_processes(tcp_client):
    a, b = _workers(tcp_client)
    x = tcp_client.submit(Unloadable, workers=[a], pure=False)
    y = tcp_client.submit(identity, x, workers=[b], pure=False)
    with pytest.raises(ValueError, match="cannot be loaded here"):
        y.result(timeout=20)


# --- a holder that dies while its value is on the wire ------------------------------

def fetching(dask_worker):
    return sorted(dask_worker.state.keys_in("fetch", "flight"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_holder_killed_mid_transfer_the_value_is_recomputed():
    nbytes = 1 << 30  # about half a second on the wire: the kill lands during it
    with Client(n_workers=2, threads_per_worker=1, processes=True) as c:
        a, b = _workers(c)
        x = c.submit(np.ones, nbytes, dtype=np.uint8, workers=[a], allow_other_workers=True, pure=False)
        wait(x)
        y = c.submit(np.sum, x, workers=[b], pure=False)
        pid = c.scheduler_info()["workers"][a]["pid"]
        deadline = 20.0
        while deadline > 0 and not c.run(fetching, workers=[b])[b] and y.status == "pending":
            deadline -= 0.001  # bounded: polling a reply, not sleeping
        os.kill(pid, signal.SIGKILL)
        assert y.result(timeout=60) == nbytes


# --- backpressure: a reader that pauses ---------------------------------------------

class Sink(Actor):
    def handle_take(self, data):
        return data.nbytes


def test_a_paused_reader_makes_the_sender_wait_then_both_go_on():
    async def main():
        async with Host("tcp://127.0.0.1:0", name="reader", shortcut=False) as reader, \
                Host("tcp://127.0.0.1:0", name="sender", shortcut=False) as sender:
            ref = reader.spawn(Sink())
            assert await sender.ask(ref, "take", data=Pickled.dumps(b"x")) > 0
            comm = sender.comm_to(reader.address)
            assert isinstance(comm, TCPComm)
            peer = reader.comm_to(sender.address)
            reader.loop.remove_reader(peer._fd)  # the reader stops reading
            payload = Pickled.dumps(np.ones(64 << 20, dtype=np.uint8))
            reply = sender.ask(ref, "take", data=payload)
            await poll_for(lambda: comm.buffered_bytes > 0)
            drained = asyncio.ensure_future(comm.drain())
            await asyncio.sleep(0)  # one loop turn: drain is still waiting on the paused reader
            assert not drained.done() and comm.buffered_bytes > 8 << 20
            reader.loop.add_reader(peer._fd, peer._read_ready)  # it reads again
            await asyncio.wait_for(drained, 10)
            assert await asyncio.wait_for(reply, 10) == payload.nbytes
    asyncio.run(main())


def test_a_reader_that_never_reads_again_is_dropped(monkeypatch):
    monkeypatch.setattr("actorrt.core.tcp.WRITE_STALL_TIMEOUT", 0.3)

    async def main():
        async with Host("tcp://127.0.0.1:0", name="reader", shortcut=False) as reader, \
                Host("tcp://127.0.0.1:0", name="sender", shortcut=False) as sender:
            ref = reader.spawn(Sink())
            assert await sender.ask(ref, "take", data=Pickled.dumps(b"x")) > 0
            peer = reader.comm_to(sender.address)
            reader.loop.remove_reader(peer._fd)
            with pytest.raises(CommClosedError, match="stopped reading"):
                await asyncio.wait_for(sender.ask(ref, "take", data=Pickled.dumps(np.ones(64 << 20, dtype=np.uint8))), 10)
            assert sender.comm_to(reader.address) is None
            reader.loop.add_reader(peer._fd, peer._read_ready)
            assert await sender.ask(ref, "take", data=Pickled.dumps(b"again")) > 0  # a new connection
    asyncio.run(main())


# --- the transfer budget --------------------------------------------------------------

def total(*arrays):
    return int(sum(int(a.sum()) for a in arrays))


@gen_cluster(n_workers=3)
async def test_a_wide_fan_in_keeps_its_transfers_within_the_budget(c, lc):
    a, b, d = lc.worker_addresses()
    consumer = next(w for host, w in lc.workers.values() if host.address == b)
    consumer.transfer_limit = 3 << 20
    parts = [c.submit(np.ones, 1 << 17, workers=[a if i % 2 else d], pure=False) for i in range(10)]  # 1 MiB each
    await wait(parts)
    assert await c.submit(total, *parts, workers=[b], pure=False) == 10 << 17
    # Both holders were asked, never more than the budget at once (one request of
    # up to 3 MiB from each holder would have been 6).
    assert 0 < consumer.transfer_incoming_bytes_peak <= 3 << 20
    assert consumer.transfer_incoming_bytes == 0 and not consumer.state.queued_transfers


def test_batches_split_one_holders_keys_by_the_budget():
    from actorrt.worker.state import _batches
    sizes = {"a": 4, "b": 4, "c": 10, "d": 1}
    assert _batches(["a", "b", "c", "d"], sizes, 8) == [(["a", "b"], 8), (["c"], 10), (["d"], 1)]
    assert _batches(["x", "y"], {}, 8) == [(["x", "y"], 0)]  # unknown sizes: one request


# --- a value on the wire does not hold up control messages ---------------------------

class Both(Sink):
    def handle_ping(self):
        return "pong"


def test_control_messages_pass_a_stalled_bulk_transfer():
    async def main():
        async with Host("tcp://127.0.0.1:0", name="reader", shortcut=False) as reader, \
                Host("tcp://127.0.0.1:0", name="sender", shortcut=False) as sender:
            ref = reader.spawn(Both())
            assert await sender.ask(ref, "ping") == "pong"
            assert await sender.ask_bulk(ref, "take", data=Pickled.dumps(b"x")) > 0
            bulk = next(c for c in reader._all_comms if c.channel == "bulk")
            reader.loop.remove_reader(bulk._fd)  # the bulk connection stalls mid-value
            big = asyncio.ensure_future(
                sender.ask_bulk(ref, "take", data=Pickled.dumps(np.ones(64 << 20, dtype=np.uint8))))
            await poll_for(lambda: sender._bulk_comms[reader.address].buffered_bytes > 0)
            assert await asyncio.wait_for(sender.ask(ref, "ping"), 5) == "pong"  # not behind it
            assert not big.done()
            reader.loop.add_reader(bulk._fd, bulk._read_ready)
            assert await asyncio.wait_for(big, 10) >= 64 << 20
            # Closing the bulk connection is not the peer's death: the main one stays.
            sender._bulk_comms[reader.address].close()
            assert sender.comm_to(reader.address) is not None
            assert await sender.ask(ref, "ping") == "pong"
            assert await sender.ask_bulk(ref, "take", data=Pickled.dumps(b"yz")) > 0  # reopened
    asyncio.run(main())


def test_a_value_larger_than_the_client_accepts_fails_at_once_by_name(monkeypatch):
    from actorrt import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        monkeypatch.setenv("ACTORRT_MAX_FRAME_BYTES", str(1 << 20))  # this client only
        with Client(cluster.scheduler_address, secret=cluster.secret) as c:
            big = c.submit(np.ones, 1 << 18, pure=False)  # 2 MiB
            with pytest.raises(SerializationError, match=r"cannot gather \[.*ones.*\] from .*frame of \d+ "
                               r"bytes; the peer accepts at most 1048576 .*ACTORRT_MAX_FRAME_BYTES"):
                big.result(timeout=20)
            assert c.submit(np.ones, 10, pure=False).result().sum() == 10  # smaller values still come


# --- fetched inputs: kept while used, and who is blamed when a fetch fails ----------------
def inc(x):
    return x + 1


def _worker_at(lc, address):
    return next(w for h, w in lc.workers.values() if h.address == address)


@gen_cluster(n_workers=2)
async def test_fetched_input_copy_is_dropped_when_no_local_task_needs_it(c, lc):
    # The scheduler never learns of a copy a worker fetched as some task's input, so
    # it never frees it: the worker must drop it itself, or it stays for ever.
    a, b = lc.worker_addresses()
    x = c.submit(inc, 1, workers=[a], key="x")
    y = c.submit(inc, x, workers=[b], key="y")
    assert await y == 3
    wb = _worker_at(lc, b)
    assert "x" not in wb.data and "y" in wb.data
    del x, y
    gc.collect()
    await poll_for(lambda: not lc.scheduler.state.tasks and not wb.data and not _worker_at(lc, a).data)


@gen_cluster(n_workers=2, threads_per_worker=2)
async def test_fetched_copy_shared_by_many_local_tasks(c, lc):
    a, b = lc.worker_addresses()
    x = c.submit(inc, 1, workers=[a], key="x")
    ys = [c.submit(inc, x, workers=[b], key=f"y-{i}", pure=False) for i in range(20)]
    ys += [c.submit(lambda v, i: v + i, x, i, workers=[b], pure=False) for i in range(20)]
    assert len(await c.gather(ys)) == 40
    wb = _worker_at(lc, b)
    assert "x" not in wb.data
    # a task placed where a copy used to be still gets its input
    z = c.submit(inc, x, workers=[b], pure=False)
    assert await z == 3
    assert "x" not in wb.data


def test_fetched_copy_dropped_on_worker_process(pclient):
    a, b = sorted(pclient.scheduler_info()["workers"]) if hasattr(pclient, "scheduler_info") else (None, None)
    x = pclient.submit(inc, 10, workers=[a])
    y = pclient.submit(inc, x, workers=[b])
    assert y.result() == 12
    held = pclient.run(lambda dask_worker: sorted(dask_worker.data), workers=[b])
    assert held[b] == [y.key]


@gen_cluster(n_workers=2)
async def test_fetch_reports_only_the_holder_it_tried(c, lc):
    # A failed fetch blames the peer it asked, not every holder: the scheduler drops
    # the blamed ones from who_has (and would recompute data a live holder still has,
    # and never free that holder's copy).
    from actorrt.core import Pickled
    a, b = lc.worker_addresses()
    wb = _worker_at(lc, b)
    told = []
    tell = wb.host.tell

    def spy(ref, op, **fields):
        if op in ("missing_data", "tasks_done"):
            told.append((op, fields))
        else:
            tell(ref, op, **fields)
    wb.host.tell = spy
    try:
        spec = [Pickled.dumps(inc), Pickled.dumps(((0,), {}))]
        wb.handle_compute([["t", spec, {"k": ["inproc://nobody-1", "inproc://nobody-2"]}, "t", None, 1, {}]],
                          None)
        await poll_for(lambda: told)
    finally:
        del wb.host.tell
    # Unreachable holders lose the data; they do not make it unmovable (no tasks_done).
    [(op, fields)] = told
    assert op == "missing_data" and fields["key"] == "t" and list(fields["missing"]) == ["k"]
    assert len(fields["missing"]["k"]) == 1
    assert fields["missing"]["k"][0] in ("inproc://nobody-1", "inproc://nobody-2")
    assert not wb.state.rows  # the task and its input are forgotten
    wb.state.validate()
