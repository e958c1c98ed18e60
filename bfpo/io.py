"""Where things live, and writing files so that a killed process never leaves half a file."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("bfpo.io")


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


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
DISK_FULL_WORDS = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")
"""How a full disk shows through the libraries that write files: an OSError with errno ENOSPC or EDQUOT,
or, from safetensors (Rust) and torch's zip writer, only a message naming it."""


class DiskFull(OSError):
    """Writing ``path`` ran out of space; the previous version of the file or folder is intact."""

    def __str__(self) -> str:  # one line, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def _size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (0 when missing)."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def is_disk_full(err: BaseException, where: str | os.PathLike | None = None) -> bool:
    """``err`` (or an error it came from) says the disk is full; or, with ``where``, a write failed while
    the disk holding ``where`` has under 1 MB free (torch's zip writer then says only "file write failed")."""
    seen = err
    while seen is not None:
        if isinstance(seen, DiskFull) or (isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS):
            return True
        if any(word in str(seen).lower() for word in DISK_FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    if where is not None and isinstance(err, OSError | RuntimeError):
        try:
            return shutil.disk_usage(Path(where)).free < 2**20
        except OSError:
            return False
    return False


def disk_full(
    path: str | os.PathLike, written: int, err: BaseException | None = None, like: str | os.PathLike | None = None
) -> DiskFull:
    """The one-line error for a write of ``path`` that ran out of space after ``written`` bytes: the
    space needed (at least the size of the previous version, ``like`` when it lives elsewhere, e.g. the
    newest checkpoint, or what was written before the disk filled), the space free, and what is intact."""
    path = Path(path)
    previous = Path(like) if like is not None else path
    size = _size(previous)
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    except OSError:
        free = 0
    if size:
        name = "the previous version" if like is None else str(previous)
        needed, kept = f"about {_mb(max(size, written))} needed (the size of {name})", f"{name} is intact"
    else:
        needed, kept = f"more than {_mb(written)} needed (written before the disk filled)", "nothing was replaced"
    msg = f"no space left on the device writing {path}: {needed}, {_mb(free)} free; {kept}; free space and re-run"
    out = DiskFull(errno.ENOSPC, msg)
    out.__cause__ = err
    return out


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step. When the disk
    fills meanwhile, the temporary file is removed, ``path`` is left as it was, and :class:`DiskFull` names
    it and the space needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except Exception as err:
        if isinstance(err, DiskFull) or not is_disk_full(err, path.parent):
            raise
        written = _size(Path(tmp))
        os.remove(tmp)
        raise disk_full(path, written, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (a folder) whole. A full
    disk leaves ``path`` as it was (:class:`DiskFull`, as :func:`atomic_path`)."""
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
    except Exception as err:
        if isinstance(err, DiskFull) or not is_disk_full(err, path.parent):
            raise
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_full(path, written, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to ``path`` (a log such as ``metrics.jsonl``) in one write; when the disk
    fills, the file is cut back to its previous lines and :class:`DiskFull` is raised."""
    path = Path(path)
    before = path.stat().st_size if path.exists() else 0
    data = (line + "\n").encode("utf-8")
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as err:
        if not is_disk_full(err):
            raise
        with open(path, "ab") as f:
            f.truncate(before)
        raise disk_full(path, len(data), err) from None


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def read_cache(path: str | os.PathLike, what: str = "cache"):
    """The JSON object cached in ``path``, or None when it is missing or torn (cut short or otherwise
    unreadable: it is named in one warning and removed, so the caller rebuilds it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        log.warning("%s: torn %s (%s: %s); rebuilding it", path, what, type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
