"""The web dashboard on the scheduler: status, task pages, graph, actors, coordination,
events.

Started by :func:`~actorrt.deploy.local.start_scheduler` (``dashboard_address=``), by
``LocalCluster``/``Client`` (default ``":8787"``, loopback) and by
``actorrt-scheduler --dashboard-address``. Endpoints (docs/dashboard.md):

* ``GET /`` or ``/status``, ``/task/<key>``, ``/graph``, ``/actors``, ``/coordination``,
  ``/events``: the pages, each kept live over the websocket ``/ws?page=<page>``;
* ``GET /api/status``, ``/api/task/<key>``, ``/api/graph``, ``/api/events``,
  ``/api/actors``, ``/api/coordination``, ``/api/story/<key>``: their data as JSON;
* ``GET /health``: ``ok``.

One module per page's data (status, task_view, graph_view, event_view, actor_view,
coordination_view), the pages' frame (shell) and the status page's HTML (page); the
scripts and style are files in static/.

This package imports no tornado until a browser connects: the web layer
(:mod:`.app`) is loaded then (see :mod:`.actor`).

>>> from actorrt import Client
>>> client = Client(processes=False, dashboard_address="127.0.0.1:0")   # doctest: +SKIP
>>> client.dashboard_link                                               # doctest: +SKIP
'http://127.0.0.1:40517/status'
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .actor import Dashboard
from ..core.comm import host_of
from ..protocol import DASHBOARD_ID
from .address import (DEFAULT_DASHBOARD_ADDRESS, bind_socket, check_exposure, is_loopback,
                      link_for, parse_dashboard_address)

if TYPE_CHECKING:
    from ..core import Host
    from ..scheduler.actor import Scheduler



def start_dashboard(scheduler: "Scheduler", address: str | int | None, *,
                    secret_configured: bool, interval: float = 0.5) -> "Dashboard | None":
    """Serve the dashboard of ``scheduler`` (on its host's running loop) at ``address``.

    None disables it. Off loopback only when the cluster has a secret; a busy port
    falls back to a free one. Sets ``scheduler.dashboard_link``.
    """
    if address is None:
        return None
    where = parse_dashboard_address(address)
    check_exposure(where, secret_configured)
    sock = bind_socket(where)
    try:
        link = link_for(sock, where.host, host_of(scheduler.host.address))
        dashboard = Dashboard(scheduler, sock, link, loopback_only=is_loopback(where.host),
                              interval=interval)
        scheduler.host.spawn(dashboard, DASHBOARD_ID)
    except BaseException:
        sock.close()
        raise
    scheduler.dashboard_link = link
    return dashboard


async def close_dashboard(host: "Host") -> None:
    """Close the dashboard on ``host`` gracefully, if it has one (before the host closes)."""
    dashboard = host.actors.get(DASHBOARD_ID)
    if isinstance(dashboard, Dashboard):
        await dashboard.close()


__all__ = ["DASHBOARD_ID", "DEFAULT_DASHBOARD_ADDRESS", "Dashboard", "check_exposure",
           "close_dashboard", "parse_dashboard_address", "start_dashboard"]
