"""The secret a local scheduler made for itself, in a file only its owner can read.

A ``LocalCluster`` or an ``actorrt-scheduler`` started without a secret makes a random
one, so that nobody it has not told can connect. To let the same user connect by
address alone (``Client("tcp://127.0.0.1:8786")`` in another terminal or in the same
process, ``actorrt-worker 127.0.0.1:8786``), it writes that secret to a file keyed by
its address, in a per-user directory of mode 0700 (``$XDG_RUNTIME_DIR/actorrt``, else
``~/.cache/actorrt/run``); the file itself is 0600. Another local user can read neither,
so cannot connect: unlike dask's loopback scheduler, which runs any local user's code.

The file names the process that wrote it (pid and start time). A scheduler killed
before it could remove its file leaves it behind; a reader finds its writer gone,
removes it and carries on without it, so a later scheduler at the same port (with a
secret of its own) is not answered with the dead one's.

Files (and the directory) not owned by this user, or readable by others, are ignored:
a secret planted by someone else would make our client talk to their scheduler.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import stat
import threading
from typing import Any

from .addresses import is_loopback
from .comm import parse_address, split_host_port

logger = logging.getLogger("actorrt.security")

_lock = threading.Lock()
# Address key -> (path, secret) published by this process: found without the disk,
# and removed when the process exits normally even if nobody closed the cluster.
_published: dict[str, tuple[str | None, bytes]] = {}
_atexit_registered = False


def address_key(address: str) -> str | None:
    """The file name for ``address``; None for an address no file describes (inproc://).

    Every loopback name of this machine (``127.0.0.1``, ``localhost``, ``::1``) is one
    key: a client saying ``localhost:8786`` reaches the scheduler at ``127.0.0.1:8786``.
    """
    try:
        scheme, rest = parse_address(address)
        if scheme == "inproc":
            return None
        host, port = split_host_port(rest)
    except ValueError:
        return None
    host = "loopback" if is_loopback(host) else host.lower()
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return f"{scheme}-{safe}-{port}.secret"


def secret_directory(create: bool = False) -> str | None:
    """This user's private directory for secret files; None if there is none that is safe."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and _is_private(runtime_dir, strict=False):
        path = os.path.join(runtime_dir, "actorrt")
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(cache, "actorrt", "run")
    if create and not os.path.isdir(path):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)  # (makedirs' mode is masked by the umask)
        except OSError as e:
            logger.warning("cannot create %s for the cluster secret file: %s", path, e)
            return None
    if not os.path.isdir(path):
        return None
    if not _is_private(path, strict=True):
        logger.warning("not using %s for cluster secret files: it must belong to this user "
                       "and be closed to others (mode 0700)", path)
        return None
    return path


def _is_private(path: str, strict: bool) -> bool:
    """Owned by this user and, if ``strict``, with no permission for group or others."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid != os.getuid():
        return False
    return not (strict and st.st_mode & 0o077)


def publish(address: str, secret: bytes) -> str | None:
    """Write ``secret`` for ``address`` (mode 0600); the file's path, or None when no file
    could be written (the secret is then found only within this process)."""
    key = address_key(address)
    if key is None:
        return None
    directory = secret_directory(create=True)
    path = None
    if directory is not None:
        path = os.path.join(directory, key)
        try:
            _write_private(path, {"address": address, "pid": os.getpid(), "started": _start_time(os.getpid()),
                                  "secret": secret.hex()})
        except OSError as e:
            logger.warning("cannot write the cluster secret file %s: %s", path, e)
            path = None
    with _lock:
        _published[key] = (path, secret)
        _register_atexit()
    return path


def _write_private(path: str, record: dict) -> None:
    """Written to a new 0600 file and renamed into place: no reader sees half of it, and
    the file is never readable by others, not even for a moment."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def withdraw(address: str) -> None:
    """Remove the file ``publish`` wrote for ``address`` (when the scheduler closes)."""
    key = address_key(address)
    if key is None:
        return
    with _lock:
        entry = _published.pop(key, None)
    if entry is not None and entry[0] is not None:
        _remove_if_ours(entry[0])


def _remove_if_ours(path: str) -> None:
    # Only a file this process wrote: a later scheduler may have taken the port over.
    record = _read(path)
    if record is not None and record.get("pid") != os.getpid():
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def lookup(address: str) -> bytes | None:
    """The secret a live scheduler of this user published for ``address``; None if none."""
    key = address_key(address)
    if key is None:
        return None
    with _lock:
        entry = _published.get(key)
    if entry is not None:
        return entry[1]
    directory = secret_directory()
    if directory is None:
        return None
    path = os.path.join(directory, key)
    record = _read(path)
    if record is None:
        return None
    if not _writer_alive(record):
        logger.info("removing the stale cluster secret file %s (its scheduler, pid %s, is gone)",
                    path, record.get("pid"))
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    try:
        return bytes.fromhex(record["secret"])
    except (KeyError, TypeError, ValueError):
        return None


def _read(path: str) -> dict | None:
    """The record at ``path`` if it is ours and private, else None (with a warning if it is
    there but unsafe)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            logger.warning("ignoring the cluster secret file %s: it must be a file of this user "
                           "with mode 0600", path)
            return None
        try:
            record = json.load(f)
        except ValueError:
            return None
    return record if isinstance(record, dict) else None


def _writer_alive(record: dict) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not the process that wrote our file
        return False
    # The pid may have been reused by another process since: compare start times.
    started = record.get("started")
    return started is None or started == _start_time(pid)


def _start_time(pid: int) -> Any:
    """When process ``pid`` started (clock ticks since boot, from /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22, "starttime"
    except (IndexError, ValueError):
        return None


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_withdraw_all)


def _withdraw_all() -> None:
    with _lock:
        entries = list(_published.values())
        _published.clear()
    for path, _ in entries:
        if path is not None:
            _remove_if_ours(path)
