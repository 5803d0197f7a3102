"""Framing: the byte layout of one message on a stream, and a decoder that reads large
frames in place. No I/O here: the TCP transport feeds bytes in, messages come out.

One message (one batch of actor messages) on the wire::

    !I  n           number of frames (network byte order), 1 <= n <= the receiver's max_frames
    !Q  len * n     length of each frame
    frame 0         msgpack envelope
    frame 1..n-1    out-of-band pickle buffers, each as one contiguous frame

Lengths are 64-bit and there is no ceiling on a message's total size: a value is as big
as the two hosts' memory allows. Each *frame* is checked against the receiver's
``max_frame_bytes`` when its header arrives, so a peer cannot make us allocate more
than that setting for one frame; the sender learns that limit in the handshake and
refuses, before writing anything, a message the peer would reject.

Why the decoder reads large frames straight into their own buffer: an out-of-band
pickle buffer becomes the memory of the object it belongs to (a numpy array is built
*on* it). Reading it anywhere else first and copying would cost a second pass over the
data and twice its size in memory at the peak. Small frames, in contrast, arrive many
to a ``recv`` and are parsed out of one reused staging buffer.
"""
from __future__ import annotations

import functools
import mmap
import struct
from typing import Any

COUNT = struct.Struct("!I")
MAX_FRAMES = 1 << 16
# Frames at least this big get a buffer of their own and are received into it directly;
# smaller ones are copied out of the staging buffer (cheaper than a syscall each).
LARGE_FRAME_BYTES = 64 * 1024
STAGE_BYTES = 256 * 1024
# Large frame buffers come from anonymous memory maps, populated up front: the kernel
# maps zeroed pages in one call, where ``bytearray(n)`` writes n zeros itself and a
# lazily faulted map pays a fault inside every recv_into. Received into, 512 MiB went
# at ~1,230 MB/s into a bytearray, 500-1,400 MB/s into a lazy map, ~1,550 MB/s into a
# populated one, ~2,200 MB/s into memory touched before (the floor, benchmarks/).
MMAP_MIN_BYTES = 1 << 20
_MMAP_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0) | getattr(mmap, "MAP_POPULATE", 0)
# The largest length a header can carry: "no limit" in settings means this.
UNLIMITED = (1 << 63) - 1


@functools.lru_cache(maxsize=64)
def _header_struct(n: int) -> struct.Struct:
    return struct.Struct(f"!I{n}Q")


@functools.lru_cache(maxsize=64)
def _lengths_struct(n: int) -> struct.Struct:
    return struct.Struct(f"!{n}Q")


def encode_header(lengths: list[int]) -> bytes:
    """The header that precedes frames of these lengths."""
    return _header_struct(len(lengths)).pack(len(lengths), *lengths)


def allocate(nbytes: int) -> Any:
    """A writable buffer of ``nbytes`` for one large frame (kept alive by its views)."""
    if nbytes >= MMAP_MIN_BYTES:
        if _MMAP_FLAGS:
            return memoryview(mmap.mmap(-1, nbytes, flags=_MMAP_FLAGS))
        return memoryview(mmap.mmap(-1, nbytes))
    return memoryview(bytearray(nbytes))


