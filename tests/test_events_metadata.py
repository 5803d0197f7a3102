"""Events (log_event, get_events, subscribe_topic), metadata, and actorrt.print/warn
forwarded from tasks to the clients' consoles."""
import asyncio
import threading
import warnings

import pytest

import actorrt
from actorrt.core import Pickled
from actorrt.scheduler.events import EventLog
from actorrt.scheduler.metadata import MetadataStore
from actorrt.testing import gen_cluster, wait_until


# --- the pure parts ------------------------------------------------------------------
def test_event_log_keeps_events_in_order_per_topic():
    log = EventLog()
    log.add("a", 1, timestamp=10.0)
    log.add("b", 2, timestamp=11.0)
    log.add("a", 3, timestamp=12.0)
    assert log.events("a") == [(10.0, 1), (12.0, 3)]
    assert log.events() == {"a": [(10.0, 1), (12.0, 3)], "b": [(11.0, 2)]}
    assert log.events("missing") == []


def test_event_log_is_bounded_per_topic_in_total_and_in_bytes():
    log = EventLog(per_topic=4, total=5, max_bytes=10**9)
    for i in range(10):
        log.add("a", i)
    assert [m for _, m in log.events("a")] == [6, 7, 8, 9]
    for i in range(4):
        log.add("b", i)
    # five in all: the oldest of all went first, whatever their topic
    assert log.count == 5 and [m for _, m in log.events("a")] == [9]
    assert [m for _, m in log.events("b")] == [0, 1, 2, 3]
    big = EventLog(per_topic=100, total=100, max_bytes=250_000)
    for _ in range(10):
        big.add("x", Pickled.dumps(b"x" * 100_000))
    assert big.count == 2 and big.nbytes <= 250_000
    # A peer's plain message counts its size too, not a flat guess.
    plain = EventLog(per_topic=100, total=100, max_bytes=250_000)
    for _ in range(10):
        plain.add("x", {"blob": "x" * 100_000})
    assert plain.count == 2 and plain.nbytes <= 250_000
    nested = EventLog(per_topic=100, total=100, max_bytes=250_000)  # (a peer's pickle inside a list)
    for _ in range(10):
        nested.add("x", [Pickled.dumps(b"x" * 100_000)])
    assert nested.count == 2 and nested.nbytes <= 250_000


@pytest.mark.parametrize("msg, plain", [
    ({"step": 1, "of": [1.5, "two", None, True, b"raw"]}, True),
    ("text", True), (2**63, True), (2**64, False), (-2**63 - 1, False),
    (("a", "tuple"), False), ({1: "int key"}, False), ({1, 2}, False), (object, False),
    ("x" * 5000, False), ("\udc80 lone surrogate", False),
    ([[[[[[[[["deep"]]]]]]]]], False),
])
def test_an_event_travels_as_itself_only_when_msgpack_brings_it_back_exactly(msg, plain):
    from actorrt.protocol import event_message
    sent = event_message(msg)
    assert (type(sent) is not Pickled) is plain
    assert (sent if plain else sent.loads()) == msg or msg is object


def test_event_log_order_queue_stays_bounded():
    # A topic trimmed by its own bound leaves stale entries in the global order: compacted.
    log = EventLog(per_topic=2, total=10)
    for i in range(1000):
        log.add("a", i)
    assert len(log._order) <= 2 * log.total and log.count == 2


def test_event_log_rejects_bad_bounds():
    with pytest.raises(ValueError, match="per_topic"):
        EventLog(per_topic=0)


def test_event_log_subscribers():
    log = EventLog()
    log.subscribe("t", "c1", "ref1")
    log.subscribe("t", "c2", "ref2")
    assert sorted(log.add("t", 1)[1]) == ["ref1", "ref2"]
    log.unsubscribe("t", "c1")
    log.forget_client("c2")
    assert log.add("t", 2)[1] == [] and log.subscribers == {}


def test_metadata_store_nested_paths():
    store = MetadataStore()
    store.set(["a", "b"], 1)
    store.set(["a", "c"], 2)
    assert store.get(["a"]) == {"b": 1, "c": 2} and store.get(["a", "b"]) == 1
    store.set(["a", "b", "d"], 3)  # a value in the way becomes a dict
    assert store.get(["a", "b"]) == {"d": 3}
    with pytest.raises(KeyError):
        store.get(["a", "zz"])
    with pytest.raises(KeyError):
        store.get(["a", "c", "deeper"])


# --- through a cluster ----------------------------------------------------------------
def log_from_task(x):
    actorrt.get_worker().log_event("from-task", {"x": x})
    actorrt.get_client().log_event(["from-task", "other"], ("client", x))
    return x


def test_log_and_get_events(any_client):
    topic = f"t-{id(any_client)}-{threading.get_ident()}"
    any_client.log_event(topic, {"n": 1})
    any_client.log_event(topic, {1, 2})  # any picklable value (dask: msgpack-able only)
    any_client.log_event(topic, ("a", [b"b"]))  # and it comes back as it went
    events = any_client.get_events(topic)
    assert [m for _, m in events] == [{"n": 1}, {1, 2}, ("a", [b"b"])]
    assert type(events[2][1]) is tuple
    assert all(isinstance(t, float) for t, _ in events)
    assert topic in any_client.get_events()
    assert any_client.get_events("never-logged") == ()


