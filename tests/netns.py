"""A virtual LAN of Linux network namespaces, for tests that deploy on several "machines".

    lan = Lan()                          # a bridge in the root namespace
    a, b = lan.add("a"), lan.add("b")    # two namespaces, each with a veth on the bridge
    p = a.run([sys.executable, "-c", "..."], env)   # a process inside ``a``
    lan.link_down(b); lan.link_up(b)     # a silent partition of ``b`` (no FIN, no RST)
    lan.close()                          # kill every process, delete namespaces and links

Each namespace gets ``lo`` up and one IPv4 address in ``10.213.X.0/24``, X taken from
this process's pid (so concurrent runs, e.g. pytest-xdist workers, use different
subnets; the subnets are on separate bridges anyway, so even a clash would be
harmless). The bridge has no address: nothing is routed between the LAN and the root
namespace or the outside world. IPv6 address generation is off on every interface we
make, so the kernel sends nothing of its own (no router solicitations) on the LAN.

Every interface name starts with ``ar{pid % 100000}`` and is at most 15 characters;
namespaces are ``artest-{pid}-{lan}-{tag}``. Bridges, host-side veths and
namespaces carry the full pid (an interface alias, the namespace name), so
:func:`sweep_stale` can remove what a run that was SIGKILLed left behind.

Linux only, root only: :func:`unavailable_reason` says why a LAN cannot be built here.
"""
from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "Lan",
    "Namespace",
    "NetnsError",
    "NsProcess",
    "create_lan",
    "link_down",
    "link_up",
    "sweep_stale",
    "unavailable_reason",
]

IP_TIMEOUT = 15.0  # seconds for one `ip` command
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL at teardown

_PID = os.getpid()
_IF_PREFIX = f"ar{_PID % 100000}"
_NS_PREFIX = f"artest-{_PID}-"
_ALIAS = f"artest-{_PID}"
_lan_numbers = itertools.count()
_open_lans: set[Lan] = set()


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has the command and its stderr."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *args]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=IP_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise NetnsError(f"{' '.join(cmd)}: {e}") from e
        return subprocess.CompletedProcess(cmd, -1, "", str(e))
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr.strip()}")
    return done


