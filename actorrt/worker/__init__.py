"""Workers: the Worker actor, its per-key state machine, its thread pool and user actors."""
from .actor import Worker, default_listen_address, start_worker

__all__ = ["Worker", "default_listen_address", "start_worker"]
