"""The nanny: a small process that keeps one worker process running.

``actorrt-worker SCHEDULER ...`` is a nanny unless given ``--no-nanny``: it starts the
real worker as its child (the same command with ``--no-nanny``) and

* starts a new worker when the old one dies after it registered: killed by a signal,
  crashed, or asked to restart (``client.restart()``: it exits with
  :data:`RESTART_EXIT_CODE`);
* exits 0 when the worker exits 0: closed by its scheduler, or gone after losing it for
  ``--death-timeout``; and exits with the worker's code when it fails before it ever
  registered (a wrong address, a refused secret): an error, not a restart loop (a
  worker *killed* while starting is started again, up to MAX_EARLY_RESTARTS in a row);
* samples the worker's resident memory a few times a second and kills and restarts
  it past ``terminate * memory_limit``;
* forwards SIGTERM and SIGINT to the worker, waits for it and exits, and leaves no
  orphan (on Linux the kernel kills the worker when the nanny dies; elsewhere the
  worker watches its parent);
* removes the spill directory a dead worker could not remove itself.

The nanny does not talk to the scheduler. A restarted worker registers anew: a new
address, the same name. Between nanny and worker there are no sockets, only what a
child inherits: the environment and one pipe (see :class:`NannyLink`).
"""
from __future__ import annotations

import asyncio
import ctypes
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from ..worker.memory import format_bytes, process_rss, spill_space

logger = logging.getLogger("actorrt.nanny")

#: A worker that exits with this code asks its nanny for a fresh process. 75 is
#: EX_TEMPFAIL of sysexits.h, "try again"; any other non-zero code after registering
#: is a crash, which is restarted too, but logged as one.
RESTART_EXIT_CODE = 75

# The worker's environment names the write end of a pipe (it writes its address and a
# newline there once registered) and the nanny's pid (to notice being orphaned).
READY_FD_ENV = "ACTORRT_NANNY_READY_FD"
NANNY_PID_ENV = "ACTORRT_NANNY_PID"

#: Workers in a row killed by a signal before they registered that are started again;
#: past that the nanny gives up (something kills every new worker as it starts).
MAX_EARLY_RESTARTS = 3

#: Seconds between two samples of the worker's resident memory.
SAMPLE_INTERVAL = 0.2
#: Seconds a worker has to stop after the nanny forwarded SIGTERM/SIGINT, before SIGKILL.
STOP_GRACE = 10.0
# Seconds between two looks at the child when no SIGCHLD can wake the nanny (a backstop).
_CHILD_POLL = 1.0

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Exit:
    """How one worker process ended."""
    pid: int
    code: int  # its return code; negative: killed by that signal
    registered: bool  # it had told the nanny it registered with its scheduler


def after_exit(exit: Exit, stopping: bool, early_deaths: int = 0) -> int | None:
    """What the nanny does when its worker process has ended: None to start a new one,
    else the nanny's own exit code. ``early_deaths``: how many workers in a row, this
    one included, died before they registered."""
    if stopping:
        return 0
    if not exit.registered:
        if exit.code < 0 and early_deaths <= MAX_EARLY_RESTARTS:
            # Killed by a signal while starting, or in the instant between its
            # registration and its word to us: nothing says a new one would fail.
            return None
        # It never joined (a wrong address, a refused secret): a new one would fail the
        # same way, so the failure is the nanny's, with the worker's code.
        return exit_status(exit.code)
    if exit.code == 0:
        return 0  # closed by its scheduler, or gave up on it: done for good
    return None


def exit_status(code: int) -> int:
    """A return code as a process exit status: killed by signal N is 128 + N, as a shell says."""
    return 128 - code if code < 0 else code


