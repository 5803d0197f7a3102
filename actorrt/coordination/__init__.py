"""Coordination primitives: named system actors on the scheduler host and their proxies.

``Queue``, ``Lock``, ``MultiLock``, ``Semaphore``, ``Event``, ``Variable``, ``Pub``/``Sub``
and ``Condition`` behave like their local twins across the cluster. A proxy asks the
registry (``registry.py``) once for its actor and then talks to it directly. See
docs/coordination.md.
"""
from .condition import Condition
from .event import Event
from .lock import Lock, MultiLock
from .pubsub import Pub, Sub
from .queue import Queue
from .semaphore import Semaphore
from .variable import Variable

__all__ = ["Condition", "Event", "Lock", "MultiLock", "Pub", "Queue", "Semaphore", "Sub", "Variable"]
