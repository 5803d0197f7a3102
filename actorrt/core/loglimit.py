"""Log lines about a peer's bad input, at a bounded rate per peer.

One frame from a peer can hold a hundred thousand malformed messages; a line each would
let any peer that knows the secret fill the disk (100 KB of input wrote 15.8 MB of log).
So each peer gets a few lines per window, and what was held back is summed up in one
line: when the next window opens, or when the peer's connection closes.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Hashable

BURST = 5
WINDOW = 10.0


class LogLimiter:
    def __init__(self, logger: logging.Logger, burst: int = BURST, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = burst
        self._window = window
        self._clock = clock
        self._peers: dict[Hashable, list] = {}  # peer -> [window start, lines logged, lines held back, name]

    def warning(self, peer: Hashable, name: str, fmt: str, *args: Any) -> None:
        now = self._clock()
        state = self._peers.get(peer)
        if state is None or now - state[0] >= self._window:
            if state is not None:
                self._summarize(state)
            state = self._peers[peer] = [now, 0, 0, name]
        if state[1] < self._burst:
            state[1] += 1
            self._logger.warning(fmt, *args)
        else:
            state[2] += 1

    def forget(self, peer: Hashable) -> None:
        """The peer is gone: say what was held back, drop its counts."""
        state = self._peers.pop(peer, None)
        if state is not None:
            self._summarize(state)

    def _summarize(self, state: list) -> None:
        if state[2]:
            self._logger.warning("%d more bad messages from %s were dropped without a log line each "
                                 "(at most %d lines per %.0f s per peer)", state[2], state[3], self._burst,
                                 self._window)
