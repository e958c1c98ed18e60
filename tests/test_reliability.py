"""Faults of shared machines: one writer per run folder, a full disk, torn caches, processes left behind.

(The kill of a whole reproduction in the middle of notebook 04, and its re-run, is in
``test_notebooks.py::test_pipeline_02_to_06_with_short_runs``.)
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bfpo import checkpoints, io, jobs, locks, runs, train
from bfpo import notebooks as runner


def _config(tiny_world, out: Path, **overrides) -> dict:
    return (
        dict(
            model=str(tiny_world / "init"),
            output_dir=str(out),
            train_data=str(tiny_world / "pairs"),
            loss="bfpo",
            beta=0.5,
            learning_rate=3e-3,
            per_device_batch_size=8,
            max_steps=12,
            max_length=64,
            progress=False,
            num_threads=1,
        )
        | overrides
    )


def _holder_process(folder: Path, then: str = "time.sleep(600)") -> subprocess.Popen:
    """Another process that takes the lock of ``folder``, says so on stdout, then runs ``then``."""
    code = textwrap.dedent(f"""
        import sys, time
        from bfpo import locks
        with locks.hold({str(folder)!r}, "a test holder"):
            print("held", flush=True)
            {then}
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- one writer per run folder ------------------------------------------------------------------


def test_two_launches_of_one_training_one_runs_and_the_other_refuses(tiny_world, tmp_path):
    """Two real `python -m bfpo.train --config c.yaml` started together on one output folder."""
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_config(tiny_world, out, max_steps=400)))
    cmd = [sys.executable, "-m", "bfpo.train", "--config", str(cfg)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=600), p.returncode) for p in procs]
    assert sorted(code for *_, code in results) == [0, 2], [r[2][-500:] for r in results]
    (winner, *_), (_, _, refused_err, _) = sorted(results, key=lambda r: r[3])
    said = [line for line in refused_err.splitlines() if line.startswith("bfpo.train: error:")]
    assert len(said) == 1 and "Traceback" not in refused_err
    assert f"{out}: another process writes it (PID {winner} on host {socket.gethostname()}, started 20" in said[0]
    steps = [m["step"] for m in train.read_metrics(out)]
    assert steps == list(range(1, 401)), "the log holds each step once, in order"
    assert not locks.lock_file(out).exists(), "the winner let go of its lock"


def test_a_second_writer_stops_before_writing_anything(tiny_world, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _holder_process(out)
    try:
        before = sorted(p.name for p in out.iterdir())
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(_config(tiny_world, out)))
        assert train.main(["--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"PID {holder.pid} on host {socket.gethostname()}" in err[0]
        assert "a test holder" in err[0]
        assert sorted(p.name for p in out.iterdir()) == before == [locks.LOCK_NAME]
        info = locks.holder(out)
        assert info["pid"] == holder.pid and info["who"] == "a test holder"
    finally:
        holder.kill()
        holder.wait()


def test_every_writer_takes_the_lock(tiny_world, tmp_path, ppo_config, score_models, capsys):
    """Score models, PPO-Lagrangian, the evaluation's output file and the notebook runner refuse a held folder."""
    from bfpo import ppo, safe_rlhf
    from bfpo.evaluation import cli as eval_cli

    root, _ = score_models
    with locks.hold(tmp_path / "score"):
        score = safe_rlhf.ScoreConfig(
            model=str(tiny_world / "init"),
            output_dir=str(tmp_path / "score"),
            train_data=str(tiny_world / "pairs"),
            kind="reward",
            max_steps=2,
            max_length=64,
            progress=False,
        )
        with pytest.raises(locks.FolderLocked, match=f"{tmp_path / 'score'}: another process writes it"):
            safe_rlhf.train_score_model(score)
    with locks.hold(tmp_path / "ppo"):
        with pytest.raises(locks.FolderLocked, match="another process writes it"):
            ppo.ppo_lagrangian(ppo_config(tmp_path / "ppo"))
    assert not (tmp_path / "ppo" / "metrics.jsonl").exists()
    output = tmp_path / "eval" / "rows.json"
    with locks.hold_file(output):
        argv = ["--model", str(tiny_world / "init"), "--tasks", "ethics_virtue", "--limit", "2"]
        assert eval_cli.main([*argv, "--output", str(output), "--cache-dir", str(tmp_path / "cache")]) == 2
        assert f"{output}: another process writes it" in capsys.readouterr().err
    assert not output.exists()
    with locks.hold(tmp_path / "runs"):
        argv = ["--only", "01", "--output-dir", str(tmp_path / "runs"), "--figures-dir", str(tmp_path)]
        assert runner.main(argv) == 2
        assert f"{tmp_path / 'runs'}: another process writes it" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "notebooks").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    holder = _holder_process(folder)
    holder.send_signal(signal.SIGKILL)  # dies holding it: the file stays, naming it
    holder.wait()
    assert json.loads(locks.lock_file(folder).read_text())["pid"] == holder.pid
    assert locks.holder(folder) is None, "the kernel released the dead process's lock"
    with locks.hold(folder, "the next run"):
        assert locks.holder(folder)["pid"] == os.getpid()
        with pytest.raises(locks.FolderLocked, match=f"PID {os.getpid()} on host"):  # one writer, even here
            with locks.hold(folder):
                pass
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err
        == [
            line
            for line in err
            if f"took over the lock left by PID {holder.pid} on host {socket.gethostname()}" in line
        ]
        and len(err) == 1
        and "no longer running" in err[0]
    )
    assert not locks.lock_file(folder).exists()


