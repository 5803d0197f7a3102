"""Files sent to the workers (``client.upload_file``, ``UploadFile``): where they go
and how they are imported, again when they are sent again."""
from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import threading
import zipfile

_lock = threading.Lock()
_directory: str | None = None


def upload_directory() -> str:
    """This process's directory for uploaded files, on ``sys.path``; removed at exit."""
    global _directory
    with _lock:
        if _directory is None:
            _directory = tempfile.mkdtemp(prefix=f"actorrt-uploads-{os.getpid()}-")
            atexit.register(shutil.rmtree, _directory, True)  # leave nothing behind in /tmp
        if _directory not in sys.path:
            sys.path.insert(0, _directory)
        return _directory


def install_file(name: str, data: bytes, load: bool = True) -> str:
    """Write ``data`` as ``name`` in the upload directory and, with ``load``, import it:
    a ``.py`` as its module, a ``.zip``/``.egg`` as the packages in it (both again, from
    the new file, if they were imported before). Returns the file's path."""
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"upload: the file name must be a plain name, got {name!r}")
    path = os.path.join(upload_directory(), name)
    archive = name.endswith((".zip", ".egg"))
    if archive:
        _forget_archive(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # (a task importing it meanwhile sees the old file or the new, never half)
    if archive and path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    if not load:
        return path
    if name.endswith(".py"):
        _import_fresh(name[:-3])
    elif archive:
        for module in _top_level_modules(path):
            _import_fresh(module)
    return path


def _import_fresh(module: str) -> None:
    if module in sys.modules:
        importlib.reload(sys.modules[module])
    else:
        importlib.import_module(module)


def _forget_archive(path: str) -> None:
    """Before an archive is replaced: drop the modules loaded from it and the zip
    importer's cached index of it, so the next import reads the new file."""
    if not os.path.exists(path):
        return
    for module in _top_level_modules(path):
        for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[loaded]
    sys.path_importer_cache.pop(path, None)
    try:
        import zipimport
        zipimport._zip_directory_cache.pop(path, None)  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass


def _top_level_modules(path: str) -> list[str]:
    """The modules and packages at the top of a zip: ``a.py`` -> ``a``, ``pkg/__init__.py`` -> ``pkg``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return []
    out = []
    for entry in names:
        parts = entry.split("/")
        if len(parts) == 1 and parts[0].endswith(".py"):
            out.append(parts[0][:-3])
        elif len(parts) == 2 and parts[1] == "__init__.py" and not parts[0].endswith(".egg-info"):
            out.append(parts[0])
    return sorted(set(m for m in out if m.isidentifier() and m != "__main__"))
