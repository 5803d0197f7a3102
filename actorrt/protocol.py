"""The runtime's own wire: well-known actor ids, holder names, and the typed records the
scheduler, the workers and the clients exchange, with their checks at the edge.

Each record is a NamedTuple. On the wire it is a msgpack array of fixed length (no
optional tails): compact, and decoded back into the record after its checks, so code
past the edge reads fields by name and never guesses what a position means. (Between
hosts in one process nothing is serialized: the record itself arrives, and is checked
the same way.)

Every decoder checks a whole message before anything is applied and raises a
:class:`~actorrt.core.errors.BadMessageError` naming the op, the field and the item,
so a message is applied entirely or not at all. They run once per task on the hot
paths: each check is a ``type(x) is T`` test; the precise explanation is worked out
only once something is wrong.

>>> from actorrt.core import Pickled
>>> [spec] = decode_tasks([["k", [Pickled.dumps(len), None], [], "len", 0, 0, None, False, False]])
>>> spec.key, spec.deps
('k', [])
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import msgpack

from .core import Pickled
from .core.checks import bad, describe, is_count, is_duration, is_str_list, str_list, str_map
from .core.errors import BadMessageError

# --- well-known actor ids: one per host that has one ----------------------------------
SCHEDULER_ID = "scheduler"    # the Scheduler, on the scheduler's host
REGISTRY_ID = "registry"      # the named system actors' registry, beside it
DASHBOARD_ID = "dashboard"    # the dashboard's actor, beside it
WORKER_ID = "worker"          # the Worker, on each worker's host

# --- holders: who, besides a client, keeps a key wanted --------------------------------
FIRE_AND_FORGET = "fire-and-forget"  # until the task has run (``fire_and_forget``)


def dataset_holder(name: str) -> str:
    """The holder that keeps the keys of a published dataset alive."""
    return f"dataset-{name}"


# A result this small travels inside the worker's ``tasks_done`` report and the
# scheduler's report to the client, so ``submit(f).result()`` needs no second round trip
# to fetch it (measured: 40% of a single task's round trip here).
INLINE_RESULT_BYTES = 512


class GraphTooLargeError(ValueError):
    """A submission would take the scheduler past its ``max_tasks`` (scheduler/admission.py):
    refused whole, by the client at the call or by the scheduler, before any of it runs."""


# --- records ---------------------------------------------------------------------------

class TaskSpec(NamedTuple):
    """One task of a submitted graph (client -> scheduler, in ``update_graph``)."""
    key: str
    spec: Any                 # [pickled function, pickled (args, kwargs) or None]
    deps: tuple               # keys of its inputs
    name: str = ""
    priority: int = 0
    retries: int = 0
    workers: tuple | None = None
    allow_other_workers: bool = False
    actor: bool = False       # or a dict of a user actor's options
    # Abstract resources the task holds on its worker while it runs ({"GPU": 1}); None: none.
    resources: dict | None = None


class ComputeTask(NamedTuple):
    """One task placed on a worker (scheduler -> worker, in ``compute``)."""
    key: str
    spec: Any                   # as TaskSpec's
    deps: dict                  # input key -> the workers said to hold it
    name: str
    actor: dict | None          # a user actor's options; None for a plain task
    run_id: int | None          # which run of the key the reports are about
    sizes: dict                 # input key -> nbytes, as the scheduler knows them


class Finished(NamedTuple):
    """A task's run ended with a value (worker -> scheduler, in ``tasks_done``)."""
    key: str
    nbytes: int
    type: str | None
    duration: float | None      # None for a run that waited on other work
    run_id: int | None
    # A result under INLINE_RESULT_BYTES, pickled (protocol 5, no out-of-band buffers).
    # Plain bytes, unpickled only by a client receiving its scheduler's report (on an
    # authenticated connection, from the scheduler: ClientActor.handle_report).
    value: bytes | None
    # When the run began and ended (``time.time()`` on the worker) and the ident of the
    # thread it ran on: the task stream (scheduler/task_stream.py). None: no run here.
    start: float | None
    stop: float | None
    thread: int | None


class Erred(NamedTuple):
    """A task's run raised (worker -> scheduler, in ``tasks_done``)."""
    key: str
    exception: Pickled
    traceback: str | None
    run_id: int | None
    start: float | None         # as Finished's
    stop: float | None
    thread: int | None


