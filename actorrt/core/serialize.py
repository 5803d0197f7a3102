"""Serialization: a msgpack envelope around cloudpickled payloads.

The envelope (actor ids, ops, request ids, plain fields) is msgpack. User objects
(functions, arguments, results, exceptions) travel as :class:`Pickled` blobs, made
with cloudpickle protocol 5 so that large buffers (bytes, numpy arrays) are carried
as separate frames instead of being copied into the pickle.

A ``Pickled`` is opaque to every host that only forwards it (the scheduler never
unpickles user code); only the host that needs the object calls :meth:`Pickled.loads`.
"""
from __future__ import annotations

import copyreg
import io
from collections import ChainMap
import pickle
import threading
import traceback
from typing import Any, Iterable

import cloudpickle
import msgpack

from .errors import SerializationError
from .tracebacks import frames_of, remote_tail, remote_text, with_remote_frames

# msgpack extension type codes.
EXT_PICKLE = 1
EXT_REF = 2
# A Pickled already in this envelope, by its place among the envelope's pickles. A map's
# tasks share one pickled function: without this each of a 5,000-task part carried its
# own copy on the wire, and the scheduler held one per task (~0.5 KB for a function
# pickled by value, half of a held task's cost).
EXT_PICKLE_AGAIN = 3

# Buffers smaller than this are cheaper to keep inside the pickle than to frame.
OOB_MIN_BYTES = 64 * 1024


class Pickled:
    """An object serialized with cloudpickle; loaded lazily, forwarded unopened."""

    __slots__ = ("header", "buffers", "_hash")

    def __init__(self, header: bytes, buffers: "list[Any] | tuple[()] | None" = None) -> None:
        self.header = header
        # Most values have no out-of-band buffer: one shared empty tuple, not an empty
        # list apiece (a held task's arguments would be one more object for the garbage
        # collector to walk, 56 bytes each).
        self.buffers = buffers or ()
        self._hash: int | None = None

    @classmethod
    def dumps(cls, obj: Any, what: str = "object") -> "Pickled":
        """Pickle ``obj``; raise :class:`SerializationError` naming it on failure."""
        if _is_plain(obj):
            # The standard pickler writes these byte for byte as cloudpickle does (so
            # pure keys are unchanged) without building cloudpickle's Pickler, which
            # costs ~1.3 µs of the ~2 µs it takes to pickle a trivial task's arguments
            # or result (benchmarks/profile_core.py).
            return cls(pickle.dumps(obj, protocol=5))
        buffers: list[Any] = []

        def keep_large(buf: pickle.PickleBuffer) -> bool:
            # Returning False keeps the buffer out of band (a frame of its own).
            raw = buf.raw()
            if raw.nbytes >= OOB_MIN_BYTES:
                buffers.append(raw)
                return False
            return True

        try:
            if _has_large_bytes(obj):
                # The C pickler writes exact bytes/bytearray in band without asking
                # reducer_override, so only persistent_id can take them out of band.
                f = io.BytesIO()
                pickler = _BytesPickler(f, protocol=5, buffer_callback=keep_large)
                pickler.dump(obj)
                header = f.getvalue()
                buffers.extend(reversed(pickler.oob))  # persistent id -i-1 indexes from the end
            else:
                header = _dumps(obj, keep_large)
        except Exception as e:
            raise SerializationError(
                f"cannot pickle {what} {_short_repr(obj)}: {type(e).__name__}: {e}"
            ) from e
        return cls(header, buffers)

    def loads(self) -> Any:
        if _BINPERSID not in self.header:  # fast path; 'Q' in data only costs the slow one
            return pickle.loads(self.header, buffers=self.buffers)
        return _BytesUnpickler(io.BytesIO(self.header), buffers=self.buffers).load()

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


_BINPERSID = pickle.BINPERSID

