"""The data plane: moving large numpy arrays on actorrt and dask.distributed, side by side.

    python benchmarks/bench_data.py            # 1, 16, 128, 512 and 2,048 MB, best of 3
    python benchmarks/bench_data.py --quick    # 1 and 16 MB, one repetition

Both runtimes get ``Client(n_workers=2, threads_per_worker=1)`` with worker processes
(workers A and B, in address order). The values are float64 arrays; MB means 2**20
bytes throughout, MB/s too. Three transfers, each timed on its own:

* scatter: ``client.scatter(arr, workers=[A], hash=False)`` then waiting for the
  future. ``hash=False`` on both systems, so that the time is the transfer's and not
  that of hashing the array for a key. dask twice: its default (through the
  scheduler) and ``direct=True`` (straight to the worker).
* gather: ``client.submit(np.ones, n, workers=[A], pure=False)``, waited for outside
  the timing, then only ``future.result()`` is timed (dask also
  ``client.gather(future, direct=True)``).
* worker->worker: the same value made on A, then
  ``client.submit(np.sum, future, workers=[B], pure=False).result()``: one value moves
  from A to B (the sum itself runs at ~15 GB/s and is not subtracted).

Tables: MB/s per transfer (ratio = dask time / actorrt time, >1 = actorrt faster;
one row against dask's default route, one against ``direct=True``); actorrt against
the physical floor, a raw transfer of the same byte count between two processes, on
the kind of socket actorrt uses between them (a Unix one on Linux, see sockets.py;
the receiver ``recv_into`` a preallocated, pre-touched buffer, the sender
``sendall`` from a memoryview in 1 MB slices; a second column gives one ``sendall``
of the whole, which is markedly slower on large sizes here); and the peak RSS growth of the receiving and the
sending process per transfer, divided by the payload. The peak is the process's
VmHWM (Linux ``/proc/self/status``), reset to the current RSS before the transfer by
writing "5" to ``/proc/self/clear_refs``, after ``malloc_trim(0)`` so that freed but
still resident heap memory (which a transfer could reuse unseen) is not in it.
Growth = VmHWM after - VmRSS before, so the value a sender already holds is not
counted. Where the reset is refused the figure is exact only if the transfer set a
new peak, else an upper bound (shown "<="). The client process is measured for the
client side (the scheduler of either runtime's local cluster lives there too).

The best of ``--repeat`` repetitions is shown for times (the socket floor takes at
least 5 up to 128 MB: it is cheap, and one sample of a millisecond is noise); the
largest growth of the repetitions for memory. Every array and future is released,
and the workers are seen to hold nothing, between repetitions, so memory does not
pile up. A transfer that fails shows ``error: ...`` in its cell (full message below
the tables) and the run goes on, on a fresh cluster if the old one is not usable.

``--only NAME`` keeps the transfers whose kind contains NAME ("scatter", "gather",
"worker->worker", "socket floor").

Not built on ``common.compare``: each repetition needs untimed preparation and
memory readings around the timed part, and dask has two routes per transfer.
"""
from __future__ import annotations

import contextlib
import gc
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sockets  # noqa: E402
from common import CLIENTS, format_columns, parse_args, runtimes, timeit  # noqa: E402

MB = 2 ** 20
SIZES_MB = (1, 16, 128, 512, 2_048)
QUICK_SIZES_MB = (1, 16)
#: sizes below this are left out of the memory table: a few MB of allocator noise
RSS_MIN_MB = 16
#: the floor's sender writes slices of this many bytes (faster than one big sendall)
FLOOR_CHUNK = MB
#: repetitions of the socket floor at least, for sizes up to 128 MB (see floor_repeat)
FLOOR_MIN_REPEAT = 5
#: seconds before a transfer (or the wait for the workers to be empty) counts as failed
TIMEOUT = 300


# --- run in every process (also on the workers, through client.run) -----------------------
def _memory(reset: bool = False) -> tuple[int | None, int | None, bool]:
    """(VmRSS, VmHWM) of this process in bytes, and whether VmHWM was reset first.

    Writing "5" to /proc/self/clear_refs sets the high-water mark back to the
    current RSS (Linux; may be refused). (None, None, False) without /proc.
    """
    done = False
    if reset:
        _trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            done = True
        except OSError:
            pass
    rss = hwm = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        return None, None, False
    return rss, hwm, done


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that VmRSS counts live data only."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _held(dask_worker: Any) -> int:
    """How many values this worker holds (both runtimes' workers have ``.data``)."""
    return len(dask_worker.data)


