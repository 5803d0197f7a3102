"""The events page's data: the scheduler's event log, told incrementally.

A message that msgpack carries exactly and that is small (str, numbers, lists and
str-keyed dicts of them: protocol.event_message) travels as itself and is shown as it
is, as are the scheduler's own (workers joining, leaving, pausing). Any other stays
pickled on the scheduler (it never unpickles user data): the page shows its size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import Pickled

if TYPE_CHECKING:
    from ..scheduler.actor import Scheduler

#: Events sent at most per push (and on a page's first load): the newest ones.
MAX_EVENTS = 500


def events_since(scheduler: Scheduler, seq: int, limit: int = MAX_EVENTS) -> dict[str, Any]:
    """``{"last": seq, "events": [{seq, topic, time, msg}, ...]}``: those after ``seq``."""
    log = scheduler.event_log
    rows = [{"seq": s, "topic": topic, "time": when, "msg": describe_message(msg)}
            for s, topic, when, msg in log.since(seq, limit)]
    return {"last": log.last_seq, "events": rows,
            "topics": {topic: len(entries) for topic, entries in log.topics.items()}}


def describe_message(msg: Any) -> Any:
    """A value the page can show: plain values as they are, a pickled one by its size."""
    if type(msg) is Pickled:
        return f"(a pickled message of {msg.nbytes:,} bytes)"
    if isinstance(msg, (str, int, float, bool)) or msg is None:
        return msg
    if isinstance(msg, dict):
        return {str(k): describe_message(v) for k, v in msg.items()}
    if isinstance(msg, (list, tuple)):
        return [describe_message(v) for v in msg]
    return repr(msg)[:200]
