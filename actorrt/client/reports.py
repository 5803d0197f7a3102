"""What the scheduler tells a client about its keys: one actor per client receives it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import Actor
from ..core.checks import check_origin
from ..core.errors import BadMessageError
from ..protocol import decode_reports
from .compat import warn_unrunnable

if TYPE_CHECKING:
    from .client import Client


class ClientActor(Actor):
    """Receives the scheduler's reports about this client's keys."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def handle_report(self, msgs: list, origin: Any, acked: int = 0) -> None:
        """The scheduler's news of keys; ``acked``: tasks sent with ``ack_later`` that
        it has now taken (scheduler.actor.handle_update_graph)."""
        check_origin("ClientActor.report", "the scheduler", self.client.scheduler.address, origin,
                     self.client.host)
        if acked < 0:
            raise BadMessageError(f"ClientActor.report: field 'acked' must be at least 0, got {acked}")
        table, direct = self.client.table, self.client.direct
        for key, status, info in decode_reports(msgs):
            st = table.get(key)
            if st is None:
                continue
            if status == "memory":
                workers = info.get("workers", [])
                st.finish(workers, info.get("type"), info.get("value"))
                direct.seen(workers)
            elif status == "erred":
                st.err(info.get("exception"), info.get("traceback"))
            elif status == "cancelled":
                st.cancel(info.get("reason"))
            elif status == "lost":
                st.lost()
            elif status == "unrunnable":  # (it stays pending: such a worker may join)
                warn_unrunnable(key, info.get("reason"))
        if acked:
            table.acknowledged(acked)
