"""Command-line entry points: ``actorrt-scheduler``, ``actorrt-worker``, ``actorrt demo``."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import Any

from ..client import Client
from ..core.addresses import format_host
from ..core.errors import AuthenticationError, BadMessageError, CommClosedError
from ..core.security import Security
from ..dashboard import check_exposure, close_dashboard, parse_dashboard_address
from ..worker import default_listen_address, start_worker
from .local import start_scheduler


def _secret(args: Any) -> bytes | None:
    value = os.environ.get("ACTORRT_SECRET")
    if value is None:
        return None
    try:
        return bytes.fromhex(value) if getattr(args, "secret_from_env", False) else value.encode()
    except ValueError:
        return value.encode()


def _contact(value: str | None, port: int, scheme: str) -> str | None:
    """``--contact-address``: ``tcp://host:port``, ``host:port`` or just ``host``."""
    if not value:
        return None
    if "://" in value:
        return value
    if value.count(":") == 1 or value.startswith("["):
        return f"{scheme}://{value}"
    if port == 0:
        raise SystemExit(f"--contact-address {value!r} needs a port when listening on a random one")
    return f"{scheme}://{format_host(value)}:{port}"


def _security(args: Any) -> Security:
    """``--tls-ca-file/--tls-cert/--tls-key``: all three for tls://, or none."""
    try:
        return Security(tls_ca_file=args.tls_ca_file, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except ValueError as e:
        raise SystemExit(f"actorrt: {e}") from None


async def _run_until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()


def _dashboard_address(args: Any) -> str | None:
    """``--dashboard-address``, checked before anything starts (a bad one is a usage error)."""
    if args.dashboard_address.lower() in ("", "none", "off"):
        return None
    check_exposure(parse_dashboard_address(args.dashboard_address), secret_configured=bool(_secret(args)))
    return args.dashboard_address


async def _scheduler(args: Any, dashboard: str | None) -> None:
    security = _security(args)
    host, scheduler = await start_scheduler(f"{security.scheme}://{format_host(args.host)}:{args.port}",
                                            secret=_secret(args), dashboard_address=dashboard,
                                            contact_address=_contact(args.contact_address, args.port,
                                                                     security.scheme),
                                            security=security)
    print(f"actorrt scheduler at {host.address}", flush=True)
    if scheduler.dashboard_link:
        print(f"dashboard at {scheduler.dashboard_link}", flush=True)
    try:
        await _run_until_signal(asyncio.Event())
    finally:
        await close_dashboard(host)
        await host.close()


async def _worker(args: Any) -> None:
    security = _security(args)
    scheme = security.scheme
    address: str | None
    if args.host:
        address = f"{scheme}://{format_host(args.host)}:{args.port}"
    else:  # toward the scheduler, on --port if given (it is not dropped for want of --host)
        address = default_listen_address(args.scheduler, args.port) if args.port else None
    try:
        host, worker = await start_worker(args.scheduler, nthreads=args.nthreads, address=address,
                                          secret=_secret(args), name=args.name or "",
                                          contact_address=_contact(args.contact_address, args.port, scheme),
                                          security=security, death_timeout=args.death_timeout)
    except (BadMessageError, CommClosedError, AuthenticationError, OSError) as e:
        # Refused or unreachable: say why in one line, not in a traceback.
        print(f"actorrt-worker: could not join the scheduler at {args.scheduler}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if not args.quiet:
        print(f"actorrt worker at {host.address}", flush=True)
    # Everything imported and built so far lives as long as the process: move it out
    # of the collector's way, so full collections under load only scan task objects.
    gc.freeze()
    stop = asyncio.Event()
    assert worker.closed is not None
    closed = asyncio.ensure_future(worker.closed.wait())
    signalled = asyncio.ensure_future(_run_until_signal(stop))
    try:
        await asyncio.wait([closed, signalled], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (closed, signalled):
            t.cancel()
        await host.close()


def _demo(args: Any) -> None:
    def inc(x: int) -> int:
        return x + 1

    def add(x: int, y: int) -> int:
        return x + y

    t0 = time.perf_counter()
    with Client(n_workers=args.n_workers, threads_per_worker=args.threads) as client:
        t1 = time.perf_counter()
        print(f"started a local cluster with {len(client.nthreads())} worker processes "
              f"in {t1 - t0:.2f} s: {client.scheduler_address}")
        x = client.submit(inc, 1)
        y = client.submit(inc, x)
        z = client.submit(add, x, y)
        print(f"graph: z = add(inc(1), inc(inc(1))) = {z.result()}    {z}")
        t2 = time.perf_counter()
        futures = client.map(inc, range(args.n))
        total = sum(client.gather(futures))
        t3 = time.perf_counter()
        print(f"map: {args.n} tasks, sum = {total}, {t3 - t2:.2f} s ({args.n / (t3 - t2):,.0f} tasks/s)")
    print(f"closed the cluster; total {time.perf_counter() - t0:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="actorrt", description="actorrt command line")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="start a local cluster and run a small workload")
    d.add_argument("--n", type=int, default=10_000, help="number of tasks in the map")
    d.add_argument("--n-workers", type=int, default=2)
    d.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("scheduler", help="run a scheduler")
    _scheduler_args(s)
    w = sub.add_parser("worker", help="run a worker")
    _worker_args(w)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "demo":
        _demo(args)
    elif args.cmd == "scheduler":
        try:
            dashboard = _dashboard_address(args)
        except (TypeError, ValueError) as e:
            s.error(f"--dashboard-address: {e}")
        asyncio.run(_scheduler(args, dashboard))
    else:
        asyncio.run(_worker(args))


def _scheduler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on; 0.0.0.0 means all, and the scheduler then tells "
                        "others this machine's own IP (non-loopback needs ACTORRT_SECRET)")
    p.add_argument("--port", type=int, default=8786)
    p.add_argument("--contact-address", default=None,
                   help="the address others dial to reach this scheduler, if not the one it listens on "
                        "(behind NAT, or a name): tcp://host:port or host")
    _tls_args(p)
    p.add_argument("--dashboard-address", default=":8787",
                   help="where to serve the web dashboard: ':8787' (loopback, the default), "
                        "'0.0.0.0:8787' (every interface; needs ACTORRT_SECRET), or 'none'")


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scheduler", help="scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--nthreads", type=int, default=1)
    p.add_argument("--name", default=None)
    p.add_argument("--host", default=None,
                   help="interface to listen on (default: the one this machine reaches the scheduler "
                        "through, so other workers and clients can reach this one too)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    p.add_argument("--contact-address", default=None,
                   help="the address others dial to reach this worker, if not the one it listens on")
    p.add_argument("--death-timeout", type=float, default=60.0,
                   help="seconds to keep trying to rejoin a lost scheduler before exiting (0: exit at once)")
    _tls_args(p)
    p.add_argument("--secret-from-env", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # LocalCluster's workers


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca-file", default=None, help="the cluster's CA certificate (PEM): enables tls://")
    p.add_argument("--tls-cert", default=None, help="this process's certificate, signed by that CA (PEM)")
    p.add_argument("--tls-key", default=None, help="the private key of --tls-cert (PEM)")


def scheduler_main() -> None:
    main(["scheduler", *sys.argv[1:]])


def worker_main() -> None:
    main(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    main()
