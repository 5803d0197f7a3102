"""Remote tracebacks: a failed task's exception carries the remote frames as a real
traceback (user frames, not the runtime's), and ``Future.traceback()`` returns it."""
import pdb
import sys
import traceback

import pytest

import actorrt
from actorrt.core.serialize import dumps_exception, loads_exception, remote_traceback_text
from actorrt.core.tracebacks import MAX_FRAMES, frames_of, rebuild, remote_tail


def inner(x):
    raise ValueError(f"bad {x}")


def outer(x):
    return inner(x)


def recurse(n):
    return recurse(n + 1)


class Fails:
    def fail(self):
        return inner("actor")


def runtime_frames(tb):
    """Frames of actorrt's package in a traceback."""
    return [f for f in traceback.extract_tb(tb) if "/actorrt/" in f.filename]


def test_rebuild_makes_a_traceback_object_with_the_frames():
    tb = rebuild([(__file__, 15, "inner"), ("nowhere.py", 3, "gone")], "text")
    frames = traceback.extract_tb(tb)
    assert [(f.name, f.lineno) for f in frames] == [("inner", 15), ("gone", 3)]
    assert frames[0].line == 'raise ValueError(f"bad {x}")'  # the source, where the file is here
    assert remote_tail(tb) is tb
    assert rebuild([], "text") is None
    assert rebuild([("f.py", "x", "bad")], "text") is None  # a malformed entry is left out


def test_exception_round_trip_keeps_frames_and_text():
    try:
        outer(1)
    except ValueError as e:
        blob, text = dumps_exception(e)
    exc = loads_exception(blob, text)
    assert [f.name for f in traceback.extract_tb(exc.__traceback__)][-2:] == ["outer", "inner"]
    assert exc.__cause__ is None and remote_traceback_text(exc) == text
    assert "in inner" in "".join(traceback.format_exception(exc))


def test_deep_recursion_sends_the_innermost_frames_only():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        recurse(0)
    except RecursionError as e:
        error = e
    finally:
        sys.setrecursionlimit(limit)  # (pickling it needs the stack depth back)
    assert len(frames_of(error.__traceback__)) == MAX_FRAMES
    exc = loads_exception(*dumps_exception(error))
    assert type(exc) is RecursionError
    assert len(traceback.extract_tb(exc.__traceback__)) == MAX_FRAMES


def test_result_and_gather_raise_with_user_frames_first(any_client):
    f = any_client.submit(outer, 3)
    for get in (f.result, lambda: any_client.gather([f])):
        with pytest.raises(ValueError, match="bad 3") as info:
            get()
        frames = traceback.extract_tb(info.value.__traceback__)
        names = [fr.name for fr in frames]
        assert names[-2:] == ["outer", "inner"]
        assert len(runtime_frames(info.value.__traceback__)) <= 2  # dask shows 1-3
        assert info.value.__cause__ is None  # no second copy of the traceback as text


def test_future_traceback_is_a_traceback_object(any_client):
    f = any_client.submit(outer, 4)
    tb = f.traceback()
    assert [fr.name for fr in traceback.extract_tb(tb)] == ["outer", "inner"]
    assert "inner" in "".join(traceback.format_tb(tb))
    assert any_client.submit(abs, -1).traceback() is None


def test_story_keeps_the_text(client):
    f = client.submit(outer, 5)
    f.exception()
    state = client.cluster.scheduler.state.tasks[f.key]
    assert "in inner" in state.traceback


def test_actor_future_traceback(any_client):
    actor = any_client.submit(Fails, actor=True).result()
    call = actor.fail()
    with pytest.raises(ValueError) as info:
        call.result()
    assert [fr.name for fr in traceback.extract_tb(call.traceback())][-2:] == ["fail", "inner"]
    # Raised again, it does not collect a second copy of the frames.
    with pytest.raises(ValueError) as again:
        call.result()
    assert len(traceback.extract_tb(again.value.__traceback__)) == len(
        traceback.extract_tb(info.value.__traceback__))


def test_pdb_post_mortem_walks_the_remote_frames(client, monkeypatch):
    tb = client.submit(outer, 6).traceback()
    seen = []
    debugger = pdb.Pdb()
    monkeypatch.setattr(debugger, "interaction", lambda frame, t: seen.extend(
        f.name for f in traceback.extract_tb(t)))
    debugger.reset()
    debugger.interaction(None, tb)
    assert seen == ["outer", "inner"]


def test_error_in_nested_task_keeps_both_tasks_frames(client):
    def parent(x):
        return actorrt.get_client().submit(outer, x).result()

    with pytest.raises(ValueError) as info:
        client.submit(parent, 7).result()
    names = [fr.name for fr in traceback.extract_tb(info.value.__traceback__)]
    assert "parent" in names and names[-2:] == ["outer", "inner"]


def test_deep_traceback_pickles_where_tblib_makes_tracebacks_picklable():
    # dask.distributed installs tblib's exception pickling process-wide; our frames still
    # travel as data, so a deep traceback does not make the exception unpicklable.
    import tblib.pickling_support  # (a test dependency: a missing one fails, never skips)
    tblib.pickling_support.install()
    test_deep_recursion_sends_the_innermost_frames_only()