def describe_exit(code: int) -> str:
    if code == RESTART_EXIT_CODE:
        return "asked to restart"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Nanny:
    """Runs ``command`` (a worker) as a child process, again and again as :func:`after_exit` says.

    ``memory_limit`` (bytes, None for none) times ``terminate`` (a fraction, None for
    never) is the resident size past which the worker is killed and restarted.
    ``local_directory`` is where the worker spills (see
    :data:`actorrt.worker.memory.SPILL_SPACE`).
    """

    def __init__(self, command: list[str], *, memory_limit: int | None = None,
                 terminate: float | None = None, local_directory: str | None = None,
                 name: str = "", interval: float = SAMPLE_INTERVAL) -> None:
        self.command = command
        self.memory_limit = memory_limit
        self.terminate = terminate
        self.local_directory = local_directory
        self.name = name
        self.interval = interval
        self.proc: subprocess.Popen | Forked | None = None
        self.address: str | None = None  # of the current worker, once it registered
        self.restarts = 0
        self.stopping = False
        self._child_event: asyncio.Event | None = None
        self._first: tuple[Forked, int] | None = None  # forked, not yet run (fork_first)
        self._grace: asyncio.TimerHandle | None = None
        self._warned: set[str] = set()

    async def run(self) -> int:
        """Supervise workers until one stops for good or the nanny is told to stop; its exit status."""
        loop = asyncio.get_running_loop()
        self._child_event = asyncio.Event()
        signals = self._install_signals(loop)
        early_deaths = 0
        try:
            while not self.stopping:
                exit = await self._run_worker()
                self._remove_spill(exit.pid)
                early_deaths = 0 if exit.registered else early_deaths + 1
                status = after_exit(exit, self.stopping, early_deaths)
                if status is not None:
                    return status
                self.restarts += 1
                self._log_restart(exit)
            return 0
        finally:
            if self._grace is not None:
                self._grace.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)

    # --- one worker process ------------------------------------------------------------
    def fork_first(self) -> bool:
        """Fork the first worker from this process: True here, in the nanny; False in
        the copy, which is to go on as the worker (its link to the nanny is in its
        environment, as :meth:`_spawn` puts it there).

        The nanny has imported what the worker runs already: a worker started as a new
        interpreter imports it all again, 0.1-0.2 s added to every cluster's start
        (two interpreters one after the other). A copy starts at once. Call it before
        the nanny starts its event loop or any thread, so that the copy inherits
        neither; a restarted worker is a new interpreter (:meth:`_spawn`), as a worker
        restarted to start clean must be. Linux only (:func:`can_fork_first`).
        """
        ready_r, ready_w = os.pipe()
        preexec = die_with_parent()
        link = self._link_env(ready_w)  # (here: it names this process, the nanny)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # (or what is buffered would be written twice)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            if preexec is not None:
                preexec()
            os.environ.update(link)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # (as a spawned worker's stdin)
            os.close(devnull)
            return False
        os.close(ready_w)
        self._first = (Forked(pid), ready_r)
        return True

    def _spawn(self) -> "tuple[subprocess.Popen, int]":
        """A new worker process running ``command``; it and the nanny's end of its pipe."""
        ready_r, ready_w = os.pipe()
        try:
            proc = subprocess.Popen(self.command, env={**os.environ, **self._link_env(ready_w)},
                                    pass_fds=(ready_w,), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)  # the child's copy is now the only one: EOF means it is gone
        return proc, ready_r

    async def _run_worker(self) -> Exit:
        proc: subprocess.Popen | Forked
        if self._first is not None:
            (proc, ready_r), self._first = self._first, None
        else:
            proc, ready_r = self._spawn()
        self.proc, self.address = proc, None
        pipe = _ReadyPipe(ready_r)
        supervisor = asyncio.ensure_future(self._supervise(proc, pipe))
        try:
            await self._exited(proc)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
            pipe.read()  # it may have written its line just before it died
            self.address = pipe.line
            pipe.close()
            self.proc = None
        assert proc.returncode is not None
        return Exit(proc.pid, proc.returncode, self.address is not None)

    def _link_env(self, ready_fd: int) -> dict[str, str]:
        """What a worker's environment says of its nanny (read by :meth:`NannyLink.from_environ`)."""
        return {READY_FD_ENV: str(ready_fd), NANNY_PID_ENV: str(os.getpid())}

    async def _exited(self, proc: subprocess.Popen | Forked) -> None:
        """Return once ``proc`` has ended (and is reaped); SIGCHLD wakes us."""
        event = self._child_event
        assert event is not None
        while True:
            event.clear()  # cleared before the look, so a SIGCHLD after it is not lost
            if proc.poll() is not None:
                return
            try:
                await asyncio.wait_for(event.wait(), _CHILD_POLL)
            except asyncio.TimeoutError:
                pass

    async def _supervise(self, proc: subprocess.Popen | Forked, pipe: "_ReadyPipe") -> None:
        """Learn that the worker registered, then watch its memory."""
        await pipe.settled()
        if pipe.line is None:
            return  # gone before it registered: its exit says how
        self.address = address = pipe.line
        if self.restarts:
            logger.info("nanny %d: worker %s (name %r) is back, pid %d", os.getpid(), address,
                        self.name, proc.pid)
        await self._watch_memory(proc)

    async def _watch_memory(self, proc: subprocess.Popen | Forked) -> None:
        if self.memory_limit is None or self.terminate is None:
            return
        threshold = int(self.memory_limit * self.terminate)
        rss = process_rss(proc.pid)
        if rss is None:
            self._warn_once("unmeasurable", "nanny %d: cannot read the memory of worker %s (pid %d) on "
                            "this system (install psutil): it is not restarted for memory",
                            os.getpid(), self.address, proc.pid)
            return
        if rss > threshold:
            # Past the limit before it did anything: killing it would start a loop of
            # workers killed as soon as they start. Say so, once, and let it run.
            self._warn_once("fresh", "nanny %d: worker %s (name %r) uses %s just after starting, more than "
                            "%.0f%% of its memory limit %s: it is not restarted for memory; give it a "
                            "larger --memory-limit", os.getpid(), self.address, self.name,
                            format_bytes(rss), 100 * self.terminate, format_bytes(self.memory_limit))
            return
        while True:
            await asyncio.sleep(self.interval)
            rss = process_rss(proc.pid)
            if rss is None or proc.poll() is not None:
                return
            if rss > threshold:
                logger.warning("nanny %d: worker %s (name %r, pid %d) uses %s of memory, more than %.0f%% "
                               "of its memory limit %s: killing it; a new worker starts in its place",
                               os.getpid(), self.address, self.name, proc.pid, format_bytes(rss),
                               100 * self.terminate, format_bytes(self.memory_limit))
                proc.kill()  # out of memory: it could not close cleanly in time anyway
                return

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    def _remove_spill(self, pid: int) -> None:
        """A dead worker's spilled values are nobody's now (a new worker starts empty)."""
        pattern = os.path.join(glob.escape(spill_space(self.local_directory)), f"worker-{pid}-*")
        for path in glob.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)

    def _log_restart(self, exit: Exit) -> None:
        log = logger.info if exit.code == RESTART_EXIT_CODE else logger.warning
        log("nanny %d: worker %s (name %r, pid %d) %s; starting a new one", os.getpid(), self.address,
            self.name, exit.pid, describe_exit(exit.code))

    # --- signals -------------------------------------------------------------------------
    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
            installed.append(sig)
        child = getattr(signal, "SIGCHLD", None)
        if child is not None:
            assert self._child_event is not None
            loop.add_signal_handler(child, self._child_event.set)
            installed.append(child)
        return installed

    def _on_stop_signal(self, sig: int) -> None:
        """Forward the first SIGTERM/SIGINT to the worker and let it close; a second one,
        or STOP_GRACE seconds, and it is killed."""
        proc = self.proc
        if self.stopping:
            if proc is not None and proc.poll() is None:
                proc.kill()
            return
        self.stopping = True
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            self._grace = asyncio.get_running_loop().call_later(STOP_GRACE, _kill_if_running, proc)