class Activity(NamedTuple):
    """Work on a worker besides running tasks, for the task stream: a transfer of keys
    from a peer (``source``), or a value written to or read from disk. Batched onto the
    worker's ``tasks_done`` and ``worker_memory`` reports, never sent alone."""
    action: str                 # ACTIVITY_ACTIONS
    key: str                    # the (first) key moved
    start: float
    stop: float
    nbytes: int
    source: str | None          # the peer a transfer came from


ACTIVITY_ACTIONS = frozenset({"transfer", "disk-write", "disk-read"})


class KeyReport(NamedTuple):
    """What became of a key a client holds (scheduler -> client, in ``report``).

    ``status`` is memory (``info``: workers, type, and value when inlined), erred
    (exception, traceback), cancelled (reason), lost, or unrunnable (reason: no worker
    here can ever run it, e.g. none declares a resource it asks for; it stays queued)."""
    key: str
    status: str
    info: dict


_new = tuple.__new__  # a NamedTuple from a checked sequence, without its __new__'s cost


# --- update_graph ------------------------------------------------------------------------

UPDATE_GRAPH = "Scheduler.update_graph"
_TASK_SHAPE = "[key, spec, deps, name, priority, retries, workers, allow_other_workers, actor, resources]"

# A user actor's options (client/actor_handle.py ``actor_options``) and what each must be.
_ACTOR_OPTIONS = {
    "max_concurrency": ("an int >= 1", lambda v: type(v) is int and v >= 1),
    "max_restarts": ("an int >= -1", lambda v: type(v) is int and v >= -1),
    "name": ("a non-empty str", lambda v: type(v) is str and v != ""),
    "get_if_exists": ("a bool", lambda v: type(v) is bool),
}


def _is_spec(blobs: Any) -> bool:
    return ((type(blobs) is list or type(blobs) is tuple) and len(blobs) == 2
            and type(blobs[0]) is Pickled and (blobs[1] is None or type(blobs[1]) is Pickled))


def decode_tasks(tasks: list, op: str = UPDATE_GRAPH) -> list[TaskSpec]:
    """The TaskSpecs of an ``update_graph`` message (or ``op``'s), every field of every
    task checked."""
    specs = []
    for i, t in enumerate(tasks):
        if (type(t) is not list and type(t) is not tuple) or len(t) != 10:
            raise bad(op, f"'tasks'[{i}]", f"a list {_TASK_SHAPE}", t)
        key, blobs, deps, name, priority, retries, workers, allow_other, actor, resources = t
        if not (type(key) is str and _is_spec(blobs)
                and (type(deps) is list or type(deps) is tuple) and type(name) is str
                and (type(priority) is int or type(priority) is float and math.isfinite(priority))
                and type(retries) is int and retries >= 0
                and (workers is None or is_str_list(workers)) and type(allow_other) is bool
                and (actor is False or actor is True or type(actor) is dict)
                and (resources is None or is_resources(resources))):
            raise _task_error(i, _new(TaskSpec, t), op)
        for dep in deps:
            if type(dep) is not str or dep == key:
                raise _task_error(i, _new(TaskSpec, t), op)
        if type(actor) is dict:
            check_actor_options(f"'tasks'[{i}] actor", actor, op)
        specs.append(_new(TaskSpec, t))
    return specs


# --- a task a client hands a worker itself (client/direct.py, worker/direct.py) -------

#: The worker's answer to ``run_direct``: ``[DIRECT_FINISHED, Finished]``,
#: ``[DIRECT_ERRED, Erred]`` (the report the client relays to the scheduler) or
#: ``[DIRECT_DECLINED, reason]`` (nothing ran, nothing is kept).
DIRECT_FINISHED, DIRECT_ERRED, DIRECT_DECLINED = "finished", "erred", "declined"


def runs_alone(task: "TaskSpec | list") -> bool:
    """Whether a submitted task (a TaskSpec, or the list it travels as) needs nothing
    from the scheduler to run: no inputs, no worker restrictions, no resources, no
    retries, not an actor. Only such a task may go straight to a worker."""
    _, _, deps, _, _, retries, workers, _, actor, resources = task
    return not deps and not retries and workers is None and not actor and not resources


