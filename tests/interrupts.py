"""Ctrl-C at a chosen moment, for tests of what an interrupted sync call leaves behind."""
import _thread
import signal
import threading

from actorrt.testing import wait_until


class CtrlCWhen:
    """Trip the main thread's Ctrl-C flag once ``ready()`` holds, then call ``then()``.

    ``_thread.interrupt_main`` only sets the flag: a main thread parked in a sync call
    stays parked, and raises KeyboardInterrupt once ``then()``'s effect (an answer on
    its way) wakes it. That is the window an interrupted call must lose nothing in.
    Use as a context manager around the call; errors in the helper thread are raised
    on exit.

    For the block, SIGINT gets Python's own handler: a process started in the
    background by a non-interactive shell inherits SIGINT ignored, and then
    ``interrupt_main`` does nothing at all."""

    def __init__(self, ready, then):
        self._ready, self._then = ready, then
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="ctrl-c-when")

    def _run(self):
        try:
            wait_until(self._ready, timeout=10)
            _thread.interrupt_main()
            self._then()
        except BaseException as e:
            self._failed.append(e)

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.join(10)
        signal.signal(signal.SIGINT, self._previous)
        assert not self._thread.is_alive(), "the helper thread is stuck"
        assert not self._failed, self._failed
        return False
