"""The package's layers import downward only (docs/internals.md, "Layers").

Parses every module's imports (type-checking-only imports excepted: they run nothing)
and checks each import that crosses from one unit to another against the allowed
directions, and that at most the one deliberate lazy import crosses units.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "actorrt"

# unit -> the units it may import. A unit is a top-level module or subpackage.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "utils": {"runtime"},
    "spec": {"core"},
    "run": {"core"},
    "protocol": {"core"},
    "diagnostics": {"core", "sizes"},  # plugin base classes, hooks and uploads: loaded on every server
    "runtime": set(),
    "durations": set(),
    "sizes": set(),
    "scheduler": {"core", "protocol", "utils", "spec", "run", "diagnostics"},
    "worker": {"core", "protocol", "runtime", "utils", "spec", "run", "diagnostics", "sizes"},
    "dashboard": {"core", "protocol", "scheduler", "utils", "diagnostics", "sizes"},  # (profile page: flame graphs)
    "client": {"durations", "sizes", "core", "protocol", "runtime", "utils", "spec", "integrations", "diagnostics"},
    "context": {"durations", "runtime", "client", "core"},
    "coordination": {"durations", "core", "protocol", "runtime", "client", "utils"},
    "deploy": {"durations", "sizes", "core", "protocol", "runtime", "utils", "scheduler", "worker", "dashboard", "client",
               "coordination", "diagnostics"},
    "integrations": {"core", "runtime", "utils"},
    "testing": {"durations", "sizes", "core", "runtime", "utils", "scheduler", "worker", "client", "coordination", "deploy",
                "diagnostics"},
}
TOP = "__init__"  # the package root re-exports the public API: it may import anything

# The one import allowed to go up a layer, and so done lazily: Client() starting a LocalCluster.
DELIBERATE_LAZY = {("client", "deploy")}

# Longest a module may grow before it should be split by concept.
MAX_LINES = 800


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else TOP


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, lazy) for each actorrt import that runs."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, lazy)
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "actorrt" or target.startswith("actorrt."):
                    if child.module is None or target == "actorrt":  # ``from .. import runtime``
                        for alias in child.names:
                            found.append((f"{target}.{alias.name}", child.lineno, lazy))
                    else:
                        found.append((target, child.lineno, lazy))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("actorrt."):
                        found.append((alias.name, child.lineno, lazy))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_is_known():
    units = {_unit(_module_name(p)) for p in _modules()}
    assert units - set(ALLOWED) - {TOP} == set(), "a new unit needs its place in ALLOWED"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    unit = _unit(_module_name(path))
    if unit == TOP:
        return
    wrong = []
    for target, line, lazy in _imports(path):
        other = _unit(target)
        if other == unit:
            continue
        if other not in ALLOWED[unit] and not (lazy and (unit, other) in DELIBERATE_LAZY):
            wrong.append(f"{path.name}:{line} imports {target} ({unit} -> {other})")
        elif lazy and (unit, other) not in DELIBERATE_LAZY:
            wrong.append(f"{path.name}:{line} imports {target} inside a function (import it at the top)")
    assert not wrong, "\n".join(wrong)


def test_exactly_one_deliberate_lazy_import():
    lazy = [(str(p.relative_to(PACKAGE)), target) for p in _modules() for target, _, is_lazy in _imports(p)
            if is_lazy and _unit(target) != _unit(_module_name(p))]
    assert lazy == [("client/client.py", "actorrt.deploy.local")]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outgrows_one_concept(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {n} lines; split it by concept"


# Where a thread may hand work to a loop without runtime.post, and why: runtime.post
# itself; the core, below runtime (a TCP writer waking its loop for the rest of a send);
# a pool thread handing back its finished job, which comes after anything the job did;
# LoopRunner stopping its own loop.
_UNCOUNTED_HAND_OFFS = {"runtime.py": 1, "core/tcp.py": 1, "worker/pool.py": 1, "utils.py": 1}


def test_hand_offs_to_a_loop_are_counted():
    # An actor's answer or a task's report leaves from its thread only if the method or
    # the task handed the loop nothing (runtime.posts_made); a hand-off that bypasses
    # runtime.post would let it pass what they sent.
    found: dict[str, int] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "call_soon_threadsafe":
                where = str(path.relative_to(PACKAGE))
                found[where] = found.get(where, 0) + 1
    assert found == _UNCOUNTED_HAND_OFFS, "hand work to a loop from a thread with runtime.post"