def check_direct_spec(spec: Any) -> None:
    """A ``run_direct`` ask's ``spec``, as a task's travels."""
    if not _is_spec(spec):
        raise bad("Worker.run_direct", "'spec'", "[pickled function, pickled arguments or None]", spec)


def _task_error(i: int, spec: TaskSpec, op: str = UPDATE_GRAPH) -> BadMessageError:
    """What exactly is wrong with task ``i`` (the slow path, only for bad tasks)."""
    where = f"'tasks'[{i}]"
    key, blobs, deps, name, priority, retries, workers, allow_other, actor, resources = spec
    if type(key) is not str:
        return bad(op, f"{where} key", "a str", key)
    where = f"{where} (key {key!r})"
    if not _is_spec(blobs):
        return bad(op, f"{where} spec", "[pickled function, pickled arguments or None]", blobs)
    if type(deps) is not list and type(deps) is not tuple:
        return bad(op, f"{where} deps", "a list of keys", deps)
    for dep in deps:
        if type(dep) is not str:
            return bad(op, f"{where} deps", "a list of str keys", dep)
        if dep == key:
            return BadMessageError(f"{op}: task {key!r} in field 'tasks'[{i}] deps "
                                   "depends on itself")
    if type(name) is not str:
        return bad(op, f"{where} name", "a str", name)
    if not (type(priority) is int or type(priority) is float and math.isfinite(priority)):
        return bad(op, f"{where} priority", "an int or a finite float", priority)
    if type(retries) is not int or retries < 0:
        return bad(op, f"{where} retries", "an int >= 0", retries)
    if workers is not None and not is_str_list(workers):
        return bad(op, f"{where} workers", "None or a list of str addresses", workers)
    if type(allow_other) is not bool:
        return bad(op, f"{where} allow_other_workers", "a bool", allow_other)
    if resources is not None and not is_resources(resources):
        return bad(op, f"{where} resources", f"None or {RESOURCES_SHAPE}", resources)
    return bad(op, f"{where} actor", "a bool or a dict of actor options", actor)


# --- resources -----------------------------------------------------------------------------

RESOURCES_SHAPE = "a dict of resource name (str) -> finite amount >= 0"


def _is_amount(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value) and value >= 0


def is_resources(value: Any) -> bool:
    """A map of abstract resources, as a worker declares them or a task asks for them."""
    return type(value) is dict and all(type(k) is str and k != "" and _is_amount(v) for k, v in value.items())


def decode_resources(op: str, value: Any) -> dict[str, float]:
    """A worker's declared resources (``register_worker``): checked, amounts as floats."""
    if value is None:
        return {}
    if not is_resources(value):
        if type(value) is dict:
            for k, v in value.items():
                if type(k) is not str or k == "":
                    raise bad(op, "'resources' key", "a non-empty str", k)
                if not _is_amount(v):
                    raise bad(op, f"'resources'[{k!r}]", "a finite number >= 0", v)
        raise bad(op, "'resources'", f"None or {RESOURCES_SHAPE}", value)
    return {k: float(v) for k, v in value.items()}


def check_actor_options(where: str, options: dict, op: str = UPDATE_GRAPH) -> None:
    """A user actor's options: known names, each of the right type (a bad
    ``max_restarts`` would otherwise fail only when the actor's worker dies)."""
    for name, value in options.items():
        rule = _ACTOR_OPTIONS.get(name) if type(name) is str else None
        if rule is None:
            raise BadMessageError(f"{op}: field {where} has unknown option {describe(name)} "
                                  f"(known: {', '.join(sorted(_ACTOR_OPTIONS))})")
        expected, ok = rule
        if not ok(value):
            raise bad(op, f"{where} option {name!r}", expected, value)


# --- compute (scheduler -> worker) ---------------------------------------------------------

_COMPUTE_SHAPE = ("[key: str, spec: [pickled function, pickled arguments or None], deps: {key: "
                  "[addresses]}, name: str, actor: dict of options or None, run id: int or None, "
                  "input sizes: {key: nbytes >= 0}]")


