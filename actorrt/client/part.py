"""The base of the Client's mixins (admin, datasets, compat): what they use of it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable


class ClientPart:
    """A part of :class:`~actorrt.Client`, written against the Client's face."""

    if TYPE_CHECKING:  # provided by Client
        cluster: Any
        asynchronous: bool

        def sync(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
                 **kwargs: Any) -> Any: ...

        def close(self, timeout: float | None = None) -> Any: ...


__all__ = ["ClientPart"]
