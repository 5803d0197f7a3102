"""Remote tracebacks: an exception's frames carried as plain data, rebuilt as a real
traceback object where it is raised again.

A traceback object cannot be pickled and a frame cannot be made from data, so the
sending side keeps ``(filename, lineno, name)`` per frame, and the receiving side
makes one small code object per frame (compiled with the frame's file name, line and
function name), runs it to get a frame, and links the frames into a traceback
(the technique tblib uses; ours is the few lines we need). ``traceback.format_tb``,
``print_exception`` and debuggers then show the remote frames as if they were local,
with source lines wherever the file exists here too.

The rebuilt frames' globals carry a marker holding the remote traceback's text, which
is how :func:`remote_text` finds it and :func:`remote_tail` tells where the remote part
of a traceback starts (to drop the runtime's own frames in front of it).
"""
from __future__ import annotations

import functools
import sys
import traceback
import types
from typing import Any

# At most this many frames travel (the innermost ones): a RecursionError has ~1,000.
MAX_FRAMES = 200

# The key, in a rebuilt frame's globals, of the remote traceback's text.
MARKER = "__actorrt_remote_traceback__"

Frame = tuple  # (filename: str, lineno: int, name: str)


class _FrameMaker(Exception):
    """Raised by each rebuilt frame's code to capture that frame."""


def frames_of(tb: types.TracebackType | None) -> list[Frame]:
    """The frames of a traceback as plain data, the innermost MAX_FRAMES of them."""
    out = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(tb)]
    return out[-MAX_FRAMES:]


@functools.lru_cache(maxsize=512)
def _code(filename: str, lineno: int, name: str) -> types.CodeType:
    # Padded to the line so the frame's own f_lineno (which pdb shows) is right too.
    code = compile("\n" * (max(lineno, 1) - 1) + "raise __maker__", filename, "exec")
    return code.replace(co_name=name)


def _frame(filename: str, lineno: int, name: str, text: str) -> types.FrameType:
    glob = {"__file__": filename, "__name__": "?", "__maker__": _FrameMaker, MARKER: text}
    try:
        exec(_code(filename, lineno, name), glob)
    except _FrameMaker:
        tb = sys.exc_info()[2]
        assert tb is not None and tb.tb_next is not None
        return tb.tb_next.tb_frame
    raise AssertionError("unreachable")  # pragma: no cover


def rebuild(frames: list[Frame], text: str) -> types.TracebackType | None:
    """A traceback object with these frames (outermost first), or None if none are valid."""
    tb: types.TracebackType | None = None
    for item in reversed(frames):
        try:
            filename, lineno, name = item
            frame = _frame(str(filename), int(lineno), str(name), text)
        except Exception:  # a malformed or uncompilable entry loses that frame, not the error
            continue
        # tb_lasti -1: there is no instruction to point at (no carets under the source line).
        tb = types.TracebackType(tb, frame, -1, int(lineno))
    return tb


def with_remote_frames(exc: BaseException, frames: list[Frame], text: str) -> BaseException:
    """``exc`` with its traceback rebuilt from ``frames`` (unpickling calls this)."""
    if isinstance(exc, BaseException):
        tb = rebuild(frames, text)
        if tb is not None:
            exc.__traceback__ = tb
    return exc


def remote_tail(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The part of ``tb`` from its first rebuilt (remote) frame on, else None."""
    while tb is not None:
        if MARKER in tb.tb_frame.f_globals:
            return tb
        tb = tb.tb_next
    return None


def remote_text(exc: BaseException) -> str | None:
    """The text of the remote traceback ``exc`` carries, if it came from another host."""
    tail = remote_tail(exc.__traceback__)
    if tail is None:
        return None
    text: Any = tail.tb_frame.f_globals.get(MARKER)
    return text if isinstance(text, str) else None


__all__ = ["MAX_FRAMES", "frames_of", "rebuild", "remote_tail", "remote_text", "with_remote_frames"]