def _collect() -> int:
    return gc.collect()


def _import_numpy() -> str:
    return np.__version__


# --- the socket floor ----------------------------------------------------------------------
def _floor_sender(address: str, nbytes: int, repeat: int, chunk: int, *tls: str) -> None:
    """Child process: connect, then send ``nbytes`` from a numpy array per go byte,
    in ``chunk``-byte slices of a memoryview (no copies), or in one piece if 0.
    ``tls`` = (CA, certificate, key) wraps the connection in (mutual) TLS."""
    arr = np.ones(nbytes // 8)
    view = arr.data.cast("B")
    step = chunk or nbytes
    with sockets.connect(address, timeout=TIMEOUT) as raw:
        sock = _tls_context(ssl.Purpose.SERVER_AUTH, *tls).wrap_socket(
            raw, server_hostname="127.0.0.1") if tls else raw
        for _ in range(repeat + 1):  # (the first one warms the connection up)
            if sock.recv(1) != b"g":
                return
            for start in range(0, nbytes, step):
                sock.sendall(view[start:start + step])
        sock.recv(1)  # wait for the receiver to hang up


def _tls_context(purpose: ssl.Purpose, ca: str, cert: str, key: str) -> ssl.SSLContext:
    """Mutual TLS as actorrt's Security sets it up: the CA verifies the peer, each side
    shows its certificate."""
    ctx = ssl.create_default_context(purpose, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def floor_seconds(nbytes: int, repeat: int, chunk: int = FLOOR_CHUNK, tls: tuple[str, str, str] = ()) -> float:
    """Best time to receive ``nbytes`` from another process: on the kind of socket
    actorrt uses between two processes here (sockets.py), or over loopback TCP with
    (mutual) TLS when ``tls`` = (CA, certificate, key) is given (tls:// is never a
    Unix socket)."""
    server, address = sockets.listener("tcp" if tls else None)
    with server:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--floor-send",
                                  address, str(nbytes), str(repeat), str(chunk), *tls], stdin=subprocess.DEVNULL)
        try:
            server.settimeout(60)
            conn, _ = server.accept()
            if tls:
                conn.settimeout(60)
                conn = _tls_context(ssl.Purpose.CLIENT_AUTH, *tls).wrap_socket(conn, server_side=True)
            with conn:
                conn.settimeout(TIMEOUT)
                buf = np.ones(nbytes // 8)  # preallocated and every page touched
                view = buf.data.cast("B")
                best = float("inf")
                for i in range(repeat + 1):  # the first one (untimed) warms the connection up
                    start = time.perf_counter()
                    conn.sendall(b"g")
                    got = 0
                    while got < nbytes:
                        n = conn.recv_into(view[got:], nbytes - got)
                        if not n:
                            raise ConnectionError("the sender hung up early")
                        got += n
                    if i:
                        best = min(best, time.perf_counter() - start)
                del view, buf
        finally:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return best


def floor_repeat(mb: int, repeat: int) -> int:
    """The floor is the reference and cheap: at least 5 repetitions up to 128 MB, where a
    single one is at the mercy of a scheduling hiccup of the two processes."""
    return max(repeat, FLOOR_MIN_REPEAT) if mb <= 128 else repeat


# --- clusters ----------------------------------------------------------------------------
class Cluster:
    """A client on the standard cluster of one runtime, reopened after a failure."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self._open()

    def _open(self) -> None:
        self._cm = CLIENTS[self.runtime]()
        self.client = self._cm.__enter__()
        try:
            if self.runtime == "dask":
                from distributed import wait
            else:
                from actorrt import wait
            self.wait = wait
            workers = sorted(self.client.scheduler_info()["workers"])
            self.a, self.b = workers[0], workers[1]
            self.client.run(_import_numpy)  # unpickling the first array must not import numpy
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._cm.__exit__(None, None, None)

    def reopen_if_broken(self) -> None:
        try:
            workers = sorted(self.client.scheduler_info()["workers"])
            if workers != [self.a, self.b]:
                raise RuntimeError(f"the workers are now {workers}, were {[self.a, self.b]}")
            for w in workers:
                assert self.client.submit(abs, -1, workers=[w], pure=False).result(timeout=30) == 1
            self.settle()
        except Exception as exc:  # noqa: BLE001 - any failure means: start over
            print(f"#   the {self.runtime} cluster is not usable ({exc!r}); starting a new one",
                  file=sys.stderr, flush=True)
            self.close()
            self._open()

    def settle(self) -> None:
        """Wait until neither worker holds a value; collect garbage everywhere."""
        gc.collect()
        deadline = time.monotonic() + TIMEOUT
        while any(self.client.run(_held).values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the workers still hold values after every future was released")
            time.sleep(0.02)
        self.client.run(_collect)
        gc.collect()

    def memory(self, reset: bool) -> dict[str, tuple]:
        """_memory() of the client process ("client") and of workers "A" and "B"."""
        here = _memory(reset)
        there = self.client.run(_memory, reset)
        return {"client": here, "A": there[self.a], "B": there[self.b]}


# --- the transfers ---------------------------------------------------------------------------
@dataclass
class Transfer:
    """One way of moving a value: untimed ``prepare``, timed ``run``, who receives/sends."""

    kind: str                      # "scatter", "gather", "worker->worker"
    route: str                     # "" for the default, "direct" for dask's direct=True
    prepare: Callable[[Cluster, int, dict], None]
    run: Callable[[Cluster, int, dict], None]
    receiver: str                  # "client", "A" or "B"
    sender: str


def _scatter_prepare(cl: Cluster, nbytes: int, state: dict) -> None:
    state["arr"] = np.ones(nbytes // 8)


def _scatter(direct: bool) -> Callable[[Cluster, int, dict], None]:
    def run(cl: Cluster, nbytes: int, state: dict) -> None:
        extra = {"direct": True} if direct else {}
        fut = cl.client.scatter(state["arr"], workers=[cl.a], hash=False, **extra)
        cl.wait(fut, timeout=TIMEOUT)
        state["future"] = fut
    return run


def _make_on_a(cl: Cluster, nbytes: int, state: dict) -> None:
    fut = cl.client.submit(np.ones, nbytes // 8, workers=[cl.a], pure=False)
    cl.wait(fut, timeout=TIMEOUT)  # the value stays on A
    state["future"] = fut


def _gather(direct: bool) -> Callable[[Cluster, int, dict], None]:
    def run(cl: Cluster, nbytes: int, state: dict) -> None:
        fut = state["future"]
        value = cl.client.gather(fut, direct=True) if direct else fut.result(timeout=TIMEOUT)
        state["value"] = value
    return run


def _worker_to_worker(cl: Cluster, nbytes: int, state: dict) -> None:
    total = cl.client.submit(np.sum, state["future"], workers=[cl.b], pure=False)
    state["total"] = total
    assert total.result(timeout=TIMEOUT) == nbytes // 8


def _check(state: dict, nbytes: int) -> None:
    value = state.get("value")
    if value is not None:
        assert value.nbytes == nbytes


def transfers(runtime: str) -> list[Transfer]:
    routes = ["", "direct"] if runtime == "dask" else [""]
    out = []
    for route in routes:
        out.append(Transfer("scatter", route, _scatter_prepare, _scatter(route == "direct"),
                            receiver="A", sender="client"))
    for route in routes:
        out.append(Transfer("gather", route, _make_on_a, _gather(route == "direct"),
                            receiver="client", sender="A"))
    out.append(Transfer("worker->worker", "", _make_on_a, _worker_to_worker, receiver="B", sender="A"))
    return out


# --- measuring -----------------------------------------------------------------------------
@dataclass
class Result:
    seconds: float | None = None
    error: str | None = None
    recv: list[tuple[int, bool]] = field(default_factory=list)   # (growth bytes, exact)
    send: list[tuple[int, bool]] = field(default_factory=list)


def _growth(before: tuple, after: tuple) -> tuple[int, bool] | None:
    rss0, hwm0, reset = before
    hwm1 = after[1]
    if rss0 is None or hwm0 is None or hwm1 is None:
        return None
    if reset or hwm1 > hwm0:
        return hwm1 - rss0, True
    return hwm0 - rss0, False  # the peak during the transfer was at most the old one


def measure(cl: Cluster, t: Transfer, nbytes: int, repeat: int) -> Result:
    res = Result()
    best = float("inf")
    for _ in range(repeat):
        state: dict = {}
        try:
            t.prepare(cl, nbytes, state)
            before = cl.memory(reset=True)
            seconds = timeit(lambda: t.run(cl, nbytes, state), repeat=1)
            after = cl.memory(reset=False)
            _check(state, nbytes)
        except BaseException:
            state.clear()
            with contextlib.suppress(Exception):
                cl.settle()
            raise
        state.clear()
        cl.settle()
        best = min(best, seconds)
        for role, into in ((t.receiver, res.recv), (t.sender, res.send)):
            g = _growth(before[role], after[role])
            if g is not None:
                into.append(g)
    res.seconds = best
    return res


def run_runtime(runtime: str, sizes: list[int], args: Any, results: dict) -> None:
    """Fill ``results[(runtime, kind, route, mb)]`` for every transfer and size."""
    todo = [t for t in transfers(runtime) if _wanted(t.kind, args)]
    if not todo:
        return
    print(f"# {runtime}: {len(todo)} transfer(s) x {len(sizes)} size(s)", file=sys.stderr, flush=True)
    cl = Cluster(runtime)
    try:
        for t in todo:  # warm up every route (connections, imports) with an untimed 1 MB move
            with contextlib.suppress(Exception):
                measure(cl, t, MB, 1)
        for mb in sizes:
            for t in todo:
                name = f"{t.kind}{' direct' if t.route else ''} {mb:,} MB"
                try:
                    res = measure(cl, t, mb * MB, args.repeat)
                    print(f"#   {name}: {res.seconds:.4f} s ({_rate(res, mb)})",
                          file=sys.stderr, flush=True)
                except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
                    error = f"{type(exc).__name__}: {exc}"
                    res = Result(error=error)
                    print(f"#   {name}: error: {_short(error, 200)}", file=sys.stderr, flush=True)
                    cl.reopen_if_broken()
                results[(runtime, t.kind, t.route, mb)] = res
    finally:
        cl.close()


def _wanted(kind: str, args: Any) -> bool:
    return not args.only or any(o in kind for o in args.only)


# --- tables ----------------------------------------------------------------------------------
KINDS = ("scatter", "gather", "worker->worker")
ROLES = {"scatter": ("worker A", "client"), "gather": ("client", "worker A"),
         "worker->worker": ("worker B", "worker A")}


def _rate(res: Result | None, mb: int) -> str:
    if res is None:
        return "-"
    if res.error is not None:
        return "error: " + _short(res.error)
    assert res.seconds is not None
    return f"{mb / res.seconds:,.0f} MB/s"


def _short(text: str, width: int = 40) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _ratio(num: Result | None, den: Result | None) -> str:
    """num's time / den's time."""
    if num is None or den is None or num.seconds is None or den.seconds is None or den.seconds <= 0:
        return "n/a"
    return f"{num.seconds / den.seconds:.2f}x"


def speed_table(results: dict, sizes: list[int], with_dask: bool) -> str:
    lines = []
    for kind in KINDS:
        for mb in sizes:
            ours = results.get(("actorrt", kind, "", mb))
            if ours is None and ("dask", kind, "", mb) not in results:
                continue
            routes = [("", "")]
            if with_dask and kind != "worker->worker":
                routes = [("", ", dask default"), ("direct", ", dask direct=True")]
            for route, label in routes:
                theirs = results.get(("dask", kind, route, mb))
                lines.append((f"{kind} {mb:,} MB{label}", _rate(ours, mb), _rate(theirs, mb),
                              _ratio(theirs, ours)))
    return "\n".join([format_columns(("workload", "actorrt", "dask", "ratio"), lines),
                      "ratio = dask time / actorrt time (>1 means actorrt faster)"])


def floor_table(results: dict, floors: dict[tuple[str, int], Result], sizes: list[int]) -> str:
    header = ["size", "socket floor", "(one sendall)"]
    for kind in KINDS:
        header += [f"actorrt {kind}", "÷ floor"]
    lines = []
    for mb in sizes:
        floor = floors.get(("sliced", mb))
        row = [f"{mb:,} MB", _rate(floor, mb), _rate(floors.get(("whole", mb)), mb)]
        for kind in KINDS:
            ours = results.get(("actorrt", kind, "", mb))
            row += [_rate(ours, mb), _ratio(floor, ours)]
        lines.append(row)
    return "\n".join([
        format_columns(header, lines),
        f"socket floor ({sockets.same_machine_kind()}, as actorrt's between two processes here): sendall of "
        f"{FLOOR_CHUNK // MB} MB memoryview slices -> recv_into a pre-touched buffer; (one sendall): the "
        "whole payload in one call",
        "÷ floor = actorrt's MB/s / the floor's MB/s (1.00x = as fast as a bare socket)"])


def _growth_cell(samples: list[tuple[int, bool]], nbytes: int, error: str | None) -> str:
    if error is not None:
        return "error"
    if not samples:
        return "-"
    worst = max(g for g, _ in samples)
    exact = all(e for _, e in samples)
    return f"{'' if exact else '<='}{worst / nbytes:.2f}x"


def rss_table(results: dict, sizes: list[int], names: list[str]) -> str:
    variants = [("actorrt", "")]
    if "dask" in names:
        variants += [("dask", ""), ("dask", "direct")]
    header = ["peak RSS growth / payload"]
    for runtime, route in variants:
        label = runtime + (" direct" if route else "")
        header += [f"{label} recv", f"{label} send"]
    lines = []
    for kind in KINDS:
        for mb in sizes:
            if mb < RSS_MIN_MB:
                continue
            row = [f"{kind} {mb:,} MB"]
            seen = False
            for runtime, route in variants:
                res = results.get((runtime, kind, route, mb))
                if res is None:
                    row += ["-", "-"]
                    continue
                seen = True
                row += [_growth_cell(res.recv, mb * MB, res.error),
                        _growth_cell(res.send, mb * MB, res.error)]
            if seen:
                lines.append(row)
    roles = "; ".join(f"{k}: recv = {r}, send = {s}" for k, (r, s) in ROLES.items())
    return "\n".join([format_columns(header, lines),
                      "growth = VmHWM after - VmRSS before (largest of the repetitions) / payload",
                      roles,
                      "targets: recv <= 1.10x, send <= 0.10x (beyond the value the sender already holds)"])


# --- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) in (6, 9) and sys.argv[1] == "--floor-send":
        return _floor_sender(sys.argv[2], *(int(a) for a in sys.argv[3:6]), *sys.argv[6:])
    args = parse_args(__doc__, argv)
    sizes = list(QUICK_SIZES_MB if args.quick else SIZES_MB)
    names = runtimes(args)

    floors: dict[tuple[str, int], Result] = {}  # ("sliced" or "whole", MB) -> time or error
    if _wanted("socket floor", args):
        print("# socket floor", file=sys.stderr, flush=True)
        for mb in sizes:
            for variant, chunk in (("sliced", FLOOR_CHUNK), ("whole", 0)):
                try:
                    res = Result(seconds=floor_seconds(mb * MB, floor_repeat(mb, args.repeat), chunk))
                except Exception as exc:  # noqa: BLE001
                    res = Result(error=f"{type(exc).__name__}: {exc}")
                floors[(variant, mb)] = res
                print(f"#   floor ({variant}) {mb:,} MB: {_rate(res, mb)}", file=sys.stderr, flush=True)
                gc.collect()

    results: dict = {}
    for runtime in names:
        try:
            run_runtime(runtime, sizes, args, results)
        except Exception as exc:  # noqa: BLE001 - e.g. the cluster did not start
            print(f"# {runtime} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            for t in transfers(runtime):
                for mb in sizes:
                    results.setdefault((runtime, t.kind, t.route, mb),
                                       Result(error=f"{type(exc).__name__}: {exc}"))

    print("data plane: float64 arrays, 2 worker processes x 1 thread (MB = 2**20 bytes)")
    print(speed_table(results, sizes, "dask" in names))
    print()
    print(floor_table(results, floors, sizes))
    print()
    print(rss_table(results, sizes, names))
    errors = [(key, res.error) for key, res in results.items() if res.error is not None]
    errors += [(("socket floor", variant, "", mb), res.error) for (variant, mb), res in floors.items()
               if res.error is not None]
    if errors:
        print()
        print("errors:")
        for (runtime, kind, route, mb), msg in errors:
            msg = msg.replace("\n", "\n    ")
            print(f"  {runtime} {kind}{' direct' if route else ''} {mb:,} MB: {msg}")


if __name__ == "__main__":
    main()
