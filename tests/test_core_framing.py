"""The frame decoder on its own: bytes in, messages out, however the stream is cut."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorrt.core.framing import (
    LARGE_FRAME_BYTES,
    MMAP_MIN_BYTES,
    STAGE_BYTES,
    FrameDecoder,
    encode_header,
)

# Sizes at every boundary the decoder has: empty, tiny, around the large-frame
# threshold, around the staging buffer, around the switch to memory maps.
EDGES = [0, 1, 7, LARGE_FRAME_BYTES - 1, LARGE_FRAME_BYTES, LARGE_FRAME_BYTES + 1,
         STAGE_BYTES - 1, STAGE_BYTES, STAGE_BYTES + 1, MMAP_MIN_BYTES - 1, MMAP_MIN_BYTES + 3]


def frame(size: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(min(size, 256))) * (size // 256) + bytes(size % 256)


def wire(messages: list[list[bytes]]) -> bytes:
    return b"".join(encode_header([len(f) for f in m]) + b"".join(m) for m in messages)


def feed(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[list[bytes]]:
    """Push ``data`` through ``decoder`` as a socket would, at most ``cut`` bytes a read."""
    out: list[list[bytes]] = []
    pos, i = 0, 0
    while pos < len(data):
        buf = decoder.get_buffer()
        assert len(buf) > 0, "the decoder must always offer room"
        n = min(len(buf), cuts[i % len(cuts)], len(data) - pos)
        buf[:n] = data[pos:pos + n]
        buf.release()
        decoder.buffer_updated(n)
        pos += n
        i += 1
        while (msg := decoder.next_message()) is not None:
            out.append([bytes(f) for f in msg])
    return out


@pytest.mark.parametrize("size", EDGES)
@pytest.mark.parametrize("cut", [7, 4093, 1 << 22])
def test_one_frame_of_each_edge_size_arrives_intact(size, cut):
    msg = [b"envelope", frame(size, 3)]
    assert feed(FrameDecoder(), wire([msg, [b"next"]]), [cut]) == [msg, [b"next"]]


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.lists(st.sampled_from(EDGES[:9]), min_size=1, max_size=5), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 300_000), min_size=1, max_size=8))
def test_any_cutting_of_any_stream_gives_back_the_messages(messages, cuts):
    msgs = [[frame(size, i + j) for j, size in enumerate(m)] for i, m in enumerate(messages)]
    decoder = FrameDecoder()
    assert feed(decoder, wire(msgs), cuts) == msgs
    assert not decoder.in_message


def test_frames_are_writable_buffers():
    decoder = FrameDecoder()
    data = wire([[b"small", bytes(LARGE_FRAME_BYTES), bytes(MMAP_MIN_BYTES)]])
    buf = decoder.get_buffer()
    n = min(len(buf), len(data))
    buf[:n] = data[:n]
    decoder.buffer_updated(n)
    rest = data[n:]
    frames = decoder.next_message()
    while frames is None:
        buf = decoder.get_buffer()
        k = min(len(buf), len(rest))
        buf[:k] = rest[:k]
        decoder.buffer_updated(k)
        rest = rest[k:]
        frames = decoder.next_message()
    for f in frames:
        view = memoryview(f)
        assert not view.readonly
        if view.nbytes:
            view[0] = 1


def test_a_large_frame_is_received_straight_into_its_own_buffer():
    decoder = FrameDecoder()
    size = MMAP_MIN_BYTES * 2
    head = encode_header([size])
    feed(decoder, head, [len(head)])
    target = decoder.get_buffer()
    assert len(target) == size  # the whole frame's memory is offered to recv_into at once
    target.release()


def test_partial_message_is_reported_for_truncation_logs():
    decoder = FrameDecoder()
    assert not decoder.in_message
    feed(decoder, wire([[b"abcdef"]])[:-2], [100])
    assert decoder.in_message


@pytest.mark.parametrize("data,error", [
    (encode_header([]), "bad frame count 0"),
    (b"\x00\x01\x00\x01" + bytes(8), "bad frame count 65537"),
    (encode_header([5000]), "frame of 5000 bytes exceeds the limit of 4096 (max_frame_bytes)"),
])
def test_malformed_headers_are_refused_by_name(data, error):
    decoder = FrameDecoder(max_frame_bytes=4096)
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        feed(decoder, data, [len(data)])


def test_limits_can_change_between_two_messages():
    # The handshake admits one small frame; the next message, already in the same
    # read, is judged by the limits set after the handshake.
    decoder = FrameDecoder(max_frame_bytes=16, max_frames=1)
    data = wire([[b"hello"], [b"x" * 100, b"y"]])
    buf = decoder.get_buffer()
    buf[:len(data)] = data
    buf.release()
    decoder.buffer_updated(len(data))
    assert [bytes(f) for f in decoder.next_message()] == [b"hello"]
    decoder.max_frame_bytes, decoder.max_frames = 1 << 20, 8
    assert [bytes(f) for f in decoder.next_message()] == [b"x" * 100, b"y"]