# Exact types only: a subclass (an IntEnum defined in __main__, say) may need pickling by value.
_PLAIN_SCALARS = frozenset({int, float, str, bool, type(None)})
# Small records of importable classes whose state is plain scalars (a graph's reference to
# another task's key): the standard pickler stores them by reference, as cloudpickle
# would, at a third of the cost. Registered by their owners (register_plain).
_PLAIN_RECORDS: set[type] = set()


def register_plain(cls: type) -> type:
    """Let the fast path pickle instances of ``cls``: an importable class whose
    ``__reduce__`` gives only builtin scalars. (Use as a class decorator.)"""
    _PLAIN_RECORDS.add(cls)
    return cls


def _is_plain(obj: Any, depth: int = 3) -> bool:
    """Builtin scalars, and small tuples/lists/dicts of them up to ``depth`` levels.

    Such values (a task's ``(args, kwargs)`` of numbers and strings, most small
    results) need nothing of cloudpickle and hold no buffer worth sending out of band.
    """
    t = type(obj)
    if t in _PLAIN_SCALARS or t in _PLAIN_RECORDS:
        return True
    if depth <= 1:
        return False
    if t is tuple or t is list:
        if len(obj) > 16:
            return False
        for x in obj:
            if not _is_plain(x, depth - 1):
                return False
        return True
    if t is dict:
        if len(obj) > 16:
            return False
        for k, v in obj.items():
            if type(k) not in _PLAIN_SCALARS or not _is_plain(v, depth - 1):
                return False
        return True
    return False


def _has_large_bytes(obj: Any, depth: int = 3) -> bool:
    """Cheap look for big bytes/bytearray near the top of ``obj`` (task args, results).

    Pickling with a ``persistent_id`` costs a Python call per object (3x slower on a
    list of a million ints), so we pay it only when it moves a large buffer. Bytes
    buried deeper than this stay in band: correct, one copy more.
    """
    t = type(obj)
    if t is bytes or t is bytearray:
        return len(obj) >= OOB_MIN_BYTES
    if depth > 1:
        if (t is tuple or t is list) and len(obj) <= 64:
            return any(_has_large_bytes(x, depth - 1) for x in obj)
        if t is dict and len(obj) <= 64:
            return any(_has_large_bytes(x, depth - 1) for x in obj.values())
    return False


def _memoryview_reduce(mv: memoryview) -> Any:
    # cloudpickle turns a memoryview into bytes; a memoryview it stays here (as in dask),
    # its memory a buffer of its own (out of band when large).
    if not mv.c_contiguous:
        return _load_memoryview, (mv.tobytes(), mv.format, mv.shape)
    return _load_memoryview, (pickle.PickleBuffer(mv.cast("B")), mv.format, mv.shape)


def _load_memoryview(buf: Any, fmt: str, shape: Any) -> memoryview:
    mv = memoryview(buf)
    if mv.ndim == 1 and mv.format == "B" and (fmt != "B" or list(shape or ()) != [mv.nbytes]):
        mv = mv.cast(fmt, list(shape))  # type: ignore[call-overload]  # (any format)
    return mv


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's Pickler, with our reducers for the types it changes on the way."""

    # As flat as cloudpickle's own (one dict before copyreg's): the C pickler looks every
    # object's type up in it, and a ChainMap nested one more level cost 10% per pickle.
    dispatch_table = ChainMap({**cloudpickle.Pickler._dispatch_table, memoryview: _memoryview_reduce},
                              copyreg.dispatch_table)


def _dumps(obj: Any, buffer_callback: Any) -> bytes:
    with io.BytesIO() as f:
        _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()


