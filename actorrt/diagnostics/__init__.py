"""Plugins: user code the scheduler and the workers call on their events
(dask.distributed's ``distributed.diagnostics.plugin``; see docs/plugins.md)."""
from .plugin import NannyPlugin, SchedulerPlugin, UploadFile, WorkerPlugin, plugin_name

__all__ = ["NannyPlugin", "SchedulerPlugin", "UploadFile", "WorkerPlugin", "plugin_name"]
