"""Published datasets: named values (often Futures) kept by the scheduler for any client.

``publish_dataset``, ``get_dataset``, ``list_datasets``, ``unpublish_dataset`` and the
``client.datasets`` mapping: a mixin of :class:`~actorrt.Client`. The scheduler holds
the keys of the Futures inside a published value, so they outlive the publisher.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Iterator, cast

from ..core import Pickled
from .future import futures_of
from .part import ClientPart

if TYPE_CHECKING:
    from .client import Client


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"



NO_DEFAULT: Any = _NoDefault()



class DatasetMethods(ClientPart):
    """Mixin of Client: publishing and fetching named datasets."""

    # --- published datasets -------------------------------------------------------
    def publish_dataset(self, *args: Any, name: str | None = None, override: bool = False,
                        **kwargs: Any) -> Any:
        """Keep values (and the results of the Futures inside them) under names on the cluster.

        ``publish_dataset(x=future)`` or ``publish_dataset(value, name="x")``. Another
        client fetches them with :meth:`get_dataset`; the results stay on the workers
        until :meth:`unpublish_dataset`, even once every Future is dropped. A name in
        use raises ``KeyError`` unless ``override=True``.

        >>> client.publish_dataset(totals=client.submit(sum, [1, 2]))   # doctest: +SKIP
        >>> other_client.get_dataset("totals").result()                  # doctest: +SKIP
        3
        """
        items = _datasets_to_publish(args, name, kwargs)
        blobs = [(n, *_dump_dataset(n, v)) for n, v in items.items()]  # pickle before sending
        return self.sync(_publish, self, blobs, override)

    def get_dataset(self, name: str, default: Any = NO_DEFAULT, **kwargs: Any) -> Any:
        """The value published under ``name``; ``default``, or ``KeyError``, if none."""
        _check_dataset_name(name)
        return self.sync(_get_dataset, self, name, default)

    def list_datasets(self, **kwargs: Any) -> Any:
        """The names of the published datasets."""
        return self.sync(_list_datasets, self)

    def unpublish_dataset(self, name: str, **kwargs: Any) -> Any:
        """Forget dataset ``name`` (its results are freed unless a Future still holds them)."""
        _check_dataset_name(name)
        return self.sync(_unpublish, self, name)

    @property
    def datasets(self) -> "Datasets":
        """The published datasets as a mapping: ``client.datasets["x"] = future``."""
        return Datasets(cast("Client", self))



class Datasets(MutableMapping):
    """``client.datasets``: published datasets as a mapping (each access asks the scheduler)."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def __getitem__(self, name: str) -> Any:
        return self._client.get_dataset(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._client.publish_dataset(value, name=name, override=True)

    def __delitem__(self, name: str) -> None:
        if name not in self._client.list_datasets():
            raise KeyError(name)
        self._client.unpublish_dataset(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._client.list_datasets())

    def __len__(self) -> int:
        return len(self._client.list_datasets())



def _check_dataset_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a dataset name must be a str, got {type(name).__name__}: {name!r}")
    return name



def _datasets_to_publish(args: tuple, name: str | None, kwargs: dict) -> dict[str, Any]:
    items = dict(kwargs)
    if name is not None:
        if len(args) != 1:
            raise ValueError("with name=, publish exactly one value: publish_dataset(value, name='x')")
        items[_check_dataset_name(name)] = args[0]
    else:
        for value in args:  # dask collections carry their own name
            found = getattr(value, "name", None)
            if not isinstance(found, str):
                raise ValueError(f"publish_dataset needs a name for {type(value).__name__} "
                                 "values: publish_dataset(value, name='x') or publish_dataset(x=value)")
            items[found] = value
    if not items:
        raise ValueError("publish_dataset needs something to publish: publish_dataset(name=value)")
    return items



def _dump_dataset(name: str, value: Any) -> tuple[Pickled, list[str]]:
    return Pickled.dumps(value, what=f"dataset {name!r}"), [f.key for f in futures_of(value)]



async def _publish(client: "Client", blobs: list, override: bool, timeout: float | None = None) -> None:
    client.table.flush()  # the scheduler must know the keys before the dataset wants them
    for name, blob, keys in blobs:
        await client.host.ask(client.scheduler, "publish_dataset", name=name, data=blob, keys=keys,
                              override=override)



async def _get_dataset(client: "Client", name: str, default: Any, timeout: float | None = None) -> Any:
    blob = await client.host.ask(client.scheduler, "get_dataset", name=name)
    if blob is None:
        if default is NO_DEFAULT:
            raise KeyError(f"dataset {name!r} not found")
        return default
    from .actor_handle import load_binding
    return load_binding(blob, client)  # Futures inside bind to (and are held by) this client



async def _list_datasets(client: "Client", timeout: float | None = None) -> tuple:
    return tuple(await client.host.ask(client.scheduler, "list_datasets"))



async def _unpublish(client: "Client", name: str, timeout: float | None = None) -> None:
    await client.host.ask(client.scheduler, "unpublish_dataset", name=name)


__all__ = ["DatasetMethods", "Datasets", "NO_DEFAULT"]
