"""Run bookkeeping: what a training run checks before it starts, whether a finished run can be
reused, its checkpoints and metrics, and launching it with ``accelerate launch`` from Python."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import yaml

from bfpo import checkpoints, configs
from bfpo.errors import BadInput
from bfpo.io import append_line, atomic_path, read_cache, write_text
from bfpo.jobs import die_with_parent

LEDGER_ENV = "BFPO_LEDGER"
"""The file (JSON lines) where the work of a notebook notes what it reused and what it ran; the notebook
runner sets it for each notebook and prints the tally, so a re-run after a kill shows what it skipped."""


def note(kind: str, name, reused: bool) -> None:
    """Record in the ledger (``$BFPO_LEDGER``, when set) that the ``kind`` of work ``name`` (a training, a
    judgement, an evaluation) was reused from an earlier run or ran now."""
    path = os.environ.get(LEDGER_ENV)
    if path:
        append_line(path, json.dumps({"kind": kind, "name": str(name), "reused": bool(reused)}))


def tally(ledger) -> dict[str, dict[str, int]]:
    """``{kind: {"reused": n, "ran": m}}`` of a ledger file (empty when there is none)."""
    counts: dict[str, dict[str, int]] = {}
    path = Path(ledger)
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        kind = counts.setdefault(record["kind"], {"reused": 0, "ran": 0})
        kind["reused" if record["reused"] else "ran"] += 1
    return counts


def describe_tally(counts: dict[str, dict[str, int]]) -> str:
    """``reused 34 trainings, 120 judgements; ran 6 trainings`` (or ``nothing to reuse or run``)."""
    parts = []
    for which in ("reused", "ran"):
        done = [f"{c[which]} {kind}{'s' if c[which] != 1 else ''}" for kind, c in sorted(counts.items()) if c[which]]
        if done:
            parts.append(f"{which} {', '.join(done)}")
    return "; ".join(parts) or "nothing to reuse or run"


def finished(cfg, summary_name: str) -> dict | None:
    """The summary of a finished Safe RLHF run (score model or PPO) of the same config, threads and
    progress bars aside, else None: such a summary holds its config. A training run is checked by
    :func:`completed` (its config.json, with the trainer version)."""
    done = read_cache(Path(cfg.output_dir) / summary_name, "run summary")  # a torn one: the run is done again
    return done if done is not None and configs.same_run(done.get("config", {}), cfg) else None


def start(cfg, summary_name: str) -> dict | None:
    """The summary of a finished run of ``cfg``; else None, after checking its inputs exist and
    setting threads and the seed."""
    cfg.check_inputs()
    if (done := finished(cfg, summary_name)) is not None:
        return done
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    return None


def summary_of(run_dir) -> dict:
    """The summary a finished run left: train_summary.json, ppo_summary.json or score_summary.json."""
    for name in ("train_summary.json", "ppo_summary.json", "score_summary.json"):
        p = Path(run_dir) / name
        if p.is_file():
            return json.loads(p.read_text())
    raise FileNotFoundError(f"{run_dir}: no finished run (no *_summary.json)")


def check_inputs(cfg, where: str = "config") -> None:
    """The files and models ``cfg`` names exist (or the model looks like a hub id); raises ConfigError."""
    configs.require_model(cfg.model, where, "model")
    configs.require_path(cfg.train_data, where, "train_data", "saved dataset folder or .jsonl file")
    configs.require_path(cfg.buffer_data, where, "buffer_data", "saved dataset folder or .jsonl file")
    if Path(cfg.output_dir).is_file():
        raise configs.ConfigError(where, "output_dir", f"{cfg.output_dir} is a file, not a folder")


TRAINER_VERSION = 4
"""Bumped when the trainer computes something else for the same config (2: ULMA's per-class
reduction; 3: no space before a response after a chat template; 4: SFT on every token renders the
whole dialogue with the chat template), so that a finished or checkpointed run of an older trainer
is not reused."""


def same_run(saved: dict, cfg) -> bool:
    """A saved ``config.json`` is of the same run: same config (runtime keys aside), same trainer version."""
    saved = dict(saved)
    return saved.pop("trainer_version", 1) == TRAINER_VERSION and configs.same_run(saved, cfg)


def completed(output_dir: str | os.PathLike, cfg) -> dict | None:
    """The summary of a finished run of the same config in ``output_dir``, else None."""
    out = Path(output_dir)
    summary, config = out / "train_summary.json", out / "config.json"
    if not (summary.is_file() and config.is_file() and (out / "model" / "config.json").is_file()):
        return None
    saved, done = read_cache(config, "run config"), read_cache(summary, "run summary")  # torn: done again
    if saved is None or done is None or not same_run(saved, cfg):
        return None
    return done


def save_checkpoint(accelerator, out: Path, step: int, train_tokens: int, keep: int) -> None:
    """Save the training state of every process as checkpoint ``step`` (see :mod:`bfpo.checkpoints`)."""
    tmp = checkpoints.staging(out, step, create=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    with checkpoints.space_guard(out, tmp, step):  # a full disk: the earlier checkpoints stay, one line says so
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            checkpoints.commit(out, tmp, step, {"train_tokens": train_tokens}, keep)
    accelerator.wait_for_everyone()


def truncate_metrics(path: Path, step: int, key: str = "step") -> None:
    """Drop the records a resumed run will write again (those after ``step``), and a last line cut short by
    a kill during its write."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line) if line else None
        except ValueError:
            break  # a torn last line: written again by the resumed run
        if record is not None and record[key] <= step:
            kept.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(output_dir: str | os.PathLike, name: str = "metrics.jsonl") -> list[dict]:
    """The records of ``output_dir/name`` (one JSON object per line), in order."""
    path = Path(output_dir) / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- launching from Python (notebooks): a config file and `accelerate launch` in a subprocess ---


