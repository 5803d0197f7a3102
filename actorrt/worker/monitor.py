"""The worker's memory policy over time: spill, pause and resume by the process's size.

The spill buffer keeps *results* under the managed target on its own, as each one is
stored. What it cannot see is the rest of the process: a task's temporaries, a
library's caches, fragmentation. :class:`MemoryMonitor` samples the process's
resident size a few times a second (never per task: it costs a file read) and

- above ``spill`` × limit, spills the least recently used results until the process
  is back under ``target`` × limit (or nothing more can go);
- above ``pause`` × limit, pauses: no new task starts on this worker, and the
  scheduler places work elsewhere; the worker still serves its data to peers;
- back under ``pause`` × limit, resumes.

:func:`decide` is the rule, without I/O; :class:`MemoryMonitor` samples and acts.
In-process workers share one process, whose size says nothing about any one of
them: they keep only the managed target (``watch_process=False``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .memory import MemorySettings, format_bytes, process_rss, release_free_memory
from .spill import SpillBuffer

logger = logging.getLogger("actorrt.worker.memory")

# Seconds between samples of the process's size (dask: 100 ms).
MONITOR_INTERVAL = 0.1
# ... and without a limit, when the samples are only reported.
IDLE_INTERVAL = 0.5
# Seconds one sample may spend spilling before the loop gets its turn back.
SPILL_SLICE = 0.2


@dataclass(frozen=True)
class Decision:
    spill_to: int | None  # spill until the process is under this many bytes; None: no spilling
    paused: bool


def decide(rss: int, limit: int, settings: MemorySettings) -> Decision:
    """What a worker of ``limit`` bytes does when its process holds ``rss`` bytes."""
    spill_to = None
    if settings.spill is not None and rss > settings.spill * limit:
        spill_to = int((settings.target or settings.spill) * limit)
    paused = settings.pause is not None and rss > settings.pause * limit
    return Decision(spill_to, paused)


class MemoryMonitor:
    """Samples the process every ``interval`` seconds; spills, pauses and resumes.

    ``on_pause(paused)`` is called on the loop when the worker pauses or resumes;
    ``on_sample()`` after each sample (the worker reports its memory from it).
    """

    def __init__(self, data: SpillBuffer, limit: int | None, settings: MemorySettings, *,
                 on_pause: Callable[[bool], None], on_sample: Callable[[], None] | None = None,
                 watch_process: bool = True, interval: float = MONITOR_INTERVAL,
                 rss: Callable[[], int | None] = process_rss,
                 release: Callable[[], None] = release_free_memory) -> None:
        self.data = data
        self.limit = limit
        self.settings = settings
        self.on_pause = on_pause
        self.on_sample = on_sample
        # Without a limit it only measures (for scheduler_info and the dashboard).
        self.watch_process = watch_process and limit is not None
        self.interval = interval if limit is not None else max(interval, IDLE_INTERVAL)
        self._rss = rss
        self._release = release
        self.rss: int | None = None
        self.paused = False
        self._handle: asyncio.TimerHandle | None = None
        self._check_reachable()

    def _check_reachable(self) -> None:
        """A limit the fresh process already exceeds can never be met: pausing or
        spilling for it would never end. Say so once and leave the process alone."""
        if not self.watch_process:
            return
        assert self.limit is not None
        rss = self._rss()
        if rss is None:
            logger.warning("cannot measure this process's memory on this system: the worker keeps "
                           "its results under %s but does not pause or spill for the process's size",
                           format_bytes(self.limit))
            self.watch_process = False
            return
        floor = min(f for f in (self.settings.spill, self.settings.pause, 1.0) if f is not None)
        if rss > floor * self.limit:
            logger.warning("memory_limit %s cannot be met: this worker already uses %s at start. It "
                           "will not pause or spill for its process's size; raise the limit",
                           format_bytes(self.limit), format_bytes(rss))
            self.watch_process = False

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        try:
            self.sample()
        except Exception:  # one failed sample must not end the monitoring
            logger.exception("memory monitor sample failed")
        if self._handle is not None:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def sample(self) -> None:
        """Measure once and act."""
        if self.watch_process:
            assert self.limit is not None
            rss = self.rss = self._rss()
            if rss is not None:
                decision = decide(rss, self.limit, self.settings)
                if decision.spill_to is not None:
                    rss = self.rss = self._spill_until(decision.spill_to, rss)
                    decision = decide(rss, self.limit, self.settings)
                self._set_paused(decision.paused, rss)
        else:
            self.rss = self._rss()
        if self.on_sample is not None:
            self.on_sample()

    def _spill_until(self, goal: int, rss: int) -> int:
        """Spill oldest results until the process is under ``goal`` bytes, nothing
        more can go, or this turn's time is up; the process's size after."""
        deadline = time.monotonic() + SPILL_SLICE
        trimmed = False
        while rss > goal and time.monotonic() < deadline:
            if not self.data.evict():
                if trimmed:
                    break
                # Nothing more to spill: what is left may be memory freed but kept by
                # the allocator. Ask for it back once per sample.
                self._release()
                trimmed = True
            rss = self._rss() or 0  # freed memory is not always given back: measure
        return rss

    def _set_paused(self, paused: bool, rss: int) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if paused:
            assert self.limit is not None
            logger.warning("worker paused: its process uses %s, past %d%% of its %s memory limit; no "
                           "new task starts here until it is back under", format_bytes(rss),
                           round(100 * (self.settings.pause or 1)), format_bytes(self.limit))
        else:
            logger.warning("worker resumed: its process is back to %s", format_bytes(rss))
        self.on_pause(paused)
