"""Jupyter's rich display (``_repr_html_``) of Client, Future and LocalCluster.

Small tables; every text that comes from the cluster or the user is escaped.
"""
from __future__ import annotations

from html import escape
from typing import Any

from ..sizes import format_bytes


def _rows(rows: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th style='text-align:left'>{escape(str(k))}</th><td style='text-align:left'>"
                   f"{v}</td></tr>" for k, v in rows)


def _link(url: str | None) -> str:
    if not url:
        return "<i>off</i>"
    u = escape(url, quote=True)
    return f"<a href='{u}' target='_blank'>{u}</a>"


def limit_text(n: Any) -> str:
    """A memory limit as a person reads it ("unlimited" for none)."""
    if not isinstance(n, (int, float)) or n <= 0:
        return "unlimited" if n in (None, 0) else "?"
    return format_bytes(n)


def workers_table(workers: dict[str, dict]) -> str:
    head = "<tr><th>worker</th><th>name</th><th>threads</th><th>memory limit</th><th>stored</th></tr>"
    body = "".join(
        f"<tr><td>{escape(a)}</td><td>{escape(str(w.get('name')))}</td><td>{escape(str(w.get('nthreads')))}"
        f"</td><td>{limit_text(w.get('memory_limit'))}</td><td>{_stored(w)}</td></tr>"
        for a, w in sorted(workers.items()))
    return f"<table>{head}{body}</table>"


def _stored(worker: dict) -> str:
    stored = (worker.get("metrics") or {}).get("managed_bytes") or 0
    return format_bytes(stored) if stored else "0 B"


def cluster_html(title: str, rows: list[tuple[str, Any]], workers: dict[str, dict] | None) -> str:
    """A titled table of ``rows`` (values already HTML), then the workers, when known."""
    out = f"<div><h3 style='margin:0'>{escape(title)}</h3><table>{_rows(rows)}</table>"
    if workers:
        out += f"<details><summary>Workers ({len(workers)})</summary>{workers_table(workers)}</details>"
    return out + "</div>"


def summary_rows(info: dict | None, dashboard: str | None) -> list[tuple[str, Any]]:
    """Workers, threads, memory and the dashboard link from ``scheduler_info()``."""
    rows: list[tuple[str, Any]] = []
    if info is not None:
        rows += [("Workers", escape(str(info.get("n_workers", len(info.get("workers", {})))))),
                 ("Threads", escape(str(info.get("total_threads", 0)))),
                 ("Memory", limit_text(info.get("total_memory")))]
    rows.append(("Dashboard", _link(dashboard)))
    return rows


def future_html(future: Any) -> str:
    status = future.status
    colour = {"finished": "green", "error": "red", "cancelled": "grey"}.get(status, "orange")
    typ = f", type: {escape(str(future.type))}" if future.type else ""
    return (f"<strong>Future: {escape(str(future.key))}</strong> "
            f"<span style='color:{colour}'>status: {escape(status)}</span>{typ}")


def text(value: Any) -> str:
    return escape(str(value))


__all__ = ["cluster_html", "limit_text", "future_html", "summary_rows", "text", "workers_table"]
