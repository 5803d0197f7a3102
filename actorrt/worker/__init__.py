"""Workers: the Worker actor, its thread pool and the short-lived Task actors."""
from .actor import Worker, start_worker

__all__ = ["Worker", "start_worker"]
