"""Errors raised by the actor layer.

Every pending ask resolves: with a reply, with the handler's own exception, or with
one of these when the thing it waited on went away.
"""
from __future__ import annotations


class ActorrtError(Exception):
    """Base class of the runtime's own errors."""


class CommClosedError(ActorrtError, ConnectionError):
    """The connection carrying a request closed before its reply arrived."""


class ActorNotFoundError(ActorrtError, LookupError):
    """A message was addressed to an actor id the receiving host does not hold."""


class ActorDeadError(ActorrtError):
    """The actor stopped (or its host went away) before answering."""


class UnknownOpError(ActorrtError, AttributeError):
    """The receiving actor has no handler for the requested op."""


class BadMessageError(ActorrtError, ValueError):
    """A message did not match its handler's fields."""


class SerializationError(ActorrtError, TypeError):
    """An object could not be pickled; the message names it."""


class AuthenticationError(ActorrtError, PermissionError):
    """A peer failed the HMAC challenge of the connection handshake."""
