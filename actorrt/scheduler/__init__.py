"""The scheduler: a pure task state machine and the actor that feeds it."""
from .actor import Scheduler
from .state import SchedulerState, TaskSpec

__all__ = ["Scheduler", "SchedulerState", "TaskSpec"]