class Forked:
    """A worker forked by :meth:`Nanny.fork_first`: what the nanny uses of
    ``subprocess.Popen``, for a child it did not start as one."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # as Popen's: -N when killed by signal N

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def can_fork_first() -> bool:
    """Whether the first worker may be forked (:meth:`Nanny.fork_first`): on Linux, and
    while this process runs no other thread (a fork copies none of them, and any lock
    one of them held stays held in the copy for good)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _kill_if_running(proc: subprocess.Popen | Forked) -> None:
    if proc.poll() is None:
        logger.warning("nanny %d: worker pid %d did not stop within %g s; killing it",
                       os.getpid(), proc.pid, STOP_GRACE)
        proc.kill()


def die_with_parent() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the kernel SIGKILL the child when the nanny dies
    (``PR_SET_PDEATHSIG``), however it dies: a SIGKILLed nanny takes its worker along.
    None elsewhere (the worker then watches its parent: :meth:`NannyLink.orphaned`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Loaded here, in the parent: between fork and exec only the call itself runs.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the nanny died before the line above: nothing would kill us
            os._exit(1)
    return preexec


class _ReadyPipe:
    """The nanny's end of the pipe on which its worker writes its address once registered."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.line: str | None = None  # what the worker wrote: registered
        self.ended = False  # EOF without a line: the worker is gone, never registered
        self._buf = bytearray()

    def read(self) -> None:
        """Take whatever is in the pipe now, without waiting."""
        while self.line is None and not self.ended:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.ended = True
                return
            self._buf += chunk
            if b"\n" in self._buf:
                self.line = self._buf.split(b"\n", 1)[0].decode("utf-8", "replace") or "?"

    async def settled(self) -> None:
        """Return once the worker wrote its line or closed the pipe."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def readable() -> None:
            self.read()
            if self.line is not None or self.ended:
                done.set()
        loop.add_reader(self.fd, readable)
        try:
            readable()
            await done.wait()
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class NannyLink:
    """The worker process's end of its nanny: tell it "registered", notice its death."""

    def __init__(self, ready_fd: int | None, nanny_pid: int) -> None:
        self.ready_fd = ready_fd
        self.nanny_pid = nanny_pid

    @classmethod
    def from_environ(cls) -> "NannyLink | None":
        """This process's nanny, from the environment it set; None without one.

        The variables are removed: a process this worker's tasks start is not a worker
        of this nanny.
        """
        pid = os.environ.pop(NANNY_PID_ENV, None)
        fd = os.environ.pop(READY_FD_ENV, None)
        if pid is None:
            return None
        ready_fd: int | None = None
        if fd is not None:
            try:
                ready_fd = int(fd)
                os.set_inheritable(ready_fd, False)  # nor does a task's process get the pipe
            except (ValueError, OSError):
                ready_fd = None
        return cls(ready_fd, int(pid))

    def ready(self, address: str) -> None:
        """Registered with the scheduler: from now on the nanny restarts this worker."""
        fd, self.ready_fd = self.ready_fd, None
        if fd is None:
            return
        try:
            os.write(fd, f"{address}\n".encode())
        except OSError:
            pass  # the nanny is gone: orphaned() says so
        finally:
            os.close(fd)

    def orphaned(self) -> bool:
        return os.getppid() != self.nanny_pid

    async def wait_orphaned(self, interval: float = 1.0) -> None:
        """Return once the nanny has died. Where no kernel kills this process with its
        nanny (not Linux, or prctl unavailable), this is what stops it."""
        while not self.orphaned():
            await asyncio.sleep(interval)


__all__ = ["Exit", "Forked", "MAX_EARLY_RESTARTS", "Nanny", "can_fork_first", "NannyLink", "RESTART_EXIT_CODE", "after_exit", "describe_exit", "die_with_parent",
           "exit_status"]
