"""The worker's store of results: in memory up to a target, least recently used on disk.

A :class:`SpillBuffer` is the ``data`` of a worker's state machine. Every value comes
in with its size (the one the scheduler is told), so the store knows at all times how
many bytes it keeps in memory ("managed") and on disk ("spilled"). Past ``target``
bytes in memory it writes the least recently used values to files under its
directory; reading a spilled key loads it back (and makes it the most recent).
The memory monitor (:mod:`actorrt.worker.monitor`) also calls :meth:`evict` when the
whole process, not just the results, grows past the spill threshold.

A spilled file is the value's pickle as it travels (a :class:`~actorrt.core.Pickled`:
one header and its out-of-band buffers), so a peer asking for a spilled key is sent
the file's bytes without unpickling them (:meth:`serialized`), and a numpy array or a
large ``bytes`` is written from its own memory, not from a copy.

Everything here runs on the worker's event loop thread: no locks. A disk that fails
(full, unwritable) turns spilling off with one error in the log; no value is ever
lost or read back from a partial file.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from ..core import Pickled
from ..core.framing import allocate
from ..utils import sizeof
from .memory import format_bytes, spill_space

logger = logging.getLogger("actorrt.worker.spill")

# A spill file: magic, buffer count, header length, each buffer's length, then the
# header and the buffers, back to back.
_MAGIC = b"ARSPILL1"
_COUNTS = struct.Struct("<8sIQ")
_LENGTH = struct.Struct("<Q")

# Bytes written per os.write call: a 1 GiB value goes out in slices of its own
# memory, never as a copy.
_WRITE_SLICE = 64 << 20


class SpillBuffer(MutableMapping):
    """Values in memory (``fast``, oldest use first) and on disk (``slow``).

    ``target``: bytes of values kept in memory before the least recently used spill
    (None: spill only when :meth:`evict` is called). ``directory``: where spill files
    go, or ``make_directory()`` makes it at the first spill; with neither, everything
    stays in memory. Values that cannot be pickled, and values
    marked unspillable (an actor's handle), stay in memory whatever the size.
    """

    def __init__(self, directory: str | None = None, target: int | None = None, *,
                 limit: int | None = None, make_directory: Callable[[], str | None] | None = None) -> None:
        self.directory = directory
        # Made at the first spill, not before: most workers never spill, and a directory
        # per worker (per test cluster) would litter the temporary directory.
        self._make_directory = make_directory
        self.target = target
        self.limit = limit  # the worker's whole limit: a single value past it is warned about
        self.fast: dict[str, Any] = {}       # in memory; insertion order = use order
        self.fast_sizes: dict[str, int] = {}
        self.slow: dict[str, tuple[str, int, int]] = {}  # key -> (path, nbytes, bytes on disk)
        self.pinned: set[str] = set()        # never spilled
        self.fast_bytes = 0
        self.slow_bytes = 0                  # the spilled values' sizes in memory
        self.disk_bytes = 0
        self.spill_count = 0
        self.unspill_count = 0
        self.disabled_reason: str | None = None
        self._files = 0
        # Told (action, key, start, stop, bytes on disk) of each write and read: the task
        # stream's disk-write/disk-read (the worker's ActivityLog.add).
        self.on_disk: Callable[[str, str, float, float, int], None] | None = None

    # ----------------------------------------------------------------- mapping
    def put(self, key: str, value: Any, nbytes: int, spillable: bool = True) -> None:
        """Store ``value``, measured at ``nbytes``; spill what the target no longer holds."""
        if key in self.fast or key in self.slow:
            self._discard(key)
        self.fast[key] = value
        self.fast_sizes[key] = nbytes
        self.fast_bytes += nbytes
        if not spillable:
            self.pinned.add(key)
        if self.limit is not None and nbytes > self.limit:
            logger.warning("the result of %r alone is %s, more than this worker's whole memory limit "
                           "(%s): it is kept%s", key, format_bytes(nbytes), format_bytes(self.limit),
                           " (spilled to disk)" if self._can_spill() and spillable else " in memory")
        if self.target is not None and self.fast_bytes > self.target:
            self._spill_past(self.target)

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value, sizeof(value))

    def __getitem__(self, key: str) -> Any:
        fast = self.fast
        if key in fast:
            value = fast.pop(key)  # most recent use goes last
            fast[key] = value
            return value
        if key in self.slow:
            return self._unspill(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.fast or key in self.slow

    def __delitem__(self, key: str) -> None:
        if key not in self.fast and key not in self.slow:
            raise KeyError(key)
        self._discard(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        """Remove ``key`` without loading a spilled value (its file is deleted)."""
        if key in self.fast:
            value = self.fast[key]
            self._discard(key)
            return value
        if key in self.slow:
            self._discard(key)
            return default[0] if default else None
        if default:
            return default[0]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from list(self.fast)
        yield from list(self.slow)

    def __len__(self) -> int:
        return len(self.fast) + len(self.slow)

    def clear(self) -> None:
        for key in list(self.slow):
            self._discard(key)
        self.fast.clear()
        self.fast_sizes.clear()
        self.pinned.clear()
        self.fast_bytes = 0

    def close(self) -> None:
        """Forget everything and remove the directory with whatever is left in it.
        Values stored after (a task that was still running) stay in memory: a new
        directory would outlive the worker."""
        self.clear()
        self._make_directory = None
        self.disabled_reason = "the store is closed"
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return (f"<SpillBuffer {len(self.fast)} in memory ({format_bytes(self.fast_bytes)}), "
                f"{len(self.slow)} on disk ({format_bytes(self.slow_bytes)})>")

    # --------------------------------------------------------------- spilling
    def is_spilled(self, key: str) -> bool:
        return key in self.slow

    def in_memory(self, key: str) -> bool:
        return key in self.fast

    def peek(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` if it is in memory, else ``default``: no load from
        disk, and its place in the use order stays."""
        return self.fast.get(key, default)

    def evict(self) -> int:
        """Spill the least recently used value that may go to disk; the bytes it held
        in memory (0: nothing could go)."""
        if not self._can_spill():
            return 0
        for key in list(self.fast):
            if key in self.pinned:
                continue
            size = self.fast_sizes[key]
            if self._spill(key):
                return size
            if self.disabled_reason is not None:
                return 0  # (a value that cannot be pickled is pinned: try the next one)
        return 0

    def _spill_past(self, target: int) -> None:
        """Spill oldest first until at most ``target`` bytes stay in memory."""
        if not self._can_spill():
            return
        for key in list(self.fast):
            if self.fast_bytes <= target:
                return
            if key not in self.pinned and not self._spill(key) and self.disabled_reason is not None:
                return

    def _can_spill(self) -> bool:
        return (self.directory is not None or self._make_directory is not None) and self.disabled_reason is None

    def _spill(self, key: str) -> bool:
        """Write ``key``'s value to disk and drop it from memory; False if it stays."""
        value = self.fast[key]
        start = time.time()
        try:
            blob = Pickled.dumps(value, what=f"result of {key!r}")
        except Exception as e:
            # It cannot leave memory, but it is no reason to stop spilling others.
            logger.warning("cannot spill %r to disk (%s): it stays in memory", key, e)
            self.pinned.add(key)
            return False
        if self.directory is None:
            assert self._make_directory is not None
            self.directory = self._make_directory()
            if self.directory is None:
                self._disable("there is no spill directory (see the error above)")
                return False
        self._files += 1
        path = os.path.join(self.directory, f"{self._files}.spill")
        try:
            written = _write_file(path, blob)
        except OSError as e:
            self._disable(f"cannot write {format_bytes(blob.nbytes)} to {path}: {e}")
            return False
        nbytes = self.fast_sizes.pop(key)
        del self.fast[key]
        self.fast_bytes -= nbytes
        self.slow[key] = (path, nbytes, written)
        self.slow_bytes += nbytes
        self.disk_bytes += written
        self.spill_count += 1
        if self.on_disk is not None:
            self.on_disk("disk-write", key, start, time.time(), written)
        return True

    def _unspill(self, key: str) -> Any:
        path, nbytes, written = self.slow[key]
        start = time.time()
        value = _read_file(path).loads()
        if self.on_disk is not None:
            self.on_disk("disk-read", key, start, time.time(), written)
        if self.target is not None and nbytes > self.target:
            return value  # back in memory it would only be written out again at once
        del self.slow[key]
        self.slow_bytes -= nbytes
        self.disk_bytes -= written
        _remove(path)
        self.unspill_count += 1
        self.put(key, value, nbytes, key not in self.pinned)
        return value

    def serialized(self, key: str) -> Pickled | None:
        """A spilled value's pickle, read from its file without unpickling it (what a
        peer or a client asking for it is sent); None for a value in memory."""
        entry = self.slow.get(key)
        if entry is None:
            return None
        start = time.time()
        blob = _read_file(entry[0])
        if self.on_disk is not None:
            self.on_disk("disk-read", key, start, time.time(), entry[2])
        return blob

    def _discard(self, key: str) -> None:
        if key in self.fast:
            del self.fast[key]
            self.fast_bytes -= self.fast_sizes.pop(key)
        else:
            path, nbytes, written = self.slow.pop(key)
            self.slow_bytes -= nbytes
            self.disk_bytes -= written
            _remove(path)
        self.pinned.discard(key)

    def _disable(self, reason: str) -> None:
        self.disabled_reason = reason
        logger.error("spilling to disk is off for this worker: %s. Results stay in memory.", reason)


def make_spill_directory(local_directory: str | None) -> str | None:
    """This worker's own directory ``<local_directory>/actorrt-worker-space/worker-<pid>-…``
    (a nanny removes a dead worker's by its pid); None, with an error in the log, when it
    cannot be made (spilling is then off)."""
    base = spill_space(local_directory)
    try:
        os.makedirs(base, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"worker-{os.getpid()}-", dir=base)
    except OSError as e:
        logger.error("cannot make a spill directory under %s (%s): spilling to disk is off for "
                     "this worker", base, e)
        return None


def _write_file(path: str, blob: Pickled) -> int:
    """Write ``blob`` to a new file at ``path``; its length. On failure nothing is left."""
    views = [memoryview(b).cast("B") for b in blob.buffers]
    head = _COUNTS.pack(_MAGIC, len(views), len(blob.header)) + b"".join(
        _LENGTH.pack(v.nbytes) for v in views)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        total = _write_all(fd, memoryview(head)) + _write_all(fd, memoryview(blob.header))
        for view in views:
            total += _write_all(fd, view)
    except BaseException:
        os.close(fd)
        _remove(path)
        raise
    os.close(fd)
    return total


def _write_all(fd: int, view: memoryview) -> int:
    done, n = 0, view.nbytes
    while done < n:
        done += os.write(fd, view[done:done + _WRITE_SLICE])
    return n


def _read_file(path: str) -> Pickled:
    with open(path, "rb", buffering=0) as f:
        magic, count, header_len = _COUNTS.unpack(_read_exact(f, _COUNTS.size))
        if magic != _MAGIC:
            raise OSError(f"{path} is not a spill file")
        lengths = [_LENGTH.unpack(_read_exact(f, _LENGTH.size))[0] for _ in range(count)]
        header = bytes(_read_exact(f, header_len))
        # bytearrays, not bytes: a numpy array loaded from them is writable, as it was.
        buffers = [_read_exact(f, n) for n in lengths]
    return Pickled(header, buffers)


def _read_exact(f: Any, n: int) -> Any:
    """``n`` bytes of ``f`` in a writable buffer (a numpy array loaded from it is
    writable, as it was): the transport's own frame buffers (framing.allocate), whose
    large ones are anonymous mappings without a zeroing pass of their own."""
    view = allocate(n)
    done = 0
    while done < n:
        got = f.readinto(view[done:])
        if not got:
            raise OSError(f"spill file {f.name} ends early: {done} of {n} bytes")
        done += got
    return view


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
