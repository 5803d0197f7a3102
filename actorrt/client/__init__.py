"""The client face: Client, Future and helpers."""
from .client import Client
from .compat import default_client
from .future import CancelledError, Future, FutureCancelledError, futures_of

__all__ = ["Client", "default_client", "CancelledError", "Future", "FutureCancelledError", "futures_of"]
