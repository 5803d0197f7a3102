"""The actor model: hosts, actors, refs, transports and serialization.

Nothing here knows about tasks, schedulers or clients.
"""
from .actor import Actor, ActorRef, Reply, own_task
from .errors import (ActorDeadError, ActorNotFoundError, ActorrtError, AuthenticationError,
                     BadMessageError, CommClosedError, SerializationError, UnknownOpError)
from .host import Host
from .serialize import Pickled

__all__ = ["Actor", "ActorRef", "Reply", "own_task", "Host", "Pickled", "ActorrtError",
           "ActorDeadError", "ActorNotFoundError", "AuthenticationError", "BadMessageError",
           "CommClosedError", "SerializationError", "UnknownOpError"]