class _BytesPickler(_Pickler):
    """cloudpickle, with large bytes/bytearray referenced by persistent id.

    Their buffers are appended after protocol-5 buffers, in reverse, so id ``-i-1``
    indexes from the end and the unpickler's in-order buffer stream is undisturbed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.oob: list[Any] = []
        self._seen: dict[int, int] = {}  # persistent_id runs before the memo: dedupe here

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= OOB_MIN_BYTES:
            index = self._seen.get(id(obj))
            if index is None:
                self.oob.append(obj)
                index = self._seen[id(obj)] = -len(self.oob)
            return (t is bytearray, index)
        return None


class _BytesUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, *, buffers: "list[Any] | tuple[()]") -> None:
        super().__init__(file, buffers=buffers)
        self._buffers = buffers
        self._loaded: dict[Any, Any] = {}  # keep aliasing: one object per persistent id

    def persistent_load(self, pid: Any) -> Any:
        obj = self._loaded.get(pid)
        if obj is None:
            try:
                mutable, index = pid
                buf = self._buffers[index]
            except Exception:
                raise pickle.UnpicklingError(f"bad persistent id {pid!r}") from None
            if mutable:
                obj = bytearray(buf)
            else:
                obj = buf if type(buf) is bytes else bytes(buf)
            self._loaded[pid] = obj
        return obj


def _short_repr(obj: Any, limit: int = 80) -> str:
    try:
        r = repr(obj)
    except Exception:
        r = f"<{type(obj).__name__} object>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


class RemoteTraceback(Exception):
    """Carries the text of a traceback raised on another host.

    Attached as ``__cause__`` of a re-raised remote exception only when its frames
    could not come along (see :mod:`.tracebacks`); normally the exception's own
    traceback holds the remote frames.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb


class _WithFrames:
    """Pickles as ``exc`` that unpickles with its traceback rebuilt from ``frames``."""

    __slots__ = ("exc", "frames", "text")

    def __init__(self, exc: BaseException, frames: list, text: str) -> None:
        self.exc, self.frames, self.text = exc, frames, text

    def __reduce__(self) -> Any:
        return with_remote_frames, (self.exc, self.frames, self.text)


def dumps_exception(exc: BaseException) -> tuple[Pickled, str]:
    """Pickle an exception with its frames (rebuilt where it is loaded), and format
    its traceback as text; never fails."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    frames = frames_of(exc.__traceback__)
    # The frames go as data: the traceback object itself stays out of the pickle even
    # where a library (tblib, which dask.distributed installs) makes tracebacks picklable,
    # as a deep one (a RecursionError's) would fail to pickle there.
    saved, exc.__traceback__ = exc.__traceback__, None
    try:
        blob = Pickled.dumps(_WithFrames(exc, frames, tb), what="exception")
        blob.loads()  # some exceptions pickle but cannot load
    except Exception:
        blob = Pickled.dumps(RuntimeError(f"{type(exc).__name__}: {_short_repr(exc, 1000)}"))
    finally:
        exc.__traceback__ = saved
    return blob, tb


def loads_exception(blob: Pickled, tb: str | None) -> BaseException:
    """Rebuild a remote exception: its traceback is the remote frames; the text ``tb``
    becomes its cause only when no frames came with it."""
    exc = blob.loads()
    if not isinstance(exc, BaseException):
        return TypeError(f"remote error is not an exception: {_short_repr(exc)}")
    if tb and remote_tail(exc.__traceback__) is None:
        exc.__cause__ = RemoteTraceback(tb)
    return exc


def is_remote(exc: BaseException) -> bool:
    """Whether ``exc`` was raised on another host and brought here."""
    return isinstance(exc.__cause__, RemoteTraceback) or remote_tail(exc.__traceback__) is not None


def remote_traceback_text(exc: BaseException) -> str | None:
    """The remote traceback's text of an exception from another host, else None."""
    if isinstance(exc.__cause__, RemoteTraceback):
        return exc.__cause__.tb
    return remote_text(exc)


# --- envelope -------------------------------------------------------------------