def decode_compute(tasks: list) -> list[ComputeTask]:
    """The tasks of a ``compute`` message, every one checked before any runs."""
    out = []
    for i, t in enumerate(tasks):
        if not ((type(t) is list or type(t) is ComputeTask or type(t) is tuple) and len(t) == 7
                and type(t[0]) is str
                and _is_spec(t[1]) and type(t[2]) is dict and type(t[3]) is str
                and (t[4] is None or type(t[4]) is dict)
                and (t[5] is None or type(t[5]) is int)
                and type(t[6]) is dict and all(type(k) is str and is_count(n) for k, n in t[6].items())):
            raise bad("Worker.compute", f"'tasks'[{i}]", _COMPUTE_SHAPE, t)
        for dep, holders in t[2].items():
            if type(dep) is not str or not is_str_list(holders):
                raise bad("Worker.compute", f"'tasks'[{i}] deps", "a dict of key -> [addresses]", t[2])
        out.append(_new(ComputeTask, t))
    return out


# --- tasks_done (worker -> scheduler) --------------------------------------------------------

TASKS_DONE = "Scheduler.tasks_done"
_TIMES_SHAPE = "start: float or None, stop: float or None, thread: int or None"
_FINISHED_SHAPE = ("[key: str, nbytes: int >= 0, type: str or None, duration: finite seconds >= 0 or "
                   f"None, run id: int or None, value: bytes (a small result's pickle) or None, {_TIMES_SHAPE}]")
_ERRED_SHAPE = f"[key: str, exception: pickled, traceback: str or None, run id: int or None, {_TIMES_SHAPE}]"
_ACTIVITY_SHAPE = ("[action: 'transfer', 'disk-write' or 'disk-read', key: str, start: float, stop: float, "
                   "nbytes: int >= 0, source: str or None]")


def _time_ok(t: Any) -> bool:
    # Finite: the task stream goes out as JSON, where NaN is not a number.
    return type(t) is float and math.isfinite(t)


# (Inlined where it runs per task: ``t - t == 0.0`` is false for inf and NaN, and saves
# the calls, which doubled the cost of decoding a report.)


def decode_tasks_done(finished: list, erred: list, op: str = TASKS_DONE) -> tuple[list[Finished], list[Erred]]:
    """Every item of a worker's report (``op``'s: a client relays one), checked before any
    is applied."""
    done = []
    for i, item in enumerate(finished):
        if not ((type(item) is list or type(item) is Finished or type(item) is tuple) and len(item) == 9
                and type(item[0]) is str and is_count(item[1])
                and (item[2] is None or type(item[2]) is str)
                and (item[3] is None or is_duration(item[3]))
                and (item[4] is None or type(item[4]) is int)
                and (item[5] is None or type(item[5]) is bytes)
                and ((t := item[6]) is None or (type(t) is float and t - t == 0.0))
                and ((t := item[7]) is None or (type(t) is float and t - t == 0.0))
                and (item[8] is None or type(item[8]) is int)):
            raise bad(op, f"'finished'[{i}]", _FINISHED_SHAPE, item)
        done.append(_new(Finished, item))
    failed = []
    for i, item in enumerate(erred):
        if not ((type(item) is list or type(item) is Erred or type(item) is tuple) and len(item) == 7
                and type(item[0]) is str and type(item[1]) is Pickled
                and (item[2] is None or type(item[2]) is str)
                and (item[3] is None or type(item[3]) is int)
                and ((t := item[4]) is None or (type(t) is float and t - t == 0.0))
                and ((t := item[5]) is None or (type(t) is float and t - t == 0.0))
                and (item[6] is None or type(item[6]) is int)):
            raise bad(op, f"'erred'[{i}]", _ERRED_SHAPE, item)
        failed.append(_new(Erred, item))
    return done, failed


def decode_activity(items: Any, op: str) -> list[Activity]:
    """A worker's transfers and disk reads/writes (field ``activity`` of ``op``)."""
    if type(items) is not list:
        raise bad(op, "'activity'", "a list of " + _ACTIVITY_SHAPE, items)
    out = []
    for i, item in enumerate(items):
        if not ((type(item) is list or type(item) is Activity or type(item) is tuple) and len(item) == 6
                and type(item[0]) is str and item[0] in ACTIVITY_ACTIONS and type(item[1]) is str
                and _time_ok(item[2]) and _time_ok(item[3]) and is_count(item[4])
                and (item[5] is None or type(item[5]) is str)):
            raise bad(op, f"'activity'[{i}]", _ACTIVITY_SHAPE, item)
        out.append(_new(Activity, item))
    return out


# --- report (scheduler -> client) --------------------------------------------------------------

