"""Checkpoints that survive a crash or a damaged disk: the newest ``keep`` are kept, each with a
manifest of its files' sha256, so a damaged one is found on resume and the one before is used.

Layout: ``<output_dir>/checkpoints/step-000040/`` holding the saved files and ``manifest.json``
(written last; a folder without it was never finished). Writing goes to a hidden temporary
folder renamed into place, so a killed process never leaves half a checkpoint under a real name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bfpo.errors import BadInput
from bfpo.io import disk_full, is_disk_full

log = logging.getLogger("bfpo.checkpoints")

MANIFEST = "manifest.json"


class NoIntactCheckpoint(BadInput):
    """Every checkpoint of a run is damaged: the message names them and how to start over."""


def folder(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def staging(output_dir: str | os.PathLike, step: int, create: bool = True) -> Path:
    """The temporary folder to save the state of ``step`` into before :func:`commit`; ``create``
    empties and creates it (on one process only, when several save into it)."""
    tmp = folder(output_dir) / f".step-{step:06d}.tmp"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


@contextmanager
def space_guard(output_dir: str | os.PathLike, tmp: Path, step: int, root: str = "checkpoints") -> Iterator[Path]:
    """Around writing (and committing) the checkpoint or snapshot ``step`` into ``tmp``: when the disk fills,
    ``tmp`` is removed, every earlier one stays as it was, and :class:`bfpo.io.DiskFull` names the one being
    written and the space needed (about the size of the newest earlier one)."""
    try:
        yield tmp
    except Exception as err:
        if not is_disk_full(err, tmp.parent):
            raise
        written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        earlier = sorted((Path(output_dir) / root).glob("step-*"))
        target = Path(output_dir) / root / f"step-{step:06d}"
        raise disk_full(target, written, err, earlier[-1] if earlier else None) from None


def commit(output_dir: str | os.PathLike, tmp: Path, step: int, state: dict, keep: int) -> Path:
    """Seal ``tmp`` (its manifest records every file's sha256 and ``state``), rename it into place
    as ``step-NNNNNN`` and delete all but the newest ``keep`` checkpoints."""
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "state": state, "files": files}, indent=1))
    final = folder(output_dir) / f"step-{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(listed(output_dir), reverse=True)[keep:]:
        shutil.rmtree(old[1], ignore_errors=True)
    return final


def listed(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every finished checkpoint (temporary folders are not listed)."""
    found = []
    for p in folder(output_dir).glob("step-*"):
        try:
            found.append((int(p.name.removeprefix("step-")), p))
        except ValueError:
            continue
    return found


def damage(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be trusted (a file missing, cut short or changed), or None when intact."""
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{ckpt / MANIFEST} is missing or unreadable"
    for name, digest in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{path} is missing"
        if _sha256(path) != digest:
            return f"{path} is damaged (its sha256 differs from the manifest)"
    return None


def latest_intact(output_dir: str | os.PathLike, start_over: bool = False) -> tuple[tuple[Path, dict] | None, list]:
    """``(newest intact checkpoint and its manifest, damaged checkpoints newer than it)``.

    Damaged ones are skipped with a warning naming the file; the caller deletes them with
    :func:`discard` (on one process). The first item is None when there is no checkpoint. When
    checkpoints exist but all are damaged, :class:`NoIntactCheckpoint` is raised, unless
    ``start_over`` (then the first item is None and all of them are in the list)."""
    damaged = []
    for _, ckpt in sorted(listed(output_dir), reverse=True):
        why = damage(ckpt)
        if why is None:
            if damaged:
                log.warning("resuming from the previous checkpoint %s instead", ckpt.name)
            return (ckpt, json.loads((ckpt / MANIFEST).read_text())), damaged
        log.warning("checkpoint %s cannot be resumed: %s", ckpt.name, why)
        damaged.append((ckpt, why))
    if damaged and not start_over:
        raise NoIntactCheckpoint(
            f"{folder(output_dir)}: no intact checkpoint left ({'; '.join(why for _, why in damaged)}); "
            "set start_over: true (or --set start_over=true) to train again from the start"
        )
    if damaged:
        log.warning("no intact checkpoint in %s: starting over, as start_over asks", folder(output_dir))
    return None, damaged


def discard(damaged: list) -> None:
    """Delete the damaged checkpoints :func:`latest_intact` reported."""
    for ckpt, _ in damaged:
        shutil.rmtree(ckpt, ignore_errors=True)


def clear(output_dir: str | os.PathLike) -> None:
    """Remove every checkpoint (the finished model supersedes them, or the config changed)."""
    shutil.rmtree(folder(output_dir), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Snapshots: the model along a run, kept for curves (unlike checkpoints, never deleted)
# ---------------------------------------------------------------------------------------------

SNAPSHOT_INFO = "snapshot.json"


def save_snapshot(output_dir: str | os.PathLike, step: int, save_model, info: dict) -> Path:
    """Write ``snapshots/step-NNNNNN``: ``save_model(folder)`` writes the model there, and
    ``snapshot.json`` records ``{"step": step, **info}`` (e.g. the FLOPs spent so far). Written to a
    temporary folder renamed into place, so a killed run leaves no half snapshot."""
    root = Path(output_dir) / "snapshots"
    tmp, final = root / f".step-{step:06d}.tmp", root / f"step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with space_guard(output_dir, tmp, step, "snapshots"):
        save_model(tmp)
        (tmp / SNAPSHOT_INFO).write_text(json.dumps({"step": step, **info}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def snapshots(output_dir: str | os.PathLike) -> list[tuple[dict, Path]]:
    """``(info, folder)`` of every finished snapshot of a run, by step."""
    found = []
    for p in (Path(output_dir) / "snapshots").glob("step-*"):
        if (p / SNAPSHOT_INFO).is_file():
            found.append((json.loads((p / SNAPSHOT_INFO).read_text()), p))
    return sorted(found, key=lambda item: item[0]["step"])
