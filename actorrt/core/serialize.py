"""Serialization: a msgpack envelope around cloudpickled payloads.

The envelope (actor ids, ops, request ids, plain fields) is msgpack. User objects
(functions, arguments, results, exceptions) travel as :class:`Pickled` blobs, made
with cloudpickle protocol 5 so that large buffers (bytes, numpy arrays) are carried
as separate frames instead of being copied into the pickle.

A ``Pickled`` is opaque to every host that only forwards it (the scheduler never
unpickles user code); only the host that needs the object calls :meth:`Pickled.loads`.
"""
from __future__ import annotations

import pickle
import traceback
from typing import Any, Iterable

import cloudpickle
import msgpack

from .errors import SerializationError

# msgpack extension type codes.
EXT_PICKLE = 1
EXT_REF = 2

# Buffers smaller than this are cheaper to keep inside the pickle than to frame.
OOB_MIN_BYTES = 64 * 1024


class Pickled:
    """An object serialized with cloudpickle; loaded lazily, forwarded unopened."""

    __slots__ = ("header", "buffers", "_hash")

    def __init__(self, header: bytes, buffers: list[Any] | None = None) -> None:
        self.header = header
        self.buffers = buffers or []
        self._hash: int | None = None

    @classmethod
    def dumps(cls, obj: Any, what: str = "object") -> "Pickled":
        """Pickle ``obj``; raise :class:`SerializationError` naming it on failure."""
        buffers: list[pickle.PickleBuffer] = []

        def keep_large(buf: pickle.PickleBuffer) -> bool:
            # Returning False keeps the buffer out of band (a frame of its own).
            if buf.raw().nbytes >= OOB_MIN_BYTES:
                buffers.append(buf)
                return False
            return True

        try:
            header = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep_large)
        except Exception as e:
            raise SerializationError(
                f"cannot pickle {what} {_short_repr(obj)}: {type(e).__name__}: {e}"
            ) from e
        return cls(header, [b.raw() for b in buffers])

    def loads(self) -> Any:
        return pickle.loads(self.header, buffers=self.buffers)

    @property
    def nbytes(self) -> int:
        return len(self.header) + sum(memoryview(b).nbytes for b in self.buffers)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pickled)
            and self.header == other.header
            and [bytes(b) for b in self.buffers] == [bytes(b) for b in other.buffers]
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.header)
        return self._hash

    def __repr__(self) -> str:
        return f"<Pickled {self.nbytes} bytes, {len(self.buffers)} buffers>"


def _short_repr(obj: Any, limit: int = 80) -> str:
    try:
        r = repr(obj)
    except Exception:
        r = f"<{type(obj).__name__} object>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


class RemoteTraceback(Exception):
    """Carries the text of a traceback raised on another host.

    Attached as ``__cause__`` of a re-raised remote exception, so the printed
    traceback shows the user's frames where the error really happened.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb


def dumps_exception(exc: BaseException) -> tuple[Pickled, str]:
    """Pickle an exception and format its traceback; never fails."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = Pickled.dumps(exc, what="exception")
        pickle.loads(blob.header, buffers=blob.buffers)  # some exceptions pickle but cannot load
    except Exception:
        blob = Pickled.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return blob, tb


def loads_exception(blob: Pickled, tb: str | None) -> BaseException:
    """Rebuild a remote exception with its remote traceback attached as the cause."""
    exc = blob.loads()
    if tb and isinstance(exc, BaseException):
        exc.__cause__ = RemoteTraceback(tb)
    return exc


# --- envelope -------------------------------------------------------------------


def pack_frames(messages: Iterable[Any], ref_type: type) -> list[Any]:
    """Encode a batch of messages into frames: [msgpack envelope, *buffers]."""
    frames: list[Any] = [b""]

    def default(obj: Any) -> Any:
        if type(obj) is Pickled:
            start = len(frames)
            frames.extend(obj.buffers)
            return msgpack.ExtType(
                EXT_PICKLE, msgpack.packb((obj.header, start, len(obj.buffers)))
            )
        if type(obj) is ref_type:
            return msgpack.ExtType(EXT_REF, msgpack.packb(tuple(obj)))
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        raise TypeError(f"cannot put {type(obj).__name__} in a message envelope")

    frames[0] = msgpack.packb(list(messages), default=default, use_bin_type=True)
    return frames


def unpack_frames(frames: list[Any], ref_type: type) -> list[Any]:
    """Decode frames made by :func:`pack_frames`; buffers become zero-copy views."""

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_PICKLE:
            header, start, n = msgpack.unpackb(data)
            if start < 1 or start + n > len(frames):
                raise ValueError("pickle refers to a missing buffer frame")
            return Pickled(header, list(frames[start : start + n]))
        if code == EXT_REF:
            return ref_type(*msgpack.unpackb(data, raw=False))
        raise ValueError(f"unknown msgpack extension type {code}")

    messages = msgpack.unpackb(
        frames[0], ext_hook=ext_hook, raw=False, use_list=True, strict_map_key=False
    )
    if not isinstance(messages, list):
        raise ValueError("envelope is not a list of messages")
    return messages