REPORT_STATUSES = frozenset({"memory", "erred", "cancelled", "lost", "unrunnable"})
_REPORT_SHAPE = ("[key: str, status: 'memory', 'erred', 'cancelled', 'lost' or 'unrunnable', info: dict "
                 "(with 'workers': [addresses] and 'value': bytes or None for 'memory')]")


def decode_reports(msgs: list) -> list[KeyReport]:
    """A client's ``report`` message: all of it first, as a bad item late must not
    strand the rest."""
    out = []
    for i, m in enumerate(msgs):
        if not ((type(m) is list or type(m) is KeyReport or type(m) is tuple) and len(m) == 3
                and type(m[0]) is str
                and type(m[1]) is str and m[1] in REPORT_STATUSES and type(m[2]) is dict
                and (m[1] != "memory" or (is_str_list(m[2].get("workers", ()))
                                          and type(m[2].get("value")) in (bytes, type(None))))):
            raise bad("ClientActor.report", f"'msgs'[{i}]", _REPORT_SHAPE, m)
        out.append(_new(KeyReport, m))
    return out


# --- maps of keys ----------------------------------------------------------------------------------

def check_update_data(who_has: dict, nbytes: dict, types: dict, puts: dict | None = None) -> None:
    op = "Scheduler.update_data"
    str_map(op, "who_has", who_has, is_str_list, "a list of str addresses")
    str_map(op, "nbytes", nbytes, is_count, "an int >= 0")
    str_map(op, "types", types, lambda v: v is None or type(v) is str, "a str or None")
    if puts is not None:  # key -> holder -> the holder's serial number of that put
        str_map(op, "puts", puts, lambda v: type(v) is dict and all(
            type(a) is str and is_count(n) for a, n in v.items()), "a dict of str addresses -> int >= 0")


def check_missing(missing: dict) -> None:
    str_map("Scheduler.missing_data", "missing", missing, is_str_list, "a list of str addresses")


# --- a worker's memory ----------------------------------------------------------------------

class WorkerMemory(NamedTuple):
    """What a worker reports of its memory (``Scheduler.worker_memory``), in bytes:
    results in memory, results spilled to disk (their size in memory, and the files'
    size), the process's resident size (None where it cannot be measured), its limit
    (None: none), and whether it is paused for memory."""
    managed: int
    spilled: int
    spilled_disk: int
    rss: int | None
    limit: int | None
    paused: bool
    # The process's CPU use (percent of one core) and the bytes its connections sent and
    # received per second, over the last sample; None: not measured yet. (In-process
    # workers share one process: these are the whole process's, as rss is.)
    cpu: float | None = None
    sent_per_s: float | None = None
    received_per_s: float | None = None


_MEMORY_SHAPE = ("[managed: int >= 0, spilled: int >= 0, spilled on disk: int >= 0, rss: int >= 0 or None, "
                 "limit: int >= 0 or None, paused: bool, cpu: float >= 0 or None, sent per s: float >= 0 or "
                 "None, received per s: float >= 0 or None]")


def _rate_ok(x: Any) -> bool:
    return x is None or (type(x) is float and math.isfinite(x) and x >= 0)


def decode_memory(memory: Any, op: str = "Scheduler.worker_memory") -> WorkerMemory:
    if (type(memory) is not list or len(memory) != 9 or not all(is_count(m) for m in memory[:3])
            or not (memory[3] is None or is_count(memory[3])) or not (memory[4] is None or is_count(memory[4]))
            or type(memory[5]) is not bool or not all(_rate_ok(m) for m in memory[6:])):
        raise BadMessageError(f"{op}: field 'memory' must be {_MEMORY_SHAPE}, "
                              f"got {memory!r:.200}")
    return WorkerMemory(*memory)


def keys_field(op: str, keys: Any, field: str = "keys") -> "list[Any] | tuple[Any, ...]":
    """A list of str keys (an op that allows None replaces it before asking)."""
    return str_list(f"Scheduler.{op}", field, keys)


# --- events and metadata (scheduler/events.py) ------------------------------------------

# Longest topic name, and most topics one log_event names (a topic is a dict key kept).
MAX_TOPIC_CHARS = 200
MAX_TOPICS = 100


