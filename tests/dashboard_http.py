"""Reaching a running dashboard over real HTTP, for the tests of its pages and endpoints."""
from tornado.httpclient import AsyncHTTPClient


def dashboard_root(link):
    """The dashboard's root URL from a client's ``dashboard_link`` (``.../status``)."""
    assert link.endswith("/status"), link
    return link[: -len("/status")]


async def fetch(url):
    """GET ``url``; the response whatever its status (no exception for a 404)."""
    http = AsyncHTTPClient(force_instance=True)
    try:
        return await http.fetch(url, raise_error=False)
    finally:
        http.close()
