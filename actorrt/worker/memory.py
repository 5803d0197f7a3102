"""How much memory a worker may use, and how much its process uses.

Pure parsing and measuring, no policy: :mod:`actorrt.worker.spill` keeps values
within the managed target, :class:`~actorrt.worker.monitor.MemoryMonitor` acts on
the process's size, and the nanny (``actorrt.deploy.nanny``) restarts a worker that
grows past the terminate fraction. Every layer that takes ``memory_limit=`` parses
it here, once, so ``"4GiB"`` means the same to ``LocalCluster``, ``Client`` and
``actorrt-worker --memory-limit``.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
from dataclasses import dataclass

from ..sizes import format_bytes, parse_bytes  # noqa: F401 (re-exported: the worker's units)

def system_memory() -> int:
    """Bytes this process may use on this machine: physical memory, or the cgroup's
    limit when a container sets a smaller one (what the OOM killer goes by)."""
    total = _physical_memory()
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        psutil = _psutil()
        if psutil is not None:
            return int(psutil.virtual_memory().total)
        return 1 << 34  # unknown: 16 GiB, a common machine; "auto" is then a guess


def parse_memory_limit(value: object, n_workers: int = 1, *, total: int | None = None) -> int | None:
    """A worker's limit in bytes, or None for no limit.

    - ``None``, ``0``, ``"0"``, ``"none"``: no limit.
    - ``"auto"``: this machine's memory divided among ``n_workers`` (dask's default).
    - a float in (0, 1]: that fraction of this machine's memory.
    - an int, a float above 1, or a string such as ``"4GiB"`` or ``"500MB"``: bytes.

    A limit above the machine's memory is lowered to it: no worker can use more.
    """
    if total is None:
        total = system_memory()
    if value is None or value is False:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("none", "0", ""):
            return None
        if word == "auto":
            if n_workers < 1:
                raise ValueError(f"memory_limit='auto' divides memory among workers; got n_workers={n_workers}")
            return max(1, total // n_workers)
        limit = parse_bytes(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"memory_limit must be at least 0, got {value!r}")
        if isinstance(value, float) and 0 < value <= 1:
            limit = int(total * value)
        else:
            limit = int(value)
    else:
        raise TypeError(f"memory_limit must be bytes (int), a size string such as '4GiB', a fraction "
                        f"of system memory, 'auto' or None; got {type(value).__name__} {value!r}")
    if limit == 0:
        return None
    return min(limit, total)


def parse_fraction(name: str, value: object) -> float | None:
    """A memory threshold: a fraction in (0, 1], or None/False to turn it off."""
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction of the memory limit in (0, 1], or None/False "
                         f"to turn it off; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MemorySettings:
    """When a worker acts, as fractions of its memory limit (dask's defaults).

    - ``target``: managed memory (stored results) above it is spilled, oldest use first;
    - ``spill``: process memory above it spills until back under ``target``;
    - ``pause``: process memory above it stops new tasks from starting;
    - ``terminate``: the nanny restarts a worker whose process grows past it.
    """
    target: float | None = 0.6
    spill: float | None = 0.7
    pause: float | None = 0.8
    terminate: float | None = 0.95

    def __post_init__(self) -> None:
        for name in ("target", "spill", "pause", "terminate"):
            object.__setattr__(self, name, parse_fraction(f"memory {name} fraction", getattr(self, name)))


#: The directory under ``local_directory`` where workers keep their spilled values, one
#: ``worker-<pid>-<random>`` directory each. The pid in the name is the convention the
#: nanny relies on: after worker process P dies, it removes ``worker-P-*`` here, which
#: a killed worker could not remove itself.
SPILL_SPACE = "actorrt-worker-space"


def spill_space(local_directory: str | None) -> str:
    """``<local_directory>/actorrt-worker-space`` (the system's temporary directory by default)."""
    return os.path.join(local_directory or tempfile.gettempdir(), SPILL_SPACE)


def process_rss(pid: int | None = None) -> int | None:
    """Resident bytes of process ``pid`` (this one by default); None where it cannot be read.

    Linux reads ``/proc/<pid>/statm`` (a few µs, no dependency); elsewhere ``psutil``
    is used when installed.
    """
    path = f"/proc/{pid or 'self'}/statm"
    try:
        with open(path, "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        pass
    psutil = _psutil()
    if psutil is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # gone, or not ours to read
        return None


# glibc's malloc gives memory back to the system only from the top of its heap, and
# only past a threshold that grows with every large block freed (up to 32 MiB): a
# worker that stored and spilled 8 MiB results kept them resident, freed, and paused
# for good. Fixing the thresholds stops the growth: blocks of 1 MiB or more get pages of
# their own, returned as soon as they are freed, and malloc_trim returns free pages from
# anywhere when memory runs short (worker/monitor.py).
#
# Both stay at 1 MiB, not lower. dask's nanny sets a 64 KiB trim threshold, which also
# freezes the mmap threshold at glibc's 128 KiB: every message packed (msgpack takes a
# 256 KiB buffer per call) then cost an mmap, page faults and an munmap, 7x the time of
# packing itself, on every message a worker sent (``python benchmarks/bench_core.py``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 1 << 20
MMAP_THRESHOLD = 1 << 20


@functools.cache
def _libc():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only: musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Make this process's allocator give freed memory back promptly (a worker
    process, at start); False where there is nothing to tune."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_memory() -> None:
    """Give the system the free pages the allocator still holds (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _psutil():  # type: ignore[no-untyped-def]
    if "psutil" in sys.modules:
        return sys.modules["psutil"]
    try:
        import psutil
    except ImportError:
        return None
    return psutil


try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):
    _PAGE_SIZE = 4096