def free_port() -> int:
    """A TCP port nobody listens on now (for the processes' rendezvous), chosen by the OS."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    cfg, num_processes: int = 1, accelerate_config: str | None = None, port: int | None = None, fsdp: bool = False
) -> dict:
    """Run ``cfg`` in ``num_processes`` processes with ``accelerate launch`` and return the summary.

    Without GPUs the processes run on the CPU (gloo, ``ACCELERATE_USE_CPU=1``), one torch thread
    each. ``fsdp``: shard the model across the processes (FSDP2, :mod:`bfpo.sharding`) instead of
    replicating it (DDP). The config is written to ``<output_dir>/launch_config.yaml``. On failure
    the error names the command and shows the end of its output.
    """
    import subprocess

    check_inputs(cfg)  # bad input stops here, in the caller's process, with the same one line
    out = Path(cfg.output_dir)
    done = completed(out, cfg)
    note("training", out, done is not None)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch_config.yaml"
    with atomic_path(config_file) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate if accelerate.exists() else "accelerate"), "launch"]
    env = dict(os.environ)
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if num_processes > 1:
            port = port or free_port()  # a fixed port can still be held by a run that was killed
            # FSDP2 (bfpo.sharding) or DDP; accelerate takes one of the two flags
            cmd += ["--use_fsdp", "--fsdp_version", "2"] if fsdp else ["--multi_gpu"]
            cmd += ["--num_processes", str(num_processes), "--main_process_port", str(port)]
        else:
            cmd += ["--num_processes", "1"]
        if not torch.cuda.is_available():
            env |= {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd += ["-m", "bfpo.train", "--config", str(config_file)]
    parent = os.getpid()  # the launcher (and through it the training processes) stops if this process dies
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM)
    )
    write_text(out / "launch.log", proc.stdout + proc.stderr)
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.startswith("bfpo.train: error: ")]
        if said:  # bad input found by the training process: pass its one line on
            raise BadInput(said[0].removeprefix("bfpo.train: error: "))
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        log_file = out / "launch.log"
        raise RuntimeError(f"training failed (exit {proc.returncode}; log {log_file}): {' '.join(cmd)}\n{tail}")
    return json.loads((out / "train_summary.json").read_text())


def ranks_seen(output_dir: str | os.PathLike) -> list[int]:
    """The ranks that left a note in ``output_dir/ranks`` (each process of a run writes one)."""
    return sorted(json.loads(p.read_text())["rank"] for p in (Path(output_dir) / "ranks").glob("rank*.json"))
