"""actorrt.core.serialize: Pickled payloads and the msgpack envelope."""
import traceback
import pickle
import threading

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorrt.core import ActorRef, Pickled, SerializationError
from actorrt.core.serialize import (
    EXT_PICKLE, EXT_PICKLE_AGAIN, EXT_REF, OOB_MIN_BYTES, RemoteTraceback, dumps_exception, loads_exception, remote_traceback_text,
    pack_frames, unpack_frames,
)

BIG = OOB_MIN_BYTES


def roundtrip_frames(messages):
    """Through the wire encoding, with frames copied as the transport delivers them."""
    frames = pack_frames(messages, ActorRef)
    return unpack_frames([bytearray(memoryview(f).cast("B")) for f in frames], ActorRef)


# --- Pickled -------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    None, 1, 2.5, "text", b"bytes", (1, "a"), [1, [2, [3]]], {"k": {1, 2}},
    ValueError("boom"), range(3), complex(1, 2),
])
def test_pickled_roundtrip(obj):
    p = Pickled.dumps(obj)
    assert p.loads() == obj if not isinstance(obj, Exception) else repr(p.loads()) == repr(obj)
    assert not p.buffers
    assert p.nbytes == len(p.header)


def test_pickled_roundtrip_closure_and_lambda():
    k = 10
    p = Pickled.dumps(lambda x: x + k)
    assert p.loads()(1) == 11


def test_pickled_equality_and_hash():
    a, b = Pickled.dumps((1, 2)), Pickled.dumps((1, 2))
    assert a == b and hash(a) == hash(b)
    assert a != Pickled.dumps((1, 3))
    assert a != (1, 2)
    assert "Pickled" in repr(a)


