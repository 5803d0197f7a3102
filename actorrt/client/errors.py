"""Errors of the client side of the API."""
from __future__ import annotations


class ClosedClientError(RuntimeError):
    """An operation on a client that is closed (dask's name). A RuntimeError, which is
    what actorrt raised before the name existed."""


__all__ = ["ClosedClientError"]