def test_tasks_log_events(any_client):
    any_client.submit(log_from_task, 1, pure=False).result()
    wait_until(lambda: len(any_client.get_events("from-task")) >= 2)
    msgs = [m for _, m in any_client.get_events("from-task")]
    assert {"x": 1} in msgs and ("client", 1) in msgs
    assert ("client", 1) in [m for _, m in any_client.get_events("other")]


def test_worker_joins_are_logged(any_client):
    actions = [m["action"] for _, m in any_client.get_events("workers")]
    assert actions.count("add-worker") >= 2


def test_subscribe_and_unsubscribe(client):
    got = []
    client.subscribe_topic("sub", got.append)
    client.submit(log_sub, 1).result()
    client.log_event("sub", "direct")
    wait_until(lambda: len(got) == 2)
    assert sorted(str(m) for _, m in got) == ["direct", "from task 1"]
    client.unsubscribe_topic("sub")
    client.log_event("sub", "unseen")
    client.get_events("sub")  # a round trip after the event: a handler would have had it
    client.sync(_no_op)
    assert len(got) == 2
    with pytest.raises(ValueError, match="no handler"):
        client.unsubscribe_topic("sub")


async def _no_op():
    pass


def log_sub(x):
    actorrt.get_worker().log_event("sub", f"from task {x}")


def test_handler_runs_off_the_loop_and_a_failing_one_is_logged(client, caplog):
    threads = []

    def handler(event):
        threads.append(threading.current_thread())
        raise RuntimeError("handler broke")

    client.subscribe_topic("h", handler)
    client.log_event("h", 1)
    wait_until(lambda: threads and "handler broke" in caplog.text)
    assert threads[0] is not client._loop_runner._thread


@gen_cluster(n_workers=1)
async def test_async_client_awaits_async_handlers(c, cluster):
    got = asyncio.Event()
    seen = []

    async def handler(event):
        await asyncio.sleep(0)
        seen.append(event[1])
        got.set()

    await c.subscribe_topic("async-topic", handler)
    await c.log_event("async-topic", "hi")
    await asyncio.wait_for(got.wait(), 5)
    assert seen == ["hi"]
    await c.set_metadata(["x", "y"], [1, 2])
    assert await c.get_metadata("x") == {"y": [1, 2]}


def test_metadata(any_client):
    any_client.set_metadata(["a", "b"], 1)
    assert any_client.get_metadata("a") == {"b": 1}
    assert any_client.get_metadata(["a", "b"]) == 1
    any_client.set_metadata("tuple", (1, "x"))  # kept as a tuple (pickled)
    assert any_client.get_metadata("tuple") == (1, "x")
    any_client.set_metadata("d", {"inner": {"deep": frozenset({1})}})
    assert any_client.get_metadata(["d", "inner", "deep"]) == frozenset({1})
    with pytest.raises(KeyError):
        any_client.get_metadata("absent")
    assert any_client.get_metadata(["a", "nope"], default=None) is None


def test_bad_arguments_name_the_parameter(client):
    with pytest.raises(TypeError, match="topic"):
        client.log_event(5, "x")
    with pytest.raises(ValueError, match="topic"):
        client.log_event("", "x")
    with pytest.raises(TypeError, match="topic"):
        client.get_events(["a"])
    with pytest.raises(TypeError, match="handler"):
        client.subscribe_topic("t", None)
    with pytest.raises(TypeError, match="key"):
        client.set_metadata([], 1)
    with pytest.raises(TypeError, match="key"):
        client.get_metadata(5)
    with pytest.raises(TypeError, match="topic"):  # from a task, through the worker
        client.submit(_log_bad_topic).result()


def _log_bad_topic():
    actorrt.get_worker().log_event(5, "x")


# --- print and warn --------------------------------------------------------------------
def prints(x):
    actorrt.print("task says", x, sep="|")
    actorrt.print("to stderr", file=__import__("sys").stderr)
    return x


def warns(x):
    actorrt.warn(f"careful {x}", RuntimeWarning)
    return x


def test_print_outside_a_task_prints_here(capsys):
    actorrt.print("plain", 1)
    assert capsys.readouterr().out == "plain 1\n"
    with pytest.warns(UserWarning, match="local"):
        actorrt.warn("local")


def test_print_in_a_task_reaches_the_client(pclient, capsys):
    # capsys, not capfd: the worker processes print to the same file descriptors, each
    # at its own file offset, and would overwrite the client's lines in capfd's file.
    pclient.submit(prints, 7, pure=False).result()

    def seen():
        out, err = capsys.readouterr()
        seen.out += out
        seen.err += err
        return "task says|7" in seen.out and "to stderr" in seen.err
    seen.out = seen.err = ""
    wait_until(seen)


def test_warn_in_a_task_warns_on_the_client(pclient):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pclient.submit(warns, 8, pure=False).result()
        wait_until(lambda: any("careful 8" in str(w.message) for w in caught))
    [w] = [w for w in caught if "careful 8" in str(w.message)]
    assert w.category is RuntimeWarning


def test_print_to_another_file_in_a_task_is_refused(client):
    def bad():
        import io
        actorrt.print("x", file=io.StringIO())

    with pytest.raises(TypeError, match="file"):
        client.submit(bad).result()
