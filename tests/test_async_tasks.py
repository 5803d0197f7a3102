"""``async def`` task functions: run to completion on the worker, in the task's thread
with a loop of its own; results, errors, map, and the worker stays responsive."""
import asyncio
import traceback

import pytest

import actorrt
from actorrt.worker.task import CoroutineTask, FunctionCache
from actorrt.core import Pickled


async def add_later(x, y=1):
    await asyncio.sleep(0)
    return x + y


async def fails(x):
    await asyncio.sleep(0)
    raise KeyError(x)


async def on_which_thread():
    await asyncio.sleep(0)
    worker_loop = actorrt.get_worker().host.loop
    return asyncio.get_running_loop() is not worker_loop, actorrt.get_worker().address


def test_function_cache_wraps_coroutine_functions_once():
    cache = FunctionCache()
    fn = cache.load(Pickled.dumps(add_later))
    assert isinstance(fn, CoroutineTask) and fn(1, y=2) == 3
    assert cache.load(Pickled.dumps(add_later)) is fn
    assert cache.load(Pickled.dumps(abs)) is abs  # a plain function is left as it is


def test_submit_and_map_run_coroutines(any_client):
    assert any_client.submit(add_later, 1, y=5).result() == 6
    assert any_client.gather(any_client.map(add_later, range(5))) == [1, 2, 3, 4, 5]


def test_coroutine_runs_in_a_task_thread_not_the_worker_loop(client):
    own_loop, address = client.submit(on_which_thread).result()
    assert own_loop
    assert address in client.scheduler_info()["workers"]


def test_coroutine_error_traceback_starts_at_the_coroutine(any_client):
    f = any_client.submit(fails, "k")
    with pytest.raises(KeyError):
        f.result()
    assert [fr.name for fr in traceback.extract_tb(f.traceback())] == ["fails"]


async def blocks_then_returns(event_name):
    # A coroutine that blocks (by mistake, or on purpose) holds its own thread only.
    actorrt.Event(event_name).wait(10)
    return "done"


def test_blocking_coroutine_leaves_the_worker_responsive(client):
    f = client.submit(blocks_then_returns, "async-gate")
    # The worker still runs other tasks and answers the scheduler meanwhile.
    assert client.submit(add_later, 1).result() == 2
    actorrt.Event("async-gate").set()
    assert f.result() == "done"
