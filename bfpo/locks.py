"""One writer per run folder: an exclusive lock taken before anything is written there.

Two launches of the same job (a Slurm requeue, a second terminal) would otherwise both write one
``metrics.jsonl`` and one ``model/``; with the lock the second stops with one line naming the folder,
the holder's PID and host, and when it started (:class:`FolderLocked`, exit 2 at a CLI).

The lock is ``fcntl.flock`` on ``<folder>/.bfpo.lock``: the kernel releases it when its process dies,
however it dies, so a lock file left by a killed run holds no lock; the next writer takes it over and
says whose it was. The file also records the holder (PID, host, start, command) for that message, and
is removed when the holder lets go. Readers (plots, reports) never take it.

    with locks.hold(run_dir, "bfpo.train"):
        ...  # write run_dir
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bfpo.errors import BadInput

log = logging.getLogger("bfpo.locks")

LOCK_NAME = ".bfpo.lock"
"""The lock file inside a locked folder (ignored by git: a killed holder leaves it behind)."""


class FolderLocked(BadInput):
    """Another live process writes this folder: the message names it (PID, host, start, command)."""


def lock_file(folder: str | os.PathLike, name: str = LOCK_NAME) -> Path:
    return Path(folder) / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def _describe(info: dict) -> str:
    return (
        f"PID {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
        f" ({info.get('who', '?')})"
    )


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode("utf-8", errors="replace")
    try:
        info = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?", "who": f"unreadable lock file: {text[:60]!r}"}
    return info if isinstance(info, dict) else {}


def holder(folder: str | os.PathLike, name: str = LOCK_NAME) -> dict | None:
    """Who holds the lock of ``folder`` now (its recorded PID, host, start and command), else None."""
    import fcntl

    path = lock_file(folder, name)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _acquire(folder: Path, who: str, name: str, what: str) -> int:
    """The file descriptor holding the lock of ``folder``; raises :class:`FolderLocked` if it is held."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = lock_file(folder, name)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            for _ in range(50):  # the holder has the lock but may not have written who it is yet: wait up to 1 s
                if info:
                    break
                time.sleep(0.02)
                info = _read(fd)
            os.close(fd)
            raise FolderLocked(
                f"{what}: another process writes it ({_describe(info)}); wait for it to finish, or stop "
                f"it (a lock of a process that is gone is taken over by the next run)"
            ) from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    left = _read(fd)
    if left:  # a holder that died without letting go (killed, out of memory, a node lost)
        here = left.get("host") == socket.gethostname()
        state = "no longer running" if here and not _alive(int(left.get("pid", -1) or -1)) else "not holding it"
        line = f"{what}: took over the lock left by {_describe(left)}, {state}"
        log.warning("%s", line)
        print(f"bfpo: {line}", file=sys.stderr)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now, "who": who}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode())
    os.fsync(fd)
    return fd


@contextlib.contextmanager
def hold(folder: str | os.PathLike, who: str = "bfpo") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing, and removed again if still empty) while the
    block runs; ``who`` names the command in the message a second writer gets. Raises :class:`FolderLocked`
    when another live process holds it; nothing is written to ``folder`` then."""
    folder = Path(folder)
    created = not folder.exists()
    fd = _acquire(folder, who, LOCK_NAME, str(folder))
    try:
        yield folder
    finally:
        _release(fd, lock_file(folder))
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a run that stopped on bad input leaves no folder behind


@contextlib.contextmanager
def hold_file(path: str | os.PathLike, who: str = "bfpo") -> Iterator[Path]:
    """Hold the lock of one output file ``path`` (``.<name>.bfpo.lock`` beside it), as :func:`hold` a folder."""
    path = Path(path)
    name = f".{path.name}{LOCK_NAME}"
    fd = _acquire(path.parent, who, name, str(path))
    try:
        yield path
    finally:
        _release(fd, lock_file(path.parent, name))


def _release(fd: int, path: Path) -> None:
    """Remove the lock file, then let go: a writer that comes after locks a new file."""
    import fcntl

    with contextlib.suppress(OSError):
        os.unlink(path)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def hold_if(condition: bool, folder: str | os.PathLike, who: str = "bfpo"):
    """:func:`hold` when ``condition`` (e.g. on the main process of a run), else a context that does nothing."""
    return hold(folder, who) if condition else contextlib.nullcontext(Path(folder))
