"""What TLS costs: actorrt over tls:// against dask.distributed over TLS, and against itself over tcp://.

    python benchmarks/bench_tls.py            # best of 3 (about 30 s here)
    python benchmarks/bench_tls.py --quick    # small sizes, one repetition (seconds)

Every cluster has two worker processes with one thread each (workers A and B, in
address order), started one after the other, never side by side: actorrt over
``tcp://``, actorrt over ``tls://`` (``actorrt.Security``) and dask.distributed over
TLS (``distributed.Security(..., require_encryption=True)``, ``protocol="tls"``). One
throwaway CA and one certificate (IP SAN 127.0.0.1, server and client auth) serve
every role of both runtimes; they are made with the ``cryptography`` package in a
temporary directory that is removed at the end.

Workloads (``--quick`` sizes in brackets):

* round trip: ``client.submit(inc, i, pure=False).result()``, one after the other,
  300 [30] times; the table shows the time per round trip.
* map+gather: ``client.gather(client.map(inc, ..., pure=False))`` of 2,000 [200]
  trivial tasks; tasks/s.
* gather: a 64 MB [8 MB] float64 array made on worker A (``np.ones``, waited for
  outside the timing), then only ``future.result()`` is timed; MB/s. Both runtimes
  take their default route (dask's goes through its scheduler).
* worker->worker: the same array made on A (untimed), then
  ``client.submit(nbytes, future, workers=[B], pure=False).result()``: one value
  moves from A to B; MB/s.

MB means 2**20 bytes, MB/s too. Before the timings each cluster runs every workload
once at a small size, untimed, so that connections (and their TLS handshakes) are
open and imports done: the tables show the steady-state cost of encryption, not that
of making connections. The best of ``--repeat`` repetitions is shown. Between
repetitions of the transfers every future is released and the workers are seen to
hold nothing.

Table 3: the physical floor, a bare loopback socket between two processes (bench_data's,
plain and wrapped in mutual TLS with the same certificates), against actorrt's bulk
transfers: ``tls / tcp`` on the floor is what encryption alone allows on this machine.

Table 1: actorrt over tls:// against dask over TLS (ratio = dask time / actorrt time,
>1 = actorrt faster). Table 2: actorrt tls:// against actorrt tcp:// with
``tls / tcp`` = the tls figure / the tcp figure (a time ratio for the round trip,
a throughput ratio for the rest) and the targets: a round trip over tls at most 1.5x
that over tcp, bulk throughput over tls at least 0.7x that over tcp.

``--only NAME`` keeps the workloads whose name contains NAME ("round trip",
"map+gather", "gather", "worker->worker").
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import ipaddress
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (N_WORKERS, THREADS_PER_WORKER, Row, _silence_dask, fmt_seconds,  # noqa: E402
                    format_columns, parse_args, print_table, runtimes, timeit)

MB = 2 ** 20
#: (full, quick) sizes
ROUND_TRIPS = (300, 30)
MAP_TASKS = (2_000, 200)
ARRAY_MB = (64, 8)
#: the issue's targets for tls:// against tcp://
ROUND_TRIP_TARGET = 1.5     # tls time <= 1.5 x tcp time
THROUGHPUT_TARGET = 0.7     # tls MB/s >= 0.7 x tcp MB/s
#: seconds before a transfer, or the wait for the workers to be empty, counts as failed
TIMEOUT = 120


# --- run on the workers ---------------------------------------------------------------
def inc(x: int) -> int:
    return x + 1


def nbytes(a: np.ndarray) -> int:
    return a.nbytes


def _held(dask_worker: Any) -> int:
    """How many values this worker holds (both runtimes' workers have ``.data``)."""
    return len(dask_worker.data)


def _import_numpy() -> str:
    return np.__version__


# --- certificates ------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: str
    cert: str
    key: str


def make_pki(directory: Path) -> Pki:
    """A self-signed CA and one certificate it signed, good for every role on 127.0.0.1."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise SystemExit("bench_tls.py makes its certificates with `cryptography`: pip install cryptography") from None

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def builder(subject: str, issuer: str, public_key: Any) -> Any:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(valid[0]).not_valid_after(valid[1]))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (builder("bench-tls-ca", "bench-tls-ca", ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder("bench-tls-node", "bench-tls-ca", key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    paths = Pki(str(directory / "ca.pem"), str(directory / "node.pem"), str(directory / "node.key"))
    Path(paths.ca).write_bytes(ca_cert.public_bytes(pem))
    Path(paths.cert).write_bytes(cert.public_bytes(pem))
    Path(paths.key).write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    os.chmod(paths.key, 0o600)
    return paths


# --- clusters ------------------------------------------------------------------------------
@contextlib.contextmanager
def actorrt_cluster(pki: Pki | None) -> Iterator[Any]:
    """An actorrt Client on a LocalCluster of worker processes, over tls:// with ``pki``."""
    import actorrt
    security = actorrt.Security(tls_ca_file=pki.ca, tls_cert=pki.cert, tls_key=pki.key) if pki else None
    with actorrt.LocalCluster(n_workers=N_WORKERS, threads_per_worker=THREADS_PER_WORKER, processes=True,
                              security=security, dashboard_address=None) as cluster:
        want = "tls://" if pki else "tcp://"
        if not cluster.scheduler_address.startswith(want):
            raise RuntimeError(f"the scheduler listens on {cluster.scheduler_address}, not {want}")
        with actorrt.Client(cluster) as client:
            yield client


@contextlib.contextmanager
def dask_tls_cluster(pki: Pki) -> Iterator[Any]:
    """A dask.distributed Client on a LocalCluster of worker processes, TLS only."""
    _silence_dask()
    import distributed
    security = distributed.Security(
        tls_ca_file=pki.ca, tls_client_cert=pki.cert, tls_client_key=pki.key,
        tls_scheduler_cert=pki.cert, tls_scheduler_key=pki.key,
        tls_worker_cert=pki.cert, tls_worker_key=pki.key, require_encryption=True)
    with distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=THREADS_PER_WORKER, processes=True,
                                  security=security, protocol="tls", dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        if not cluster.scheduler_address.startswith("tls://"):
            raise RuntimeError(f"the dask scheduler listens on {cluster.scheduler_address}, not tls://")
        with distributed.Client(cluster, security=security) as client:
            yield client


class Session:
    """A connected client with its two workers and the runtime's ``wait``."""

    def __init__(self, runtime: str, client: Any) -> None:
        self.runtime = runtime
        self.client = client
        if runtime.startswith("dask"):
            from distributed import wait
        else:
            from actorrt import wait
        self.wait = wait
        workers = sorted(client.scheduler_info()["workers"])
        if len(workers) != 2:
            raise RuntimeError(f"expected 2 workers, got {workers}")
        self.a, self.b = workers
        client.run(_import_numpy)  # unpickling the first array must not import numpy
        self.counter = 0

    def fresh(self, n: int) -> int:
        """A start for ``n`` arguments never used before on this cluster."""
        start = self.counter
        self.counter += n
        return start

    def settle(self) -> None:
        """Wait until neither worker holds a value."""
        gc.collect()
        deadline = time.monotonic() + TIMEOUT
        while any(self.client.run(_held).values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the workers still hold values after every future was released")
            time.sleep(0.01)


# --- workloads -----------------------------------------------------------------------------
@dataclass
class Workload:
    """``prepare`` (untimed) then ``run`` (timed), both ``f(session, size, state)``."""

    name: str
    kind: str                      # "round trip", "map", "bulk"
    size: int                      # round trips, tasks or bytes
    warm_size: int                 # the untimed warm-up's
    prepare: Callable[[Session, int, dict], None]
    run: Callable[[Session, int, dict], None]

    def row(self) -> Row:
        if self.kind == "round trip":
            return Row(self.name, tasks=self.size, per_task=True)
        if self.kind == "map":
            return Row(self.name, tasks=self.size)
        return Row(self.name, tasks=self.size // MB, unit="MB")


def _nothing(s: Session, size: int, state: dict) -> None:
    pass


def _round_trips(s: Session, n: int, state: dict) -> None:
    start = s.fresh(n)
    for i in range(start, start + n):
        if s.client.submit(inc, i, pure=False).result(timeout=TIMEOUT) != i + 1:
            raise AssertionError("wrong result")


def _map_gather(s: Session, n: int, state: dict) -> None:
    start = s.fresh(n)
    results = s.client.gather(s.client.map(inc, range(start, start + n), pure=False))
    if results[0] != start + 1 or results[-1] != start + n or len(results) != n:
        raise AssertionError("wrong results")


def _make_on_a(s: Session, size: int, state: dict) -> None:
    future = s.client.submit(np.ones, size // 8, workers=[s.a], pure=False)
    s.wait(future, timeout=TIMEOUT)
    state["future"] = future


def _gather(s: Session, size: int, state: dict) -> None:
    state["value"] = value = state["future"].result(timeout=TIMEOUT)
    if value.nbytes != size:
        raise AssertionError(f"got {value.nbytes} bytes, expected {size}")


def _worker_to_worker(s: Session, size: int, state: dict) -> None:
    state["moved"] = moved = s.client.submit(nbytes, state["future"], workers=[s.b], pure=False)
    got = moved.result(timeout=TIMEOUT)
    if got != size:
        raise AssertionError(f"worker B got {got} bytes, expected {size}")


def workloads(quick: bool) -> list[Workload]:
    q = 1 if quick else 0
    trips, tasks, mb = ROUND_TRIPS[q], MAP_TASKS[q], ARRAY_MB[q]
    return [
        Workload("round trip submit(inc).result()", "round trip", trips, 5, _nothing, _round_trips),
        Workload(f"map+gather {tasks:,} tasks", "map", tasks, 50, _nothing, _map_gather),
        Workload(f"gather {mb:,} MB", "bulk", mb * MB, MB, _make_on_a, _gather),
        Workload(f"worker->worker {mb:,} MB", "bulk", mb * MB, MB, _make_on_a, _worker_to_worker),
    ]


def measure(s: Session, w: Workload, size: int, repeat: int) -> float:
    """Best time of ``repeat`` runs of ``w`` at ``size``; the workers are emptied after each."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        state: dict = {}
        try:
            w.prepare(s, size, state)
            best = min(best, timeit(functools.partial(w.run, s, size, state), repeat=1))
        finally:
            state.clear()
            if w.kind == "bulk":
                s.settle()
    return best


def run_variant(variant: str, make: Callable[[], Any], chosen: list[Workload], repeat: int,
                seconds: dict, errors: list) -> None:
    """Fill ``seconds[(variant, workload name)]``; failures go to ``errors``."""
    print(f"# {variant}: {len(chosen)} workload(s)", file=sys.stderr, flush=True)
    try:
        with make() as client:
            s = Session(variant, client)
            for w in chosen:  # untimed: open every connection, import everything
                measure(s, w, w.warm_size, 1)
            for w in chosen:
                try:
                    seconds[(variant, w.name)] = t = measure(s, w, w.size, repeat)
                    print(f"#   {w.name}: {t:.4f} s", file=sys.stderr, flush=True)
                except Exception as exc:  # noqa: BLE001 - listed below the tables, the run goes on
                    errors.append((variant, w.name, f"{type(exc).__name__}: {exc}"))
                    print(f"#   {w.name}: error: {exc!r}", file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - e.g. the cluster did not start
        errors.append((variant, "(cluster)", f"{type(exc).__name__}: {exc}"))
        print(f"# {variant} failed: {exc!r}", file=sys.stderr, flush=True)


# --- tables -------------------------------------------------------------------------------
def _cell(row: Row, variant: str) -> str:
    value = row.value(variant)
    if value is None:
        return "-"
    if row.rate_unit:
        return f"{value:,.0f} {row.rate_unit}"
    return fmt_seconds(value)


def encryption_table(chosen: list[Workload], seconds: dict) -> str:
    lines = []
    for w in chosen:
        row = w.row()
        row.seconds = {"tcp": seconds.get(("actorrt tcp", w.name)), "tls": seconds.get(("actorrt tls", w.name))}
        tcp, tls = row.value("tcp"), row.value("tls")
        ratio = tls / tcp if tcp is not None and tls is not None and tcp > 0 else None
        if w.kind == "round trip":
            target, met = f"<= {ROUND_TRIP_TARGET:.2f}x", ratio is not None and ratio <= ROUND_TRIP_TARGET
        elif w.kind == "bulk":
            target, met = f">= {THROUGHPUT_TARGET:.2f}x", ratio is not None and ratio >= THROUGHPUT_TARGET
        else:
            target, met = "", None
        verdict = "-" if not target else f"{target} {'met' if met else 'MISSED' if ratio is not None else '?'}"
        lines.append((w.name, _cell(row, "tcp"), _cell(row, "tls"),
                      "n/a" if ratio is None else f"{ratio:.2f}x", verdict))
    return "\n".join([
        format_columns(("workload", "actorrt tcp://", "actorrt tls://", "tls / tcp", "target"), lines),
        ("tls / tcp = the tls figure / the tcp figure: time per round trip (lower is better), "
         "tasks/s and MB/s otherwise (higher is better); 1.00x = encryption costs nothing"),
        (f"targets (issue): round trip over tls <= {ROUND_TRIP_TARGET}x tcp; "
         f"bulk throughput (gather, worker->worker) over tls >= {THROUGHPUT_TARGET}x tcp")])


def socket_floors(pki: Pki, mb: int, repeat: int) -> dict[str, float]:
    """Seconds to move ``mb`` MB over a bare loopback socket, plain and in mutual TLS
    with the same certificates: what encryption alone costs on this machine."""
    from bench_data import floor_seconds
    reps = max(repeat, 5)
    return {"tcp": floor_seconds(mb * MB, reps), "tls": floor_seconds(mb * MB, reps, tls=(pki.ca, pki.cert, pki.key))}


def floor_table(chosen: list[Workload], seconds: dict, floors: dict[str, float], mb: int) -> str:
    def rate(t: float | None, size: float) -> str:
        return "-" if t is None else f"{size / t:,.0f} MB/s"

    tcp, tls = floors["tcp"], floors["tls"]
    lines = [("socket floor", rate(tcp, mb), rate(tls, mb), f"{tcp / tls:.2f}x", "1.00x")]
    for w in chosen:
        if w.kind != "bulk":
            continue
        a_tcp, a_tls = seconds.get(("actorrt tcp", w.name)), seconds.get(("actorrt tls", w.name))
        size = w.size / MB
        lines.append((f"actorrt {w.name}", rate(a_tcp, size), rate(a_tls, size),
                      "n/a" if not a_tcp or not a_tls else f"{a_tcp / a_tls:.2f}x",
                      "n/a" if not a_tls else f"{(size / a_tls) / (mb / tls):.2f}x"))
    return "\n".join([
        format_columns(("transfer", "tcp://", "tls://", "tls / tcp", "tls ÷ tls floor"), lines),
        ("tls / tcp on the floor is what encryption alone allows here: a tls / tcp target above it "
         "cannot be met by any runtime using this machine's OpenSSL")])


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    only = args.only
    chosen = [w for w in workloads(args.quick) if not only or any(o in w.name for o in only)]
    with_dask = "dask" in runtimes(args)
    seconds: dict = {}
    errors: list = []
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    try:
        pki = make_pki(directory)
        variants: list[tuple[str, Callable[[], Any]]] = [
            ("actorrt tcp", lambda: actorrt_cluster(None)),
            ("actorrt tls", lambda: actorrt_cluster(pki)),
        ]
        if with_dask:
            variants.append(("dask tls", lambda: dask_tls_cluster(pki)))
        if chosen:
            for variant, make in variants:
                run_variant(variant, make, chosen, args.repeat, seconds, errors)
                gc.collect()
        floor_mb = ARRAY_MB[1] if args.quick else ARRAY_MB[0]
        floors = socket_floors(pki, floor_mb, args.repeat)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"# {time.perf_counter() - started:.1f} s in all", file=sys.stderr, flush=True)

    rows = []
    for w in chosen:
        row = w.row()
        row.seconds = {"actorrt": seconds.get(("actorrt tls", w.name)),
                       "dask": seconds.get(("dask tls", w.name))}
        rows.append(row)
    shape = f"{N_WORKERS} worker processes x {THREADS_PER_WORKER} thread, best of {args.repeat}, MB = 2**20 bytes"
    print_table(rows, title=f"TLS: actorrt over tls:// against dask.distributed over TLS ({shape})")
    print()
    print(f"the cost of encryption: actorrt over tls:// against actorrt over tcp:// ({shape})")
    print(encryption_table(chosen, seconds))
    print()
    print(f"against the physical floor: a bare loopback socket between two processes, {floor_mb} MB, "
          "Python's ssl (OpenSSL) for tls")
    print(floor_table(chosen, seconds, floors, floor_mb))
    if errors:
        print()
        print("errors:")
        for variant, name, message in errors:
            print(f"  {variant} {name}: " + message.replace("\n", "\n    "))


if __name__ == "__main__":  # dask's worker processes re-import this module
    main()
