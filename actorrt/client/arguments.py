"""What a user passes to ``submit``, ``map`` and friends, checked at the call.

The scheduler refuses a malformed task anyway (protocol.py), but by then
the call has returned and the only way left to say so is a failed Future. Checked
here, a wrong ``priority`` or ``key`` raises in the caller's own line, naming the
argument, and nothing is sent.

>>> check_priority(2), check_retries(None), check_workers("tcp://10.0.0.1:8786")
(2, 0, ['tcp://10.0.0.1:8786'])
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from ..core.addresses import worker_entry
from ..core.serialize import Pickled


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_sendable(text: str, what: str = "key") -> str:
    """``text`` can cross the wire (UTF-8): else a ValueError here, at the call site.

    A str with a lone surrogate (``"a\\udcff"``, e.g. from a non-UTF-8 file name via
    ``os.fsdecode``) cannot be encoded; found only when its message is sent, it would
    fail that whole message, unrelated tasks included, long after the call returned.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {text!r} cannot be sent: it is not valid UTF-8 ({e.reason} at "
                         f"position {e.start}); encode it with os.fsencode(...).hex() or "
                         f"errors='surrogateescape' first") from None
    return text


def _is_dask_key(key: Any) -> bool:
    """dask's key forms: str, bytes, int, float, or a tuple of them (nested)."""
    if type(key) in (str, bytes, int, float):
        return True
    return type(key) is tuple and all(_is_dask_key(k) for k in key)


def check_key(key: Any) -> str | None:
    """A task's key (or None: the client makes one). Any dask key is accepted; the
    scheduler knows it by its string form, the one a graph key of that value gets."""
    if key is None:
        return None
    return _wire_key(key)


def _wire_key(key: Any) -> str:
    if not _is_dask_key(key):
        raise TypeError(f"key must be a str (or a dask key: bytes, int, float or a tuple of "
                        f"them), got {type(key).__name__}: {key!r}")
    return check_sendable(key if type(key) is str else str(key))


def check_map_keys(key: Any, n: int) -> tuple[list[str] | None, str | None]:
    """``map``'s ``key=``: one key per call, or a str prefix for generated keys."""
    if key is None or isinstance(key, str):
        return None, key if key is None else check_sendable(key, "key prefix")
    if not isinstance(key, (list, tuple)):
        raise TypeError(f"map's key must be a str prefix or a list of keys, got "
                        f"{type(key).__name__}: {key!r}")
    if len(key) != n:
        raise ValueError(f"map got {len(key)} keys for {n} calls")
    return [_wire_key(k) for k in key], None


def check_priority(priority: Any) -> int | float:
    """An int or a finite float: higher runs first."""
    if _is_int(priority):
        return int(priority)
    if isinstance(priority, numbers.Real) and not isinstance(priority, bool):
        if not math.isfinite(priority):
            raise ValueError(f"priority must be finite, got {priority!r}")
        return float(priority)
    raise TypeError(f"priority must be a number, got {type(priority).__name__}: {priority!r}")


def check_retries(retries: Any) -> int:
    """How often a failed task runs again: None (0) or an int >= 0."""
    if retries is None:
        return 0
    if not _is_int(retries):
        raise TypeError(f"retries must be an int, got {type(retries).__name__}: {retries!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    return int(retries)


def check_workers(workers: Any) -> list[str] | None:
    """``workers=``: None, one worker (its address, its name, or a host: every worker on
    it), or an iterable of those. The scheduler resolves them, also against workers
    that join later."""
    if workers is None:
        return None
    if isinstance(workers, str):
        return [worker_entry(workers)]
    if isinstance(workers, (bytes, dict)) or not hasattr(workers, "__iter__"):
        raise TypeError(f"workers must be a worker address, name or host, or a list of them, got "
                        f"{type(workers).__name__}: {workers!r}")
    out = list(workers)
    for w in out:
        if not isinstance(w, str):
            raise TypeError(f"workers must be worker addresses, names or hosts (str), got "
                            f"{type(w).__name__}: {w!r}")
    return [worker_entry(w) for w in out]  # ("10.0.0.2:40123" is that worker's tcp:// address)


def check_resources(resources: Any, what: str = "resources") -> dict[str, float] | None:
    """``resources=``: None or a dict of resource name -> amount >= 0 (``{"GPU": 1}``).

    Amounts become floats (they travel as such); an empty dict means no resources.
    A name may not hold ``,`` or ``=``: ``actorrt-worker --resources`` separates with them.
    """
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise TypeError(f"{what} must be a dict of resource name -> amount, such as {{'GPU': 1}}, got "
                        f"{type(resources).__name__}: {resources!r}")
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: a resource name must be a str, got {type(name).__name__}: {name!r}")
        if not name.strip() or "," in name or "=" in name:
            raise ValueError(f"{what}: resource name {name!r} must be non-empty, without ',' or '='")
        check_sendable(name, "resource name")
        if not isinstance(amount, numbers.Real) or isinstance(amount, bool):
            raise TypeError(f"{what}: the amount of {name!r} must be a number, got "
                            f"{type(amount).__name__}: {amount!r}")
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{what}: the amount of {name!r} must be a finite number >= 0, got {amount!r}")
        out[name] = float(amount)
    return out or None


class FunctionCache:
    """Each function object pickled once: a map of 10,000 calls sends one pickle, and
    the key of a pure call hashes it without pickling the function again."""

    LIMIT = 1000  # distinct functions kept; past that the cache starts over

    def __init__(self) -> None:
        self._blobs: dict[int, tuple[Any, Pickled]] = {}

    def pickled(self, func: Any) -> Pickled:
        hit = self._blobs.get(id(func))
        if hit is not None and hit[0] is func:  # (the object is kept: its id is not reused)
            return hit[1]
        blob = Pickled.dumps(func, what="function")
        if len(self._blobs) > self.LIMIT:
            self._blobs.clear()
        self._blobs[id(func)] = (func, blob)
        return blob


def check_running(client: Any) -> None:
    """Work is accepted only by a running client (not one starting, closing or closed)."""
    if client.status == "connecting":
        raise RuntimeError(f"client lost its scheduler at {client.scheduler.address} and is reconnecting; "
                           "submit again once it is back (client.status == 'running')")
    if client.status != "running":
        raise RuntimeError(f"client is {client.status}; cannot submit work")


__all__ = ["FunctionCache", "check_running", "check_key", "check_sendable", "check_map_keys", "check_priority", "check_retries",
           "check_resources", "check_workers"]
