"""Common Python types keep their type and value through scatter, as task arguments and
as results, with worker processes (docs/api.md): namedtuples, dataclasses, enums, the
collections types, sets, bytes-likes, numpy scalars."""
import collections
import dataclasses
import enum
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from actorrt.core import Pickled

Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Box:
    size: int
    items: list


class Color(enum.Enum):
    RED = 1
    BLUE = 2


VALUES = {
    "namedtuple": Point(1, 2),
    "dataclass": Box(3, ["a"]),
    "enum": Color.BLUE,
    "ordereddict": collections.OrderedDict([("b", 1), ("a", 2)]),
    "defaultdict": collections.defaultdict(list, {"a": [1]}),
    "counter": collections.Counter("hello"),
    "set": {1, 2, 3},
    "frozenset": frozenset({"x"}),
    "bytes": b"ab",
    "bytearray": bytearray(b"cd"),
    "memoryview": memoryview(b"xyz"),
    "large bytearray": bytearray(b"x" * 100_000),
    "large memoryview": memoryview(b"y" * 100_000),
    "float32": np.float32(1.5),
    "int64": np.int64(7),
    "bool_": np.bool_(True),
    "nested": [{"p": Point(1, 2)}, (Color.RED, frozenset({1}))],
}


def identity(x):
    return x


def make(name):
    return VALUES[name]


def same(a, b):
    if isinstance(a, memoryview):
        return type(b) is memoryview and a.tobytes() == b.tobytes() and a.format == b.format
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, collections.defaultdict):
        return a.default_factory is b.default_factory
    if isinstance(a, collections.OrderedDict):
        return list(a) == list(b)
    return True


@pytest.mark.parametrize("name", list(VALUES))
def test_serialization_keeps_type(name):
    value = VALUES[name]
    assert same(value, Pickled.dumps(value).loads())


def test_memoryview_keeps_format_and_shape():
    mv = memoryview(np.arange(6, dtype="i4").reshape(2, 3))
    back = Pickled.dumps(mv).loads()
    assert (back.format, back.shape, back.tobytes()) == ("i", (2, 3), mv.tobytes())


@pytest.mark.parametrize("name", list(VALUES))
def test_argument_result_and_scatter_keep_type(pclient, name):
    value = VALUES[name]
    assert same(value, pclient.submit(identity, value, pure=False).result())  # argument and result
    assert same(value, pclient.submit(make, name, pure=False).result())       # made there
    assert same(value, pclient.gather(pclient.scatter(value)))                 # scattered, gathered
    assert same(value, pclient.submit(identity, pclient.scatter(value)).result())  # scattered, used


def test_scatter_splits_plain_collections_and_namedtuples_only(pclient):
    # As dask: exact dict/list/tuple/set/frozenset and namedtuples are scattered item by
    # item and come back in their own shape; their subclasses are one value.
    futures = pclient.scatter(Point(1, 2))
    assert type(futures) is Point and pclient.gather(list(futures)) == [1, 2]
    assert isinstance(pclient.scatter({1, 2}), set)
    one = pclient.scatter(collections.OrderedDict(a=1))
    assert type(pclient.gather(one)) is collections.OrderedDict
    assert pclient.gather(pclient.scatter(range(3))) == [0, 1, 2]


MAIN_SCRIPT = textwrap.dedent("""
    import collections, dataclasses, enum
    import actorrt

    Pair = collections.namedtuple("Pair", "a b")

    @dataclasses.dataclass
    class Cell:
        v: int

    class Mode(enum.Enum):
        ON = "on"

    def identity(x):
        return x

    def make():
        return [Pair(1, 2), Cell(3), Mode.ON]

    if __name__ == "__main__":
        with actorrt.Client(n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
            values = [Pair(1, 2), Cell(3), Mode.ON]
            assert c.submit(identity, values).result() == values
            assert c.submit(make).result() == values
            assert type(c.scatter(Pair(5, 6))) is Pair
            assert c.submit(identity, c.scatter([Cell(4)])[0]).result() == Cell(4)
            print("ok")
""")


def test_types_defined_in_main_round_trip(tmp_path):
    script = tmp_path / "main_types.py"
    script.write_text(MAIN_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
