"""Published datasets: named values kept on the scheduler for any client to fetch.

A dataset is a pickled value (opaque here: the scheduler never unpickles user
objects) and the keys of the Futures inside it. While published, the dataset is a
*holder* of those keys (``dataset-<name>``, see docs/internals.md "Holders"), so
their results stay on the workers after every client has let its Futures go.
"""
from __future__ import annotations

from typing import Callable

from ..core import Pickled
from ..protocol import dataset_holder

#: ``(holder, keys)`` -> None: the scheduler's want_keys / release_keys.
KeysCallback = Callable[[str, list], None]


class Datasets:
    """The scheduler's table of published datasets."""

    def __init__(self, want: KeysCallback, release: KeysCallback) -> None:
        self._data: dict[str, tuple[Pickled, list[str]]] = {}
        self._want = want
        self._release = release

    def publish(self, name: str, data: Pickled, keys: list[str], override: bool) -> None:
        if name in self._data and not override:
            raise KeyError(f"dataset {name!r} already exists; pass override=True to replace it")
        old = self._data.get(name)
        self._data[name] = (data, list(keys))
        # Want the new keys before letting the old ones go: republishing the same
        # Futures must not free them in between.
        self._want(dataset_holder(name), list(keys))
        if old is not None:
            gone = sorted(set(old[1]) - set(keys))
            if gone:
                self._release(dataset_holder(name), gone)

    def get(self, name: str) -> Pickled | None:
        entry = self._data.get(name)
        return entry[0] if entry is not None else None

    def names(self) -> list[str]:
        return list(self._data)

    def unpublish(self, name: str) -> bool:
        """Forget ``name`` and release its keys; False if there was no such dataset."""
        entry = self._data.pop(name, None)
        if entry is None:
            return False
        if entry[1]:
            self._release(dataset_holder(name), entry[1])
        return True

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Datasets {sorted(self._data)}>"

