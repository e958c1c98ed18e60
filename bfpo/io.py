"""Where things live, and writing files so that a killed process never leaves half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def project_root() -> Path:
    """The checkout's root (the folder holding pyproject.toml), else the current folder.

    Notebooks run with their own folder as the working directory in JupyterLab and with
    the root under the papermill runner; resolving paths against this keeps both the same.
    """
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_folder() -> Path:
    """Where the data subsets and quoted numbers are read: ``$BFPO_DATA_DIR`` when set, else ``data/``.

    ``data/`` is the repository's own copy (see ``data/SOURCES.md``), so a clone alone works.
    """
    env = os.environ.get("BFPO_DATA_DIR")
    return Path(env) if env else project_root() / "data"


def data_file(name: str) -> Path:
    """``name`` (e.g. ``"paper/bfpo_reported_results.csv"``) inside :func:`data_folder`.

    A missing file raises FileNotFoundError with one line naming the file, the folder looked
    in and the variable to set.
    """
    folder = data_folder()
    path = folder / name
    if not path.is_file():
        origin = "$BFPO_DATA_DIR" if os.environ.get("BFPO_DATA_DIR") else "the repository's data/ folder"
        raise FileNotFoundError(
            f"data file {name} not found in {folder} ({origin}); set BFPO_DATA_DIR to a folder holding it, "
            "or restore data/ from git"
        )
    return path


def project_path(path: str | os.PathLike) -> Path:
    """``path`` as is when absolute, else relative to :func:`project_root`."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (a folder) whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
