"""Command-line entry points: ``actorrt-scheduler``, ``actorrt-worker``, ``actorrt demo``."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from ..client import Client
from ..core import secret_file
from ..core.addresses import format_host, is_loopback, with_default_scheme
from ..core.errors import AuthenticationError, BadMessageError, CommClosedError
from ..core.security import Security
from ..dashboard import check_exposure, close_dashboard, parse_dashboard_address
from ..worker import MemorySettings, default_listen_address, parse_memory_limit, start_worker
from ..worker.memory import parse_fraction, tune_allocator
from ..utils import positive_count
from .local import parse_resources, start_scheduler
from .nanny import RESTART_EXIT_CODE, Nanny, NannyLink, can_fork_first


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
    secret = _secret(args)
    # Without ACTORRT_SECRET a loopback scheduler makes its own and publishes it to this
    # user only (core/secret_file.py): other local users cannot connect. Off loopback a
    # secret must be given (the listener refuses otherwise): remote peers read no file here.
    own_secret = secret is None and is_loopback(args.host)
    if own_secret:
        secret = os.urandom(32)
    host, scheduler = await start_scheduler(f"{security.scheme}://{format_host(args.host)}:{args.port}",
                                            secret=secret, dashboard_address=dashboard,
                                            contact_address=_contact(args.contact_address, args.port,
                                                                     security.scheme),
                                            security=security, max_tasks=args.max_tasks,
                                            max_unfinished=args.max_unfinished)
    try:
        if own_secret:
            assert secret is not None
            where = secret_file.publish(host.address, secret)
            if where is None:
                print("actorrt scheduler: could not write the secret file; only clients given the "
                      "secret can connect", file=sys.stderr, flush=True)
        print(f"actorrt scheduler at {host.address}", flush=True)
        if scheduler.dashboard_link:
            print(f"dashboard at {scheduler.dashboard_link}", flush=True)
        await _run_until_signal(asyncio.Event())
    finally:
        if own_secret:
            secret_file.withdraw(host.address)  # (also after SIGTERM/SIGINT: they end the wait above)
        await close_dashboard(host)
        await host.close()


async def _worker(args: Any) -> int:
    """Run one worker until it stops; the process's exit status (RESTART_EXIT_CODE: its
    nanny is to start a new one)."""
    tune_allocator()  # freed results go back to the system, not stay resident (worker/memory.py)
    security = _security(args)
    scheme = security.scheme
    args.scheduler = with_default_scheme(args.scheduler)  # ("127.0.0.1:8786" means tcp://, as in dask)
    secret = _secret(args)  # (None: start_worker looks for one this user's scheduler published)
    address: str | None
    if args.host:
        address = f"{scheme}://{format_host(args.host)}:{args.port}"
    else:  # toward the scheduler, on --port if given (it is not dropped for want of --host)
        address = default_listen_address(args.scheduler, args.port)
    nanny = NannyLink.from_environ()
    try:
        host, worker = await start_worker(args.scheduler, nthreads=args.nthreads, address=address,
                                          secret=secret, name=args.name or "",
                                          contact_address=_contact(args.contact_address, args.port, scheme),
                                          security=security, death_timeout=args.death_timeout,
                                          nanny=nanny is not None, resources=args.resources,
                                          **_memory_options(args))
    except (BadMessageError, CommClosedError, AuthenticationError, OSError) as e:
        # Refused or unreachable: say why in one line, not in a traceback.
        print(f"actorrt-worker: could not join the scheduler at {args.scheduler}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if nanny is not None:
        nanny.ready(host.address)  # from now on a death is restarted, not an error
    if not args.quiet:
        print(f"actorrt worker at {host.address}", flush=True)
    # Everything imported and built so far lives as long as the process: move it out
    # of the collector's way, so full collections under load only scan task objects.
    gc.freeze()
    stop = asyncio.Event()
    assert worker.closed is not None
    waits = [asyncio.ensure_future(worker.closed.wait()), asyncio.ensure_future(_run_until_signal(stop))]
    if nanny is not None:  # (on Linux the kernel kills us with the nanny; this is for elsewhere)
        waits.append(asyncio.ensure_future(nanny.wait_orphaned()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()
        await host.close()
    return RESTART_EXIT_CODE if worker.restart_requested else 0


def _run_nanny(args: Any, argv: list[str]) -> int:
    """This process supervises the worker, its child: at first (Linux) a copy of this
    process, which returns here as the worker with that worker's exit status; once
    restarted, the same command with ``--no-nanny``. The nanny itself never returns."""
    # A name that outlives restarts: a restarted worker has a new address, and is
    # recognised by its name (the scheduler's restart_workers waits for it).
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    command = [sys.executable, "-m", "actorrt.deploy.cli", *argv, "--no-nanny", "--name", name]
    memory = args.memory_settings
    nanny = Nanny(command, memory_limit=args.memory_limit, terminate=memory.terminate,
                  local_directory=args.local_directory, name=name)
    if can_fork_first() and not nanny.fork_first():
        # The first worker: this process's copy, the command's own arguments parsed
        # already, as the command above would parse them.
        args.nanny, args.name = False, name
        return asyncio.run(_worker(args))
    status = asyncio.run(nanny.run())
    # Nothing of the nanny's own is left to clean up (its worker reaped, the spill
    # space removed), while tearing down the worker's modules it imported for the
    # fork cost ~30 ms of every cluster's close.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def _memory_options(args: Any) -> dict:
    """``start_worker``'s memory keywords from the parsed flags."""
    return {"memory_limit": args.memory_limit, "local_directory": args.local_directory,
            "memory": args.memory_settings}


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
        _worker_main(w, args, list(sys.argv[1:] if argv is None else argv))