def test_a_folder_made_for_the_lock_alone_is_removed_again(tmp_path):
    with locks.hold(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture(params=["tmpfs", "injected"])
def small_disk(tmp_path, request):
    """``(folder, fill)``: a real 3 MB tmpfs, where this process may mount one (root), and ``fill(leave)``
    fills it to ``leave`` bytes free; or ("injected") a plain folder where ``fill`` is None and the tests
    inject ENOSPC into the writers instead."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = False
    if request.param == "tmpfs":
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root here; the injected variant runs instead")
        cmd = ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)]
        mounted = subprocess.run(cmd, capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("this machine does not let the test mount a tmpfs; the injected variant runs instead")

    def fill(leave: int = 0) -> None:
        import shutil

        free = shutil.disk_usage(folder).free
        with open(folder / "ballast", "ab") as f:
            f.write(b"\0" * max(0, free - leave))

    yield folder, fill if mounted else None
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def _enospc_after(n_bytes: int):
    """A writer that writes ``n_bytes`` to its target, then fails as a full disk does."""

    def write(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"x" * n_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tiny_world, small_disk, monkeypatch, tmp_path, capsys):
    disk, fill = small_disk
    cfg = train.TrainConfig(**_config(tiny_world, disk / "run", max_steps=8, save_every=2, keep_checkpoints=3))
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    original = runs.save_checkpoint

    def save(accelerator, out, step, *args):
        if step == 4:  # the disk fills before the second checkpoint
            if fill is not None:
                fill(leave=4096)
            else:
                monkeypatch.setattr(torch, "save", _enospc_after(1000))
        return original(accelerator, out, step, *args)

    monkeypatch.setattr(runs, "save_checkpoint", save)
    assert train.main(["--config", str(config_file)]) == 1
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bfpo.train:")]
    assert message.startswith("bfpo.train: failed: DiskFull: no space left on the device writing ")
    step2 = disk / "run" / "checkpoints" / "step-000002"
    assert f"no space left on the device writing {disk / 'run' / 'checkpoints' / 'step-000004'}:" in message
    assert "MB needed" in message and f"{step2} is intact" in message
    assert [s for s, _ in checkpoints.listed(disk / "run")] == [2] and checkpoints.damage(step2) is None
    assert not list((disk / "run" / "checkpoints").glob(".*tmp")), "no half checkpoint left"
    assert [m["step"] for m in train.read_metrics(disk / "run")] == [1, 2, 3, 4]
    assert not locks.lock_file(disk / "run").exists()
    monkeypatch.undo()
    if fill is not None:
        (disk / "ballast").unlink()
    assert train.train(cfg)["resumed_from"] == 2, "with space again, the run resumes from the kept checkpoint"


def test_a_full_disk_during_the_results_write_keeps_the_previous_results(small_disk, monkeypatch, tmp_path):
    disk, fill = small_disk
    results = disk / "results.csv"
    io.write_csv(results, pd.DataFrame({"method": ["bfpo"], "harmlessness": [0.5]}))
    before = results.read_bytes()
    io.append_line(disk / "metrics.jsonl", json.dumps({"step": 1}))
    big = pd.DataFrame({"method": ["bfpo"] * 200_000, "harmlessness": [0.25] * 200_000})
    if fill is not None:
        fill(leave=2048)
    else:
        monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, target, **kw: _enospc_after(5000)(self, target))
    said = rf"writing {results}: about \d+\.\d MB needed .*; the previous version is intact"
    with pytest.raises(io.DiskFull, match=said):
        io.write_csv(results, big)
    assert results.read_bytes() == before
    assert sorted(p.name for p in disk.iterdir() if p.name != "ballast") == ["metrics.jsonl", "results.csv"]
    if fill is not None:  # the log of a run: cut back to its whole lines
        with pytest.raises(io.DiskFull, match="metrics.jsonl"):
            io.append_line(disk / "metrics.jsonl", json.dumps({"step": 2, "pad": "x" * 8192}))
        assert (disk / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_disk_full_is_told_apart_from_other_errors(tmp_path):
    assert io.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert io.is_disk_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert not io.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not io.is_disk_full(ValueError("bad value"), tmp_path)
    with pytest.raises(ValueError, match="bad value"):  # any other error passes through untouched
        with io.atomic_path(tmp_path / "x.json"):
            raise ValueError("bad value")
    assert list(tmp_path.iterdir()) == []


# --- torn files ----------------------------------------------------------------------------------


def test_a_torn_cache_is_named_and_rebuilt(tmp_path, caplog):
    cache = tmp_path / "judged_cache.json"
    cache.write_text('{"v3|bfpo|a|0": {"summary": [')  # cut short by a kill
    assert io.read_cache(cache, "judge cache") is None
    assert f"{cache}: torn judge cache (JSONDecodeError" in caplog.text and not cache.exists()
    io.write_json(cache, {"k": 1})
    assert io.read_cache(cache) == {"k": 1}


def test_a_torn_reference_cache_is_rebuilt(tiny_world, tmp_path, caplog):
    cfg = train.TrainConfig(**_config(tiny_world, tmp_path / "a", max_steps=2, ref_cache_dir=str(tmp_path / "ref")))
    first = train.train(cfg)
    (cached,) = (tmp_path / "ref").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:100])
    again = train.train(train.TrainConfig(**(cfg.to_dict() | {"output_dir": str(tmp_path / "b")})))
    assert f"{cached}: torn reference cache" in caplog.text
    assert again["final"]["loss"] == first["final"]["loss"]
    assert torch.load(cached).shape[0] == first["train_examples"]


def test_a_metrics_log_with_a_torn_last_line_is_cut_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    runs.truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


# --- the ledger of reused and re-run work; no process left behind -----------------------------------


def test_the_ledger_counts_what_was_reused_and_what_ran(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(runs.LEDGER_ENV, str(ledger))
    for name, reused in (("a", True), ("b", True), ("c", False)):
        runs.note("training", name, reused)
    runs.note("judgement", "a", False)
    with open(ledger, "a") as f:
        f.write('{"kind": "train')  # a line cut short by a kill
    counts = runs.tally(ledger)
    assert counts == {"training": {"reused": 2, "ran": 1}, "judgement": {"reused": 0, "ran": 1}}
    assert runs.describe_tally(counts) == "reused 2 trainings; ran 1 judgement, 1 training"
    assert runs.describe_tally({}) == "nothing to reuse or run"


def test_a_worker_dies_with_the_process_that_started_it(tmp_path):
    """A study's worker (bfpo.jobs) must not go on training, holding its run folder's lock, once the study is killed."""
    code = textwrap.dedent("""
        import os, subprocess, sys, time
        parent = os.getpid()
        child = subprocess.Popen([sys.executable, "-c", f"from bfpo import jobs; jobs.die_with_parent({parent}); "
                                  "import time; time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has asked for the signal
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:  # gone, or a zombie nobody reaps (a container's PID 1 may not)
            if Path(f"/proc/{child}/stat").read_text().split(") ")[1].startswith("Z"):
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent")
    assert jobs.ENV["OMP_NUM_THREADS"] == "1"


def test_a_torn_run_summary_makes_the_run_run_again(tiny_world, tmp_path, caplog):
    cfg = train.TrainConfig(**_config(tiny_world, tmp_path / "run", max_steps=2))
    first = train.train(cfg)
    assert runs.completed(cfg.output_dir, cfg) == first
    summary = tmp_path / "run" / "train_summary.json"
    summary.write_text(summary.read_text()[:40])
    assert runs.completed(cfg.output_dir, cfg) is None and f"{summary}: torn run summary" in caplog.text
    assert train.train(cfg)["final"]["loss"] == first["final"]["loss"]
