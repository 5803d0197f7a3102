"""The client face: Client, Future and helpers."""
from .. import runtime
from .actor_handle import unbound_handle
from .client import Client
from .compat import default_client
from .future import CancelledError, Future, FutureCancelledError, futures_of

# The worker (below this layer) makes task clients and actor handles through these.
runtime.lend_client_makers(Client._on_host, unbound_handle)

__all__ = ["Client", "default_client", "CancelledError", "Future", "FutureCancelledError", "futures_of"]
