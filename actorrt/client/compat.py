"""What code written for dask.distributed expects around the Client: the current and
default client, and the dask options that mean nothing here (accepted, or warned about).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Iterator, cast

from .. import runtime
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client


class CurrentClientMethods(ClientPart):
    """Mixin of Client: ``Client.current()`` and ``client.as_current()``."""

    # --- the current client -----------------------------------------------------------
    @classmethod
    def current(cls, allow_global: bool = True) -> "Client":
        """The client to use here: inside a task its worker's, else (``allow_global``)
        the default one. ``ValueError`` when there is none.
        """
        if not allow_global:
            worker = runtime.current_worker()
            if worker is None:
                raise ValueError("Client.current(allow_global=False): not inside a task, and the "
                                 "default client is not to be used; pass allow_global=True for it")
            return worker.client()
        return runtime.current_client()

    @contextlib.contextmanager
    def as_current(self) -> Iterator["Client"]:
        """Make this client the default (for ``get_client()`` outside tasks) in a ``with``."""
        with runtime.default_client_as(cast("Client", self)):
            yield cast("Client", self)



def default_client(c: "Client | None" = None) -> "Client":
    """``c`` if given, else the running default client; ``ValueError`` when there is none.

    >>> client = Client()          # doctest: +SKIP
    >>> default_client() is client  # doctest: +SKIP
    True
    """
    if c is not None:
        return c
    found = runtime.default_client()
    if found is None:
        raise ValueError("no running Client found: create one with actorrt.Client(...) first")
    return found



#: LocalCluster/Client keywords of dask that change nothing about how work runs here:
#: accepted so that ``Client(n_workers=2, silence_logs=40)`` works after an import
#: switch. (``memory_limit`` and ``local_directory`` are not among them: LocalCluster
#: takes them, and a Client that starts one passes them on.)
DASK_ONLY_OPTIONS = frozenset({
    "dashboard_address", "worker_dashboard_address", "silence_logs",
    "direct_to_workers", "heartbeat_interval", "connection_limit",
})



def without_dask_only_options(kwargs: dict, cluster_class: type) -> dict:
    """``kwargs`` for ``cluster_class`` (a LocalCluster), less the dask options that mean
    nothing to it. An option the class names as a parameter is its to handle, and passes.
    """
    accepted = inspect.signature(cluster_class).parameters
    return {k: v for k, v in kwargs.items() if k not in DASK_ONLY_OPTIONS or k in accepted}


# Seconds before the same reason is logged again: a map of 10,000 tasks asking for a
# resource no worker has is one warning, not 10,000.
UNRUNNABLE_REPEAT = 10.0
_unrunnable_logged: dict[str, float] = {}


def warn_unrunnable(key: str, reason: Any) -> None:
    """The scheduler holds ``key`` back: no worker it has could ever run it (it runs once
    one that can joins). Logged, not raised: dask's behaviour, and the task is not lost."""
    text = str(reason)
    now = time.monotonic()
    if now - _unrunnable_logged.get(text, -UNRUNNABLE_REPEAT) < UNRUNNABLE_REPEAT:
        return
    if len(_unrunnable_logged) > 1000:
        _unrunnable_logged.clear()
    _unrunnable_logged[text] = now
    logging.getLogger("actorrt.client").warning("task %s cannot run yet: %s", key, text)


__all__ = ["CurrentClientMethods", "DASK_ONLY_OPTIONS", "default_client", "warn_unrunnable",
           "without_dask_only_options"]