class FrameDecoder:
    """Turns a byte stream into messages, each a list of writable frames.

    Protocol with the transport, as asyncio's ``BufferedProtocol``: ask
    :meth:`get_buffer` where the next bytes go, receive into it, report the count to
    :meth:`buffer_updated`, then take complete messages from :meth:`next_message`
    until it returns None. Taking them one at a time lets the caller tighten or loosen
    the limits between two messages (the handshake does).

    Malformed input raises ``ValueError``; the stream is then unusable.
    """

    def __init__(self, max_frame_bytes: int = UNLIMITED, max_frames: int = MAX_FRAMES,
                 stage_bytes: int = STAGE_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_frames = max_frames
        self._stage = bytearray(stage_bytes)
        self._view = memoryview(self._stage)
        self._start = 0  # unparsed bytes are _stage[_start:_end]
        self._end = 0
        self._lengths: tuple[int, ...] | None = None  # of the message being read
        self._frames: list[Any] = []
        self._large: memoryview | None = None  # the large frame being received in place
        self._large_filled = 0

    @property
    def large_remaining(self) -> int:
        """Bytes still to come of the large frame being received in place (0 if none)."""
        return len(self._large) - self._large_filled if self._large is not None else 0

    @property
    def in_message(self) -> bool:
        """True between the first byte of a message and its last (a cut here is a truncation)."""
        return self._lengths is not None or self._end > self._start

    def grow_stage(self, stage_bytes: int) -> None:
        """Read more per ``recv`` from now on (a stranger got a small stage, a peer a big one)."""
        if stage_bytes > len(self._stage):
            self._restage(stage_bytes)

    def get_buffer(self) -> memoryview:
        if self._large is not None:
            return self._large[self._large_filled:]
        if self._end == len(self._stage):
            self._make_room(self._end - self._start + 1)
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_filled += nbytes
        else:
            self._end += nbytes

    def next_message(self) -> list[Any] | None:
        """The next complete message's frames, or None until more bytes arrive."""
        while True:
            if self._large is not None:
                if self._large_filled < len(self._large):
                    return None
                self._frames.append(self._large)
                self._large = None
            if self._lengths is None and not self._read_header():
                return None
            assert self._lengths is not None
            i = len(self._frames)
            if i == len(self._lengths):
                frames, self._frames, self._lengths = self._frames, [], None
                if self._start == self._end:
                    self._start = self._end = 0
                return frames
            if not self._read_frame(self._lengths[i]):
                return None

    # ------------------------------------------------------------------ parts
    def _read_header(self) -> bool:
        avail = self._end - self._start
        if avail < 4:
            self._make_room(4)
            return False
        (n,) = COUNT.unpack_from(self._stage, self._start)
        if n == 0 or n > self.max_frames:
            raise ValueError(f"bad frame count {n} (at most {self.max_frames})")
        size = 4 + 8 * n
        if avail < size:
            self._make_room(size)
            return False
        lengths = _lengths_struct(n).unpack_from(self._stage, self._start + 4)
        for length in lengths:
            if length > self.max_frame_bytes:
                raise ValueError(f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes} "
                                 "(max_frame_bytes)")
        self._start += size
        self._lengths = lengths
        return True

    def _read_frame(self, length: int) -> bool:
        avail = self._end - self._start
        if length >= LARGE_FRAME_BYTES:
            try:
                buf = allocate(length)
            except (MemoryError, OSError) as e:
                raise ValueError(f"cannot allocate a frame of {length} bytes: {e}") from None
            have = min(avail, length)
            buf[:have] = self._view[self._start : self._start + have]
            self._start += have
            if have == length:
                self._frames.append(buf)
                return True
            self._large, self._large_filled = buf, have
            self._start = self._end = 0
            return False
        if avail >= length:
            # A copy, and writable: numpy arrays loaded from frames must be too.
            self._frames.append(self._stage[self._start : self._start + length])
            self._start += length
            return True
        self._make_room(length)
        return False

    def _make_room(self, needed: int) -> None:
        """Ensure ``needed`` bytes fit from the start of the unparsed data."""
        if self._start + needed <= len(self._stage) and self._end < len(self._stage):
            return
        self._restage(max(needed, 2 * len(self._stage)) if len(self._stage) < needed else len(self._stage))

    def _restage(self, size: int) -> None:
        """Move the unparsed bytes to the front of a staging buffer of ``size`` bytes."""
        pending = self._stage[self._start : self._end]
        if size != len(self._stage):
            # A new buffer, not a resize: the caller may still hold a view of the old one.
            self._stage = bytearray(size)
            self._view = memoryview(self._stage)
        self._stage[: len(pending)] = pending
        self._start, self._end = 0, len(pending)