@pytest.mark.parametrize("make", [
    lambda: bytes(range(256)) * (BIG // 256 + 1),
    lambda: bytearray(b"x" * (BIG + 7)),
    lambda: np.arange(BIG // 8 + 3, dtype=np.float64),
], ids=["bytes", "bytearray", "numpy"])
def test_large_buffer_travels_out_of_band(make):
    obj = make()
    p = Pickled.dumps(obj)
    nbytes = memoryview(obj).nbytes
    # One separate buffer, and the header holds no copy of the data.
    assert len(p.buffers) == 1
    assert memoryview(p.buffers[0]).nbytes == nbytes
    assert len(p.header) < 1024
    # Not copied on the sending side either: the buffer is the object's own memory.
    if isinstance(obj, bytes):
        assert p.buffers[0] is obj
    else:
        obj[0] = 42  # visible through the buffer: it was not copied
        assert bytes(memoryview(p.buffers[0])[:8]) == bytes(memoryview(obj).cast("B")[:8])
    out = p.loads()
    assert type(out) is type(obj)
    if isinstance(obj, np.ndarray):
        np.testing.assert_array_equal(out, obj)
    else:
        assert out == obj


def test_large_buffers_nested_in_task_arguments_travel_out_of_band():
    data, arr = b"d" * BIG, np.ones(BIG // 8)
    args = ((data, arr), {"blob": bytearray(BIG), "small": b"s"})
    p = Pickled.dumps(args)
    assert len(p.buffers) == 3
    assert len(p.header) < 2048
    (d2, a2), kw = p.loads()
    assert d2 == data and type(kw["blob"]) is bytearray and len(kw["blob"]) == BIG
    np.testing.assert_array_equal(a2, arr)
    assert kw["small"] == b"s"


def test_shared_large_bytearray_keeps_identity():
    b = bytearray(BIG)
    p = Pickled.dumps([b, b])
    assert len(p.buffers) == 1
    x, y = p.loads()
    assert x is y and x is not b


def test_small_buffers_stay_in_band():
    p = Pickled.dumps((b"x" * 100, np.arange(10)))
    assert not p.buffers


def test_out_of_band_through_the_envelope_is_not_copied_into_frame_zero():
    arr = np.arange(BIG, dtype=np.uint8)
    p = Pickled.dumps({"a": arr, "b": b"z" * BIG})
    frames = pack_frames([["actor", "op", 1, {"payload": p}]], ActorRef)
    assert len(frames) == 3
    assert len(frames[0]) < 1024
    [[_, _, _, fields]] = unpack_frames([bytearray(f) for f in frames], ActorRef)
    out = fields["payload"].loads()
    np.testing.assert_array_equal(out["a"], arr)
    assert out["b"] == b"z" * BIG
    # Frames arrive in writable memory: a received array can be updated in place.
    out["a"][0] = 7


class Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __repr__(self):
        return "<Unpicklable thing>"


def test_unpicklable_raises_serialization_error_naming_object():
    with pytest.raises(SerializationError) as info:
        Pickled.dumps(Unpicklable(), what="task result")
    msg = str(info.value)
    assert "task result" in msg and "<Unpicklable thing>" in msg and "lock" in msg
    assert isinstance(info.value, TypeError)


def test_unpicklable_with_large_bytes_raises_serialization_error():
    with pytest.raises(SerializationError):
        Pickled.dumps((b"x" * BIG, Unpicklable()))


# --- exceptions ----------------------------------------------------------------


class CustomError(Exception):
    pass


def failing_user_function():
    raise CustomError("the message")


def test_exception_roundtrip_keeps_type_message_and_remote_traceback():
    try:
        failing_user_function()
    except CustomError as e:
        blob, tb = dumps_exception(e)
    exc = loads_exception(blob, tb)
    assert type(exc) is CustomError
    assert str(exc) == "the message"
    # The remote frames are the exception's own traceback (not a chained text cause).
    assert exc.__cause__ is None
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames[-1].name == "failing_user_function"
    assert frames[-1].line == 'raise CustomError("the message")'  # this file exists here: its source shows
    assert 'raise CustomError("the message")' in remote_traceback_text(exc)
    assert tb == remote_traceback_text(exc)


def test_exception_without_frames_gets_the_text_as_cause():
    # A blob of a bare exception (made by an older peer, or by hand) has no frames to
    # rebuild: the text travels as the cause, as before.
    exc = loads_exception(Pickled.dumps(CustomError("m")), "remote text")
    assert isinstance(exc.__cause__, RemoteTraceback) and exc.__cause__.tb == "remote text"


def _refuse_to_load(*args):
    raise TypeError("this exception cannot be rebuilt")


def test_exception_that_cannot_be_unpickled_becomes_runtime_error():
    # Defined here, not at module level: importing dask (tblib) registers every exception
    # class existing at that moment with copyreg, which would make this one loadable.
    class Unloadable(Exception):
        """Pickles, but cannot be loaded again."""

        def __init__(self, a, b):
            super().__init__(f"{a}-{b}")

        def __reduce_ex__(self, protocol):
            return _refuse_to_load, (str(self),)

    blob, tb = dumps_exception(Unloadable(1, 2))
    exc = loads_exception(blob, tb)
    assert type(exc) is RuntimeError
    assert "Unloadable" in str(exc) and "1-2" in str(exc)


def test_exception_with_unpicklable_attribute_never_fails():
    e = ValueError("x")
    e.lock = threading.Lock()
    blob, tb = dumps_exception(e)
    exc = loads_exception(blob, tb)
    assert "ValueError" in str(exc) or type(exc) is ValueError


def test_loads_exception_of_a_non_exception_is_an_error():
    exc = loads_exception(Pickled.dumps(42), None)
    assert isinstance(exc, TypeError)


# --- envelope ------------------------------------------------------------------


def test_envelope_with_refs_and_pickles_in_nested_fields():
    ref = ActorRef("tcp://127.0.0.1:1", "worker-1")
    p1, p2 = Pickled.dumps(lambda: 1), Pickled.dumps(np.zeros(BIG))
    msgs = [
        ["worker-1", "compute", 7, {"who": ref, "deps": [{"ref": ref, "fn": p1}], "data": {"x": [p2]}}],
        ["", "_reply", 7, {"value": {"refs": [ref, ref], "n": None}}],
        ["a", "b", 0, {"s": {3}, "t": (1, 2), "raw": b"\x00\xff"}],
    ]
    out = roundtrip_frames(msgs)
    m0, m1, m2 = out
    f = m0[3]
    assert f["who"] == ref and type(f["who"]) is ActorRef
    assert f["deps"][0]["ref"] == ref
    assert f["deps"][0]["fn"].loads()() == 1
    assert f["deps"][0]["fn"] == p1
    np.testing.assert_array_equal(f["data"]["x"][0].loads(), np.zeros(BIG))
    assert m1 == ["", "_reply", 7, {"value": {"refs": [ref, ref], "n": None}}]
    assert m2[3] == {"s": [3], "t": [1, 2], "raw": b"\x00\xff"}


def test_envelope_refuses_arbitrary_objects():
    with pytest.raises(TypeError, match="object"):
        pack_frames([["a", "op", 0, {"x": object()}]], ActorRef)



def test_an_envelope_refused_leaves_nothing_behind_for_the_next():
    """A thread keeps its packers between messages: a refused one must not leak its
    half-packed bytes, its buffers or its pickles' places into the next."""
    big = Pickled.dumps(bytearray(BIG))
    with pytest.raises(TypeError, match="object"):
        pack_frames([["a", "op", 0, {"v": big, "x": object()}]], ActorRef)
    small = Pickled.dumps(7)
    frames = pack_frames([["a", "op", 1, {"v": small}]], ActorRef)
    assert len(frames) == 1  # big's buffer is not carried over
    [[_, _, rid, fields]] = unpack_frames([bytearray(f) for f in frames], ActorRef)
    assert rid == 1 and fields["v"].loads() == 7



def test_a_thread_keeps_no_large_packer_buffer_after_a_large_envelope():
    """A packer's buffer grows to the largest envelope it packed and never shrinks: the
    thread's packer that packed a large one is replaced, one that packed a small one kept."""
    from actorrt.core import serialize

    pack_frames([["a", "op", 0, {"v": Pickled.dumps(1)}]], ActorRef)
    outer, inner = serialize._packers.outer, serialize._packers.inner
    pack_frames([["a", "op", 1, {"v": Pickled.dumps(2)}]], ActorRef)
    assert (serialize._packers.outer, serialize._packers.inner) == (outer, inner)
    big_text = "x" * (2 * serialize.KEEP_PACKER_BYTES)
    frames = pack_frames([["a", "op", 2, {"text": big_text}]], ActorRef)
    assert serialize._packers.outer is not outer
    [[_, _, _, fields]] = unpack_frames([bytearray(f) for f in frames], ActorRef)
    assert fields["text"] == big_text
    in_band = Pickled.dumps("y" * (2 * serialize.KEEP_PACKER_BYTES))  # (a str pickles in band)
    assert not in_band.buffers
    pack_frames([["a", "op", 3, {"v": in_band}]], ActorRef)
    assert serialize._packers.inner is not inner


def test_threads_packing_at_once_get_their_own_envelopes():
    """Threads frame their own messages (Comm.frame_for_thread): each packs with its
    own packers, so envelopes made at the same time never mix."""
    n_threads, n_each = 8, 300
    start = threading.Barrier(n_threads)
    wrong: list = []

    def pack_many(t: int) -> None:
        start.wait()
        for i in range(n_each):
            value = Pickled.dumps((t, i))
            ref = ActorRef(f"tcp://10.0.0.{t}:1", f"a{i}")
            frames = pack_frames([[ref, "op", i, {"v": value, "again": value}]], ActorRef)
            [[got_ref, _, rid, fields]] = unpack_frames([bytearray(f) for f in frames], ActorRef)
            if (got_ref, rid, fields["v"].loads()) != (ref, i, (t, i)) or fields["again"] is not fields["v"]:
                wrong.append((t, i))

    threads = [threading.Thread(target=pack_many, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text() | st.integers(-100, 100), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(msgpack_values, st.integers(0, 2**32))
def test_envelope_roundtrip_property(value, rid):
    msgs = [["dest", "op", rid, {"v": value}], ["", "_reply", rid, {"value": value}]]
    assert roundtrip_frames(msgs) == msgs


@settings(max_examples=50, deadline=None)
@given(msgpack_values)
def test_pickled_roundtrip_property(value):
    assert Pickled.dumps(value).loads() == value


@pytest.mark.parametrize("frames", [
    [],
    [b"\xc1"],                                            # never-used msgpack byte
    [b"\x92\x01"],                                        # truncated array
    [msgpack.packb({"not": "a list"})],
    [msgpack.packb([msgpack.ExtType(99, b"")])],           # unknown extension
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, b"\x01")])],  # not (header, start, n)
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 1, 1]))])],  # missing frame
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 0, 1]))]), b""],  # frame 0
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 1, -1]))])],
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb(["h", "1", 0]))])],
    [msgpack.packb([msgpack.ExtType(EXT_REF, msgpack.packb(["only-address"]))])],
    [msgpack.packb([msgpack.ExtType(EXT_REF, msgpack.packb(5))])],
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE_AGAIN, msgpack.packb(0))])],  # none before it
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 1, 0])),
                    msgpack.ExtType(EXT_PICKLE_AGAIN, msgpack.packb(1))])],     # past the last
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 1, 0])),
                    msgpack.ExtType(EXT_PICKLE_AGAIN, msgpack.packb(-1))])],
    [msgpack.packb([msgpack.ExtType(EXT_PICKLE, msgpack.packb([b"h", 1, 0])),
                    msgpack.ExtType(EXT_PICKLE_AGAIN, msgpack.packb("0"))])],
])
def test_malformed_envelope_raises_value_error(frames):
    with pytest.raises(ValueError):
        unpack_frames(frames, ActorRef)


