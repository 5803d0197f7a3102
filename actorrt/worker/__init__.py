"""Workers: the Worker actor, its per-key state machine, its thread pool and user actors."""
from .actor import Worker, start_worker

__all__ = ["Worker", "start_worker"]