def _subnet_octet() -> int:
    """X in 10.213.X.0/24: from the pid, and the xdist worker number when there is one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return 1 + (_PID * 7 + int(digits or 0)) % 254


def unavailable_reason() -> str | None:
    """Why a LAN cannot be built here, or None if it can.

    Tries it for real, once: a namespace, a bridge and a veth pair are created and
    deleted again.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    ns = f"{_NS_PREFIX}probe"
    br, va, vb = f"{_IF_PREFIX}pb", f"{_IF_PREFIX}pa", f"{_IF_PREFIX}pz"
    made: list[tuple[str, ...]] = []  # deleted in reverse, and only what we made
    try:
        try:
            _ip("netns", "add", ns)
            made.append(("netns", "del", ns))
        except NetnsError as e:
            return f"`ip netns add` failed: {e}"
        try:
            _ip("link", "add", br, "type", "bridge")
            made.append(("link", "del", br))
            _ip("link", "add", va, "type", "veth", "peer", "name", vb)
            made.append(("link", "del", va))
            _ip("link", "set", vb, "netns", ns)
        except NetnsError as e:
            return f"cannot create a bridge and a veth pair: {e}"
        return None
    finally:
        for cmd in reversed(made):
            _ip(*cmd, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_pids(ns: str) -> list[int]:
    """SIGKILL every process still inside namespace ``ns``; their pids."""
    out = _ip("netns", "pids", ns, check=False).stdout.split()
    pids = [int(p) for p in out if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def sweep_stale() -> list[str]:
    """Delete namespaces and interfaces that a test run, now dead, left behind.

    Only ours: namespaces named ``artest-{pid}-...`` and interfaces whose alias is
    ``artest-{pid}``, for pids that no longer run. Returns what was deleted.
    """
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"artest-(\d+)-.*", name)
        if m and int(m.group(1)) != _PID and not _alive(int(m.group(1))):
            _kill_namespace_pids(name)
            if _ip("netns", "del", name, check=False).returncode == 0:
                removed.append(name)
    out = _ip("-o", "link", "show", check=False).stdout
    for line in out.splitlines():
        m = re.search(r"^\d+:\s+([^:@\s]+).*\balias artest-(\d+)\b", line)
        if m is None or int(m.group(2)) == _PID or _alive(int(m.group(2))):
            continue
        if _ip("link", "del", m.group(1), check=False).returncode == 0:
            removed.append(m.group(1))
    return removed


class NsProcess(subprocess.Popen):
    """A ``subprocess.Popen`` whose merged stdout/stderr is read by a thread into ``lines``.

    Reading all the time means a chatty process never blocks on a full pipe; the
    lines are there for :meth:`wait_for_line` and for failure messages (:meth:`tail`).
    """

    def __init__(self, args: Sequence[str], *, label: str, env: dict | None, stdin: bool) -> None:
        super().__init__(list(args), env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                         errors="replace")
        self.label = label
        self.lines: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"netns-reader-{label}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.stdout is not None
        try:
            for line in self.stdout:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def wait_for_line(self, match: str | Callable[[str], bool], timeout: float, start: int = 0) -> tuple[int, str]:
        """The first output line from index ``start`` on that contains ``match`` (or
        satisfies it); ``(index, line)``. Raises ``TimeoutError`` with the output so
        far if none comes within ``timeout`` seconds or the process ends first."""
        test = match if callable(match) else (lambda line: match in line)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    if test(self.lines[i]):
                        return i, self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        if self.eof:
            try:
                why = f"the process exited with {self.wait(2)}"
            except subprocess.TimeoutExpired:
                why = "the process closed its output"
        else:
            why = f"nothing within {timeout} s"
        raise TimeoutError(f"{self.label}: no line matching {match!r} ({why}); output:\n{self.tail()}")

    def send_line(self, text: str) -> None:
        assert self.stdin is not None, f"{self.label} was started without stdin"
        self.stdin.write(text + "\n")
        self.stdin.flush()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            lines = self.lines[-n:]
        cut = [line if len(line) <= 3000 else line[:3000] + f"... ({len(line)} chars)" for line in lines]
        return "\n".join(f"  [{self.label}] {line}" for line in cut) or f"  [{self.label}] (no output)"

    def _close_pipes(self) -> None:
        for f in (self.stdin, self.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._reader.join(5)


class Namespace:
    """One "machine": a network namespace with one address on the LAN."""

    def __init__(self, lan: Lan, tag: str, name: str, ip: str, veth: str, host_veth: str) -> None:
        self.lan, self.tag, self.name, self.ip = lan, tag, name, ip
        self.veth = veth  # our end, inside the namespace
        self.host_veth = host_veth  # its peer, on the bridge in the root namespace
        self.made_netns = self.made_veth = False  # what exists because we made it

    def run(self, args: Sequence[str], env: dict | None = None, *, stdin: bool = False,
            label: str | None = None) -> NsProcess:
        """Start ``args`` inside this namespace (``ip netns exec`` execs it: the
        process's pid is the command's own). Stopped by :meth:`Lan.close` at the latest."""
        proc = NsProcess(["ip", "netns", "exec", self.name, *args], label=label or self.tag, env=env,
                         stdin=stdin)
        self.lan.processes.append(proc)
        return proc

    def __repr__(self) -> str:
        return f"<Namespace {self.tag} {self.name} {self.ip}>"


class Lan:
    """A bridge plus namespaces on it; see the module docstring. Use :meth:`close`
    (or ``with``) to take it all down."""

    def __init__(self, subnet_octet: int | None = None) -> None:
        # A number whose interface names are all free (another run whose pid has the
        # same last five digits may be using some; we never take over its names).
        taken = set(re.findall(r"^\d+:\s+([^:@\s]+)", _ip("-o", "link", "show", check=False).stdout, re.MULTILINE))
        while True:
            self.number = next(_lan_numbers)
            stems = (f"{_IF_PREFIX}b{self.number}", f"{_IF_PREFIX}h{self.number}x", f"{_IF_PREFIX}n{self.number}x")
            if not any(name == stems[0] or name.startswith(stems[1:]) for name in taken):
                break
        self.subnet = f"10.213.{subnet_octet or _subnet_octet()}"
        self.bridge = stems[0]
        self.namespaces: dict[str, Namespace] = {}
        self.processes: list[NsProcess] = []
        self._hosts = itertools.count(10)
        self._closed = False
        self._bridge_made = False  # we only ever delete what we made
        _open_lans.add(self)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            # Bridged frames skip iptables (br_netfilter): a host firewall must not
            # filter the LAN. Older kernels lack the option; then it stays as it was.
            _ip("link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0", check=False)
            _ip("link", "set", self.bridge, "alias", _ALIAS)
            _ip("link", "set", self.bridge, "addrgenmode", "none", check=False)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add(self, tag: str) -> Namespace:
        """A new namespace on the LAN, ``lo`` and its veth up, with the next address."""
        if self._closed:
            raise RuntimeError("this LAN is closed")
        if tag in self.namespaces:
            raise ValueError(f"namespace tag {tag!r} is taken")
        i = len(self.namespaces)
        if i >= 100:
            raise ValueError("at most 100 namespaces per LAN")
        name = f"{_NS_PREFIX}{self.number}-{tag}"
        host_veth, veth = f"{_IF_PREFIX}h{self.number}x{i}", f"{_IF_PREFIX}n{self.number}x{i}"
        assert len(host_veth) <= 15 and len(veth) <= 15, (host_veth, veth)
        ip = f"{self.subnet}.{next(self._hosts)}"
        ns = Namespace(self, tag, name, ip, veth, host_veth)
        # Registered first, so close() removes whatever part of it was made.
        self.namespaces[tag] = ns
        if name in _ip("netns", "list", check=False).stdout.split():
            _kill_namespace_pids(name)  # our own name, so left by a dead run with our pid
            _ip("netns", "del", name, check=False)
        _ip("netns", "add", name)
        ns.made_netns = True
        _ip("link", "add", host_veth, "type", "veth", "peer", "name", veth)
        ns.made_veth = True
        _ip("link", "set", host_veth, "alias", _ALIAS)
        _ip("link", "set", veth, "netns", name)
        _ip("link", "set", host_veth, "addrgenmode", "none", check=False)
        _ip("link", "set", host_veth, "master", self.bridge)
        _ip("link", "set", host_veth, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", veth, "addrgenmode", "none", check=False)
        _ip("-n", name, "addr", "add", f"{ip}/24", "dev", veth)
        _ip("-n", name, "link", "set", veth, "up")
        return ns

    def link_down(self, ns: Namespace) -> None:
        """Take ``ns``'s veth down: from now on its packets go nowhere, silently."""
        _ip("-n", ns.name, "link", "set", ns.veth, "down")

    def link_up(self, ns: Namespace) -> None:
        """Bring ``ns``'s veth up again (its address and route come back with it)."""
        _ip("-n", ns.name, "link", "set", ns.veth, "up")

    def stop(self, procs: Iterable[subprocess.Popen], grace: float = STOP_GRACE) -> None:
        """SIGTERM the live ones, SIGKILL what is left after ``grace`` s, reap them all."""
        procs = list(procs)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in procs:
            if isinstance(p, NsProcess):
                p._close_pipes()

    def close(self) -> None:
        """Kill every process, then delete namespaces, veths and the bridge. Idempotent.

        Raises ``NetnsError`` if, after trying everything, any of them is still there.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.stop(self.processes)
            for ns in self.namespaces.values():  # strays: anything our processes started
                if _kill_namespace_pids(ns.name):
                    time.sleep(0.1)
        finally:
            for ns in self.namespaces.values():
                if ns.made_veth:
                    _ip("link", "del", ns.host_veth, check=False)  # takes its peer with it, now
                if ns.made_netns:
                    _ip("netns", "del", ns.name, check=False)
            if self._bridge_made:
                _ip("link", "del", self.bridge, check=False)
            _open_lans.discard(self)
        left = self.leftovers()
        if left:
            raise NetnsError(f"left behind after teardown: {left}")

    def leftovers(self) -> list[str]:
        """Namespaces, interfaces and processes of this LAN that still exist."""
        names = set(_ip("netns", "list", check=False).stdout.split())
        links = _ip("-o", "link", "show", check=False).stdout
        ours = list(self.namespaces.values())
        left = [ns.name for ns in ours if ns.made_netns and ns.name in names]
        mine = [self.bridge] if self._bridge_made else []
        mine += [ns.host_veth for ns in ours if ns.made_veth]
        left += [f"link {n}" for n in mine if re.search(rf"^\d+:\s+{re.escape(n)}[:@]", links, re.MULTILINE)]
        left += [f"pid {p.pid} ({p.label})" for p in self.processes if p.poll() is None]
        return left

    def report(self, n: int = 30) -> str:
        """The last ``n`` output lines of every process, for failure messages."""
        return "\n".join(f"--- {p.label} (pid {p.pid}, exit {p.poll()}):\n{p.tail(n)}" for p in self.processes)

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_lan(tags: Iterable[str] | int) -> Lan:
    """A LAN with a namespace per tag (or ``n`` namespaces tagged ``n0``, ``n1``, ...)."""
    lan = Lan()
    try:
        for tag in (f"n{i}" for i in range(tags)) if isinstance(tags, int) else tags:
            lan.add(tag)
    except BaseException:
        lan.close()
        raise
    return lan


def link_down(ns: Namespace) -> None:
    ns.lan.link_down(ns)


def link_up(ns: Namespace) -> None:
    ns.lan.link_up(ns)


@atexit.register
def _close_open_lans() -> None:
    """Last resort (a fixture finalizer should have done it): nothing outlives us."""
    for lan in list(_open_lans):
        try:
            lan.close()
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            print(f"netns: {e}", file=sys.stderr)