def check_topics(op: str, topic: Any, single: bool = False) -> Any:
    """A topic (a non-empty str), or a non-empty list of them unless ``single``."""
    if type(topic) is str and 0 < len(topic) <= MAX_TOPIC_CHARS:
        return topic
    if not single and type(topic) in (list, tuple) and 0 < len(topic) <= MAX_TOPICS and all(
            type(t) is str and 0 < len(t) <= MAX_TOPIC_CHARS for t in topic):
        return list(topic)
    expected = f"a non-empty str of at most {MAX_TOPIC_CHARS} characters"
    raise bad(op, "'topic'", expected if single else expected + f", or a list of 1 to {MAX_TOPICS} of them",
              topic)


def check_topic(topic: Any, many: bool = False) -> Any:
    """A topic given to ``log_event`` and the like, checked where the user called it (the
    client, or a task on a worker): TypeError/ValueError naming the parameter for a
    topic that :func:`check_topics` would refuse at the scheduler."""
    if many and isinstance(topic, (list, tuple)):
        if not 0 < len(topic) <= MAX_TOPICS:
            raise ValueError(f"topic: a list of 1 to {MAX_TOPICS} topics, not {len(topic)}")
        return [check_topic(t) for t in topic]
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str{' or a list of str' if many else ''}, "
                        f"not {type(topic).__name__}")
    if not 0 < len(topic) <= MAX_TOPIC_CHARS:
        raise ValueError(f"topic must be 1 to {MAX_TOPIC_CHARS} characters, not {len(topic)}")
    return str(topic)


#: The largest event message sent as itself rather than pickled (msgpack bytes).
PLAIN_EVENT_LIMIT = 4096


def event_message(msg: Any) -> Any:
    """``msg`` as ``log_event`` sends it: as itself when msgpack brings it back exactly
    (str, bytes, numbers, bools, None; lists and str-keyed dicts of them) and it is
    small, so the scheduler's events page can show it; else pickled, and the scheduler
    keeps it unopened (it never unpickles user data)."""
    # (_msgpack_exact admits only what packb encodes: nothing here can raise.)
    if _msgpack_exact(msg, 0) and len(msgpack.packb(msg, use_bin_type=True)) <= PLAIN_EVENT_LIMIT:
        return msg
    return Pickled.dumps(msg, what="event message")


def _msgpack_exact(value: Any, depth: int) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is float or kind is bytes:
        return True
    if kind is str:  # (a lone surrogate cannot be encoded)
        return value.isascii() or _utf8(value)
    if kind is int:
        return -2**63 <= value < 2**64
    if depth >= 8:
        return False
    if kind is list:
        return all(_msgpack_exact(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _msgpack_exact(v, depth + 1) for k, v in value.items())
    return False  # (a tuple would come back a list)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def check_metadata_keys(op: str, keys: Any) -> list:
    """A metadata path: a non-empty list of str."""
    if type(keys) in (list, tuple) and keys and all(type(k) is str for k in keys):
        return list(keys)
    raise bad(op, "'keys'", "a non-empty list of str", keys)


__all__ = ["PLAIN_EVENT_LIMIT", "event_message", "GraphTooLargeError", "DASHBOARD_ID", "FIRE_AND_FORGET", "INLINE_RESULT_BYTES", "REGISTRY_ID", "SCHEDULER_ID",
           "WORKER_ID", "ACTIVITY_ACTIONS", "DIRECT_DECLINED", "DIRECT_ERRED", "DIRECT_FINISHED",
           "check_direct_spec", "runs_alone", "Activity", "ComputeTask", "Erred", "Finished", "KeyReport", "TaskSpec", "WorkerMemory", "check_actor_options",
           "check_missing", "check_update_data", "dataset_holder", "decode_compute", "decode_memory", "decode_reports",
           "RESOURCES_SHAPE", "decode_resources", "is_resources",
           "decode_activity", "decode_tasks", "decode_tasks_done", "keys_field", "check_topic", "check_topics", "check_metadata_keys",
           "MAX_TOPIC_CHARS", "MAX_TOPICS"]


def plugin_name_field(op: str, name: Any) -> str:
    """A plugin's name (``register_worker_plugin``, ``plugin_add``, ...): a non-empty str."""
    if not isinstance(name, str) or not name:
        raise BadMessageError(f"{op}: field 'name' must be a non-empty str, got {describe(name)}")
    return name