class _Packers(threading.local):
    """One thread's msgpack packers, made once and kept.

    ``msgpack.packb`` makes a Packer per call, with a 256 KiB buffer; a message with a
    pickle in it made two at once (one inside the other) and took 14 µs to pack in a
    tight loop, 2 µs with these (in a worker's actor replies: 15.8 -> 13.5 µs). Kept
    per thread (threads frame their own messages: ``Comm.frame_for_thread``), a packer
    is never used by two at once. A packer's buffer grows to the largest message it
    packed and never shrinks: one that packed a large envelope is replaced."""

    def __init__(self) -> None:
        self.inner = _small_packer()
        self.outer = _small_packer(self._default)
        self.frames: list[Any] = []
        self.places: dict[int, int] = {}
        self.ref_type: type | None = None

    def pack(self, messages: Iterable[Any], ref_type: type) -> list[Any]:
        frames: list[Any] = [b""]
        self.frames, self.places, self.ref_type = frames, {}, ref_type
        try:
            frames[0] = self.outer.pack(list(messages))
        finally:
            # (Not kept: the pickles' buffers and their ids would outlive the message.)
            self.frames, self.places = [], {}
            if len(frames[0]) > KEEP_PACKER_BYTES:
                self.outer = _small_packer(self._default)
        return frames

    def _default(self, obj: Any) -> Any:
        if type(obj) is Pickled:
            # id() is stable here: every Pickled stays referenced by the messages until
            # pack() returns.
            places = self.places
            place = places.get(id(obj))
            if place is not None:
                return msgpack.ExtType(EXT_PICKLE_AGAIN, self.inner.pack(place))
            places[id(obj)] = len(places)
            frames = self.frames
            start = len(frames)
            frames.extend(obj.buffers)
            ext = self.inner.pack((obj.header, start, len(obj.buffers)))
            if len(ext) > KEEP_PACKER_BYTES:
                self.inner = _small_packer()
            return msgpack.ExtType(EXT_PICKLE, ext)
        if type(obj) is self.ref_type:
            return msgpack.ExtType(EXT_REF, self.inner.pack((obj.address, obj.id)))  # type: ignore[attr-defined]
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        raise TypeError(f"cannot put {type(obj).__name__} in a message envelope")


# A packer that packed more than this is replaced (its buffer would stay that large).
KEEP_PACKER_BYTES = 1 << 16


def _small_packer(default: Any = None) -> msgpack.Packer:
    return msgpack.Packer(default=default, use_bin_type=True, buf_size=4096)


_packers = _Packers()


def pack_frames(messages: Iterable[Any], ref_type: type) -> list[Any]:
    """Encode a batch of messages into frames: [msgpack envelope, *buffers]."""
    return _packers.pack(messages, ref_type)


def unpack_frames(frames: list[Any], ref_type: type) -> list[Any]:
    """Decode frames made by :func:`pack_frames`; buffers become zero-copy views. A
    Pickled sent once per envelope and referred back to is one object here too."""
    # (msgpack calls ext_hook in the order the extensions appear in the envelope, which
    # is the order pack_frames' default met them.)
    pickles: list[Pickled] = []

    def ext_hook(code: int, data: bytes) -> Any:
        # Malformed input of any shape is a ValueError, so the transport can tell a
        # bad peer from a bug of ours.
        if code == EXT_PICKLE:
            value = msgpack.unpackb(data)
            if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], bytes)
                    and type(value[1]) is int and type(value[2]) is int):
                raise ValueError("malformed pickle extension")
            header, start, n = value
            if start < 1 or n < 0 or start + n > len(frames):
                raise ValueError("pickle refers to a missing buffer frame")
            pickled = Pickled(header, list(frames[start : start + n]))
            pickles.append(pickled)
            return pickled
        if code == EXT_PICKLE_AGAIN:
            place = msgpack.unpackb(data)
            if type(place) is not int or not 0 <= place < len(pickles):
                raise ValueError("pickle refers back to none before it")
            return pickles[place]
        if code == EXT_REF:
            value = msgpack.unpackb(data, raw=False)
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                raise ValueError("malformed actor ref extension")
            return ref_type(*value)
        raise ValueError(f"unknown msgpack extension type {code}")

    if not frames:
        raise ValueError("no frames")

    messages = msgpack.unpackb(
        frames[0], ext_hook=ext_hook, raw=False, use_list=True, strict_map_key=False
    )
    if not isinstance(messages, list):
        raise ValueError("envelope is not a list of messages")
    return messages