def test_a_pickle_repeated_in_an_envelope_travels_once_and_arrives_as_one_object():
    function = Pickled.dumps(lambda x: x + 1)  # by value: hundreds of bytes
    tasks = [[f"k{i}", [function, Pickled.dumps((i,))]] for i in range(100)]
    once = len(pack_frames([tasks[:1]], ActorRef)[0])
    frame = pack_frames([tasks], ActorRef)[0]
    assert len(frame) < once + 99 * (len(function.header) // 2)
    [decoded] = roundtrip_frames([tasks])
    assert all(spec[0] is decoded[0][1][0] for _, spec in decoded)
    assert [spec[1].loads() for _, spec in decoded] == [(i,) for i in range(100)]
    assert decoded[57][1][0].loads()(41) == 42


def test_a_repeated_pickle_carries_its_buffers_once_and_places_stay_in_order():
    big = Pickled.dumps(bytearray(BIG))
    small = [Pickled.dumps(i) for i in range(3)]
    messages = [[big, small[0], big], {"a": small[1], "b": big}, [small[2], small[0]]]
    frames = pack_frames(messages, ActorRef)
    assert len(frames) == 2  # frame zero and big's one buffer
    [first, mapping, last] = unpack_frames([bytearray(f) for f in frames], ActorRef)
    assert first[0] is first[2] is mapping["b"] and first[1] is last[1]
    assert [first[1].loads(), mapping["a"].loads(), last[0].loads()] == [0, 1, 2]
    assert first[0].loads() == bytearray(BIG)


def test_pickle_inside_envelope_is_not_loaded_by_decoding(tmp_path):
    flag = tmp_path / "loaded"
    evil = Pickled(pickle.dumps(Touch(flag)))
    [[_, _, _, fields]] = roundtrip_frames([["a", "op", 0, {"x": evil}]])
    assert isinstance(fields["x"], Pickled)
    assert not flag.exists()
    fields["x"].loads()  # control: loading it is what would run it
    assert flag.exists()


class Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


# --- the plain-value fast path (builtin scalars and small containers of them) ----


@pytest.mark.parametrize("obj", [
    0, -2**70, 1.5, "héllo", True, None, ((1, "a"), {}), ((1, 2.0), {"k": None, "z": False}),
    [1, [2, "x"]], {"a": {"b": 1}}, (), {},
])
def test_plain_values_pickle_as_cloudpickle_does(obj):
    import cloudpickle
    blob = Pickled.dumps(obj)
    # Byte-identical: pure task keys hash these bytes and must not depend on the path.
    assert blob.header == cloudpickle.dumps(obj, protocol=5)
    assert not blob.buffers
    assert blob.loads() == obj


def test_plain_fast_path_leaves_subclasses_and_deep_values_to_cloudpickle():
    import enum

    class Colour(enum.IntEnum):  # local class: only cloudpickle can carry it by value
        RED = 1

    assert Pickled.dumps(((Colour.RED,), {})).loads() == ((Colour.RED,), {})
    deep = [[[[1]]]]
    assert Pickled.dumps(deep).loads() == deep
