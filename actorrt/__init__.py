"""actorrt: an actor-centric distributed runtime with the dask.distributed futures API.

>>> from actorrt import Client            # doctest: +SKIP
>>> client = Client()                      # doctest: +SKIP
>>> client.submit(sum, [1, 2]).result()    # doctest: +SKIP
3
"""
from .client.actor_handle import Actor, ActorFuture
from .client.actor_future import BaseActorFuture
from .client.errors import ClosedClientError
from .spec import Reschedule
from .client.client import Client
from .client.compat import default_client
from .client.future import CancelledError, Future, FutureCancelledError, futures_of
from .client.waiting import as_completed, fire_and_forget, wait
from .context import (ensure_default_client, get_client, get_worker, local_client, print, rejoin, secede,
                      temp_default_client, warn, worker_client)
from .coordination import Condition, Event, Lock, MultiLock, Pub, Queue, Semaphore, Sub, Variable
from .core.errors import ActorDeadError, AuthenticationError, CommClosedError, SerializationError
from .core.security import Security
from .deploy.local import LocalCluster
from .protocol import GraphTooLargeError
from .diagnostics.plugin import NannyPlugin, SchedulerPlugin, UploadFile, WorkerPlugin
from .client.progress import progress
from .client.task_stream import get_task_stream, performance_report
from .scheduler.state import KilledWorker

__version__ = "0.1.0"

#: What ``result(timeout=)``, ``wait`` and ``gather`` raise on expiry (as dask's name).
TimeoutError = TimeoutError

__all__ = [
    "Actor", "ActorDeadError", "ActorFuture", "CancelledError", "Client", "CommClosedError", "Future",
    "FutureCancelledError", "KilledWorker", "LocalCluster", "SerializationError", "futures_of",
    "AuthenticationError", "Security",
    "default_client", "get_client", "get_worker", "rejoin", "secede", "worker_client", "TimeoutError",
    "as_completed", "fire_and_forget", "progress", "wait", "print", "warn",
    "BaseActorFuture", "ClosedClientError", "Reschedule", "ensure_default_client", "local_client",
    "temp_default_client",
    "Condition", "Event", "Lock", "MultiLock", "Pub", "Queue", "Semaphore", "Sub", "Variable",
    "NannyPlugin", "SchedulerPlugin", "UploadFile", "WorkerPlugin",
    "get_task_stream", "performance_report", "GraphTooLargeError",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("actorrt."):
        try:
            _obj.__module__ = "actorrt"
        except (AttributeError, TypeError):
            pass