def _worker_main(parser: argparse.ArgumentParser, args: Any, argv: list[str]) -> None:
    """``actorrt worker``: a nanny running the worker (``argv`` again, as its child), or
    with ``--no-nanny`` the worker itself. Exits with the status it ends with."""
    if args.local_directory is not None and os.path.exists(args.local_directory) \
            and not os.path.isdir(args.local_directory):
        parser.error(f"--local-directory {args.local_directory!r} is not a directory")
    args.memory_settings = _memory_settings(args)
    if args.nanny:
        raise SystemExit(_run_nanny(args, argv))
    raise SystemExit(asyncio.run(_worker(args)))


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
    p.add_argument("--max-tasks", type=_positive, default=None,
                   help="most tasks held at once; a graph past it is refused (default: "
                        "ACTORRT_MAX_TASKS, else this machine's memory at 4 KiB per task)")
    p.add_argument("--max-unfinished", type=_positive, default=None,
                   help="tasks that may wait for workers before clients are held back (default: "
                        "ACTORRT_MAX_UNFINISHED, else 1,000,000)")


def _positive(text: str) -> int:
    try:
        return positive_count("the value", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scheduler", help="scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--nthreads", type=int, default=1)
    p.add_argument("--name", default=None,
                   help="the worker's name (default: host-pid under a nanny); workers= may select it by "
                        "name, as by address or host")
    p.add_argument("--host", default=None,
                   help="interface to listen on (default: the one this machine reaches the scheduler "
                        "through, so other workers and clients can reach this one too)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    p.add_argument("--contact-address", default=None,
                   help="the address others dial to reach this worker, if not the one it listens on")
    p.add_argument("--death-timeout", type=float, default=60.0,
                   help="seconds to keep trying to rejoin a lost scheduler before exiting (0: exit at once)")
    p.add_argument("--nanny", action=argparse.BooleanOptionalAction, default=True,
                   help="run the worker under a nanny process that restarts it when it dies, grows past "
                        "its memory limit or is asked to (client.restart); --no-nanny: this process is "
                        "the worker (default: --nanny)")
    p.add_argument("--memory-limit", type=_memory_limit_arg, default="auto", metavar="LIMIT",
                   help="bytes of memory the worker may use: '4GiB', '500MB', '1e9', a fraction of this "
                        "machine's memory (a number up to 1, such as 0.5), 'auto' (all of it; the default) "
                        "or 0 for no limit")
    p.add_argument("--local-directory", default=None,
                   help="where the worker spills data to disk (default: the system's temporary directory)")
    p.add_argument("--resources", type=_resources_arg, default=None, metavar="NAME=AMOUNT,...",
                   help="abstract resources this worker declares, such as 'GPU=2,MEM=64e9': a task "
                        "submitted with resources={'GPU': 1} runs only on a worker with that much free, "
                        "and holds it while it runs (the nanny passes this on to each worker it starts)")
    for name, default, what in [("target", 0.6, "stored results above it are spilled to disk"),
                                ("spill", 0.7, "process memory above it spills stored results"),
                                ("pause", 0.8, "process memory above it stops new tasks from starting"),
                                ("terminate", 0.95, "the nanny restarts a worker whose process grows past it")]:
        p.add_argument(f"--memory-{name}-fraction", type=_fraction_arg, default=default, metavar="FRACTION",
                       help=f"fraction of --memory-limit: {what} (default {default}; 'false' turns it off)")
    _tls_args(p)
    p.add_argument("--secret-from-env", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # LocalCluster's workers


def _memory_limit_arg(text: str) -> int | None:
    """``--memory-limit``: a number is read as dask reads it (at most 1: a fraction of this
    machine's memory; more: bytes), anything else as a size ('4GiB') or 'auto'."""
    value: object
    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        return parse_memory_limit(value)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _resources_arg(text: str) -> dict[str, float] | None:
    try:
        return parse_resources(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction_arg(text: str) -> float | None:
    if text.strip().lower() in ("false", "none", "off", "no"):
        return None
    try:
        return parse_fraction("the fraction", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or 'false', got {text!r}") from None


def _memory_settings(args: Any) -> MemorySettings:
    return MemorySettings(target=args.memory_target_fraction, spill=args.memory_spill_fraction,
                          pause=args.memory_pause_fraction, terminate=args.memory_terminate_fraction)


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
