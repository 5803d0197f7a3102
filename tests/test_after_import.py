"""utils.when_imported: a callback runs once a module is first imported, and the
module loads exactly as it would have without the hook."""
import importlib
import sys

from actorrt.utils import when_imported


def test_callback_runs_after_the_first_import_and_the_loader_is_untouched(tmp_path, monkeypatch):
    (tmp_path / "late_module_xyz.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("late_module_xyz", lambda: seen.append(sys.modules["late_module_xyz"].VALUE + 1))
    assert seen == []
    try:
        module = importlib.import_module("late_module_xyz")
        assert seen == [42]
        assert type(module.__loader__).__name__ == "SourceFileLoader"
        assert module.__spec__.loader is module.__loader__
        importlib.reload(module)                      # once only
        assert seen == [42]
    finally:
        sys.modules.pop("late_module_xyz", None)


def test_an_imported_module_runs_the_callback_at_once_and_a_failing_one_is_logged(tmp_path, monkeypatch,
                                                                                  caplog):
    ran = []
    when_imported("sys", lambda: ran.append(True))
    assert ran == [True]
    (tmp_path / "late_module_fails.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def broken():
        raise RuntimeError("integration broke")
    when_imported("late_module_fails", broken)
    try:
        assert importlib.import_module("late_module_fails").X == 1  # the user's import still works
        assert "integration broke" in caplog.text
    finally:
        sys.modules.pop("late_module_fails", None)


def test_the_same_callback_asked_for_twice_runs_once(tmp_path, monkeypatch):
    (tmp_path / "late_module_twice.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def note():
        seen.append(1)
    for _ in range(3):  # (as every Client asks for joblib's registration)
        when_imported("late_module_twice", note)
    try:
        importlib.import_module("late_module_twice")
        assert seen == [1]
    finally:
        sys.modules.pop("late_module_twice", None)
