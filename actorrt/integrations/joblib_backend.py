"""Register actorrt as joblib's ``"dask"`` (and ``"actorrt"``) parallel backend.

This module is the cheap face: importing it imports nothing from joblib, so the
client can call :func:`register` on every ``Client(...)``. The backend itself is in
:mod:`.joblib_parallel`, which needs joblib at import.

>>> from actorrt import Client                               # doctest: +SKIP
>>> import joblib                                            # doctest: +SKIP
>>> client = Client()                                        # doctest: +SKIP
>>> with joblib.parallel_backend("dask"):                    # doctest: +SKIP
...     joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(3))
[0, 1, 2]
"""
from __future__ import annotations

import importlib.util
import threading

_lock = threading.Lock()
_registered = False


def joblib_available() -> bool:
    """Whether joblib is installed (looked up without importing it)."""
    try:
        return importlib.util.find_spec("joblib") is not None
    except (ImportError, ValueError):  # a broken or half-imported installation
        return False


def register() -> bool:
    """Register the backend with joblib, once per process; True if it is registered.

    It is registered as "dask", so code written for dask.distributed runs unchanged
    (it still reaches dask's own backend when given a dask client, or when no actorrt
    client but a dask one is running), and as "actorrt".

    Without joblib this returns False and does nothing, and so does it when joblib
    fails to import: a user who never uses joblib must not have ``Client()`` fail
    for it. The first call imports joblib (about 0.1 s); later calls return at once.
    """
    global _registered
    if _registered:
        return True
    if not joblib_available():
        return False
    with _lock:
        if _registered:
            return True
        try:
            from . import joblib_parallel
        except ImportError:
            return False
        joblib_parallel.register_backends()
        _registered = True
    return True
