"""The trainings (and judging) of a study, run a few at a time in long-lived worker processes.

A job is a command line of a bfpo module, ``python -m bfpo.train --config run/train_config.yaml``
(written next to the run, so any run can be re-run by hand). Starting a fresh Python for each one
cost about 4 s of imports (torch, transformers, accelerate) per job on 2 cores, about as long as a
smoke training itself; here each worker imports them once and runs its jobs one after another by
calling the module's ``main(argv)``, one thread each.

A job's output goes to a log file, shown (its last lines) only when the job fails. Every job seeds
its own random state from its config's ``seed`` (``bfpo.train``, ``bfpo.safe_rlhf``, ``bfpo.ppo``),
so what a worker ran before does not change a run.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

ENV = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
"""Set in every worker before it imports torch: one thread per job, no progress bars."""

_pools: dict[int, concurrent.futures.ProcessPoolExecutor] = {}


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent (PID ``parent``) ends (Linux; elsewhere
    nothing). A study killed half-way must leave no worker that goes on training and writing its run folder,
    holding the folder's lock, while the study runs again."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the signal was asked for
        os.kill(os.getpid(), sig)


def _start_worker(env: dict[str, str], parent: int | None = None) -> None:
    """Before a worker imports torch: its environment; and its output to /dev/null (a job's own goes to its
    log, see run_command; what judging or evaluation would print, progress bars included, is not shown).
    The worker dies with the process that started it (:func:`die_with_parent`)."""
    if parent is not None:
        die_with_parent(parent)
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def shutdown() -> None:
    """Stop the workers (at exit, before the interpreter tears its modules down)."""
    while _pools:
        _pools.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The pool of ``workers`` processes, started once per (notebook) process and then reused."""
    if not _pools:
        atexit.register(shutdown)
    if workers not in _pools:
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        context = multiprocessing.get_context("spawn")
        _pools[workers] = concurrent.futures.ProcessPoolExecutor(workers, context, _start_worker, (ENV, os.getpid()))
    return _pools[workers]


def run_command(cmd: list[str], log_path: str) -> int:
    """Run ``cmd`` (``[python, -m, module, *argv]``) in this process, its stdout and stderr (file
    descriptors 1 and 2, so C-level output too) into ``log_path``; returns its exit status."""
    if cmd[1:2] != ["-m"]:
        raise ValueError(f"a job is `python -m module ...`, got {cmd[:3]}")
    module, argv = cmd[2], cmd[3:]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            code = importlib.import_module(module).main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported through the log, as a subprocess's would be
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return code or 0


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run(jobs: list[tuple[str, list[str]]], workers: int = 2) -> Iterator[str]:
    """Run ``(name, command)`` jobs on ``workers`` worker processes; yields each job's name as it
    finishes. A failed job raises with its command and the last lines of its output."""
    if not jobs:
        return
    pool = _pool(max(1, workers))
    with tempfile.TemporaryDirectory(prefix="bfpo-jobs-") as logs:
        futures = {}
        for i, (name, cmd) in enumerate(jobs):
            log = Path(logs) / f"job{i}.log"
            futures[pool.submit(run_command, cmd, str(log))] = (name, cmd, log)
        for future in concurrent.futures.as_completed(futures):
            name, cmd, log = futures[future]
            code = future.result()
            if code != 0:
                for other in futures:
                    other.cancel()
                raise RuntimeError(f"{name} failed (exit {code}): {' '.join(cmd)}\n{_tail(log)}")
            yield name


def starmap(fn, calls: list[tuple], workers: int = 2) -> Iterator:
    """``fn(*args)`` for each ``args`` of ``calls`` on the workers (``fn`` importable by name, as
    pickle needs), or here, one after another, with ``workers`` 1; yields the results in order."""
    if workers <= 1:
        yield from (fn(*args) for args in calls)
        return
    pool = _pool(workers)
    futures = [pool.submit(fn, *args) for args in calls]
    try:
        for future in futures:
            yield future.result()
    finally:
        for future in futures:
            future.cancel()
