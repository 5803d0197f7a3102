"""Workers: the Worker actor, its per-key state machine, its thread pool and user actors."""
from .actor import Worker, default_listen_address, start_worker
from .memory import MemorySettings, format_bytes, parse_bytes, parse_memory_limit, process_rss, system_memory

__all__ = ["MemorySettings", "Worker", "default_listen_address", "format_bytes", "parse_bytes",
           "parse_memory_limit", "process_rss", "start_worker", "system_memory"]
