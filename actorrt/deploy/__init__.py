"""Deployment: LocalCluster and the command-line entry points."""
from .local import LocalCluster, start_scheduler

__all__ = ["LocalCluster", "start_scheduler"]
