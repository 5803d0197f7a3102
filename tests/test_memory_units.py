"""The memory pieces without a cluster: parsing limits, the spill buffer, the monitor's rule."""
from __future__ import annotations

import asyncio
import logging
import os
import sys

import pytest

from actorrt.worker.memory import (
    MemorySettings,
    format_bytes,
    parse_bytes,
    parse_memory_limit,
    process_rss,
    system_memory,
)
from actorrt.testing import poll_for
from actorrt.worker.monitor import MemoryMonitor, decide
from actorrt.worker.spill import SpillBuffer, make_spill_directory

GIB = 2**30
TOTAL = 16 * GIB


# --- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * GIB), ("500MB", 500_000_000), ("1.5 kB", 1500), ("7", 7), (7, 7), ("2g", 2 * 10**9),
    ("1e3", 1000), ("10 mib", 10 * 2**20), ("0", 0),
])
def test_parse_bytes_reads_sizes_in_decimal_and_binary_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "4 XB", "GB", "1.2.3MB", "nan", "inf"])
def test_parse_bytes_names_the_text_it_cannot_read(text):
    with pytest.raises(ValueError, match="size"):
        parse_bytes(text)


@pytest.mark.parametrize("value, expected", [
    (None, None), (0, None), ("0", None), ("none", None), (False, None),
    ("auto", TOTAL // 4), (0.25, TOTAL // 4), (1.0, TOTAL), ("2GiB", 2 * GIB), (3 * GIB, 3 * GIB),
    (2.5e9, 2_500_000_000), ("64GiB", TOTAL),  # more than the machine: lowered to it
])
def test_parse_memory_limit(value, expected):
    assert parse_memory_limit(value, 4, total=TOTAL) == expected


@pytest.mark.parametrize("value, error", [
    ("lots", ValueError), (-1, ValueError), (float("nan"), ValueError), ([1], TypeError), (True, TypeError),
])
def test_parse_memory_limit_refuses_nonsense_with_the_value_named(value, error):
    with pytest.raises(error, match="memory_limit|size"):
        parse_memory_limit(value, total=TOTAL)


def test_memory_settings_take_fractions_or_off():
    assert MemorySettings(target=False, pause=None).target is None
    for bad in (0, 1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="fraction"):
            MemorySettings(spill=bad)


def test_this_process_and_machine_are_measured():
    rss = process_rss()
    assert rss is not None and 10 * 2**20 < rss < system_memory()
    assert process_rss(os.getpid()) is not None
    assert format_bytes(3 * GIB) == "3.00 GiB" and format_bytes(10) == "10 B"


# --- the spill buffer -----------------------------------------------------------------------

@pytest.fixture
def spill_dir(tmp_path):
    return str(tmp_path)


def test_values_past_the_target_spill_least_recently_used_first(spill_dir):
    buf = SpillBuffer(spill_dir, target=300)
    for key in "abc":
        buf.put(key, key * 100, 100)
    _ = buf["a"]  # a was used last: b is now the oldest
    buf.put("d", "d" * 100, 100)
    assert buf.is_spilled("b") and not buf.is_spilled("a")
    assert (buf.fast_bytes, buf.slow_bytes) == (300, 100)
    assert sorted(buf) == ["a", "b", "c", "d"] and len(buf) == 4
    assert len(os.listdir(spill_dir)) == 1


def test_a_spilled_value_loads_back_transparently_and_its_file_goes(spill_dir):
    buf = SpillBuffer(spill_dir, target=150)
    buf.put("x", {"payload": list(range(10))}, 100)
    buf.put("y", "y", 100)
    assert buf.is_spilled("x")
    assert buf["x"] == {"payload": list(range(10))}
    assert buf.in_memory("x") and buf.is_spilled("y")  # x came back, so y (now oldest) went
    assert buf.unspill_count == 1 and buf.spill_count == 2
    assert len(os.listdir(spill_dir)) == 1


def test_numpy_round_trips_bit_identical_and_writable(spill_dir):
    import numpy as np
    rng = np.random.default_rng(0)
    arrays = {"f": rng.random((300, 300)), "i": rng.integers(0, 2**62, 70_000, dtype="int64"),
              "nan": np.array([np.nan, -0.0, np.inf]), "t": rng.random((400, 200)).T}
    buf = SpillBuffer(spill_dir, target=1)
    for key, a in arrays.items():
        buf.put(key, a, a.nbytes)
    assert all(buf.is_spilled(k) for k in arrays)
    for key, a in arrays.items():
        back = buf[key]
        assert back.dtype == a.dtype and back.shape == a.shape and back.tobytes() == a.tobytes()
        back[...] = 0  # writable, as it was


def test_large_bytes_are_written_from_their_own_memory(spill_dir):
    blob = os.urandom(1 << 20)
    buf = SpillBuffer(spill_dir, target=0)
    buf.put("b", blob, len(blob))
    assert buf.is_spilled("b")
    pickled = buf.serialized("b")  # as a peer is sent it: the file's bytes, not re-pickled
    assert pickled is not None and len(pickled.buffers) == 1 and bytes(pickled.buffers[0]) == blob
    assert buf.disk_bytes >= len(blob)
    assert buf["b"] == blob


def test_released_keys_and_close_remove_their_files(spill_dir):
    buf = SpillBuffer(spill_dir, target=0)
    for i in range(5):
        buf.put(f"k{i}", b"v" * 100, 100)
    assert len(os.listdir(spill_dir)) == 5
    del buf["k0"]
    buf.pop("k1")
    assert buf.pop("gone", None) is None
    assert len(os.listdir(spill_dir)) == 3 and buf.slow_bytes == 300
    buf.clear()
    assert os.listdir(spill_dir) == [] and len(buf) == 0 and buf.slow_bytes == buf.disk_bytes == 0
    buf.put("again", b"v", 1)
    buf.close()
    assert not os.path.exists(spill_dir)


def test_unpicklable_and_pinned_values_stay_in_memory(spill_dir, caplog):
    import threading
    buf = SpillBuffer(spill_dir, target=10)
    buf.put("lock", threading.Lock(), 100)
    buf.put("actor", object(), 100, spillable=False)
    buf.put("plain", b"p" * 50, 50)
    assert buf.in_memory("lock") and buf.in_memory("actor") and buf.is_spilled("plain")
    assert "cannot spill 'lock'" in caplog.text
    assert buf.evict() == 0  # nothing more may go


def test_an_unwritable_directory_turns_spilling_off_and_keeps_every_value(tmp_path, caplog):
    if os.geteuid() == 0:
        # root writes through permissions: a path under a file fails for everyone
        (tmp_path / "file").write_bytes(b"")
        directory = str(tmp_path / "file" / "spill")
    else:
        directory = str(tmp_path / "ro")
        os.mkdir(directory, 0o500)
    buf = SpillBuffer(directory, target=100)
    with caplog.at_level(logging.ERROR, "actorrt.worker.spill"):
        for i in range(5):
            buf.put(f"k{i}", i, 60)
    assert all(buf.in_memory(f"k{i}") for i in range(5)) and [buf[f"k{i}"] for i in range(5)] == list(range(5))
    assert buf.disabled_reason is not None and "spilling to disk is off" in caplog.text
    assert caplog.text.count("spilling to disk is off") == 1


def test_a_full_disk_leaves_no_partial_file(spill_dir, monkeypatch, caplog):
    import errno

    from actorrt.worker import spill
    real_write = os.write
    calls = []

    def write_then_fail(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(spill.os, "write", write_then_fail)
    buf = SpillBuffer(spill_dir, target=0)
    buf.put("big", b"x" * 200_000, 200_000)
    assert buf.in_memory("big") and buf["big"] == b"x" * 200_000
    assert os.listdir(spill_dir) == [] and "No space left" in caplog.text


def test_a_value_larger_than_the_whole_limit_is_kept_with_a_warning(spill_dir, caplog):
    buf = SpillBuffer(spill_dir, target=60, limit=100)
    buf.put("huge", b"h" * 500, 500)
    assert "'huge'" in caplog.text and "more than this worker's whole memory limit" in caplog.text
    assert buf.is_spilled("huge") and buf["huge"] == b"h" * 500
    assert buf.is_spilled("huge")  # read back, but not put back into memory to be written again


def test_no_directory_means_nothing_spills():
    buf = SpillBuffer(None, target=10)
    buf.put("a", b"a" * 100, 100)
    assert buf.in_memory("a") and buf.evict() == 0


def test_the_spill_directory_is_named_by_pid(tmp_path):
    d = make_spill_directory(str(tmp_path))
    assert d is not None and os.path.basename(d).startswith(f"worker-{os.getpid()}-")
    assert os.path.dirname(d) == str(tmp_path / "actorrt-worker-space")
    (tmp_path / "blocker").write_bytes(b"")
    assert make_spill_directory(str(tmp_path / "blocker")) is None


# --- the monitor's rule --------------------------------------------------------------------------

S = MemorySettings()


@pytest.mark.parametrize("rss, spill_to, paused", [
    (50, None, False), (65, None, False), (75, 60, False), (85, 60, True), (99, 60, True),
])
def test_decide_spills_past_spill_and_pauses_past_pause(rss, spill_to, paused):
    d = decide(rss, 100, S)
    assert (d.spill_to, d.paused) == (spill_to, paused)


def test_decide_with_thresholds_off():
    off = MemorySettings(spill=None, pause=None)
    d = decide(99, 100, off)
    assert d.spill_to is None and not d.paused


class FakeProcess:
    """A process whose size is what the test says, less what was spilled."""

    def __init__(self, buf: SpillBuffer, rss: int) -> None:
        self.buf, self.base = buf, rss

    def __call__(self) -> int:
        return self.base + self.buf.fast_bytes


def test_the_monitor_spills_until_under_target_then_pauses_and_resumes(spill_dir):
    buf = SpillBuffer(spill_dir, target=None)
    proc = FakeProcess(buf, rss=10)
    events = []
    mon = MemoryMonitor(buf, 100, S, on_pause=events.append, rss=proc)
    for i in range(8):
        buf.put(f"k{i}", i, 10)  # 80 in memory + 10 = 90: past pause
    mon.sample()
    assert proc() == 60 and buf.slow_bytes == 30 and events == [] and not mon.paused
    assert sorted(buf.slow) == ["k0", "k1", "k2"]  # the oldest
    proc.base = 85  # a task's temporaries: nothing more to spill that helps enough
    buf.put("pinned", object(), 0, spillable=False)
    mon.sample()
    assert mon.paused and events == [True] and buf.fast_bytes == 0
    proc.base = 30
    mon.sample()
    assert not mon.paused and events == [True, False]


def test_a_limit_a_fresh_worker_already_exceeds_is_warned_about_not_paused_on(caplog):
    buf = SpillBuffer(None)
    events = []
    mon = MemoryMonitor(buf, 100, S, on_pause=events.append, rss=lambda: 95)
    assert "cannot be met" in caplog.text
    mon.sample()
    assert events == [] and not mon.paused and mon.rss == 95


def test_the_monitor_samples_on_the_loop_until_stopped():
    buf = SpillBuffer(None)
    samples = []

    async def main():
        mon = MemoryMonitor(buf, None, S, on_pause=lambda p: None, rss=lambda: 1,
                            on_sample=lambda: samples.append(1))
        mon.interval = 0.001
        mon.start()
        await poll_for(lambda: len(samples) >= 3)
        mon.stop()
        assert mon._handle is None  # nothing is scheduled any more
    asyncio.run(main())
    assert len(samples) >= 3


def test_fetches_are_bounded_by_a_tenth_of_the_limit():
    from actorrt.worker.actor import transfer_limit_for
    from actorrt.worker.state import TRANSFER_INCOMING_BYTES_LIMIT
    assert transfer_limit_for(None) == TRANSFER_INCOMING_BYTES_LIMIT
    assert transfer_limit_for(320 * 2**20) == 32 * 2**20
    assert transfer_limit_for(64 * GIB) == TRANSFER_INCOMING_BYTES_LIMIT
    assert transfer_limit_for(5) == 1


def test_with_nothing_left_to_spill_the_monitor_asks_the_allocator_for_freed_memory(spill_dir):
    """Freed results the allocator keeps resident would pause a worker for good."""
    buf = SpillBuffer(spill_dir, target=None)
    kept = {"bytes": 90}  # resident, though nothing in the store holds it
    released = []

    def release():
        released.append(1)
        kept["bytes"] = 20  # what malloc_trim gives back

    mon = MemoryMonitor(buf, 100, S, on_pause=lambda p: None, rss=lambda: 10, release=release)
    mon._rss = lambda: kept["bytes"]
    mon.sample()
    assert released == [1] and not mon.paused and mon.rss == 20
    kept["bytes"] = 90
    mon._release = lambda: released.append(2)  # this time nothing comes back: paused
    mon.sample()
    assert released == [1, 2] and mon.paused


def test_the_allocator_can_be_tuned_here():
    from actorrt.worker.memory import release_free_memory, tune_allocator
    import sys
    maps = ""
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as f:
            maps = f.read()
    if sys.platform.startswith("linux") and "libc.so.6" in maps:  # glibc
        assert tune_allocator()
    release_free_memory()  # never fails, wherever it runs


_ALLOCATIONS_SCRIPT = """
import ctypes
from actorrt.worker.memory import tune_allocator

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
assert tune_allocator()

def own_pages(size):
    before = libc.mallinfo2().hblks
    block = bytearray(size)
    return libc.mallinfo2().hblks - before

print(own_pages(900_000), own_pages(8 << 20))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings: Linux only")
def test_a_tuned_worker_allocates_message_buffers_from_its_heap_and_large_values_apart():
    """Blocks under 1 MiB (msgpack's 256 KiB buffer, taken per message) come from the
    heap, not from an mmap and munmap each; values of 1 MiB and more get pages of their
    own, returned to the system when freed (worker/memory.py)."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", _ALLOCATIONS_SCRIPT], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if "mallinfo2" in out.stderr:
        pytest.skip("this libc has no mallinfo2 (glibc < 2.33)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def test_the_spill_directory_is_made_at_the_first_spill_only(tmp_path, caplog):
    made = []

    def make():
        made.append(1)
        return make_spill_directory(str(tmp_path))
    buf = SpillBuffer(None, target=100, make_directory=make)
    buf.put("a", b"a", 50)
    assert made == [] and buf.directory is None  # under the target: nothing made
    buf.put("b", b"b" * 100, 100)
    assert made == [1] and buf.is_spilled("a") and os.path.isdir(buf.directory)
    failing = SpillBuffer(None, target=10, make_directory=lambda: None)
    failing.put("x", b"x" * 20, 20)
    assert failing.in_memory("x") and "no spill directory" in caplog.text
